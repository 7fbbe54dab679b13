#!/usr/bin/env bash
# Mints a login token for one email with the Go client and prints only the
# token. Server: $TOKENSERVICE_ADDR (default localhost:50051).
#   clients/go/example.sh someone@example.com
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ $# -eq 1 ]] || { echo "usage: $0 EMAIL" >&2; exit 2; }
bin=${TOKENSERVICE_GO_BIN_DIR:-../../.cache/clients-go}
mkdir -p "$bin"
go build -o "$bin/mint-example" ./examples/mint >&2
exec "$bin/mint-example" "$1"
