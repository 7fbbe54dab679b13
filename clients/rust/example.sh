#!/usr/bin/env bash
# Mints a Kustomer chat login token for EMAIL with the Rust client and prints
# only the token on stdout (cargo's output goes to stderr).
#
#   TOKENSERVICE_ADDR=localhost:50051 clients/rust/example.sh someone@example.com
#
# The program is examples/mint.rs: a 5 s deadline per call, UNAVAILABLE
# retried with backoff, nothing else retried.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 EMAIL" >&2
  exit 2
fi
# TLS files named relative to the caller's directory stay valid after the cd.
for var in TOKENSERVICE_CA_FILE TOKENSERVICE_CERT_FILE TOKENSERVICE_KEY_FILE; do
  if [[ -n "${!var:-}" && "${!var}" != /* ]]; then export "$var=$PWD/${!var}"; fi
done
cd "$(dirname "${BASH_SOURCE[0]}")"
cargo build --locked --example mint >&2
exec cargo run --locked --quiet --example mint -- "$1"
