"""The gRPC server: TokenService, health, reflection, metrics and shutdown."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import multiprocessing
import signal
import time
from collections.abc import Callable
from typing import cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from service.addresses import announce, explain_listen_failure, listening_fields, parse_address, withdraw
from service.api_keys import ApiKeyStore
from service.audit import AuditLog
from service.callers import CallerAuthenticator
from service.config import ORG_NAME_MAX_BYTES, Config, LimitsConfig
from service.errors import ConfigError
from service.health import ServedHealth
from service.interceptors import (
    AuthenticationInterceptor,
    CallLimit,
    DrainInterceptor,
    InterceptingRegistrar,
    Interceptor,
    KnownCredentials,
    MetricsInterceptor,
    TracingInterceptor,
    UnauthenticatedLimit,
)
from service.malloc_arenas import cap_malloc_arenas
from service.metrics import Metrics
from service.minting import EMAIL_MAX_BYTES, EXTERNAL_ID_MAX_BYTES, TOKEN_MAX_BYTES, TokenMinter, TokenVerifier
from service.secrets import SecretSource, SecretStore, VaultSecretSource
from service.servicer import SERVICE_NAME, TokenServicer, rpc_handlers
from service.signing import TransitOrgs
from service.tls import CertificateFiles
from service.tracing import Tracing
from service.transit import TransitMetrics
from service.vault_auth import session_from_config

logger = logging.getLogger(__name__)

# Largest encoding of one valid MintTokenRequest inside a batch: three
# length-delimited fields (tag + up to 2 length bytes each) plus the entry's
# own tag and length.
_MAX_BATCH_ENTRY_BYTES = EMAIL_MAX_BYTES + EXTERNAL_ID_MAX_BYTES + ORG_NAME_MAX_BYTES + 3 * 3 + 4
_MESSAGE_SLACK_BYTES = 1024
# Largest encoding of one batch result: a token response (the token, two
# timestamps, version, identity) or a google.rpc.Status, whose message and
# ErrorInfo stay well under a kilobyte.
_MAX_BATCH_RESULT_BYTES = TOKEN_MAX_BYTES + 1024
# Health requests name a service of a few dozen bytes: the plaintext health
# port reads no more than this from anyone.
HEALTH_MAX_MESSAGE_BYTES = 1024
_STREAM_LOOKAHEAD_BYTES = 4 * 1024
# The kubelet opens a connection per probe and three probes at most run at once: this is many times that,
# and what a peer can hold open there (about 25 KB a call) stays a few MB.
HEALTH_MAX_CONCURRENT_RPCS = 100

# A health service name that is SERVING for as long as the process runs, for
# liveness probes; "" and the TokenService name track the signing secrets.
LIVENESS_SERVICE = "liveness"
HEALTH_SERVICES = ("", SERVICE_NAME, LIVENESS_SERVICE)


def max_receive_message_bytes(batch_limit: int) -> int:
    """What the largest valid request needs, and no more."""
    return max(batch_limit * _MAX_BATCH_ENTRY_BYTES, TOKEN_MAX_BYTES) + _MESSAGE_SLACK_BYTES


def max_send_message_bytes(batch_limit: int) -> int:
    """What the largest response (a full batch, or a reflection answer) needs."""
    return batch_limit * _MAX_BATCH_RESULT_BYTES + 64 * 1024


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def server_options(
    limits: LimitsConfig, *, max_receive: int, max_send: int, share_ports: bool = False
) -> list[tuple[str, int]]:
    """The grpc-core limits of one server: what any peer, credentials or not, may hold on it."""
    return [
        # Only workers share their ports (with each other, under their supervisor's claim; see
        # service/addresses.py); otherwise a second process must fail to bind, not take half the connections.
        ("grpc.so_reuseport", int(share_ports)),
        ("grpc.max_receive_message_length", max_receive),
        ("grpc.max_send_message_length", max_send),
        ("grpc.max_concurrent_streams", limits.max_concurrent_streams),
        # What grpc-core buffers of a stream before the handler reads it: 4 KB, not 64 KB, and not grown by
        # bandwidth probing, so 100 streams a connection hold 400 KB (tests/bench/hostile.py with 16,000
        # streams: +55 MiB at 8 KB, +42 at 4 KB). Reading opens the window to the announced message size,
        # so a batch over 4 KB costs one round trip more, on loopback 0.1 ms.
        ("grpc.http2.lookahead_bytes", _STREAM_LOOKAHEAD_BYTES),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.max_allowed_incoming_connections", limits.max_connections),
        ("grpc.max_connection_idle_ms", _milliseconds(limits.max_connection_idle_seconds)),
        # Certificate callers re-handshake, so an expired or replaced certificate stops working.
        ("grpc.max_connection_age_ms", _milliseconds(limits.max_connection_age_seconds)),
        ("grpc.max_connection_age_grace_ms", _milliseconds(limits.max_connection_age_grace_seconds)),
        # Keepalive pings are welcome at this interval, with or without calls; a peer pinging
        # faster gets a strike, and after max_ping_strikes a GOAWAY.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", _milliseconds(limits.min_ping_interval_seconds)),
        ("grpc.http2.max_ping_strikes", 2),
        # Soft and hard limit alike, so that a header list over it is always refused, never by chance.
        ("grpc.max_metadata_size", limits.max_metadata_bytes),
        ("grpc.absolute_max_metadata_size", limits.max_metadata_bytes),
    ]


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
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.tracing = tracing or Tracing.disabled()
        self._serve_metrics = serve_metrics
        self.metrics = metrics or Metrics()
        self.health = ServedHealth(HEALTH_SERVICES)
        self.store = SecretStore(
            config.orgs,
            source,
            self.metrics,
            min_secret_bytes=config.min_secret_bytes,
            refresh_interval=config.refresh_interval_seconds,
            jitter_ratio=config.refresh_jitter_ratio,
            max_staleness=config.max_staleness_seconds,
            on_readiness_change=self._update_serving,
            clock=clock,
        )
        # Orgs with signing = "transit" have no secret in the store: Vault Transit signs for them.
        has_transit = any(org.transit for org in config.orgs.values())
        self.transit = TransitOrgs(
            config.orgs,
            config.transit,
            functools.partial(session_from_config, config.vault),
            metrics=TransitMetrics(self.metrics.registry) if has_transit else None,
            refresh_interval=config.refresh_interval_seconds,
            jitter_ratio=config.refresh_jitter_ratio,
            on_readiness_change=self._update_serving,
            clock=clock,
        )
        self.api_keys = None
        if config.auth.enabled and config.auth.api_keys_path:
            self.api_keys = ApiKeyStore(
                config.auth.api_keys_path,
                source,
                self.metrics,
                config.auth.callers,
                refresh_interval=config.refresh_interval_seconds,
                jitter_ratio=config.refresh_jitter_ratio,
                max_staleness=config.auth.api_keys_max_staleness_seconds,
                on_readiness_change=self._update_serving,
                clock=clock,
            )
        self.audit = audit or AuditLog.from_config(config.audit, caller_auth=config.auth.enabled, metrics=self.metrics)
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
            transit=self.transit.signers,
            traced=self.tracing.enabled,
        )
        self._drain = DrainInterceptor({SERVICE_NAME})
        interceptors: list[Interceptor] = [MetricsInterceptor(self.metrics), self._drain]
        self.unauthenticated = None
        if config.auth.enabled:
            # With caller authentication off every peer is the same unknown caller: nothing to tell apart.
            self.unauthenticated = UnauthenticatedLimit(
                KnownCredentials(self.api_keys),
                self.metrics,
                authenticator.refusals,
                max_calls=config.limits.max_unauthenticated_calls,
                read_timeout=config.limits.unauthenticated_read_timeout_seconds,
            )
            interceptors.insert(0, self.unauthenticated)
        if config.auth.enabled and not config.auth.public_health:
            interceptors.append(AuthenticationInterceptor(authenticator, exempt={SERVICE_NAME}))
        self._spans = self.tracing.server_spans(parse_address(config.grpc_addr).host, services={SERVICE_NAME})
        if self.tracing.enabled:
            # Inside the limit on callers without credentials, so that what it refuses costs no span.
            interceptors.insert(1 if self.unauthenticated else 0, TracingInterceptor(self._spans))
        # Outermost: a call over the process's limit costs nothing more (no metrics, span or audit record).
        interceptors.insert(0, CallLimit(self.metrics, max_calls=config.limits.max_concurrent_rpcs))
        self._server = grpc.aio.server(
            options=server_options(
                config.limits,
                max_receive=max_receive_message_bytes(config.batch_limit),
                max_send=max_send_message_bytes(config.batch_limit),
                share_ports=not serve_metrics,
            ),
        )
        registrar = InterceptingRegistrar(self._server, interceptors)
        registrar.add_generic_rpc_handlers((rpc_handlers(servicer),))
        # The generated add_*_to_server functions call only the two methods the registrar has.
        as_server = cast(grpc.aio.Server, registrar)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, as_server)
        # Not enable_server_reflection: it picks the aio servicer only for a grpc.aio.Server itself.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer(
                (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            ),
            as_server,
        )
        self._health_server = None
        if config.health_addr:
            # Kubelet gRPC probes speak neither TLS nor API keys: a plaintext port with health alone.
            self._health_server = grpc.aio.server(
                options=server_options(
                    config.limits,
                    max_receive=HEALTH_MAX_MESSAGE_BYTES,
                    max_send=HEALTH_MAX_MESSAGE_BYTES,
                    share_ports=not serve_metrics,
                ),
            )
            health_limit = CallLimit(
                self.metrics, max_calls=HEALTH_MAX_CONCURRENT_RPCS, set_by="the health port's own limit"
            )
            health_pb2_grpc.add_HealthServicer_to_server(
                self.health, cast(grpc.aio.Server, InterceptingRegistrar(self._health_server, [health_limit]))
            )
        self.grpc_port = 0
        self.api_key_port = 0
        self.health_port = 0
        self.metrics_port = 0

    async def start(self) -> None:
        """Listen, start refreshing secrets, and turn SERVING once every org has one."""
        self.grpc_port, self.api_key_port = self._add_ports()
        tls = self.config.tls
        api_key_port = (parse_address(tls.api_key_addr).host, self.api_key_port) if tls and tls.api_key_addr else None
        self._spans.listening(self.grpc_port, api_key_port)
        if self._health_server is not None and self.config.health_addr:
            self.health_port = _listen(self._health_server, "health_addr", self.config.health_addr, None)
        if self._serve_metrics:
            host, port = parse_address(self.config.metrics_addr)
            try:
                self.metrics_port = self.metrics.serve_http(host, port)
            except OSError as error:
                raise ConfigError(
                    f"setting metrics_addr: cannot listen on {self.config.metrics_addr}: {error.strerror}"
                ) from None
        await self._set_serving(False)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        await self._server.start()
        if self._health_server is not None:
            await self._health_server.start()
        self.store.start()
        self.transit.start()
        if self.api_keys is not None:
            self.api_keys.start()

    def _add_ports(self) -> tuple[int, int]:
        tls = self.config.tls
        if tls is None:
            return _listen(self._server, "grpc_addr", self.config.grpc_addr, None), 0
        files = CertificateFiles(
            tls, self.metrics, require_client_certificate=tls.client_ca_file is not None, port_name="grpc_addr"
        )
        grpc_port = _listen(self._server, "grpc_addr", self.config.grpc_addr, files.credentials())
        if not tls.api_key_addr:
            return grpc_port, 0
        api_key_files = CertificateFiles(
            tls, self.metrics, require_client_certificate=False, port_name="tls.api_key_addr"
        )
        return grpc_port, _listen(self._server, "tls.api_key_addr", tls.api_key_addr, api_key_files.credentials())

    async def stop(self, grace: float | None = None) -> None:
        """Turn NOT_SERVING, refuse new calls, and stop once the accepted ones have finished
        (or `grace` seconds have passed)."""
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        deadline = time.monotonic() + grace
        await self.health.enter_graceful_shutdown()
        if not await self._drain.drain(timeout=grace):
            logger.warning(
                "calls still in flight at the end of the grace period are cut off",
                extra={"fields": {"in_flight": self._drain.in_flight}},
            )
        await self.store.stop()
        await self.transit.stop()
        if self.api_keys is not None:
            await self.api_keys.stop()
        stopping = asyncio.ensure_future(self._server.stop(max(0.0, deadline - time.monotonic())))
        # Its first step tells grpc-core to stop, which sends every client a GOAWAY: refused now,
        # the held calls are retried on a new connection (another replica), not on this one.
        await asyncio.sleep(0)
        self._drain.release()
        self.health.end_watches()
        await stopping
        if self._health_server is not None:
            await self._health_server.stop(0)
        self.metrics.stop_http()
        self.audit.close()
        # The spans of the last calls, within what is left of the grace period.
        await asyncio.to_thread(self.tracing.shutdown, max(0.5, deadline - time.monotonic()))
        logger.info("stopped")

    async def _update_serving(self, _ready: bool | None = None) -> None:
        # Without a fresh key set every API key is refused: NOT_SERVING tells probes and balancers why.
        keys_ready = self.api_keys is None or self.api_keys.is_ready()
        # A transit org whose signer is unhealthy could only fail its mints: NOT_SERVING, until Vault answers.
        await self._set_serving(self.store.is_ready() and keys_ready and self.transit.is_ready())

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
        raise explain_listen_failure(setting, address) from None


async def serve(config: Config, source: SecretSource, *, serve_metrics: bool = True) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully.

    As a worker (`serve_metrics=False`) the supervisor serves /metrics, and the worker's announcement
    (its config's ports_file) is for the supervisor, which announces the service once every worker listens.
    """
    # Each worker exports its own spans, its resource naming the worker.
    worker = None if serve_metrics else multiprocessing.current_process().name
    tracing = Tracing.from_config(config.tracing, worker) if config.tracing.enabled else None
    server = TokenServer(config, source, serve_metrics=serve_metrics, tracing=tracing)
    await server.start()
    # What start-up made (modules, the OpenTelemetry SDK when tracing is on) lives as long as the process:
    # out of the collector's generations, a full collection walks only what calls made. With tracing on at
    # 1 %, that was 20 k of a call's 810 k instructions (tests/bench/instructions.py's method).
    gc.freeze()
    announce(
        "listening" if serve_metrics else "worker listening",
        listening_fields(
            config,
            grpc_port=server.grpc_port,
            metrics_port=server.metrics_port,
            api_key_port=server.api_key_port,
            health_port=server.health_port,
        ),
        config.ports_file,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)
    await stop.wait()
    withdraw(config.ports_file)
    logger.info("shutting down", extra={"fields": {"grace_seconds": config.shutdown_grace_seconds}})
    await server.stop()


def warn_if_insecure(config: Config) -> None:
    """Say loudly at start what is unprotected."""
    if not config.auth.enabled:
        logger.warning(
            "caller authentication is OFF: anyone who can reach the gRPC port can mint tokens for any "
            "customer (--insecure-no-caller-auth)"
        )
    elif config.tls is None and config.auth.api_keys_path:
        logger.warning(
            "API keys are accepted without TLS (auth.insecure_api_keys_over_plaintext, for development "
            "only): keys cross the network in clear text; configure tls.cert_file and tls.key_file"
        )


def run(config: Config, *, serve_metrics: bool = True) -> None:
    """Serve with the Vault secret source the config describes, until SIGTERM or SIGINT."""
    cap_malloc_arenas()
    source = VaultSecretSource(config.vault, session_from_config(config.vault))
    asyncio.run(serve(config, source, serve_metrics=serve_metrics))
