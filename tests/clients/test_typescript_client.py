"""The TypeScript client (clients/typescript) against a real `tokenservice
serve` process: clients/typescript/test/e2e.ts mints by email, by external id
and in a batch with one bad entry, verifies every token with jsonwebtoken
and reads the EMAIL_INVALID ErrorInfo from the grpc-status-details-bin
trailer; then clients/typescript/example.sh."""

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

# A cold `npm ci` + tsc takes ~30 s; allow more than the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def ts_built() -> None:
    e2e_program("typescript")


def test_typescript_client_end_to_end(ts_built, live_service):
    result = run_e2e("typescript", client_env(live_service), timeout=60)
    assert "typescript client e2e: OK" in result.stderr


def test_typescript_example_prints_only_a_token(ts_built, live_service):
    assert_example_prints_a_verified_token("typescript", live_service, "ts-example@example.com")


def test_typescript_example_does_not_retry_invalid_argument(ts_built, live_service):
    assert_example_does_not_retry_invalid_argument("typescript", live_service)


def test_typescript_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("typescript", secured_live_service)
