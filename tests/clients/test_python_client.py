"""The Python client (clients/python) against a real `tokenservice serve`
process: tests/clients/python/e2e.py mints by email, by external id and in a
batch with one bad entry, verifies every token with PyJWT and reads the
EMAIL_INVALID ErrorInfo with grpc_status.rpc_status.from_call; then
clients/python/example.sh. Runs in this interpreter, which has the client
installed (pip install ./clients/python)."""

from __future__ import annotations

import pytest

from tests.clients.common import (
    assert_example_does_not_retry_invalid_argument,
    assert_example_mints_over_mtls_and_with_an_api_key,
    assert_example_prints_a_verified_token,
    client_env,
    run_e2e,
)

pytestmark = pytest.mark.integration


def test_python_client_end_to_end(live_service):
    result = run_e2e("python", client_env(live_service), timeout=60)
    assert "python client e2e: OK" in result.stderr


def test_python_example_prints_only_a_token(live_service):
    assert_example_prints_a_verified_token("python", live_service, "py-example@example.com")


def test_python_example_does_not_retry_invalid_argument(live_service):
    assert_example_does_not_retry_invalid_argument("python", live_service)


def test_python_example_passes_tls_credentials_and_an_api_key(secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key("python", secured_live_service)
