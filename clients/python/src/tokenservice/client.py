"""Helpers for calling tokenservice.v1.TokenService with the generated stubs.

    from tokenservice.client import ErrorReason, create_channel, reason_of
    from tokenservice.v1 import token_service_pb2 as pb, token_service_pb2_grpc as pb_grpc

`create_channel` gives every call without an explicit `timeout=` a default
deadline and, when asked, TLS/mTLS from PEM files and an API key
(`authorization: Bearer <key>` on every call); `error_info` reads the
google.rpc.ErrorInfo that the server puts in the `grpc-status-details-bin`
trailer of every error, and `reason_of` its reason as an `ErrorReason` (the
proto's enum of every reason) to branch on.
"""

from __future__ import annotations

import collections
import os
import ssl
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from tokenservice.v1.token_service_pb2 import ErrorReason

DEFAULT_TIMEOUT = 5.0
"""Seconds a call may take when the caller passes no timeout."""

ERROR_DOMAIN = "tokenservice.v1"
"""The domain of every ErrorInfo the service returns."""

__all__ = [
    "DEFAULT_TIMEOUT",
    "ERROR_DOMAIN",
    "ErrorReason",
    "TLSFileError",
    "api_key_call_credentials",
    "create_channel",
    "default_timeout_interceptor",
    "error_info",
    "error_reason",
    "parse_reason",
    "reason_of",
    "status_error_info",
    "tls_channel_credentials",
]


_Request = TypeVar("_Request")
_Outcome = TypeVar("_Outcome")


class _CallDetails(
    collections.namedtuple(
        "_CallDetails", ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression")
    ),
    grpc.ClientCallDetails,
):
    pass


class _DefaultTimeout(grpc.UnaryUnaryClientInterceptor):
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    def intercept_unary_unary(
        self,
        continuation: Callable[[grpc.ClientCallDetails, _Request], _Outcome],
        client_call_details: grpc.ClientCallDetails,
        request: _Request,
    ) -> _Outcome:
        if client_call_details.timeout is None:
            client_call_details = _CallDetails(
                client_call_details.method,
                self._timeout,
                client_call_details.metadata,
                client_call_details.credentials,
                client_call_details.wait_for_ready,
                client_call_details.compression,
            )
        return continuation(client_call_details, request)


def default_timeout_interceptor(timeout: float) -> grpc.UnaryUnaryClientInterceptor:
    """An interceptor that gives calls without `timeout=` this timeout."""
    return _DefaultTimeout(timeout)


class TLSFileError(ValueError):
    """A TLS file (`option` is "ca_file", "cert_file" or "key_file") that
    cannot be read or holds no PEM data of the expected kind. Raised by
    `tls_channel_credentials` and `create_channel` before any connection."""

    def __init__(self, option: str, path: str | os.PathLike[str], problem: str) -> None:
        super().__init__(f"{option} {os.fspath(path)}: {problem}")
        self.option = option
        self.path = os.fspath(path)
        self.problem = problem


def _read_pem(option: str, path: str | os.PathLike[str], marker: bytes) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise TLSFileError(option, path, f"cannot read: {error.strerror or error}") from None
    if marker not in data:
        raise TLSFileError(option, path, f"no PEM {marker.decode().strip('-')} block in it")
    return data


