#!/usr/bin/env bash
# Mints a Kustomer chat login token for EMAIL with the Java client and prints
# only the token on stdout (the build's output goes to stderr).
#
#   TOKENSERVICE_ADDR=localhost:50051 clients/java/example.sh someone@example.com
#
# The program is src/test/java/com/tokenservice/example/MintExample.java: a
# 5 s deadline per call, UNAVAILABLE retried with backoff, nothing else retried.
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 EMAIL" >&2
  exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/build.sh" >&2
exec java -cp "$(cat "$here/target/classpath.txt")" com.tokenservice.example.MintExample "$1"
