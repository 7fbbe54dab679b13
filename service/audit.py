"""The audit trail: one JSON line per mint attempt, allowed or denied.

A record names the caller, the org, the RPC, the identity kind and a keyed
fingerprint of each identity (HMAC-SHA256 with a key of the operator's), so
an investigator can find every token issued for one customer by computing
that customer's fingerprint, while the trail itself holds no email or
external id. Never the token, the secret or the raw identity. Every value is
JSON-encoded with ASCII escapes, so no value can break a record into two.

The records of one call are written with one `os.write` on a file opened for
appending, so records of several worker processes sharing the file never
interleave (on a pipe, such as stdout, that holds for writes up to PIPE_BUF,
4 KiB: about ten records).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import secrets
from datetime import datetime, timezone
from typing import Any

from service.config import AUDIT_OFF, AUDIT_STDOUT, AuditConfig
from service.errors import ConfigError

logger = logging.getLogger(__name__)

FINGERPRINT_KEY_MIN_BYTES = 32
_FINGERPRINT_HEX_DIGITS = 32


@dataclasses.dataclass(frozen=True)
class MintAttempt:
    """What the trail records of one mint attempt."""

    request_id: str
    caller: str
    rpc: str
    org: str
    email: str
    external_id: str
    peer: str
    status: str
    reason: str | None = None
    secret_version: int | None = None


def _identity_kind(email: str, external_id: str) -> str:
    return "+".join(kind for kind, value in (("email", email), ("external_id", external_id)) if value) or "none"


class AuditLog:
    """Writes mint attempts to a file descriptor as JSON lines."""

    def __init__(self, fd: int | None, fingerprint_key: bytes) -> None:
        self._fd = fd
        # Keyed once: copying a keyed HMAC is cheaper than keying one per fingerprint.
        self._mac = hmac.new(fingerprint_key, digestmod=hashlib.sha256)
        self._encoder = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))

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

    def record(self, attempts: list[MintAttempt]) -> None:
        """Write the records of one call in one write; a failed write is logged, never raised into the RPC."""
        if self._fd is None or not attempts:
            return
        now = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        lines = "".join(self._encoder.encode(self._fields(attempt, now)) + "\n" for attempt in attempts)
        try:
            os.write(self._fd, lines.encode("ascii"))
        except OSError as error:
            logger.error("audit record could not be written", extra={"fields": {"error": error.strerror}})

    def _fields(self, attempt: MintAttempt, now: str) -> dict[str, Any]:
        return {
            "time": now,
            "request_id": attempt.request_id,
            "caller": attempt.caller,
            "peer": attempt.peer,
            "rpc": attempt.rpc,
            "org": attempt.org,
            "identity_kind": _identity_kind(attempt.email, attempt.external_id),
            "email_fingerprint": self.fingerprint("email", attempt.email),
            "external_id_fingerprint": self.fingerprint("external_id", attempt.external_id),
            "secret_version": attempt.secret_version,
            "status": attempt.status,
            "reason": attempt.reason,
        }

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
