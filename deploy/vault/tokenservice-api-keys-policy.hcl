# Vault / OpenBao policy "tokenservice-api-keys": read the callers' API key
# hashes, nothing else. The role of a deployment whose orgs all sign through
# Transit ("tokenservice-transit", setup.sh) holds it beside
# "tokenservice-transit": such a pod reads these hashes from KV, and no org
# secret. The "tokenservice" policy grants the same entry to KV deployments.
#
# setup.sh rewrites the "secret/" mount prefix when KV_MOUNT differs.
path "secret/data/tokenservice/api-keys" {
  capabilities = ["read"]
}
