"""Helpers for calling tokenservice.v1.TokenService with the generated stubs.

    from tokenservice.client import create_channel, error_info
    from tokenservice.v1 import token_service_pb2 as pb, token_service_pb2_grpc as pb_grpc

`create_channel` gives every call without an explicit `timeout=` a default
deadline; `error_info` reads the google.rpc.ErrorInfo that the server puts in
the `grpc-status-details-bin` trailer of every error.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take when the caller passes no timeout."""

ERROR_DOMAIN = "tokenservice.v1"
"""The domain of every ErrorInfo the service returns."""


class _CallDetails(
    collections.namedtuple("_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")),
    grpc.ClientCallDetails,
):
    pass


class _DefaultTimeout(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    def intercept_unary_unary(self, continuation, client_call_details, request):
        if client_call_details.timeout is None:
            client_call_details = _CallDetails(
                client_call_details.method, self._timeout, client_call_details.metadata,
                client_call_details.credentials, client_call_details.wait_for_ready,
                client_call_details.compression)
        return continuation(client_call_details, request)


def default_timeout_interceptor(timeout: float) -> grpc.UnaryUnaryClientInterceptor:
    """An interceptor that gives calls without `timeout=` this timeout."""
    return _DefaultTimeout(timeout)


def create_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    options: Sequence[tuple[str, object]] = (),
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
) -> grpc.Channel:
    """A channel to `target` ("host:port") whose calls time out after
    `default_timeout` seconds unless given `timeout=`. Plaintext unless
    `credentials` (e.g. grpc.ssl_channel_credentials()) are given.
    `interceptors` run after the one that sets the default timeout."""
    if credentials is None:
        channel = grpc.insecure_channel(target, options=options)
    else:
        channel = grpc.secure_channel(target, credentials, options=options)
    return grpc.intercept_channel(channel, default_timeout_interceptor(default_timeout), *interceptors)


def status_error_info(status: status_pb2.Status | None) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo among a google.rpc.Status's details (as in
    MintTokenResult.error), or None."""
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a failed call (`except grpc.RpcError as error`), or
    None when the error carries none (e.g. a client-side deadline)."""
    if not isinstance(error, grpc.Call):
        return None
    return status_error_info(rpc_status.from_call(error))


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call, such as "EMAIL_INVALID", or ""."""
    info = error_info(error)
    return info.reason if info is not None else ""
