"""Helpers for the client end-to-end tests: build a client program once,
run it against the live `tokenservice serve` process, show its output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import hs256_open

REPO = Path(__file__).resolve().parents[2]
# Build outputs of the client tests (.gitignored with the rest of .cache/).
BUILD_DIR = REPO / ".cache" / "clients-e2e"


def run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a build or test step; fail with its output if it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} (in {cwd}) exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def client_env(live_service) -> dict[str, str]:
    """The environment a client program gets: where the server is, and the
    secret to verify tokens with."""
    return {**os.environ, "TOKENSERVICE_ADDR": live_service.grpc_target,
            "TOKENSERVICE_TEST_SECRET": live_service.secret}


def example(lang: str) -> str:
    """The path of a client's example.sh."""
    return str(REPO / "clients" / lang / "example.sh")


def assert_example_prints_a_verified_token(lang: str, live_service, email: str, timeout: float = 300) -> None:
    """example.sh prints one line, a token for `email` that verifies against the secret (stdlib HMAC)."""
    env = {**client_env(live_service), "PYTHON": sys.executable}
    result = run([example(lang), email], cwd=REPO, env=env, timeout=timeout)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2, result.stdout
    header, claims = hs256_open(token, live_service.secret)
    assert header == b'{"alg":"HS256","typ":"JWT"}'
    assert set(claims) == {"email", "iat"} and claims["email"] == email


def assert_example_does_not_retry_invalid_argument(lang: str, live_service, timeout: float = 300) -> None:
    """example.sh with a bad email fails at once with EMAIL_INVALID on stderr and nothing on stdout."""
    env = {**client_env(live_service), "PYTHON": sys.executable}
    result = subprocess.run([example(lang), "not-an-email"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == "", result
    assert "EMAIL_INVALID" in result.stderr and "retrying" not in result.stderr, result.stderr


def assert_example_mints_over_mtls_and_with_an_api_key(lang: str, secured_live_service, timeout: float = 300) -> None:
    """example.sh with a client certificate (mTLS), then with server-only TLS and an API key: each prints a
    token that verifies; the audit trail names the caller each time."""
    service, files = secured_live_service
    for env, email, caller in [(files.client_env(service), f"{lang}-mtls@example.com", "checkout"),
                               (files.api_key_env(service), f"{lang}-key@example.com", "reports")]:
        result = run([example(lang), email], cwd=REPO, env={**os.environ, **env, "PYTHON": sys.executable},
                     timeout=timeout)
        _, claims = hs256_open(result.stdout.strip(), files.secret)
        assert claims["email"] == email
        assert files.api_key not in result.stdout + result.stderr
        callers = [r["caller"] for r in service.audit_records() if r["status"] == "OK"]
        assert callers[-1] == caller
