"""Vault Transit's batch requests on the event loop, through aiohttp's client.

hvac sends through requests, which costs about 0.8 ms of CPU a request and
blocks, so it has to run in a worker thread. That thread then shares the GIL
with the busy event loop, and each of its blocking steps waits for the loop to
let go of it (up to the interpreter's 5 ms switch interval): a 0.5 ms round
trip to a local OpenBao took 3-5 ms under load, and transit mints ran at half
the rate. aiohttp sends them from the loop without blocking it.

Vault is reached as hvac's requests session would reach it: TLS verified with
the same CA bundle or directory and the same client certificate, as requests
resolves them from the session and the environment (VAULT_CACERT through hvac,
REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE). Where requests would go through a proxy,
`VaultHttp.like` gives None, and hvac stays in use. No redirect is followed,
no cookie kept, and nothing else is taken from the environment.
"""

from __future__ import annotations

import json
import os
import ssl

import aiohttp
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


class VaultHttp:
    """Up to `connections` kept-alive connections to Vault (aiohttp's pool), opened on first use."""

    def __init__(self, url: str, context: ssl.SSLContext | None, *, connections: int = 1) -> None:
        self._url = url.rstrip("/")
        self._context = context
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

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
        headers = {"X-Vault-Token": token, "X-Vault-Request": "true", "Content-Type": "application/json"}
        try:
            async with self._opened().post(
                self._url + path,
                data=json.dumps(body, separators=(",", ":")).encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                status = response.status
                answer = await _read_bounded(response)
        except TimeoutError:
            raise requests.Timeout(f"no answer from Vault within {timeout:g} s") from None
        except aiohttp.ClientError as error:
            raise requests.ConnectionError(f"the connection to Vault failed ({type(error).__name__})") from None
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
        """Close the connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _opened(self) -> aiohttp.ClientSession:
        # Made on the event loop at the first request: `like` runs in hvac's worker thread.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._connections, ssl=self._context or False),
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,
            )
        return self._session


async def _read_bounded(response: aiohttp.ClientResponse) -> bytes:
    if response.content_length is not None and response.content_length > MAX_RESPONSE_BYTES:
        raise ValueError("answer too large")
    answer = bytearray()
    async for chunk in response.content.iter_any():
        answer += chunk
        if len(answer) > MAX_RESPONSE_BYTES:
            raise ValueError("answer too large")
    return bytes(answer)


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
