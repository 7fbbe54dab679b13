"""Types of the grpc.aio server API as this service uses it, shared by the servicer, the interceptors and tracing."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc

# The handlers and helpers that take a context serve several RPCs, so its request and response types are open;
# each RPC's own messages are typed where the servicer builds them.
ServicerContext: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# A unary RPC's implementation, as the interceptors wrap it.
Behavior: TypeAlias = Callable[[Any, ServicerContext], Awaitable[Any]]


def status_code(context: ServicerContext) -> grpc.StatusCode | None:
    """The status code the RPC has been given so far: None while it has none, which grpc's stubs leave out."""
    code: grpc.StatusCode | None = context.code()
    return code
