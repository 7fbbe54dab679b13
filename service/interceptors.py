"""Server interceptors: the standard grpc_server_* metrics, as go-grpc-prometheus
names them, the drain that lets shutdown lose no call, and caller
authentication for the services that do not check it themselves.

Each wraps a method handler once, when its service registers through an
`InterceptingRegistrar`, rather than on every call."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from service.callers import CallerAuthenticator
from service.errors import ShuttingDownError, TokenServiceError, abort_with_error
from service.metrics import Metrics

Behavior = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


def _service_and_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class _UnaryInterceptor:
    """Wraps the behaviour of unary methods; `wrap` may decline with None."""

    def intercept(self, handler: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
        """The handler with this interceptor's work around it."""
        if handler.unary_unary is None:
            return handler
        wrapped = self.wrap(handler.unary_unary, service, method)
        return handler if wrapped is None else handler._replace(unary_unary=wrapped)

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior | None:
        raise NotImplementedError


class MetricsInterceptor(_UnaryInterceptor):
    """Counts and times every unary RPC of a registered method.

    Unregistered methods are not counted, so a caller cannot grow the label
    set by inventing method names.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior:
        labels = {"grpc_type": "unary", "grpc_service": service, "grpc_method": method}
        started_total = self._metrics.grpc_started_total.labels(**labels)
        handling_seconds = self._metrics.grpc_handling_seconds.labels(**labels)
        handled_total = self._metrics.grpc_handled_total
        handled_by_code: dict[grpc.StatusCode, Any] = {}  # labels() per call showed in the profile

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
                handled = handled_by_code.get(code)
                if handled is None:
                    handled = handled_by_code[code] = handled_total.labels(**labels, grpc_code=code.name)
                handled.inc()

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


class AuthenticationInterceptor:
    """Requires a known caller on every method of the services not in `exempt`
    (TokenService authenticates, audits and applies policy itself), e.g. health
    and reflection when they are not public. Streaming methods are covered too."""

    def __init__(self, authenticator: CallerAuthenticator, exempt: set[str]) -> None:
        self._authenticator = authenticator
        self._exempt = exempt

    def intercept(self, handler: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
        """The handler, refusing calls without a known caller unless `service` is exempt."""
        if service in self._exempt:
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


Interceptor = _UnaryInterceptor | AuthenticationInterceptor


class InterceptingRegistrar:
    """Stands in for the server while services register, and puts the interceptors
    around each method handler then, once (the first interceptor outermost).

    In place of grpc.aio interceptors, which run as a chain of coroutines on every
    call: dropping them raised unary MintToken by about 5 % with 2 workers (10 % with one)."""

    def __init__(self, server: grpc.aio.Server, interceptors: Sequence[Interceptor]) -> None:
        self._server = server
        self._interceptors = interceptors

    def add_generic_rpc_handlers(self, generic_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """As `grpc.aio.Server.add_generic_rpc_handlers`, with the handlers they find intercepted."""
        self._server.add_generic_rpc_handlers(
            tuple(_InterceptedGenericHandler(handler, self._intercept) for handler in generic_handlers))

    def add_registered_method_handlers(self, service: str, method_handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        """As `grpc.aio.Server.add_registered_method_handlers`, with each handler intercepted."""
        self._server.add_registered_method_handlers(
            service, {method: self._intercept(handler, service, method) for method, handler in method_handlers.items()})

    def _intercept(self, handler: grpc.RpcMethodHandler, service: str, method: str) -> grpc.RpcMethodHandler:
        for interceptor in reversed(self._interceptors):
            handler = interceptor.intercept(handler, service, method)
        return handler


class _InterceptedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose handlers are intercepted, once per method: the
    cache holds the methods the inner handler knows only, so it is bounded."""

    def __init__(self, inner: grpc.GenericRpcHandler,
                 intercept: Callable[[grpc.RpcMethodHandler, str, str], grpc.RpcMethodHandler]) -> None:
        self._inner = inner
        self._intercept = intercept
        self._intercepted: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        cached = self._intercepted.get(handler_call_details.method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._intercept(handler, *_service_and_method(handler_call_details.method)))
            self._intercepted[handler_call_details.method] = cached
        return cached[1]
