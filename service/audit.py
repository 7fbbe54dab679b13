"""The audit trail: one JSON line per mint attempt, allowed or denied.

A record names the caller, the org, the RPC, the identity kind and a keyed
fingerprint of each identity (HMAC-SHA256 with a key of the operator's), so
an investigator can find every token issued for one customer by computing
that customer's fingerprint, while the trail itself holds no email or
external id. Never the token, the secret or the raw identity. Every value
that can hold text from outside is JSON-encoded with ASCII escapes, so no
value can break a record into two; the time, the RPC name, the identity kind
and the hex fingerprints are made here of fixed alphabets and written as
they are.

The records of one call are written with one `os.write` on a file opened for
appending, so records of several worker processes sharing the file never
interleave (on a pipe, such as stdout, that holds for writes up to PIPE_BUF,
4 KiB: about ten records).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
import os
import secrets
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

from service.config import AUDIT_OFF, AUDIT_STDOUT, AuditConfig
from service.errors import ConfigError
from service.metrics import UNKNOWN_CALLER

logger = logging.getLogger(__name__)

FINGERPRINT_KEY_MIN_BYTES = 32
_FINGERPRINT_HEX_DIGITS = 32


class MintAttempt(NamedTuple):
    """What the trail records of one mint attempt (a tuple: a batch makes one per entry)."""

    org: str
    email: str
    external_id: str
    status: str
    reason: str | None = None
    secret_version: int | None = None


@dataclasses.dataclass
class AuditedCall:
    """One RPC and the mint attempts it made; `caller` stays unknown until authentication succeeds."""

    rpc: str
    request_id: str
    peer: str
    caller: str = UNKNOWN_CALLER
    attempts: list[MintAttempt] = dataclasses.field(default_factory=list)


def _json(value: str | int | None) -> str:
    if value is None:
        return "null"
    return str(value) if isinstance(value, int) else encode_basestring_ascii(value)


def _quoted_or_null(value: str | None) -> str:
    """A value of a fixed alphabet, which needs no escaping."""
    return "null" if value is None else f'"{value}"'


# (email given, external id given) -> identity_kind
_IDENTITY_KINDS = {(True, True): "email+external_id", (True, False): "email", (False, True): "external_id",
                   (False, False): "none"}


class AuditLog:
    """Writes mint attempts to a file descriptor as JSON lines."""

    def __init__(self, fd: int | None, fingerprint_key: bytes) -> None:
        self._fd = fd
        # Keyed once: copying a keyed HMAC is cheaper than keying one per fingerprint.
        self._mac = hmac.new(fingerprint_key, digestmod=hashlib.sha256)

    @classmethod
    def from_config(cls, audit: AuditConfig, *, caller_auth: bool) -> AuditLog:
        """The audit log the config asks for; refuses a missing or short fingerprint key
        unless caller authentication is off (then a random key is used, and said so)."""
        if audit.output == AUDIT_OFF:
            return cls(None, b"")
        key = load_fingerprint_key(audit, caller_auth=caller_auth)
        return cls(1 if audit.output == AUDIT_STDOUT else _open_for_append(audit.output), key)

    def fingerprint(self, kind: str, value: str) -> str | None:
        """HMAC-SHA256 of `kind NUL value`, cut to 32 hex digits, or None when the identity was not given.
        The kind is mixed in so that an email and an external id with the same text do not collide."""
        if not value:
            return None
        mac = self._mac.copy()
        mac.update(f"{kind}\0{value}".encode("utf-8", "surrogatepass"))
        return mac.hexdigest()[:_FINGERPRINT_HEX_DIGITS]

    def record(self, call: AuditedCall) -> None:
        """Write the records of one call in one write; a failed write is logged, never raised into the RPC.

        Lines are assembled from values escaped by the json module rather than by json.dumps
        of a dict per record, which was a fifth of a batch entry's cost in the profile."""
        if self._fd is None or not call.attempts:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        prefix = (f'{{"time":"{now}","request_id":{_json(call.request_id)},"caller":{_json(call.caller)},'
                  f'"peer":{_json(call.peer)},"rpc":"{call.rpc}",')
        data = memoryview("".join(prefix + self._attempt_fields(attempt) for attempt in call.attempts).encode("ascii"))
        try:
            while data:  # a pipe may take a large batch's records in several writes
                data = data[os.write(self._fd, data):]
        except OSError as error:
            logger.error("audit record could not be written", extra={"fields": {"error": error.strerror}})

    def _attempt_fields(self, attempt: MintAttempt) -> str:
        return (f'"org":{_json(attempt.org)},'
                f'"identity_kind":"{_IDENTITY_KINDS[bool(attempt.email), bool(attempt.external_id)]}",'
                f'"email_fingerprint":{_quoted_or_null(self.fingerprint("email", attempt.email))},'
                f'"external_id_fingerprint":{_quoted_or_null(self.fingerprint("external_id", attempt.external_id))},'
                f'"secret_version":{_json(attempt.secret_version)},"status":{_json(attempt.status)},'
                f'"reason":{_json(attempt.reason)}}}\n')

    @property
    def enabled(self) -> bool:
        """False when the trail is off, so callers can skip building records."""
        return self._fd is not None

    def close(self) -> None:
        """Close the audit file (stdout stays open)."""
        if self._fd is not None and self._fd > 2:
            os.close(self._fd)
        self._fd = None


def _open_for_append(path: str) -> int:
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    except OSError as error:
        raise ConfigError(f"setting audit.output: cannot open {path} for appending: {error.strerror}") from None


def load_fingerprint_key(audit: AuditConfig, *, caller_auth: bool) -> bytes:
    """The key of the identity fingerprints; a random one only when caller authentication is off."""
    if audit.fingerprint_key_file is None:
        if caller_auth:
            raise ConfigError(
                "setting audit.fingerprint_key_file: required with caller authentication, so that fingerprints "
                "stay the same across restarts and replicas; write 32+ random bytes to a file "
                "(head -c 32 /dev/urandom | base64 > key) and name it here, or set audit.output = \"off\"")
        logger.warning("audit fingerprints use a random key of this process: they match only within this run")
        return secrets.token_bytes(FINGERPRINT_KEY_MIN_BYTES)
    with open(audit.fingerprint_key_file, "rb") as key_file:
        key = key_file.read().strip()
    if len(key) < FINGERPRINT_KEY_MIN_BYTES:
        raise ConfigError(f"setting audit.fingerprint_key_file: the key is {len(key)} bytes; use at least "
                          f"{FINGERPRINT_KEY_MIN_BYTES} random bytes")
    return key
