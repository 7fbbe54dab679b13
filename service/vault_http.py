"""Vault Transit's batch requests on the event loop: HTTP/1.1 over a kept-alive connection.

hvac sends through requests, which costs about 0.8 ms of CPU a request and
blocks, so it has to run in a worker thread. That thread then shares the GIL
with the busy event loop, and each of its blocking steps waits for the loop to
let go of it (up to the interpreter's 5 ms switch interval): a 0.5 ms round
trip to a local OpenBao took 3-5 ms under load, and transit mints ran at half
the rate. Here a request costs about 0.1 ms on the loop and never blocks it.

Vault is reached as hvac's requests session would reach it: TLS verified with
the same CA bundle or directory and the same client certificate, as requests
resolves them from the session and the environment (VAULT_CACERT through hvac,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). Where requests would go through a proxy,
`VaultHttp.like` gives None, and hvac stays in use.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import urllib.parse

import hvac
import hvac.utils
import requests
import requests.certs
import requests.utils

# Transit's batch answers are a few hundred bytes an input; anything far larger is not one.
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class RedirectedError(Exception):
    """Raised when Vault answers with a redirect (a standby node that does not forward): hvac, which
    follows redirects, has to send that request."""


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class VaultHttp:
    """Up to `connections` kept-alive connections to Vault, a request at a time on each; a connection
    is closed after any failure, and another opened when needed."""

    def __init__(self, url: str, context: ssl.SSLContext | None, *, connections: int = 1) -> None:
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._authority = parts.netloc.rpartition("@")[2]
        self._context = context
        self._idle: list[Streams] = []
        self._slots = asyncio.Semaphore(connections)

    @classmethod
    def like(cls, client: hvac.Client, *, connections: int = 1) -> VaultHttp | None:
        """Connections to `client`'s Vault with its TLS settings; None when requests would use a proxy."""
        session = client.adapter.session
        # As hvac's adapter sends them: its session's verify and cert, which the environment overrides only
        # where verify is True (REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE), and the environment's proxies.
        settings = session.merge_environment_settings(client.url, {}, None, session.verify, session.cert)
        if requests.utils.select_proxy(client.url, settings["proxies"]):
            return None
        context = _tls_context(settings["verify"], settings["cert"]) if client.url.startswith("https://") else None
        return cls(client.url, context, connections=connections)

    async def post(self, path: str, body: object, token: str, timeout: float) -> object:
        """POST `body` as JSON to `path` with `token`; the JSON answer. Vault's refusals raise hvac's
        exceptions (as hvac would), a redirect RedirectedError; no answer within `timeout` raises
        requests.Timeout, a broken or refused connection requests.ConnectionError, an answer that is not
        JSON a ValueError."""
        data = json.dumps(body, separators=(",", ":")).encode()
        async with self._slots:
            # The connection of this request, once it has one (an idle one, or one opened for it).
            used: list[Streams] = [self._idle.pop()] if self._idle else []
            try:
                status, answer, reusable = await asyncio.wait_for(self._exchange(used, path, data, token), timeout)
            except TimeoutError:
                _close(used)
                raise requests.Timeout(f"no answer from Vault within {timeout:g} s") from None
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as error:
                _close(used)
                raise requests.ConnectionError(f"the connection to Vault failed ({type(error).__name__})") from None
            except BaseException:
                _close(used)  # cancelled mid-exchange: what is left on the connection is unknown
                raise
            if reusable:
                self._idle.extend(used)
            else:
                _close(used)
        if 300 <= status < 400:
            raise RedirectedError(f"Vault answered HTTP {status}, a redirect")
        parsed = json.loads(answer) if answer else {}
        if status >= 400:
            errors = parsed.get("errors") if isinstance(parsed, dict) else None
            hvac.utils.raise_for_error(
                "post", path, status, errors=errors, text=answer.decode(errors="replace"), json=parsed
            )
        return parsed

    async def close(self) -> None:
        """Close the idle connections (those in use close when their request ends or fails)."""
        _close(self._idle)
        self._idle = []

    async def _exchange(self, used: list[Streams], path: str, data: bytes, token: str) -> tuple[int, bytes, bool]:
        if not used:
            used.append(
                await asyncio.open_connection(
                    self._host, self._port, ssl=self._context, server_hostname=self._host if self._context else None
                )
            )
        reader, writer = used[0]
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self._authority}\r\nX-Vault-Token: {token}\r\n"
            f"X-Vault-Request: true\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "\r\n".encode()
            + data
        )
        await writer.drain()
        status, headers = await _read_head(reader)
        if headers.get("transfer-encoding", "").lower() == "chunked":
            answer = await _read_chunked(reader)
        else:
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= MAX_RESPONSE_BYTES:
                raise ValueError("answer too large")
            answer = await reader.readexactly(length)
        return status, answer, headers.get("connection", "").lower() != "close"


def _close(connections: list[Streams]) -> None:
    for _, writer in connections:
        writer.close()


def _tls_context(verify: bool | str | None, cert: str | tuple[str, str] | None) -> ssl.SSLContext:
    """The TLS client context requests (urllib3) builds for these settings; `verify` None (a session
    without a setting, which hvac never makes) verifies with the default CAs, as True does."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        where = verify if isinstance(verify, str) else requests.utils.DEFAULT_CA_BUNDLE_PATH
        if os.path.isdir(where):
            context.load_verify_locations(capath=where)
        else:
            context.load_verify_locations(cafile=where)
    if isinstance(cert, (tuple, list)):
        context.load_cert_chain(cert[0], cert[1])
    elif cert:
        context.load_cert_chain(cert)
    return context


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise ValueError("not an HTTP/1.x answer")
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if not line:
            raise asyncio.IncompleteReadError(b"", None)
        if line in (b"\r\n", b"\n"):
            return int(parts[1]), headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    total = 0
    while True:
        size = int((await reader.readline()).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        total += size
        if total > MAX_RESPONSE_BYTES:
            raise ValueError("answer too large")
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
