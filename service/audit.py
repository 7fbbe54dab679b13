"""The audit trail: one JSON line per mint attempt, allowed or denied.

A record names the caller, the org, the RPC, the identity kind and a keyed
fingerprint of each identity (HMAC-SHA256 with a key of the operator's), so
an investigator can find every token issued for one customer by computing
that customer's fingerprint, while the trail itself holds no email or
external id. Never the token, the secret or the raw identity. Every value
goes through json's escaper with ASCII escapes (the values of fixed sets are
escaped once, at import), so no value can break a record into two or forge
a field. `entries` says how many mint attempts a record stands for: 1,
except for a call refused as a whole (no or unknown credentials, an RPC
outside the policy, a batch too large, over the rate), which makes one
record for all its entries and names no org, identity kind or fingerprint
of them unless it had exactly one.

Writing does not wait on an output that stops taking writes. A pipe, a
FIFO, a terminal or a socket (stdout under a container runtime or systemd)
is written without blocking, through a file description of its own (so
nothing changes for the other processes sharing it), from the event loop. When the output
takes no more, the rest is kept in a buffer bounded in bytes
(`audit.max_queued_bytes`) and written as soon as the output is writable
again (the event loop watches it). A regular file is written directly: the
page cache takes the write without waiting for the disk, and a full disk
fails it; only a filesystem that hangs (a dead network mount) could hold
the loop, so keep a file trail on a local disk.

Back-pressure fails closed. A call whose records are not written at once
waits for them, at most `audit.max_wait_seconds`. When they are not written
by then (no room in the buffer, a slow or stuck output, a failed write), a
call that would serve tokens fails with UNAVAILABLE AUDIT_UNAVAILABLE, so no
token leaves without its record; a refused call keeps its refusal. Records
already buffered are written once the output moves again: a record may name
a token its caller never got, never the other way round.

No record is lost silently. Records that could not be buffered or written,
and refusals deliberately not written one by one (PEER_RATE_LIMITED, see
service.callers), are counted in metrics and written as summary records
(`request_id` and `peer` null, `calls` and `entries` the counts, by RPC,
status and reason) every `audit.summary_interval_seconds` and at close.
close() writes what is buffered, waiting a bounded time, and logs what it
could not write.

Records never interleave with other writers' (the worker processes share
the output). On a file opened for appending, the records of one call are one
`write`. On a pipe, records are written in pieces of whole lines of at most
PIPE_BUF (4 KiB) bytes, which the kernel writes whole or not at all.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import errno
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import select
import socket
import stat
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from json.encoder import encode_basestring_ascii
from typing import NamedTuple

from service.config import AUDIT_OFF, AUDIT_STDOUT, CALLER_RPCS, AuditConfig
from service.errors import AuditUnavailableError, ConfigError
from service.files import read_small_file
from service.metrics import UNKNOWN_CALLER, Metrics
from service.minting import Identity, identity_kind

logger = logging.getLogger(__name__)

FINGERPRINT_KEY_MIN_BYTES = 32
_FINGERPRINT_HEX_DIGITS = 32
CLOSE_TIMEOUT_SECONDS = 5.0
_UNAVAILABLE = ("UNAVAILABLE", AuditUnavailableError.reason)


class MintAttempt(NamedTuple):
    """What the trail records of one mint attempt (a tuple: a batch makes one per entry), or of a
    call refused as a whole (`entries` its entry count; org None unless it had exactly one)."""

    org: str | None
    email: str
    external_id: str
    status: str
    reason: str | None = None
    secret_version: int | None = None
    entries: int = 1


@dataclasses.dataclass
class AuditedCall:
    """One RPC and the mint attempts it made; `caller` stays unknown until authentication succeeds."""

    rpc: str
    request_id: str
    peer: str
    caller: str = UNKNOWN_CALLER
    attempts: list[MintAttempt] = dataclasses.field(default_factory=list)
    # The trace id and span id of the call's server span, when it is traced.
    trace: tuple[str, str] | None = None


def _text(value: str | None) -> str:
    return "null" if value is None else encode_basestring_ascii(value)


def _integer(value: int | None) -> str:
    # %d formats the int value itself: an int subclass's __format__ (an f-string's) could return anything.
    return "null" if value is None else "%d" % value  # noqa: UP031


_RPCS = {rpc: encode_basestring_ascii(rpc) for rpc in CALLER_RPCS}
# The kinds mixed into the fingerprints, looked up once: an enum member's value is slow to read per entry.
_EMAIL, _EXTERNAL_ID = Identity.EMAIL.value, Identity.EXTERNAL_ID.value
# (email given, external id given) -> identity_kind, escaped
_IDENTITY_KINDS = {
    (email, external_id): encode_basestring_ascii(identity_kind(email=email, external_id=external_id))
    for email in (True, False)
    for external_id in (True, False)
}


def _now() -> str:
    return encode_basestring_ascii(datetime.now(UTC).isoformat(timespec="milliseconds"))


class _Unwritten:
    """Calls and entries not written one by one, by (RPC, status, reason)."""

    def __init__(self) -> None:
        self.calls: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.entries: collections.Counter[tuple[str, str, str]] = collections.Counter()

    def add(self, rpc: str, status: str, reason: str, entries: int) -> None:
        self.calls[rpc, status, reason] += 1
        self.entries[rpc, status, reason] += entries

    def merge(self, other: _Unwritten) -> None:
        self.calls.update(other.calls)
        self.entries.update(other.entries)

    def lines(self) -> list[str]:
        """One summary record per (RPC, status, reason)."""
        now = _now()
        return [
            f'{{"time":{now},"request_id":null,"caller":{_text(UNKNOWN_CALLER)},"peer":null,"rpc":{_text(rpc)},'
            f'"org":null,"identity_kind":null,"email_fingerprint":null,"external_id_fingerprint":null,'
            f'"secret_version":null,"status":{_text(status)},"reason":{_text(reason)},'
            f'"entries":{_integer(self.entries[rpc, status, reason])},"calls":{_integer(calls)}}}\n'
            for (rpc, status, reason), calls in sorted(self.calls.items())
        ]


class _Waiting(NamedTuple):
    """A call whose records are (partly) buffered: done once `end` bytes have been written in all."""

    end: int
    written: asyncio.Future[bool]
    rpc: str | None  # None for summary records
    entries: int


def _entries(attempts: Sequence[MintAttempt]) -> int:
    return sum(attempt.entries for attempt in attempts)


def _pieces(lines: list[str], limit: int) -> list[bytes]:
    """The lines joined into pieces of whole lines, each at most `limit` bytes (or one longer line)."""
    pieces: list[bytes] = []
    piece: list[str] = []
    size = 0
    for line in lines:
        if piece and size + len(line) > limit:
            pieces.append("".join(piece).encode("ascii"))
            piece, size = [], 0
        piece.append(line)
        size += len(line)
    if piece:
        pieces.append("".join(piece).encode("ascii"))
    return pieces


async def _within(future: asyncio.Future[bool], deadline: float) -> bool:
    """The future's result, or False when it is not done by the loop time `deadline`."""
    try:
        async with asyncio.timeout_at(deadline):
            return await future
    except TimeoutError:
        return False


