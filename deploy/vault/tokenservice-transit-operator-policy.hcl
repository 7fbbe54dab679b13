# Vault / OpenBao policy "tokenservice-transit-operator": for whoever runs
# `tokenservice secret sync --org <name>` for a transit org. It imports the
# org's Kustomer secret into Transit (BYOK) and compares it with the key's
# latest version; it cannot export, back up, rotate, reconfigure or delete a
# key. The service itself never holds this policy.
#
# setup.sh rewrites the "transit/" mount prefix when TRANSIT_MOUNT differs.

# Transit's RSA public key that the secret is wrapped with for import.
path "transit/wrapping_key" {
  capabilities = ["read"]
}

# The key's latest version, to compare with and to report (metadata only).
path "transit/keys/+" {
  capabilities = ["read"]
}

# The HMAC of a fixed probe at the latest version: equal to the probe's HMAC
# with Kustomer's secret means nothing needs importing.
path "transit/hmac/kustomer-*" {
  capabilities = ["update"]
}

# The first import creates the key, later ones add a version. Vault matches
# "+" against one whole path segment only (and "*" only at the end), so these
# name any key of the mount: on a Transit mount shared with other
# applications, replace "+" here and above by the transit orgs' key names.
# Not "transit/keys/kustomer-*": where several paths match, Vault applies the
# most specific one alone, and that glob would shadow these grants.
path "transit/keys/+/import" {
  capabilities = ["update"]
}

path "transit/keys/+/import_version" {
  capabilities = ["update"]
}
