"""The event-loop client of Transit's batch requests (service/vault_http.py) against a local HTTP
server that answers as a misbehaving Vault might: it follows nothing, keeps nothing, bounds what it
reads, and raises what hvac would raise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import hvac.exceptions
import pytest
import requests

from service.vault_http import MAX_RESPONSE_BYTES, RedirectedError, VaultHttp


class Answering:
    """A loopback HTTP server whose POST answer is set per test; it records each request's headers."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.body = b'{"data":{}}'
        self.chunked = False
        self.delay = threading.Event()
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.seen.append(dict(self.headers))
                if server.delay.is_set():
                    threading.Event().wait(1.0)
                self.send_response(server.status)
                for name, value in server.headers:
                    self.send_header(name, value)
                if server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(server.body), 65536):
                        piece = server.body[start : start + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def vault() -> Iterator[Answering]:
    server = Answering()
    yield server
    server.close()


async def _post(vault: Answering, timeout: float = 5.0) -> object:
    client = VaultHttp(vault.url, None, connections=1)
    try:
        return await client.post("/v1/transit/hmac/k/sha2-256", {"batch_input": []}, "t0ken", timeout)
    finally:
        await client.close()


async def test_a_redirect_is_reported_not_followed(vault):
    elsewhere = Answering()
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