class _Sender(NamedTuple):
    """How to write to the output without blocking: `send` raises BlockingIOError when it would block;
    `watched` is the descriptor to wait on; `release` closes what was opened for it."""

    send: Callable[[memoryview], int]
    watched: int
    release: Callable[[], None]


def _nonblocking_sender(fd: int, mode: int) -> _Sender | None:
    """A way to write to `fd` that never blocks, changing nothing for the other processes that share
    it: a socket gets MSG_DONTWAIT, anything else a file description of its own, with O_NONBLOCK.
    None when neither can be had."""
    if stat.S_ISSOCK(mode):
        sock = socket.socket(fileno=os.dup(fd))
        return _Sender(lambda data: sock.send(data, socket.MSG_DONTWAIT), sock.fileno(), sock.close)
    if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK:  # opened here (a FIFO named by audit.output)
        return _Sender(lambda data: os.write(fd, data), fd, lambda: None)
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    return _Sender(lambda data: os.write(own, data), own, lambda: os.close(own))


class _Output:
    """The audit output, written from the event loop without waiting on it (see the module docstring)."""

    def __init__(self, fd: int, metrics: Metrics, *, max_queued_bytes: int) -> None:
        self.fd = fd
        self._metrics = metrics
        self._max_queued_bytes = max_queued_bytes
        try:
            mode = os.fstat(fd).st_mode
        except OSError as error:
            raise ConfigError(
                f"setting audit.output: the output (file descriptor {fd}) cannot be used: "
                f"{error.strerror}; give stdout to the service, or name a file"
            ) from None
        sender = None if stat.S_ISREG(mode) else _nonblocking_sender(fd, mode)
        if sender is None and not stat.S_ISREG(mode):
            logger.warning(
                "the audit output cannot be written without blocking: if it stops taking writes, "
                "the service stalls; write the trail to a pipe, stdout or a local file"
            )
        self._sender = sender  # None: written with blocking writes
        self._buffer: collections.deque[memoryview] = collections.deque()
        self._buffered = 0
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._room: list[asyncio.Future[bool]] = []
        self._offered = 0  # bytes taken in all, written or buffered
        self._written = 0
        self._loop: asyncio.AbstractEventLoop | None = None  # while it watches the output
        self._last_error_log = -float("inf")
        self.unwritten = _Unwritten()
        self.closed = False

    def take(self, lines: list[str], rpc: str, attempts: Sequence[MintAttempt]) -> bool | asyncio.Future[bool] | None:
        """Write the lines of one call, or buffer what the output does not take now: as `offer`."""
        if self.closed:
            return False
        return self.offer(lines, rpc, attempts)

    async def settle(
        self,
        taken: bool | asyncio.Future[bool] | None,
        lines: list[str],
        rpc: str,
        attempts: Sequence[MintAttempt],
        deadline: float,
    ) -> bool:
        """Whether the lines that `take` did not write at once are written by the loop time `deadline`.
        Lines not taken at all are counted as unwritten; buffered ones are written later (or counted,
        should the output fail)."""
        while taken is None and await _within(self._room_future(), deadline):
            taken = self.offer(lines, rpc, attempts)
        if isinstance(taken, asyncio.Future):
            return await _within(taken, deadline)
        if not taken:
            self.count_unwritten(rpc, *_UNAVAILABLE, _entries(attempts))
        return bool(taken)

    def offer(
        self, lines: list[str], rpc: str | None, attempts: Sequence[MintAttempt]
    ) -> bool | asyncio.Future[bool] | None:
        """Take the lines of one call: True when written at once, a future (of True, or False should
        the output fail) when the rest is buffered, None when the buffer has no room, False when the
        output failed. A blocking output writes them at once, as one write (one append to a file)."""
        sender = self._sender
        if sender is None:
            return self._write_blocking("".join(lines).encode("ascii"))
        pieces = _pieces(lines, select.PIPE_BUF)
        if self._buffered and self._buffered + sum(map(len, pieces)) > self._max_queued_bytes:
            return None
        if not self._buffer:
            try:
                pieces = self._send_now(sender.send, pieces)
            except OSError as error:
                self._log_error(error)
                return False
            if not pieces:
                return True
        loop = asyncio.get_running_loop()
        for piece in pieces:
            self._buffer.append(memoryview(piece))
            self._buffered += len(piece)
            self._offered += len(piece)
        waiting = _Waiting(self._offered, loop.create_future(), rpc, _entries(attempts))
        self._waiting.append(waiting)
        if self._loop is None:
            self._loop = loop
            loop.add_writer(sender.watched, self._flush, sender)
        return waiting.written

    def put_summary(self, lines: list[str]) -> bool:
        """Write summary records, or buffer them, without waiting; False when they could not be taken."""
        return self.offer(lines, None, ()) not in (None, False)

    def count_unwritten(self, rpc: str, status: str, reason: str, entries: int) -> None:
        """Count a call whose records are not written one by one, for the next summary."""
        self.unwritten.add(rpc, status, reason, entries)
        if (status, reason) == _UNAVAILABLE:
            self._metrics.audit_records_dropped_total.inc(entries)

    def _room_future(self) -> asyncio.Future[bool]:
        room = asyncio.get_running_loop().create_future()
        self._room.append(room)
        return room

    def _write_blocking(self, data: bytes) -> bool:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError as error:
            self._log_error(error)
            return False
        return True

    def _send_now(self, send: Callable[[memoryview], int], pieces: list[bytes]) -> list[bytes]:
        """Write what the output takes now; the pieces left (the first maybe cut short)."""
        for index, piece in enumerate(pieces):
            try:
                sent = send(memoryview(piece))
            except BlockingIOError:
                return pieces[index:]
            self._offered += sent
            self._written += sent
            if sent < len(piece):  # a terminal or a socket may take part of a piece
                return [piece[sent:], *pieces[index + 1 :]]
        return []

    def _flush(self, sender: _Sender) -> None:
        """Write buffered pieces while the output takes them (the event loop calls this when it is writable)."""
        while self._buffer:
            try:
                sent = sender.send(self._buffer[0])
            except BlockingIOError:
                break
            except OSError as error:
                self._log_error(error)
                self._fail_buffered()
                break
            self._written += sent
            self._buffered -= sent
            if sent == len(self._buffer[0]):
                self._buffer.popleft()
            else:
                self._buffer[0] = self._buffer[0][sent:]
        while self._waiting and self._waiting[0].end <= self._written:
            _resolve(self._waiting.popleft().written, True)
        rooms, self._room = self._room, []
        for room in rooms:
            _resolve(room, True)
        if not self._buffer and self._loop is not None:
            self._loop.remove_writer(sender.watched)
            self._loop = None

    def _fail_buffered(self) -> None:
        """The output failed: what is buffered will never be written."""
        for waiting in self._waiting:
            if waiting.rpc is not None:  # a summary's own counts are in the metrics
                self.count_unwritten(waiting.rpc, *_UNAVAILABLE, waiting.entries)
            _resolve(waiting.written, False)
        self._waiting.clear()
        self._buffer.clear()
        self._written += self._buffered
        self._buffered = 0

    def close(self, timeout: float) -> bool:
        """Write what is buffered, then the summary of what was not written, waiting at most `timeout`
        seconds for the output; False when something is left."""
        self.closed = True
        summary, self.unwritten = self.unwritten.lines(), _Unwritten()
        sender = self._sender
        if sender is None:
            return not summary or self._write_blocking("".join(summary).encode("ascii"))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(sender.watched)
        self._loop = None
        for piece in _pieces(summary, select.PIPE_BUF):
            self._buffer.append(memoryview(piece))
            self._buffered += len(piece)
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(sender.watched, select.POLLOUT)
        while self._buffer and (remaining := deadline - time.monotonic()) > 0:
            poller.poll(remaining * 1000)
            self._flush(sender)
        sender.release()
        if not self._buffer:
            return True
        logger.error(
            "the audit output took no writes while closing: records are lost",
            extra={
                "fields": {
                    "waited_seconds": timeout,
                    "calls": sum(w.rpc is not None for w in self._waiting),
                    "entries": sum(w.entries for w in self._waiting),
                }
            },
        )
        return False

    def _log_error(self, error: OSError) -> None:
        if time.monotonic() - self._last_error_log >= 1.0:  # not one log line per write of a broken output
            self._last_error_log = time.monotonic()
            logger.error(
                "audit records could not be written",
                extra={"fields": {"error": error.strerror or _errno_name(error.errno)}},
            )


