"""Shared fixtures: a real OpenBao dev server, an in-process server on port 0,
and a real `tokenservice serve` process.

Every server listens on 127.0.0.1 and is stopped by its fixture. Tests import
helpers from tests.support, tests.servers and tests.secured, never from here.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from service.dev import OpenBaoDevServer
from tests.secured import SecuredFiles, start_secured_service
from tests.servers import RunningServer, start_server, stop_server, vault_config
from tests.support import ServiceProcess, new_secret


@pytest.fixture(scope="session")
def openbao() -> Iterator[OpenBaoDevServer]:
    """One OpenBao dev server for the whole run; tests use their own KV paths."""
    with OpenBaoDevServer() as server:
        yield server


@pytest.fixture
def secret_path(openbao: OpenBaoDevServer) -> str:
    """A fresh KV path holding one valid secret (version 1)."""
    path = f"kustomer/test-{uuid.uuid4().hex[:12]}"
    openbao.write_secret(path, new_secret())
    return path


@pytest.fixture
async def running(openbao: OpenBaoDevServer, secret_path: str) -> AsyncIterator[RunningServer]:
    """An in-process server against the shared OpenBao, serving once the secret loads."""
    started = await start_server(vault_config(openbao, secret_path))
    try:
        await started.server.store.load_once()
        yield started
    finally:
        await stop_server(started)


@pytest.fixture(scope="session")
def secured_live_service(openbao: OpenBaoDevServer, tmp_path_factory) -> Iterator[tuple[ServiceProcess, SecuredFiles]]:
    """A real `tokenservice serve` with TLS, mTLS, an API-key port and callers (tests/secured.py)."""
    service, files = start_secured_service(openbao, tmp_path_factory.mktemp("secured"))
    try:
        yield service, files
    finally:
        service.terminate()


@pytest.fixture(scope="session")
def live_service(openbao: OpenBaoDevServer) -> Iterator[ServiceProcess]:
    """A real `tokenservice serve` process against the shared OpenBao, SERVING.

    `.secret` is the signing secret as read back from Vault.
    """
    path = f"kustomer/live-{uuid.uuid4().hex[:12]}"
    openbao.write_secret(path, new_secret())
    service = ServiceProcess.start(
        {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "TOKENSERVICE_SECRET_PATH": path}
    )
    service.secret = openbao.read_secret(path)
    try:
        yield service
    finally:
        service.terminate()
