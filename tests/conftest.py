"""Shared fixtures: a real OpenBao dev server, an in-process server on port 0,
and a real `tokenservice serve` process.

Every server listens on 127.0.0.1 and is stopped by its fixture.
"""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.config import Config, load_config
from service.dev import OpenBaoDevServer
from service.metrics import Metrics
from service.secrets import VaultSecretSource
from service.server import TokenServer
from service.vault_auth import session_from_config
from tests.secured import SecuredFiles, start_secured_service
from tests.support import ServiceProcess


def new_secret() -> str:
    """A random 64-character signing secret, as `tokenservice dev` writes."""
    return secrets.token_urlsafe(48)


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


def vault_config(openbao: OpenBaoDevServer, secret_path: str, **settings: object) -> Config:
    """A config for an in-process server against `openbao`, on ephemeral loopback ports."""
    return load_config(None, {}, {
        "vault.addr": openbao.addr, "vault.token": openbao.root_token, "vault.timeout_seconds": 1,
        "secret_path": secret_path, "grpc_addr": "127.0.0.1:0", "metrics_addr": "127.0.0.1:0",
        "refresh_interval_seconds": 0.5, "shutdown_grace_seconds": 2, **settings,
    })


@dataclasses.dataclass
class RunningServer:
    """An in-process TokenServer with a channel to it."""

    server: TokenServer
    channel: grpc.aio.Channel

    @property
    def stub(self) -> pb_grpc.TokenServiceStub:
        return pb_grpc.TokenServiceStub(self.channel)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


async def start_server(config: Config, source=None) -> RunningServer:
    source = source or VaultSecretSource(config.vault, session_from_config(config.vault))
    server = TokenServer(config, source, metrics=Metrics())
    await server.start()
    return RunningServer(server, grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


async def stop_server(running: RunningServer) -> None:
    await running.channel.close()
    await running.server.stop(grace=1)


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
    service = ServiceProcess.start({
        "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "TOKENSERVICE_SECRET_PATH": path})
    service.secret = openbao.read_secret(path)
    try:
        yield service
    finally:
        service.terminate()
