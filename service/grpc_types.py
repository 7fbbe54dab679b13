"""Types of the grpc.aio server API as this service uses it, shared by the servicer, the interceptors and tracing."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any, Protocol, TypeAlias

import grpc

# The handlers and helpers that take a context serve several RPCs, so its request and response types are open;
# each RPC's own messages are typed where the servicer builds them.
ServicerContext: TypeAlias = grpc.aio.ServicerContext[Any, Any]
# A unary RPC's implementation, as the interceptors wrap it.
Behavior: TypeAlias = Callable[[Any, ServicerContext], Awaitable[Any]]
# A call's metadata as grpc gives it: (key, value) pairs, values str or, for -bin keys, bytes.
Metadata: TypeAlias = Collection[tuple[str, str | bytes]]


class MetadataSource(Protocol):
    """What `invocation_metadata` reads of a context (a ServicerContext is one)."""

    def invocation_metadata(self) -> Metadata | None: ...


class CallerSource(MetadataSource, Protocol):
    """What caller authentication reads of a context (a ServicerContext is one): the peer's certificate
    names, the call's metadata and the peer's address."""

    def auth_context(self) -> Mapping[str, Iterable[bytes]]: ...

    def peer(self) -> str: ...


# The metadata of the call whose task this is, with its context. grpc runs each call in a task of its
# own, and each task has its own copy of the context variables, so the first reading serves the rest.
_read_metadata: contextvars.ContextVar[tuple[MetadataSource, Metadata] | None] = contextvars.ContextVar(
    "tokenservice_call_metadata", default=None
)


def status_code(context: ServicerContext) -> grpc.StatusCode | None:
    """The status code the RPC has been given so far: None while it has none, which grpc's stubs leave out."""
    code: grpc.StatusCode | None = context.code()
    return code


# The caller's deadline timer and the server's fire at about the same moment (the server's deadline is
# the caller's, carried over the wire), so the cancel the caller sends when its timer fires can arrive
# while the server's copy has a few milliseconds left: that cancel is the deadline too.
_DEADLINE_SLACK_SECONDS = 0.1


def failed_code(context: ServicerContext, error: BaseException) -> grpc.StatusCode:
    """The status code of a call whose behaviour raised `error`: the one the call was given (an abort),
    else DEADLINE_EXCEEDED or CANCELLED when grpc cancelled the call's task (its deadline passed, or came
    within 0.1 s; or the peer cancelled it or went away), else UNKNOWN (an exception grpc answers as
    UNKNOWN)."""
    given = status_code(context)
    if given is not None:
        return given
    if isinstance(error, asyncio.CancelledError):
        remaining = context.time_remaining()
        at_deadline = remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS
        return grpc.StatusCode.DEADLINE_EXCEEDED if at_deadline else grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


def invocation_metadata(context: MetadataSource) -> Metadata:
    """`context.invocation_metadata()`, read once a call: grpc builds the tuple anew on every reading
    (1.1 µs for two entries), and tracing, authentication and the audit record each read it."""
    read = _read_metadata.get()
    if read is not None and read[0] is context:
        return read[1]
    metadata: Metadata = context.invocation_metadata() or ()
    _read_metadata.set((context, metadata))
    return metadata
