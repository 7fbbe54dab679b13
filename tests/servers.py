"""An in-process TokenServer on ephemeral loopback ports, against a real OpenBao,
with a grpc.aio channel to it (for tests that need the server's objects; a
separate `tokenservice serve` process is tests.support.ServiceProcess)."""

from __future__ import annotations

import dataclasses

import grpc
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.config import Config, load_config
from service.dev import OpenBaoDevServer
from service.metrics import Metrics
from service.secrets import SecretSource, VaultSecretSource
from service.server import TokenServer
from service.vault_auth import session_from_config


def vault_config(openbao: OpenBaoDevServer, secret_path: str, **settings: object) -> Config:
    """A config for an in-process server against `openbao`, on ephemeral loopback ports."""
    return load_config(
        None,
        {},
        {
            "vault.addr": openbao.addr,
            "vault.token": openbao.root_token,
            "vault.timeout_seconds": 1,
            "secret_path": secret_path,
            "grpc_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
            "refresh_interval_seconds": 0.5,
            "shutdown_grace_seconds": 2,
            **settings,
        },
    )


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


async def start_server(config: Config, source: SecretSource | None = None) -> RunningServer:
    """Start a TokenServer for `config`, reading secrets from `source` (default: the Vault `config` names)."""
    source = source or VaultSecretSource(config.vault, session_from_config(config.vault))
    server = TokenServer(config, source, metrics=Metrics())
    await server.start()
    return RunningServer(server, grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


async def stop_server(running: RunningServer) -> None:
    await running.channel.close()
    await running.server.stop(grace=1)
