"""The Go client (clients/go) against a real `tokenservice serve` process:
tests/clients/go mints by email, by external id and in a batch with one bad
entry, verifies every token with github.com/golang-jwt/jwt/v5 and reads the
EMAIL_INVALID ErrorInfo with status.FromError; then clients/go/example.sh."""

from __future__ import annotations

import pytest

from tests.clients.common import (
    assert_example_does_not_retry_invalid_argument,
    assert_example_mints_over_mtls_and_with_an_api_key,
    assert_example_prints_a_verified_token,
    client_env,
    e2e_program,
    run_e2e,
)

# A cold `go build` downloads and compiles grpc (a minute or two on 2 cores),
# hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def go_e2e() -> None:
    e2e_program("go")


def test_go_client_end_to_end(go_e2e, live_service):
    result = run_e2e("go", client_env(live_service), timeout=60)
    assert "go client e2e: OK" in result.stderr


def test_go_example_prints_only_a_token(live_service):
    assert_example_prints_a_verified_token("go", live_service, "go-example@example.com")


def test_go_example_does_not_retry_invalid_argument(live_service):
    assert_example_does_not_retry_invalid_argument("go", live_service)


def test_go_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("go", secured_live_service)
