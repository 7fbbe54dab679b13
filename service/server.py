"""The gRPC server: TokenService, health, reflection, metrics and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from service.config import ORG_NAME_MAX_BYTES, Config
from service.errors import ConfigError
from service.interceptors import DrainInterceptor, MetricsInterceptor
from service.metrics import Metrics
from service.minting import EMAIL_MAX_BYTES, EXTERNAL_ID_MAX_BYTES, TOKEN_MAX_BYTES, TokenMinter, TokenVerifier
from service.secrets import SecretSource, SecretStore, VaultSecretSource
from service.servicer import SERVICE_NAME, TokenServicer, rpc_handlers
from service.vault_auth import session_from_config

logger = logging.getLogger(__name__)

# Largest encoding of one valid MintTokenRequest inside a batch: three
# length-delimited fields (tag + up to 2 length bytes each) plus the entry's
# own tag and length.
_MAX_BATCH_ENTRY_BYTES = EMAIL_MAX_BYTES + EXTERNAL_ID_MAX_BYTES + ORG_NAME_MAX_BYTES + 3 * 3 + 4
_MESSAGE_SLACK_BYTES = 1024

# A health service name that is SERVING for as long as the process runs, for
# liveness probes; "" and the TokenService name track the signing secrets.
LIVENESS_SERVICE = "liveness"


def max_receive_message_bytes(batch_limit: int) -> int:
    """What the largest valid request needs, and no more."""
    return max(batch_limit * _MAX_BATCH_ENTRY_BYTES, TOKEN_MAX_BYTES) + _MESSAGE_SLACK_BYTES


def _split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


class TokenServer:
    """One running service: build it with a config and a secret source, then start it.

    Tests hand in an in-memory or OpenBao-backed source and a fresh Metrics.
    """

    def __init__(
        self,
        config: Config,
        source: SecretSource,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        serve_metrics: bool = True,
    ) -> None:
        self.config = config
        self._serve_metrics = serve_metrics
        self.metrics = metrics or Metrics()
        self.health = health.aio.HealthServicer()
        self.store = SecretStore(
            config.orgs, source, self.metrics,
            min_secret_bytes=config.min_secret_bytes,
            refresh_interval=config.refresh_interval_seconds,
            jitter_ratio=config.refresh_jitter_ratio,
            max_staleness=config.max_staleness_seconds,
            on_readiness_change=self._set_serving,
            clock=clock,
        )
        servicer = TokenServicer(
            self.store,
            TokenMinter(backdate_seconds=config.iat_backdate_seconds, clock=clock),
            TokenVerifier(clock=clock),
            self.metrics,
            default_org=config.default_org,
            batch_limit=config.batch_limit,
        )
        self._drain = DrainInterceptor({SERVICE_NAME})
        self._server = grpc.aio.server(
            interceptors=[MetricsInterceptor(self.metrics), self._drain],
            options=[("grpc.max_receive_message_length", max_receive_message_bytes(config.batch_limit))],
        )
        self._server.add_generic_rpc_handlers((rpc_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            self._server,
        )
        self.grpc_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Listen, start refreshing secrets, and turn SERVING once every org has one."""
        try:
            self.grpc_port = self._server.add_insecure_port(self.config.grpc_addr)
        except RuntimeError:
            raise ConfigError(f"setting grpc_addr: cannot listen on {self.config.grpc_addr} (in use?)") from None
        if self._serve_metrics:
            host, port = _split_address(self.config.metrics_addr)
            try:
                self.metrics_port = self.metrics.serve_http(host, port)
            except OSError as error:
                raise ConfigError(f"setting metrics_addr: cannot listen on {self.config.metrics_addr}: "
                                  f"{error.strerror}") from None
        await self._set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._server.start()
        self.store.start()

    async def stop(self, grace: float | None = None) -> None:
        """Turn NOT_SERVING, let in-flight RPCs finish within `grace` seconds, then stop."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        await self.health.enter_graceful_shutdown()
        await self._drain.drain(timeout=grace)
        await self.store.stop()
        await self._server.stop(max(0.0, deadline - time.monotonic()))
        self.metrics.stop_http()
        logger.info("stopped")

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service_name in ("", SERVICE_NAME):
            await self.health.set(service_name, status)


async def serve(config: Config, source: SecretSource, *, serve_metrics: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    As a worker (`serve_metrics=False`) the supervisor serves /metrics.
    """
    server = TokenServer(config, source, serve_metrics=serve_metrics)
    await server.start()
    logger.info("listening" if serve_metrics else "worker listening", extra={"fields": {
        "grpc_port": server.grpc_port, "metrics_port": server.metrics_port or None, "orgs": sorted(config.orgs)}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await stop.wait()
    logger.info("shutting down", extra={"fields": {"grace_seconds": config.shutdown_grace_seconds}})
    await server.stop()


def run(config: Config, *, serve_metrics: bool = True) -> None:
    """Serve with the Vault secret source the config describes, until SIGTERM or SIGINT."""
    source = VaultSecretSource(config.vault, session_from_config(config.vault))
    asyncio.run(serve(config, source, serve_metrics=serve_metrics))
