"""The Java client (clients/java) against a real `tokenservice serve` process:
com.tokenservice.example.EndToEnd mints by email, by external id and in a
batch with one bad entry, verifies every token with com.auth0:java-jwt and
reads the EMAIL_INVALID ErrorInfo with io.grpc.protobuf.StatusProto; then
clients/java/example.sh: prints only the token, never retries
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

JAVA = REPO / "clients" / "java"
EXAMPLE = str(JAVA / "example.sh")

# The module fixture builds once; a cold build downloads Maven's plugins and
# the dependencies (~15 s here), hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def java_classpath() -> None:
    e2e_program("java")


def test_java_client_end_to_end(java_classpath, live_service):
    result = run_e2e("java", client_env(live_service), timeout=120)
    assert "java client end-to-end:" in result.stdout and "checks passed" in result.stdout, result.stdout


def test_java_example_prints_only_a_token(java_classpath, live_service):
    assert_example_prints_a_verified_token("java", live_service, "java-example@example.com")


def test_java_example_does_not_retry_invalid_argument(java_classpath, live_service):
    assert_example_does_not_retry_invalid_argument("java", live_service)


def test_java_example_retries_unavailable(java_classpath):
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
    assert "MintToken failed: UNAVAILABLE" in result.stderr, result.stderr


def test_java_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("java", secured_live_service)
