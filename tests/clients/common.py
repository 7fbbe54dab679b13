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