def _errno_name(number: int | None) -> str:
    return "?" if number is None else errno.errorcode.get(number, "?")


def _resolve(future: asyncio.Future[bool], result: bool) -> None:
    if not future.done():
        future.set_result(result)


class AuditLog:
    """Writes mint attempts to a file descriptor as JSON lines, without ever waiting on it."""

    def __init__(
        self,
        fd: int | None,
        fingerprint_key: bytes,
        *,
        metrics: Metrics | None = None,
        max_queued_bytes: int = AuditConfig.max_queued_bytes,
        max_wait: float = AuditConfig.max_wait_seconds,
        summary_interval: float = AuditConfig.summary_interval_seconds,
    ) -> None:
        # Keyed once: copying a keyed HMAC is cheaper than keying one per fingerprint.
        self._mac = hmac.new(fingerprint_key, digestmod=hashlib.sha256)
        self._max_wait = max_wait
        self._summary_interval = summary_interval
        self._summary_due: asyncio.TimerHandle | None = None
        self._output: _Output | None = None
        if fd is not None:
            self._metrics = metrics if metrics is not None else Metrics()
            self._output = _Output(fd, self._metrics, max_queued_bytes=max_queued_bytes)

    @classmethod
    def from_config(cls, audit: AuditConfig, *, caller_auth: bool, metrics: Metrics | None = None) -> AuditLog:
        """The audit log the config asks for; refuses a missing or short fingerprint key
        unless caller authentication is off (then a random key is used, and said so)."""
        if audit.output == AUDIT_OFF:
            return cls(None, b"")
        key = load_fingerprint_key(audit, caller_auth=caller_auth)
        return cls(
            1 if audit.output == AUDIT_STDOUT else _open_for_append(audit.output),
            key,
            metrics=metrics,
            max_queued_bytes=audit.max_queued_bytes,
            max_wait=audit.max_wait_seconds,
            summary_interval=audit.summary_interval_seconds,
        )

    def fingerprint(self, kind: str, value: str) -> str | None:
        """HMAC-SHA256 of `kind NUL value`, cut to 32 hex digits, or None when the identity was not given.
        The kind is mixed in so that an email and an external id with the same text do not collide."""
        if not value:
            return None
        mac = self._mac.copy()
        mac.update(f"{kind}\0{value}".encode("utf-8", "surrogatepass"))
        return mac.hexdigest()[:_FINGERPRINT_HEX_DIGITS]

    async def write(self, call: AuditedCall, *, serves_tokens: bool) -> None:
        """Write the records of one call, waiting at most `max_wait` seconds when the output is slow.

        When they are not written by then, raise AuditUnavailableError if the call would serve tokens;
        a refused call keeps its own answer."""
        if self._output is None or not call.attempts:
            return
        lines = self._lines(call)
        taken = self._output.take(lines, call.rpc, call.attempts)
        if taken is True:
            return
        deadline = asyncio.get_running_loop().time() + self._max_wait
        written = await self._output.settle(taken, lines, call.rpc, call.attempts, deadline)
        if self._output.unwritten.calls:
            self._schedule_summary(self._output)
        if not written and serves_tokens:
            self._metrics.audit_unavailable_total.inc()
            raise AuditUnavailableError(
                f"the audit trail did not take this call's records within {self._max_wait:g} s, so no token "
                "is served; retry later (the service owners see tokenservice_audit_unavailable_total)"
            )

    def count_unaudited(self, rpc: str, status: str, reason: str, entries: int) -> None:
        """Count a call refused without a record of its own, for the summary records (on the event loop)."""
        if self._output is not None:
            self._output.count_unwritten(rpc, status, reason, entries)
            self._schedule_summary(self._output)

    def _schedule_summary(self, output: _Output) -> None:
        if self._summary_due is None:
            self._summary_due = asyncio.get_running_loop().call_later(
                self._summary_interval, self._write_summary, output
            )

    def _write_summary(self, output: _Output) -> None:
        self._summary_due = None
        if output.closed:
            return
        unwritten, output.unwritten = output.unwritten, _Unwritten()
        if not output.put_summary(unwritten.lines()):
            output.unwritten.merge(unwritten)  # a summary of what was lost is not lost itself
            self._schedule_summary(output)

    def _lines(self, call: AuditedCall) -> list[str]:
        """The JSON lines of one call.

        Assembled from values escaped by the json module rather than by json.dumps of a dict
        per record, which was a fifth of a batch entry's cost in the profile."""
        prefix = (
            f'{{"time":{_now()},"request_id":{_text(call.request_id)},"caller":{_text(call.caller)},'
            f'"peer":{_text(call.peer)},"rpc":{_RPCS.get(call.rpc) or _text(call.rpc)},'
        )
        if call.trace is not None:
            prefix += f'"trace_id":{_text(call.trace[0])},"span_id":{_text(call.trace[1])},'
        return [prefix + self._attempt_fields(attempt) for attempt in call.attempts]

    def _attempt_fields(self, attempt: MintAttempt) -> str:
        if attempt.entries == 1:
            kind = _IDENTITY_KINDS[bool(attempt.email), bool(attempt.external_id)]
            email = _text(self.fingerprint(_EMAIL, attempt.email))
            external_id = _text(self.fingerprint(_EXTERNAL_ID, attempt.external_id))
            entries = "1"  # the common case, without a call to format it
        else:
            kind = email = external_id = "null"
            entries = _integer(attempt.entries)
        return (
            f'"org":{_text(attempt.org)},"identity_kind":{kind},"email_fingerprint":{email},'
            f'"external_id_fingerprint":{external_id},"secret_version":{_integer(attempt.secret_version)},'
            f'"status":{_text(attempt.status)},"reason":{_text(attempt.reason)},"entries":{entries}}}\n'
        )

    @property
    def enabled(self) -> bool:
        """False when the trail is off, so callers can skip building records."""
        return self._output is not None

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Write what is buffered and a last summary (waiting at most `timeout` s for the output), then
        close the audit file (stdout stays open)."""
        if self._output is None or self._output.closed:
            return
        if self._summary_due is not None:
            self._summary_due.cancel()
        self._output.close(timeout)
        if self._output.fd > 2:
            os.close(self._output.fd)


def _open_for_append(path: str) -> int:
    # O_NONBLOCK: a FIFO without a reader is refused at once instead of holding the start up, and
    # is then written without blocking (it changes nothing for a regular file).
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK, 0o600)
    except OSError as error:
        hint = " (a FIFO that nobody reads yet; start its reader first)" if error.errno == errno.ENXIO else ""
        raise ConfigError(f"setting audit.output: cannot open {path} for appending: {error.strerror}{hint}") from None


def load_fingerprint_key(audit: AuditConfig, *, caller_auth: bool) -> bytes:
    """The key of the identity fingerprints; a random one only when caller authentication is off."""
    if audit.fingerprint_key_file is None:
        if caller_auth:
            raise ConfigError(
                "setting audit.fingerprint_key_file: required with caller authentication, so that fingerprints "
                "stay the same across restarts and replicas; write 32+ random bytes to a file "
                '(head -c 32 /dev/urandom | base64 > key) and name it here, or set audit.output = "off"'
            )
        logger.warning("audit fingerprints use a random key of this process: they match only within this run")
        return secrets.token_bytes(FINGERPRINT_KEY_MIN_BYTES)
    try:
        key = read_small_file(audit.fingerprint_key_file).strip()
    except OSError as error:
        raise ConfigError(
            f"setting audit.fingerprint_key_file: cannot read {audit.fingerprint_key_file} ({error.strerror})"
        ) from None
    if len(key) < FINGERPRINT_KEY_MIN_BYTES:
        raise ConfigError(
            f"setting audit.fingerprint_key_file: the key is {len(key)} bytes; use at least "
            f"{FINGERPRINT_KEY_MIN_BYTES} random bytes"
        )
    return key
