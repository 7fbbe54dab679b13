#!/usr/bin/env bash
# Mints a login token for one email with the Python client and prints only
# the token. Server: $TOKENSERVICE_ADDR (default localhost:50051).
#   clients/python/example.sh someone@example.com
# Uses $PYTHON when set and it can import the client (e.g. a venv where
# `pip install ./clients/python` ran); otherwise installs the client into a
# venv under .cache/ first.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
[[ $# -eq 1 ]] || { echo "usage: $0 EMAIL" >&2; exit 2; }
py=${PYTHON:-}
if [[ -z "$py" ]] || ! "$py" -c 'import tokenservice.client, tokenservice.v1.token_service_pb2_grpc' 2>/dev/null; then
  venv=$here/../../.cache/clients-python-example
  if [[ ! -x "$venv/bin/python" ]] || ! cmp -s "$here/pyproject.toml" "$venv/.installed-pyproject.toml"; then
    python3 -m venv "$venv" >&2
    # Editable, so regenerated stubs are picked up without reinstalling.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here" >&2
    cp "$here/pyproject.toml" "$venv/.installed-pyproject.toml"
  fi
  py=$venv/bin/python
fi
exec "$py" "$here/examples/mint.py" "$1"
