import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ErrorReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ERROR_REASON_UNSPECIFIED: _ClassVar[ErrorReason]
    IDENTITY_MISSING: _ClassVar[ErrorReason]
    EMAIL_INVALID: _ClassVar[ErrorReason]
    EXTERNAL_ID_INVALID: _ClassVar[ErrorReason]
    BATCH_TOO_LARGE: _ClassVar[ErrorReason]
    TOKEN_MISSING: _ClassVar[ErrorReason]
    TOKEN_TOO_LARGE: _ClassVar[ErrorReason]
    REQUEST_MALFORMED: _ClassVar[ErrorReason]
    ORG_UNKNOWN: _ClassVar[ErrorReason]
    SECRET_UNAVAILABLE: _ClassVar[ErrorReason]
    SHUTTING_DOWN: _ClassVar[ErrorReason]
    CREDENTIALS_MISSING: _ClassVar[ErrorReason]
    CREDENTIALS_INVALID: _ClassVar[ErrorReason]
    RPC_NOT_ALLOWED: _ClassVar[ErrorReason]
    ORG_NOT_ALLOWED: _ClassVar[ErrorReason]
    IDENTITY_NOT_ALLOWED: _ClassVar[ErrorReason]
    RATE_LIMITED: _ClassVar[ErrorReason]
    PEER_RATE_LIMITED: _ClassVar[ErrorReason]
    API_KEYS_STALE: _ClassVar[ErrorReason]
    AUDIT_UNAVAILABLE: _ClassVar[ErrorReason]
    SIGNER_UNAVAILABLE: _ClassVar[ErrorReason]
    SERVER_BUSY: _ClassVar[ErrorReason]
    TOKEN_MALFORMED: _ClassVar[ErrorReason]
    TOKEN_HEADER_INVALID: _ClassVar[ErrorReason]
    TOKEN_ALGORITHM_INVALID: _ClassVar[ErrorReason]
    TOKEN_SIGNATURE_INVALID: _ClassVar[ErrorReason]
    TOKEN_IAT_MISSING: _ClassVar[ErrorReason]
    TOKEN_ISSUED_IN_FUTURE: _ClassVar[ErrorReason]
    TOKEN_EXPIRED: _ClassVar[ErrorReason]
    TOKEN_IDENTITY_MISSING: _ClassVar[ErrorReason]

class Identity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTITY_UNSPECIFIED: _ClassVar[Identity]
    IDENTITY_EXTERNAL_ID: _ClassVar[Identity]
    IDENTITY_EMAIL: _ClassVar[Identity]
ERROR_REASON_UNSPECIFIED: ErrorReason
IDENTITY_MISSING: ErrorReason
EMAIL_INVALID: ErrorReason
EXTERNAL_ID_INVALID: ErrorReason
BATCH_TOO_LARGE: ErrorReason
TOKEN_MISSING: ErrorReason
TOKEN_TOO_LARGE: ErrorReason
REQUEST_MALFORMED: ErrorReason
ORG_UNKNOWN: ErrorReason
SECRET_UNAVAILABLE: ErrorReason
SHUTTING_DOWN: ErrorReason
CREDENTIALS_MISSING: ErrorReason
CREDENTIALS_INVALID: ErrorReason
RPC_NOT_ALLOWED: ErrorReason
ORG_NOT_ALLOWED: ErrorReason
IDENTITY_NOT_ALLOWED: ErrorReason
RATE_LIMITED: ErrorReason
PEER_RATE_LIMITED: ErrorReason
API_KEYS_STALE: ErrorReason
AUDIT_UNAVAILABLE: ErrorReason
SIGNER_UNAVAILABLE: ErrorReason
SERVER_BUSY: ErrorReason
TOKEN_MALFORMED: ErrorReason
TOKEN_HEADER_INVALID: ErrorReason
TOKEN_ALGORITHM_INVALID: ErrorReason
TOKEN_SIGNATURE_INVALID: ErrorReason
TOKEN_IAT_MISSING: ErrorReason
TOKEN_ISSUED_IN_FUTURE: ErrorReason
TOKEN_EXPIRED: ErrorReason
TOKEN_IDENTITY_MISSING: ErrorReason
IDENTITY_UNSPECIFIED: Identity
IDENTITY_EXTERNAL_ID: Identity
IDENTITY_EMAIL: Identity

class MintTokenRequest(_message.Message):
    __slots__ = ("external_id", "email", "org")
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    external_id: str
    email: str
    org: str
    def __init__(self, external_id: _Optional[str] = ..., email: _Optional[str] = ..., org: _Optional[str] = ...) -> None: ...

class MintTokenResponse(_message.Message):
    __slots__ = ("token", "issued_at", "valid_until", "secret_version", "identity_used")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    SECRET_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_USED_FIELD_NUMBER: _ClassVar[int]
    token: str
    issued_at: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    secret_version: int
    identity_used: Identity
    def __init__(self, token: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., secret_version: _Optional[int] = ..., identity_used: _Optional[_Union[Identity, str]] = ...) -> None: ...

class MintTokensRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[MintTokenRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[MintTokenRequest, _Mapping]]] = ...) -> None: ...

class MintTokensResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[MintTokenResult]
    def __init__(self, results: _Optional[_Iterable[_Union[MintTokenResult, _Mapping]]] = ...) -> None: ...

class MintTokenResult(_message.Message):
    __slots__ = ("token", "error")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    token: MintTokenResponse
    error: _status_pb2.Status
    def __init__(self, token: _Optional[_Union[MintTokenResponse, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class VerifyTokenRequest(_message.Message):
    __slots__ = ("token", "org")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    ORG_FIELD_NUMBER: _ClassVar[int]
    token: str
    org: str
    def __init__(self, token: _Optional[str] = ..., org: _Optional[str] = ...) -> None: ...

class VerifyTokenResponse(_message.Message):
    __slots__ = ("valid", "reason", "external_id", "email", "issued_at", "valid_until", "detail", "identity_used")
    VALID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    EMAIL_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    VALID_UNTIL_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_USED_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    reason: str
    external_id: str
    email: str
    issued_at: _timestamp_pb2.Timestamp
    valid_until: _timestamp_pb2.Timestamp
    detail: str
    identity_used: Identity
    def __init__(self, valid: _Optional[bool] = ..., reason: _Optional[str] = ..., external_id: _Optional[str] = ..., email: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., valid_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., detail: _Optional[str] = ..., identity_used: _Optional[_Union[Identity, str]] = ...) -> None: ...
