# Vault / OpenBao policy "tokenservice-transit": sign and verify with the
# Transit HMAC keys of transit orgs ([orgs.<name>] signing = "transit"),
# nothing else. The org secrets never leave Transit: this grant cannot read,
# export or back up a key, and has no KV access at all.
#
# Keys are named kustomer-<org> (transit_key); a glob matches only at the
# end of a path, so "kustomer-*" covers <key> and <key>/<algorithm> alike.
# setup.sh rewrites the "transit/" mount prefix when TRANSIT_MOUNT differs.

# HMAC-SHA256 of signing inputs (batch_input), at the key's latest version.
path "transit/hmac/kustomer-*" {
  capabilities = ["update"]
}

# VerifyToken: the signature against the key's latest version.
path "transit/verify/kustomer-*" {
  capabilities = ["update"]
}

# The key's latest_version (and that it is a non-exportable HMAC key):
# metadata only, a read of transit/keys/<key> never returns key material.
path "transit/keys/kustomer-*" {
  capabilities = ["read"]
}
