"""The gRPC server: TokenService, health, reflection, metrics and shutdown."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service.api_keys import ApiKeyStore
from service.audit import AuditLog
from service.callers import CallerAuthenticator
from service.config import ORG_NAME_MAX_BYTES, Config
from service.errors import ConfigError
from service.interceptors import (
    AuthenticationInterceptor,
    DrainInterceptor,
    InterceptingRegistrar,
    MetricsInterceptor,
)
from service.metrics import Metrics
from service.minting import EMAIL_MAX_BYTES, EXTERNAL_ID_MAX_BYTES, TOKEN_MAX_BYTES, TokenMinter, TokenVerifier
from service.secrets import SecretSource, SecretStore, VaultSecretSource
from service.servicer import SERVICE_NAME, TokenServicer, rpc_handlers
from service.tls import CertificateFiles
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
        audit: AuditLog | None = None,
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
            on_readiness_change=self._update_serving,
            clock=clock,
        )
        self.api_keys = None
        if config.auth.enabled and config.auth.api_keys_path:
            self.api_keys = ApiKeyStore(
                config.auth.api_keys_path, source, self.metrics, config.auth.callers,
                refresh_interval=config.refresh_interval_seconds, jitter_ratio=config.refresh_jitter_ratio,
                on_first_load=self._update_serving)
        self.audit = audit or AuditLog.from_config(config.audit, caller_auth=config.auth.enabled)
        authenticator = CallerAuthenticator(config.auth, self.api_keys, self.metrics)
        servicer = TokenServicer(
            self.store,
            TokenMinter(backdate_seconds=config.iat_backdate_seconds, clock=clock),
            TokenVerifier(clock=clock),
            self.metrics,
            authenticator,
            self.audit,
            default_org=config.default_org,
            batch_limit=config.batch_limit,
        )
        self._drain = DrainInterceptor({SERVICE_NAME})
        interceptors = [MetricsInterceptor(self.metrics), self._drain]
        if config.auth.enabled and not config.auth.public_health:
            interceptors.append(AuthenticationInterceptor(authenticator, exempt={SERVICE_NAME}))
        self._server = grpc.aio.server(
            options=[("grpc.max_receive_message_length", max_receive_message_bytes(config.batch_limit))],
        )
        registrar = InterceptingRegistrar(self._server, interceptors)
        registrar.add_generic_rpc_handlers((rpc_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(self.health, registrar)
        # Not enable_server_reflection: it picks the aio servicer only for a grpc.aio.Server itself.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(reflection.aio.ReflectionServicer(
            (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)),
            registrar)
        self._health_server = None
        if config.health_addr:
            # Kubelet gRPC probes speak neither TLS nor API keys: a plaintext port with health alone.
            self._health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        self.grpc_port = 0
        self.api_key_port = 0
        self.health_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Listen, start refreshing secrets, and turn SERVING once every org has one."""
        self.grpc_port, self.api_key_port = self._add_ports()
        if self._health_server is not None:
            self.health_port = _listen(self._health_server, "health_addr", self.config.health_addr, None)
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
        if self._health_server is not None:
            await self._health_server.start()
        self.store.start()
        if self.api_keys is not None:
            self.api_keys.start()

    def _add_ports(self) -> tuple[int, int]:
        tls = self.config.tls
        if tls is None:
            return _listen(self._server, "grpc_addr", self.config.grpc_addr, None), 0
        files = CertificateFiles(tls, self.metrics, require_client_certificate=tls.client_ca_file is not None,
                                 port_name="grpc_addr")
        grpc_port = _listen(self._server, "grpc_addr", self.config.grpc_addr, files.credentials())
        if not tls.api_key_addr:
            return grpc_port, 0
        api_key_files = CertificateFiles(tls, self.metrics, require_client_certificate=False,
                                         port_name="tls.api_key_addr")
        return grpc_port, _listen(self._server, "tls.api_key_addr", tls.api_key_addr, api_key_files.credentials())

    async def stop(self, grace: float | None = None) -> None:
        """Turn NOT_SERVING, let in-flight RPCs finish within `grace` seconds, then stop."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        await self.health.enter_graceful_shutdown()
        await self._drain.drain(timeout=grace)
        await self.store.stop()
        if self.api_keys is not None:
            await self.api_keys.stop()
        await self._server.stop(max(0.0, deadline - time.monotonic()))
        if self._health_server is not None:
            await self._health_server.stop(0)
        self.metrics.stop_http()
        self.audit.close()
        logger.info("stopped")

    async def _update_serving(self, _secrets_ready: bool | None = None) -> None:
        keys_ready = self.api_keys is None or self.api_keys.loaded
        await self._set_serving(self.store.is_ready() and keys_ready)

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for service_name in ("", SERVICE_NAME):
            await self.health.set(service_name, status)


def _listen(server: grpc.aio.Server, setting: str, address: str, credentials: grpc.ServerCredentials | None) -> int:
    try:
        if credentials is None:
            return server.add_insecure_port(address)
        return server.add_secure_port(address, credentials)
    except RuntimeError:
        raise ConfigError(f"setting {setting}: cannot listen on {address} (in use?)") from None


async def serve(config: Config, source: SecretSource, *, serve_metrics: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    As a worker (`serve_metrics=False`) the supervisor serves /metrics.
    """
    server = TokenServer(config, source, serve_metrics=serve_metrics)
    await server.start()
    logger.info("listening" if serve_metrics else "worker listening", extra={"fields": {
        "grpc_port": server.grpc_port, "metrics_port": server.metrics_port or None, **_listening_fields(server)}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await stop.wait()
    logger.info("shutting down", extra={"fields": {"grace_seconds": config.shutdown_grace_seconds}})
    await server.stop()


def _listening_fields(server: TokenServer) -> dict:
    config = server.config
    return {
        "api_key_port": server.api_key_port or None,
        "health_port": server.health_port or None,
        "orgs": sorted(config.orgs),
        "tls": "mtls" if config.tls and config.tls.client_ca_file else "tls" if config.tls else "off",
        "callers": sorted(config.auth.callers),
    }


def warn_if_insecure(config: Config) -> None:
    """Say loudly at start what is unprotected."""
    if not config.auth.enabled:
        logger.warning("caller authentication is OFF: anyone who can reach the gRPC port can mint tokens for any "
                       "customer (--insecure-no-caller-auth)")
    elif config.tls is None and config.auth.api_keys_path:
        logger.warning("API keys are accepted without TLS: keys cross the network in clear text; configure "
                       "tls.cert_file and tls.key_file")


def run(config: Config, *, serve_metrics: bool = True) -> None:
    """Serve with the Vault secret source the config describes, until SIGTERM or SIGINT."""
    source = VaultSecretSource(config.vault, session_from_config(config.vault))
    asyncio.run(serve(config, source, serve_metrics=serve_metrics))
