"""The Rust client (clients/rust) against a real `tokenservice serve` process:
examples/e2e.rs mints by email, by external id and in a batch with one bad
entry, verifies every token with the jsonwebtoken crate and reads the
EMAIL_INVALID ErrorInfo with tonic_types::StatusExt; then
clients/rust/example.sh: prints only the token, never retries
INVALID_ARGUMENT, retries UNAVAILABLE with backoff."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.clients.common import REPO, client_env, run
from tests.support import hs256_open

RUST = REPO / "clients" / "rust"
EXAMPLE = str(RUST / "example.sh")

# The module fixture builds once (debug profile, both examples); a cold build
# fetches and compiles tonic, hyper and jsonwebtoken (~2 min on 2 cores),
# hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def rust_examples() -> None:
    run(["cargo", "build", "--locked", "--example", "e2e", "--example", "mint"], cwd=RUST, timeout=840)


def test_rust_client_end_to_end(rust_examples, live_service):
    result = run(["cargo", "run", "--locked", "--quiet", "--example", "e2e"], cwd=RUST,
                 env=client_env(live_service), timeout=120)
    assert "rust client end-to-end:" in result.stdout and "checks passed" in result.stdout, result.stdout


def test_rust_example_prints_only_a_token(rust_examples, live_service):
    email = "rust-example@example.com"
    result = run([EXAMPLE, email], cwd=REPO, env=client_env(live_service), timeout=300)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2, result.stdout
    header, claims = hs256_open(token, live_service.secret)
    assert json.loads(header) == {"alg": "HS256", "typ": "JWT"}
    assert set(claims) == {"email", "iat"} and claims["email"] == email


def test_rust_example_does_not_retry_invalid_argument(rust_examples, live_service):
    result = subprocess.run([EXAMPLE, "not-an-email"], cwd=REPO, env=client_env(live_service),
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == "", result
    assert "EMAIL_INVALID" in result.stderr and "retrying" not in result.stderr, result.stderr


def test_rust_example_retries_unavailable(rust_examples):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TOKENSERVICE_ADDR": f"127.0.0.1:{port}"}
    result = subprocess.run([EXAMPLE, "someone@example.com"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == "", result
    # 5 attempts: 4 backoffs, then the final UNAVAILABLE is reported.
    assert result.stderr.count("UNAVAILABLE (attempt") == 4, result.stderr
    assert "MintToken failed: Unavailable" in result.stderr, result.stderr
