"""Server interceptors: the standard grpc_server_* metrics, as go-grpc-prometheus
names them, the drain that lets shutdown lose no call, and caller
authentication for the services that do not check it themselves."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.callers import CallerAuthenticator
from service.errors import ShuttingDownError, TokenServiceError, abort_with_error
from service.metrics import Metrics

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _service_and_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class _UnaryInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of registered unary methods; `wrap` may decline with None.

    A method's handler is wrapped once and reused: wrapping per call showed
    in the profile. The cache holds registered methods only, so it is bounded.
    """

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        cached = self._wrapped.get(handler_call_details.method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler.unary_unary, *_service_and_method(handler_call_details.method))
        result = handler if wrapped is None else handler._replace(unary_unary=wrapped)
        self._wrapped[handler_call_details.method] = (handler, result)
        return result

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior | None:
        raise NotImplementedError


class MetricsInterceptor(_UnaryInterceptor):
    """Counts and times every unary RPC of a registered method.

    Unregistered methods are not counted, so a caller cannot grow the label
    set by inventing method names.
    """

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self._metrics = metrics

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior:
        labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method}
        started_total = self._metrics.grpc_started_total.labels(**labels)
        handling_seconds = self._metrics.grpc_handling_seconds.labels(**labels)
        handled_total = self._metrics.grpc_handled_total

        async def instrumented(request: Any, context: grpc.aio.ServicerContext) -> Any:
            started_total.inc()
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await behavior(request, context)
            except BaseException:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            finally:
                handling_seconds.observe(time.perf_counter() - started)
                handled_total.labels(**labels, grpc_code=code.name).inc()

        return instrumented


class DrainInterceptor(_UnaryInterceptor):
    """Tracks the calls of the given services so that shutdown can wait for them.

    grpc-core cancels calls that reached the server but were not yet handed
    to Python when `stop()` begins; under load that happens to calls a
    client sent just before SIGTERM. So shutdown first drains: new calls are
    refused with UNAVAILABLE `SHUTTING_DOWN` (safe to retry: they were not
    started), accepted ones finish, and only when the server has been quiet
    for a moment is the gRPC server stopped.
    """

    def __init__(self, services: set[str]) -> None:
        super().__init__()
        self._services = services
        self._draining = False
        self._in_flight = 0
        self._last_arrival = time.monotonic()

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior | None:
        if service not in self._services:
            return None

        async def tracked(request: Any, context: grpc.aio.ServicerContext) -> Any:
            self._last_arrival = time.monotonic()
            if self._draining:
                await abort_with_error(context, ShuttingDownError(
                    "the server is shutting down and did not start this call; retry it"))
            self._in_flight += 1
            try:
                return await behavior(request, context)
            finally:
                self._in_flight -= 1

        return tracked

    async def drain(self, timeout: float, quiet_seconds: float = 0.1) -> None:
        """Refuse new calls; return once none is in flight and none arrived for
        `quiet_seconds`, or after `timeout` seconds."""
        self._draining = True
        # Calls queued while the loop was busy are only seen once it is free: wait a quiet spell from now.
        self._last_arrival = time.monotonic()
        deadline = self._last_arrival + timeout
        while time.monotonic() < deadline:
            if self._in_flight == 0 and time.monotonic() - self._last_arrival >= quiet_seconds:
                return
            await asyncio.sleep(0.01)


class AuthenticationInterceptor(grpc.aio.ServerInterceptor):
    """Requires a known caller on every method of the services not in `exempt`
    (TokenService authenticates, audits and applies policy itself), e.g. health
    and reflection when they are not public. Streaming methods are covered too."""

    def __init__(self, authenticator: CallerAuthenticator, exempt: set[str]) -> None:
        self._authenticator = authenticator
        self._exempt = exempt

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        service, _ = _service_and_method(handler_call_details.method)
        if handler is None or service in self._exempt:
            return handler
        kind = next(kind for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
                    if getattr(handler, kind) is not None)
        return handler._replace(**{kind: self._guarded(getattr(handler, kind))})

    async def _require_caller(self, context: grpc.aio.ServicerContext) -> None:
        try:
            self._authenticator.authenticate(context)
        except TokenServiceError as error:
            await abort_with_error(context, error)

    def _guarded(self, behavior: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.isasyncgenfunction(behavior):
            async def guarded_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                await self._require_caller(context)
                async for response in behavior(request, context):
                    yield response

            return guarded_stream

        async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._require_caller(context)
            return await behavior(request, context)

        return guarded