def tls_channel_credentials(
    *,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files, read now.

    `ca_file`: the CA bundle that verifies the server's certificate (None:
    gRPC's default roots, i.e. the file named by
    $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH or the bundle shipped with grpcio).
    `cert_file` and `key_file`: the client certificate and key for mTLS,
    both or neither. Raises `TLSFileError` for a file that cannot be read or
    does not load (checked with the standard library's `ssl`, including that
    the key belongs to the certificate) and `ValueError` when only one of
    `cert_file` / `key_file` is given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together: give both for mTLS, or neither")
    root = _read_pem("ca_file", ca_file, b"-----BEGIN CERTIFICATE-----") if ca_file is not None else None
    cert = _read_pem("cert_file", cert_file, b"-----BEGIN CERTIFICATE-----") if cert_file is not None else None
    key = _read_pem("key_file", key_file, b"PRIVATE KEY-----") if key_file is not None else None
    # gRPC parses the PEM data only when it connects, and then fails every
    # attempt as UNAVAILABLE; the standard library's TLS parses it now.
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file is not None and root is not None:
        try:
            check.load_verify_locations(cadata=root.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as error:
            raise TLSFileError("ca_file", ca_file, f"cannot load: {error}") from None
    if cert_file is not None and key_file is not None:
        try:  # also checks that the key belongs to the certificate
            check.load_cert_chain(cert_file, key_file, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as error:
            problem = f"cannot load with key_file {os.fspath(key_file)}: {error}"
            raise TLSFileError("cert_file", cert_file, problem) from None
    return grpc.ssl_channel_credentials(root_certificates=root, private_key=key, certificate_chain=cert)


class _ApiKey(grpc.AuthMetadataPlugin):
    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def __call__(self, context: grpc.AuthMetadataContext, callback: grpc.AuthMetadataPluginCallback) -> None:
        callback(self._metadata, None)

    def __repr__(self) -> str:  # never show the key
        return "_ApiKey(<redacted>)"


def api_key_call_credentials(api_key: str) -> grpc.CallCredentials:
    """Call credentials that send `authorization: Bearer <api_key>` with
    every call. gRPC sends call credentials only over TLS channels: compose
    them with TLS channel credentials (`create_channel(api_key=...)` does)."""
    if not api_key or api_key != api_key.strip() or not all(" " <= c <= "~" for c in api_key):
        raise ValueError("the API key must be non-empty printable ASCII without surrounding spaces")
    return grpc.metadata_call_credentials(_ApiKey(api_key), name="tokenservice-api-key")


def create_channel(
    target: str,
    *,
    credentials: grpc.ChannelCredentials | None = None,
    ca_file: str | os.PathLike[str] | None = None,
    cert_file: str | os.PathLike[str] | None = None,
    key_file: str | os.PathLike[str] | None = None,
    server_name: str | None = None,
    api_key: str | None = None,
    default_timeout: float = DEFAULT_TIMEOUT,
    options: Sequence[tuple[str, object]] = (),
    interceptors: Sequence[grpc.UnaryUnaryClientInterceptor] = (),
) -> grpc.Channel:
    """A channel to `target` ("host:port") whose calls time out after
    `default_timeout` seconds unless given `timeout=`.

    Plaintext unless TLS is asked for: by `credentials` (e.g.
    grpc.ssl_channel_credentials()), or by any of `ca_file`, `cert_file` /
    `key_file` (mTLS) and `server_name`, which build the credentials with
    `tls_channel_credentials` (no `ca_file`: gRPC's default roots).
    `server_name` overrides the name checked in the server's certificate
    (when connecting by IP or through a proxy). `api_key` sends
    `authorization: Bearer <api_key>` with every call; it needs TLS, and a
    plaintext channel with an API key is refused with ValueError rather than
    sending the key in the clear (gRPC would silently drop it).
    `interceptors` run after the one that sets the default timeout.

    Raises TLSFileError (a ValueError) for a TLS file that cannot be read
    or loaded."""
    file_tls = ca_file is not None or cert_file is not None or key_file is not None or server_name is not None
    if credentials is not None and (ca_file is not None or cert_file is not None or key_file is not None):
        raise ValueError("give either credentials or ca_file/cert_file/key_file, not both")
    if credentials is None and file_tls:
        credentials = tls_channel_credentials(ca_file=ca_file, cert_file=cert_file, key_file=key_file)
    if api_key is not None:
        if credentials is None:
            raise ValueError(
                "api_key needs TLS: gRPC sends call credentials only over a secure channel; "
                "give ca_file (or cert_file/key_file, or server_name for the default roots)"
            )
        credentials = grpc.composite_channel_credentials(credentials, api_key_call_credentials(api_key))
    if server_name is not None:
        options = [*options, ("grpc.ssl_target_name_override", server_name)]
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
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):  # False, and `info` untouched, for a detail of another type
            return info
    return None


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of a failed call (`except grpc.RpcError as error`), or
    None when the error carries none (e.g. a client-side deadline)."""
    # grpc's errors from a call are both RpcError and Call; its type stubs
    # declare the two incompatible, so the check goes through `object`.
    call: object = error
    if not isinstance(call, grpc.Call):
        return None
    return status_error_info(rpc_status.from_call(call))


def error_reason(error: grpc.RpcError) -> str:
    """The ErrorInfo reason of a failed call as sent, such as "EMAIL_INVALID",
    or "" (for logs; branch on `reason_of`)."""
    info = error_info(error)
    return info.reason if info is not None else ""


def parse_reason(name: str) -> ErrorReason:
    """The ErrorReason named `name`, as sent in ErrorInfo.reason or
    VerifyTokenResponse.reason; ERROR_REASON_UNSPECIFIED for "" or a name
    this client does not know (a server newer than the client)."""
    try:
        # The generated stubs type an enum's Value() as a plain int.
        return cast(ErrorReason, ErrorReason.Value(name))
    except ValueError:
        return ErrorReason.ERROR_REASON_UNSPECIFIED


def reason_of(failure: grpc.RpcError | status_pb2.Status | None) -> ErrorReason:
    """The ErrorReason of a failed call (`except grpc.RpcError as error`) or
    of a failed MintTokens entry (`result.error`):

        if reason_of(error) == ErrorReason.EMAIL_INVALID: ...

    ERROR_REASON_UNSPECIFIED when it carries no ErrorInfo of this service
    (domain `tokenservice.v1`; e.g. a client-side deadline) or a reason this
    client does not know: then act on the status code alone."""
    if isinstance(failure, status_pb2.Status):
        info = status_error_info(failure)
    else:
        info = error_info(failure) if failure is not None else None
    if info is None or info.domain != ERROR_DOMAIN:
        return ErrorReason.ERROR_REASON_UNSPECIFIED
    return parse_reason(info.reason)
