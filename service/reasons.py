"""Every reason the service sends, defined once: the proto's ErrorReason enum.

On the wire a reason is the enum value's name, as a string: in
``google.rpc.ErrorInfo.reason`` of an error and in
``VerifyTokenResponse.reason`` of an invalid token. The service takes each
string from the enum, so a reason cannot be sent without being in the proto
(and documented there), and a misspelt one fails at import.
"""

from __future__ import annotations

from tokenservice.v1.token_service_pb2 import ErrorReason

__all__ = ["ErrorReason", "reason_name"]


def reason_name(reason: ErrorReason) -> str:
    """The string sent for `reason`, e.g. "TOKEN_EXPIRED" for ErrorReason.TOKEN_EXPIRED.

    Look it up once (a module or class attribute), not per call. Refuses
    ERROR_REASON_UNSPECIFIED, which the service never sends."""
    if reason == ErrorReason.ERROR_REASON_UNSPECIFIED:
        raise ValueError("ERROR_REASON_UNSPECIFIED is never sent: name the reason")
    return ErrorReason.Name(reason)
