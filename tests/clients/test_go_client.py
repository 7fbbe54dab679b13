"""The Go client (clients/go) against a real `tokenservice serve` process:
tests/clients/go mints by email, by external id and in a batch with one bad
entry, verifies every token with github.com/golang-jwt/jwt/v5 and reads the
EMAIL_INVALID ErrorInfo with status.FromError; then clients/go/example.sh."""

from __future__ import annotations


import pytest

from tests.clients.common import (
    assert_example_does_not_retry_invalid_argument, assert_example_mints_over_mtls_and_with_an_api_key,
    assert_example_prints_a_verified_token, BUILD_DIR, REPO, client_env, run,
)

# A cold `go build` downloads and compiles grpc (a minute or two on 2 cores),
# hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def go_e2e() -> str:
    binary = BUILD_DIR / "go-e2e"
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    run(["go", "build", "-o", str(binary), "."], cwd=REPO / "tests" / "clients" / "go", timeout=300)
    return str(binary)


def test_go_client_end_to_end(go_e2e, live_service):
    result = run([go_e2e], cwd=REPO, env=client_env(live_service), timeout=60)
    assert "go client e2e: OK" in result.stderr


def test_go_example_prints_only_a_token(live_service):
    assert_example_prints_a_verified_token("go", live_service, "go-example@example.com")


def test_go_example_does_not_retry_invalid_argument(live_service):
    assert_example_does_not_retry_invalid_argument("go", live_service)


def test_go_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("go", secured_live_service)
