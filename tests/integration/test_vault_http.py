"""The event-loop client of Transit's batch requests (service/vault_http.py) against a local HTTP
server that answers as a misbehaving Vault might: it follows nothing, keeps nothing, bounds what it
reads, and raises what hvac would raise."""

from __future__ import annotations

import json
from collections.abc import Iterator

import hvac.exceptions
import pytest
import requests

from service.vault_http import MAX_RESPONSE_BYTES, RedirectedError, VaultHttp
from tests.support_transit import AnsweringVault


@pytest.fixture
def vault() -> Iterator[AnsweringVault]:
    server = AnsweringVault()
    yield server
    server.close()


async def _post(vault: AnsweringVault, timeout: float = 5.0) -> object:
    client = VaultHttp(vault.url, None, connections=1)
    try:
        return await client.post("/v1/transit/hmac/k/sha2-256", {"batch_input": []}, "t0ken", timeout)
    finally:
        await client.close()


async def test_a_redirect_is_reported_not_followed(vault):
    elsewhere = AnsweringVault()
    try:
        vault.status, vault.headers = 307, [("Location", elsewhere.url + "/v1/transit/hmac/k/sha2-256")]
        with pytest.raises(RedirectedError):
            await _post(vault)
        assert elsewhere.seen == []  # neither the request nor the token went there
    finally:
        elsewhere.close()


async def test_refusals_raise_what_hvac_raises(vault):
    vault.status, vault.body = 403, json.dumps({"errors": ["permission denied"]}).encode()
    with pytest.raises(hvac.exceptions.Forbidden):
        await _post(vault)


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_answer_over_the_limit_is_refused_unread(vault, chunked):
    vault.body, vault.chunked = b" " * (MAX_RESPONSE_BYTES + 1), chunked
    with pytest.raises(ValueError, match="too large"):
        await _post(vault)


async def test_no_answer_in_time_is_a_timeout_and_a_closed_port_a_connection_error(vault):
    vault.delay.set()
    with pytest.raises(requests.Timeout):
        await _post(vault, timeout=0.2)
    vault.close()
    with pytest.raises(requests.ConnectionError):
        await _post(vault)


async def test_cookies_are_not_kept_and_the_token_goes_only_in_its_header(vault):
    vault.headers = [("Set-Cookie", "session=tracked; Path=/")]
    client = VaultHttp(vault.url, None, connections=1)
    try:
        for _ in range(2):
            await client.post("/v1/transit/hmac/k/sha2-256", {}, "t0ken", 5.0)
    finally:
        await client.close()
    assert [headers.get("Cookie") for headers in vault.seen] == [None, None]
    assert all(headers["X-Vault-Token"] == "t0ken" for headers in vault.seen)
