"""Server interceptors: the standard grpc_server_* metrics, as go-grpc-prometheus names them."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from service.metrics import Metrics


def _service_and_method(full_method: str) -> tuple[str, str]:
    service, _, method = full_method.lstrip("/").rpartition("/")
    return service, method


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every unary RPC of a registered method.

    Unregistered methods are not counted, so a caller cannot grow the label
    set by inventing method names.
    """

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = _service_and_method(handler_call_details.method)
        return handler._replace(unary_unary=self._instrument(handler.unary_unary, service, method))

    def _instrument(
        self, behavior: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]], service: str, method: str
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
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
