# Vault / OpenBao policy "tokenservice": read the Kustomer org signing
# secrets and the callers' API key hashes, nothing else. The service reads
# <kv_mount>/data/<path> (KV v2) and takes the version from that read's
# metadata, so it needs no access to metadata/, no list, and no write anywhere.
#
# Org paths live under kustomer/ ([orgs.<name>] path = "kustomer/<name>").
# setup.sh rewrites the "secret/" mount prefix when KV_MOUNT differs.
path "secret/data/kustomer/*" {
  capabilities = ["read"]
}

# The API key hashes (auth.api_keys_path = "tokenservice/api-keys"): one
# field per API-key caller, value "sha256:<hex>". This exact entry only.
path "secret/data/tokenservice/api-keys" {
  capabilities = ["read"]
}
