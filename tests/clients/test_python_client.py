"""The Python client (clients/python) against a real `tokenservice serve`
process: tests/clients/python/e2e.py mints by email, by external id and in a
batch with one bad entry, verifies every token with PyJWT and reads the
EMAIL_INVALID ErrorInfo with grpc_status.rpc_status.from_call; then
clients/python/example.sh. Runs in this interpreter, which has the client
installed (pip install ./clients/python)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.clients.common import REPO, client_env, run

pytestmark = pytest.mark.integration


def test_python_client_end_to_end(live_service):
    result = run([sys.executable, str(REPO / "tests" / "clients" / "python" / "e2e.py")], cwd=REPO,
                 env=client_env(live_service), timeout=60)
    assert "python client e2e: OK" in result.stderr


def test_python_example_prints_only_a_token(live_service):
    result = run([str(REPO / "clients" / "python" / "example.sh"), "py-example@example.com"], cwd=REPO,
                 env={**client_env(live_service), "PYTHON": sys.executable}, timeout=60)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2, result.stdout


def test_python_example_does_not_retry_invalid_argument(live_service):
    result = subprocess.run([str(REPO / "clients" / "python" / "example.sh"), "not-an-email"], cwd=REPO,
                            env={**client_env(live_service), "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and result.stdout == ""
    assert "EMAIL_INVALID" in result.stderr and "retrying" not in result.stderr, result.stderr
