# Vault / OpenBao policy "tokenservice": read the Kustomer org signing
# secrets, nothing else. The service reads <kv_mount>/data/<org path> (KV v2)
# and takes the secret's version from that read's metadata, so it needs no
# access to metadata/, no list, and no write anywhere.
#
# Org paths live under kustomer/ ([orgs.<name>] path = "kustomer/<name>").
# setup.sh rewrites the "secret/" mount prefix when KV_MOUNT differs.
path "secret/data/kustomer/*" {
  capabilities = ["read"]
}
