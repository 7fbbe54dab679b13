#!/usr/bin/env bash
# Mints a login token for one email with the TypeScript client and prints
# only the token. Server: $TOKENSERVICE_ADDR (default localhost:50051); TLS,
# mTLS and an API key: TOKENSERVICE_CA_FILE, TOKENSERVICE_CERT_FILE,
# TOKENSERVICE_KEY_FILE, TOKENSERVICE_TLS_SERVER_NAME, TOKENSERVICE_API_KEY
# (see examples/mint.ts).
#   clients/typescript/example.sh someone@example.com
set -euo pipefail
# TLS files named relative to the caller's directory stay valid after the cd.
for var in TOKENSERVICE_CA_FILE TOKENSERVICE_CERT_FILE TOKENSERVICE_KEY_FILE; do
  if [[ -n "${!var:-}" && "${!var}" != /* ]]; then export "$var=$PWD/${!var}"; fi
done
cd "$(dirname "${BASH_SOURCE[0]}")"
[[ $# -eq 1 ]] || { echo "usage: $0 EMAIL" >&2; exit 2; }
# npm ci only when node_modules is missing or older than the lockfile.
if [[ ! -d node_modules || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error >&2
fi
# tsc only when a source is newer than the compiled example.
if [[ ! -f dist/examples/mint.js ]] || [[ -n "$(find src examples tsconfig.json package-lock.json -newer dist/examples/mint.js -print -quit)" ]]; then
  npx --no-install tsc -p tsconfig.json >&2
fi
exec node dist/examples/mint.js "$1"
