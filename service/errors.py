"""The service's error hierarchy and its one mapping to gRPC status.

Every error a caller can see is a TokenServiceError: its ``reason`` is the
stable ``google.rpc.ErrorInfo`` reason that callers branch on, its message
names what was wrong and how to fix it, and never contains the offending
value (which may be personal data).
"""

from __future__ import annotations

from typing import ClassVar

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from service.grpc_types import ServicerContext
from service.reasons import ErrorReason, reason_name

ERROR_DOMAIN = "tokenservice.v1"
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class TokenServiceError(Exception):
    """Raised when a request cannot be served; the base of every error here.

    Abstract, as InvalidRequestError and PermissionDeniedError are: only a
    class that sets `reason` (from the proto's ErrorReason) can be raised, so
    no error is sent without a documented reason."""

    reason: ClassVar[str]

    def __init__(self, message: str, *, field: str | None = None) -> None:
        if not hasattr(self, "reason"):
            raise TypeError(f"{type(self).__name__} has no reason: raise a subclass that sets one")
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidRequestError(TokenServiceError):
    """Raised when a request breaks a rule of the API; the caller must change it."""


class IdentityMissingError(InvalidRequestError):
    """Raised when a mint request names neither an email nor an external id."""

    reason = reason_name(ErrorReason.IDENTITY_MISSING)


class EmailInvalidError(InvalidRequestError):
    """Raised when an email is not a valid address or breaks a length or character rule."""

    reason = reason_name(ErrorReason.EMAIL_INVALID)


class ExternalIdInvalidError(InvalidRequestError):
    """Raised when an external id breaks a length or character rule."""

    reason = reason_name(ErrorReason.EXTERNAL_ID_INVALID)


class BatchTooLargeError(InvalidRequestError):
    """Raised when a MintTokens call holds more entries than the batch limit."""

    reason = reason_name(ErrorReason.BATCH_TOO_LARGE)


class TokenMissingError(InvalidRequestError):
    """Raised when VerifyToken is called without a token."""

    reason = reason_name(ErrorReason.TOKEN_MISSING)


class TokenTooLargeError(InvalidRequestError):
    """Raised when VerifyToken is given a token longer than any this service mints."""

    reason = reason_name(ErrorReason.TOKEN_TOO_LARGE)


class RequestMalformedError(InvalidRequestError):
    """Raised when the request bytes do not parse as the RPC's request message."""

    reason = reason_name(ErrorReason.REQUEST_MALFORMED)


class OrgUnknownError(TokenServiceError):
    """Raised when a request names an org that is not configured."""

    reason = reason_name(ErrorReason.ORG_UNKNOWN)


class SecretUnavailableError(TokenServiceError):
    """Raised when no valid signing secret is loaded for an org, or it is too stale."""

    reason = reason_name(ErrorReason.SECRET_UNAVAILABLE)


class ShuttingDownError(TokenServiceError):
    """Raised when a call arrives after shutdown began; it was not started, so retry it."""

    reason = reason_name(ErrorReason.SHUTTING_DOWN)


class UnauthenticatedError(TokenServiceError):
    """Raised when a call carries no credentials the service recognises."""

    reason = reason_name(ErrorReason.CREDENTIALS_MISSING)


class CredentialsInvalidError(UnauthenticatedError):
    """Raised when a call's API key or certificate identity belongs to no configured caller."""

    reason = reason_name(ErrorReason.CREDENTIALS_INVALID)


class PermissionDeniedError(TokenServiceError):
    """Raised when a known caller asks for something outside its policy."""


class RpcNotAllowedError(PermissionDeniedError):
    """Raised when a caller calls an RPC its policy does not list."""

    reason = reason_name(ErrorReason.RPC_NOT_ALLOWED)


class OrgNotAllowedError(PermissionDeniedError):
    """Raised when a caller mints or verifies for an org its policy does not list."""

    reason = reason_name(ErrorReason.ORG_NOT_ALLOWED)


class IdentityNotAllowedError(PermissionDeniedError):
    """Raised when a caller asserts an identity kind (email, external id) its policy does not list."""

    reason = reason_name(ErrorReason.IDENTITY_NOT_ALLOWED)


class RateLimitedError(TokenServiceError):
    """Raised when a caller is over its rate; `retry_after` says when enough budget is back."""

    reason = reason_name(ErrorReason.RATE_LIMITED)

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PeerRateLimitedError(RateLimitedError):
    """Raised when a peer (or all unauthenticated peers together) is over the rate of refused calls."""

    reason = reason_name(ErrorReason.PEER_RATE_LIMITED)


class ServerBusyError(RateLimitedError):
    """Raised when the server is already serving as many calls at once as it allows."""

    reason = reason_name(ErrorReason.SERVER_BUSY)


class ApiKeysStaleError(TokenServiceError):
    """Raised when an API key is presented but the key set could not be refreshed within its maximum staleness."""

    reason = reason_name(ErrorReason.API_KEYS_STALE)


class AuditUnavailableError(TokenServiceError):
    """Raised when the audit trail cannot take a call's records in time, so the call is not served."""

    reason = reason_name(ErrorReason.AUDIT_UNAVAILABLE)


class SignerUnavailableError(TokenServiceError):
    """Raised when Vault Transit cannot sign or verify for an org in time; there is no local secret to fall back on."""

    reason = reason_name(ErrorReason.SIGNER_UNAVAILABLE)


class ConfigError(Exception):
    """Raised when the configuration is refused at start; the message names the setting."""


class SecretSourceError(Exception):
    """Raised when the secret store cannot be read (unreachable, sealed, denied, missing)."""


class SecretDeletedError(SecretSourceError):
    """Raised when the latest version of a secret is soft-deleted or destroyed."""


class SecretRejectedError(Exception):
    """Raised when a secret read from the store fails validation and is not adopted."""


_STATUS_CODES: dict[type[TokenServiceError], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    OrgUnknownError: grpc.StatusCode.NOT_FOUND,
    SecretUnavailableError: grpc.StatusCode.UNAVAILABLE,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    ApiKeysStaleError: grpc.StatusCode.UNAVAILABLE,
    AuditUnavailableError: grpc.StatusCode.UNAVAILABLE,
    SignerUnavailableError: grpc.StatusCode.UNAVAILABLE,
    UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    RateLimitedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TokenServiceError: grpc.StatusCode.INTERNAL,
}


def status_code_for(error: TokenServiceError) -> grpc.StatusCode:
    """The gRPC status code of an error: the one place errors meet status codes."""
    for error_type in type(error).__mro__:
        if error_type in _STATUS_CODES:
            return _STATUS_CODES[error_type]
    return grpc.StatusCode.INTERNAL


def to_rpc_status(error: TokenServiceError) -> status_pb2.Status:
    """A google.rpc.Status for an error, carrying its ErrorInfo reason."""
    metadata = {"field": error.field} if error.field else {}
    info = error_details_pb2.ErrorInfo(reason=error.reason, domain=ERROR_DOMAIN, metadata=metadata)
    details = [_packed(info)]
    if isinstance(error, RateLimitedError):
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(max(1, int(error.retry_after * 1e9)))
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=status_code_for(error).value[0], message=error.message, details=details)


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


async def abort_with_error(context: ServicerContext, error: TokenServiceError) -> None:
    """End the RPC with the error's status code, message and ErrorInfo detail."""
    details = to_rpc_status(error).SerializeToString()
    await context.abort(status_code_for(error), error.message, trailing_metadata=((STATUS_DETAILS_KEY, details),))
