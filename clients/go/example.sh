#!/usr/bin/env bash
# Mints a login token for one email with the Go client and prints only the
# token. Server: $TOKENSERVICE_ADDR (default localhost:50051); TLS, mTLS and
# an API key: TOKENSERVICE_CA_FILE, TOKENSERVICE_CERT_FILE, TOKENSERVICE_KEY_FILE,
# TOKENSERVICE_TLS_SERVER_NAME, TOKENSERVICE_API_KEY (see examples/mint).
#   clients/go/example.sh someone@example.com
set -euo pipefail
# TLS files named relative to the caller's directory stay valid after the cd.
for var in TOKENSERVICE_CA_FILE TOKENSERVICE_CERT_FILE TOKENSERVICE_KEY_FILE; do
  if [[ -n "${!var:-}" && "${!var}" != /* ]]; then export "$var=$PWD/${!var}"; fi
done
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ $# -eq 1 ]] || { echo "usage: $0 EMAIL" >&2; exit 2; }
bin=${TOKENSERVICE_GO_BIN_DIR:-../../.cache/clients-go}
mkdir -p "$bin"
go build -o "$bin/mint-example" ./examples/mint >&2
exec "$bin/mint-example" "$1"
