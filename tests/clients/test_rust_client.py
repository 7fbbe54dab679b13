"""The Rust client (clients/rust) against a real `tokenservice serve` process:
examples/e2e.rs mints by email, by external id and in a batch with one bad
entry, verifies every token with the jsonwebtoken crate and reads the
EMAIL_INVALID ErrorInfo with tonic_types::StatusExt; then
clients/rust/example.sh: prints only the token, never retries
INVALID_ARGUMENT, retries UNAVAILABLE with backoff."""

from __future__ import annotations

import os
import subprocess

import pytest

from service.dev import free_loopback_port
from tests.clients.common import (
    REPO,
    assert_example_does_not_retry_invalid_argument,
    assert_example_mints_over_mtls_and_with_an_api_key,
    assert_example_prints_a_verified_token,
    client_env,
    e2e_program,
    run_e2e,
)

RUST = REPO / "clients" / "rust"
EXAMPLE = str(RUST / "example.sh")

# The module fixture builds once (debug profile, both examples); a cold build
# fetches and compiles tonic, hyper and jsonwebtoken (~2 min on 2 cores),
# hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def rust_examples() -> None:
    e2e_program("rust")


def test_rust_client_end_to_end(rust_examples, live_service):
    result = run_e2e("rust", client_env(live_service), timeout=120)
    assert "rust client end-to-end:" in result.stdout and "checks passed" in result.stdout, result.stdout


def test_rust_example_prints_only_a_token(rust_examples, live_service):
    assert_example_prints_a_verified_token("rust", live_service, "rust-example@example.com")


def test_rust_example_does_not_retry_invalid_argument(rust_examples, live_service):
    assert_example_does_not_retry_invalid_argument("rust", live_service)


def test_rust_example_retries_unavailable(rust_examples):
    env = {**os.environ, "TOKENSERVICE_ADDR": f"127.0.0.1:{free_loopback_port()}"}  # nothing listens there
    result = subprocess.run(
        [EXAMPLE, "someone@example.com"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0 and result.stdout == "", result
    # 5 attempts: 4 backoffs, then the final UNAVAILABLE is reported.
    assert result.stderr.count("UNAVAILABLE (attempt") == 4, result.stderr
    assert "MintToken failed: Unavailable" in result.stderr, result.stderr


def test_rust_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("rust", secured_live_service)
