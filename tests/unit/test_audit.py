"""Audit records: fields, fingerprints, one line per record whatever the values, and how they are
written: an output that stops taking writes fails mints closed, stalls no event loop and loses no
record silently."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest

from service.audit import AuditedCall, AuditLog, MintAttempt
from service.config import AuditConfig
from service.errors import AuditUnavailableError, ConfigError
from service.metrics import Metrics
from tests.support import metric_value

KEY = b"k" * 32
TEXT_FIELDS = ("caller", "peer", "request_id", "rpc", "org", "status", "reason")


def attempt(**overrides: str) -> AuditedCall:
    """A call with one attempt (of secret version 3); `overrides` may set the text fields of either."""
    fields = dict(overrides)
    call = AuditedCall(
        rpc=fields.pop("rpc", "MintToken"),
        request_id=fields.pop("request_id", "r-1"),
        peer=fields.pop("peer", "ipv4:127.0.0.1:5000"),
        caller=fields.pop("caller", "web"),
    )
    call.attempts.append(
        MintAttempt(
            org=fields.pop("org", "acme"),
            email=fields.pop("email", "ada@example.com"),
            external_id=fields.pop("external_id", ""),
            status=fields.pop("status", "OK"),
            reason=fields.pop("reason", None),
            secret_version=3,
        )
    )
    assert not fields, f"not a text field of AuditedCall or MintAttempt: {sorted(fields)}"
    return call


def key_file(tmp_path):
    path = tmp_path / "fingerprint.key"
    path.write_bytes(KEY + b"\n")
    return path


def file_log(tmp_path, path, **settings) -> AuditLog:
    return AuditLog.from_config(
        AuditConfig(output=str(path), fingerprint_key_file=str(key_file(tmp_path)), **settings), caller_auth=True
    )


def write_records(tmp_path, *calls: AuditedCall) -> list[str]:
    path = tmp_path / "audit.jsonl"
    log = file_log(tmp_path, path)

    async def write_all() -> None:
        for call in calls:
            await log.write(call, serves_tokens=True)

    asyncio.run(write_all())
    log.close()
    return path.read_text().split("\n")[:-1]


def test_a_record_holds_fingerprints_not_identities(tmp_path):
    [line] = write_records(tmp_path, attempt(external_id="cust-9"))
    record = json.loads(line)
    expected = hmac.new(KEY, b"email\0ada@example.com", hashlib.sha256).hexdigest()[:32]
    assert record["email_fingerprint"] == expected
    assert record["external_id_fingerprint"] == hmac.new(KEY, b"external_id\0cust-9", hashlib.sha256).hexdigest()[:32]
    assert record["identity_kind"] == "email+external_id"
    assert "ada@example.com" not in line and "cust-9" not in line
    assert (record["caller"], record["org"], record["secret_version"], record["status"], record["entries"]) == (
        "web",
        "acme",
        3,
        "OK",
        1,
    )


def test_no_value_can_split_a_record_or_forge_a_field(tmp_path):
    hostile = 'x\n{"caller":"admin"}\r\u2028\u2029\u0085\x00"\\\udcff'
    lines = write_records(tmp_path, attempt(**dict.fromkeys(TEXT_FIELDS, hostile)), attempt(request_id="second"))
    assert len(lines) == 2 and all(line.isascii() for line in lines)
    first = json.loads(lines[0])
    assert all(first[field] == hostile for field in TEXT_FIELDS)
    assert json.loads(lines[1])["request_id"] == "second"


@settings(
    max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    values=st.fixed_dictionaries({field: st.text() for field in TEXT_FIELDS}),
    email=st.text(),
    external_id=st.text(),
    version=st.none() | st.integers(),
    entries=st.integers(0, 10**6),
)
def test_every_value_goes_through_the_json_escaper(tmp_path, values, email, external_id, version, entries):
    """Whatever text reaches a record, the line is ASCII, one JSON object, and holds exactly that text;
    the fields made here (time, identity kind, fingerprints, numbers) hold their fixed alphabets."""
    log = AuditLog(None, KEY)
    call = AuditedCall(
        values["rpc"],
        values["request_id"],
        values["peer"],
        values["caller"],
        [MintAttempt(values["org"], email, external_id, values["status"], values["reason"], version, entries)],
    )
    line = "".join(log._lines(call)).encode("ascii")
    assert line.isascii() and line.count(b"\n") == 1 and line.endswith(b"\n")
    record = json.loads(line)
    assert {field: record[field] for field in TEXT_FIELDS} == values
    assert (record["secret_version"], record["entries"]) == (version, entries)
    assert record["time"].endswith("+00:00") and set(record["time"]) <= set("0123456789-T:.+")
    if entries == 1:
        assert record["identity_kind"] in ("email+external_id", "email", "external_id", "none")
        for kind, value in (("email", email), ("external_id", external_id)):
            assert record[f"{kind}_fingerprint"] == log.fingerprint(kind, value)
    else:
        assert record["identity_kind"] is record["email_fingerprint"] is record["external_id_fingerprint"] is None


def test_a_call_refused_as_a_whole_is_one_record_with_its_entry_count(tmp_path):
    call = AuditedCall(
        "MintTokens",
        "r-1",
        "ipv4:127.0.0.1:5000",
        attempts=[MintAttempt(None, "", "", "UNAUTHENTICATED", "CREDENTIALS_MISSING", entries=1000)],
    )
    [line] = write_records(tmp_path, call)
    record = json.loads(line)
    assert (record["entries"], record["caller"], record["reason"]) == (1000, "unknown", "CREDENTIALS_MISSING")
    assert (record["org"], record["identity_kind"], record["email_fingerprint"], record["external_id_fingerprint"]) == (
        None,
        None,
        None,
        None,
    )


def test_the_same_identity_has_the_same_fingerprint_and_kinds_do_not_collide(tmp_path):
    lines = write_records(tmp_path, attempt(), attempt(), attempt(email="", external_id="ada@example.com"))
    records = [json.loads(line) for line in lines]
    assert records[0]["email_fingerprint"] == records[1]["email_fingerprint"]
    assert records[2]["external_id_fingerprint"] != records[0]["email_fingerprint"]


def test_caller_auth_needs_a_long_enough_fingerprint_key(tmp_path):
    with pytest.raises(ConfigError, match=r"audit\.fingerprint_key_file: required with caller authentication"):
        AuditLog.from_config(AuditConfig(output=str(tmp_path / "a")), caller_auth=True)
    short = tmp_path / "short.key"
    short.write_bytes(b"too-short")
    with pytest.raises(ConfigError, match="9 bytes; use at least 32"):
        AuditLog.from_config(AuditConfig(output=str(tmp_path / "a"), fingerprint_key_file=str(short)), caller_auth=True)


async def test_records_from_several_writers_stay_whole(tmp_path):
    path = tmp_path / "audit.jsonl"
    logs = [file_log(tmp_path, path) for _ in range(2)]

    async def write(n: int) -> None:
        call = attempt(request_id=f"r-{n}")
        call.attempts *= 3
        await logs[n % 2].write(call, serves_tokens=True)

    await asyncio.gather(*(write(n) for n in range(200)))
    for log in logs:
        log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["request_id"] for r in records) == sorted(f"r-{n}" for n in range(200) for _ in range(3))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def big_call(request_id: str, entries: int = 300) -> AuditedCall:
    call = attempt(request_id=request_id)
    call.attempts *= entries
    return call


async def longest_stall(during) -> float:
    """The longest the event loop went without running a 1 ms ticker while `during` ran."""
    gaps, last, done = [0.0], time.monotonic(), False

    async def tick() -> None:
        nonlocal last
        while not done:
            await asyncio.sleep(0.001)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    try:
        await during
    finally:
        done = True
        await ticker
    return max(gaps)


def drain(read_fd: int) -> tuple[threading.Thread, list[bytes]]:
    chunks: list[bytes] = []

    def read() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            chunks.append(chunk)

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread, chunks


async def test_a_stuck_output_fails_mints_closed_stalls_no_loop_and_loses_nothing_silently():
    read_fd, write_fd = os.pipe()  # nobody reads it until the end: 64 KiB, then writes block
    metrics = Metrics()
    log = AuditLog(write_fd, KEY, metrics=metrics, max_queued_bytes=256 * 1024, max_wait=0.2, summary_interval=0.2)
    outcomes: dict[str, str] = {}

    async def mint(request_id: str, serves_tokens: bool = True) -> None:
        started = time.monotonic()
        try:
            await log.write(big_call(request_id), serves_tokens=serves_tokens)
            outcomes[request_id] = "OK"
        except AuditUnavailableError:
            outcomes[request_id] = "AUDIT_UNAVAILABLE"
        assert time.monotonic() - started < 1.0, "a write waited longer than its bound"

    stall = await longest_stall(asyncio.gather(*(mint(f"m-{n}") for n in range(12)), mint("refused", False)))
    assert stall < 0.1
    # ~100 KB a call: the pipe took part of the first, the buffer a couple more, the rest found no room.
    assert set(outcomes.values()) == {"AUDIT_UNAVAILABLE", "OK"} and outcomes["refused"] == "OK"
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "tokenservice_audit_unavailable_total") == 12
    dropped = metric_value(text, "tokenservice_audit_records_dropped_total")
    assert dropped >= 300 * 5 and dropped % 300 == 0
    log.count_unaudited("MintToken", "RESOURCE_EXHAUSTED", "PEER_RATE_LIMITED", 1)

    reader, chunks = drain(read_fd)
    await log.write(big_call("after"), serves_tokens=True)  # the output moves again: mints are served
    await asyncio.sleep(0.5)  # a summary interval
    log.close()  # closes write_fd too
    reader.join(5)
    os.close(read_fd)
    records = [json.loads(line) for line in b"".join(chunks).splitlines()]
    written = {r["request_id"] for r in records if r["request_id"]}
    assert "after" in written
    for request_id in written:  # a call's records are all written, or none is
        assert sum(r["entries"] for r in records if r["request_id"] == request_id) == 300

    def summarised(reason: str, count: str) -> int:
        return sum(r[count] for r in records if r["request_id"] is None and r["reason"] == reason)

    assert summarised("AUDIT_UNAVAILABLE", "entries") == dropped
    assert summarised("AUDIT_UNAVAILABLE", "calls") == sum(1 for request_id in outcomes if request_id not in written)
    assert (summarised("PEER_RATE_LIMITED", "calls"), summarised("PEER_RATE_LIMITED", "entries")) == (1, 1)


async def test_a_failing_output_fails_mints_closed_at_once():
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # every write now fails with EPIPE
    metrics = Metrics()
    log = AuditLog(write_fd, KEY, metrics=metrics, max_wait=5)
    started = time.monotonic()
    with pytest.raises(AuditUnavailableError, match="no token is served"):
        await log.write(attempt(), serves_tokens=True)
    assert time.monotonic() - started < 1.0  # the failed write answers; the bound is not waited out
    await log.write(attempt(), serves_tokens=False)  # a refusal keeps its answer
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "tokenservice_audit_records_dropped_total") == 2
    assert metric_value(text, "tokenservice_audit_unavailable_total") == 1
    log.close()


async def test_close_writes_what_is_buffered():
    read_fd, write_fd = os.pipe()  # not read until close: the calls' records stay buffered
    log = AuditLog(write_fd, KEY, max_wait=0.05)
    await asyncio.gather(*(log.write(big_call(f"q-{n}", 50), serves_tokens=False) for n in range(20)))
    reader, chunks = drain(read_fd)
    log.close()  # closes write_fd too
    reader.join(5)
    os.close(read_fd)
    request_ids = [json.loads(line)["request_id"] for line in b"".join(chunks).splitlines()]
    assert all(request_ids.count(f"q-{n}") == 50 for n in range(20)) and len(request_ids) == 1000


async def test_close_is_bounded_when_the_output_takes_nothing(caplog):
    read_fd, write_fd = os.pipe()
    log = AuditLog(write_fd, KEY, max_wait=0.05)
    await asyncio.gather(*(log.write(big_call(f"q-{n}"), serves_tokens=False) for n in range(3)))
    started = time.monotonic()
    log.close(timeout=0.3)
    assert 0.3 <= time.monotonic() - started < 1.0
    [error] = [r for r in caplog.records if "took no writes while closing" in r.getMessage()]
    assert error.fields["calls"] >= 1 and error.fields["entries"] == 300 * error.fields["calls"]
    os.close(read_fd)


async def test_records_of_several_writers_on_one_pipe_stay_whole_lines():
    """Workers share stdout: each writes whole lines in pieces of at most PIPE_BUF, which a pipe never splits."""
    read_fd, write_fd = os.pipe()
    reader, chunks = drain(read_fd)
    logs = [AuditLog(os.dup(write_fd), KEY) for _ in range(3)]
    await asyncio.gather(*(logs[n % 3].write(big_call(f"p-{n}", 40), serves_tokens=True) for n in range(60)))
    for log in logs:
        log.close()
    os.close(write_fd)
    reader.join(5)
    os.close(read_fd)
    request_ids = [json.loads(line)["request_id"] for line in b"".join(chunks).splitlines()]
    assert sorted(request_ids) == sorted(f"p-{n}" for n in range(60) for _ in range(40))


async def test_a_socket_output_that_takes_nothing_fails_mints_closed_and_recovers():
    """stdout under systemd is a socket: written with MSG_DONTWAIT, never blocking the loop."""
    ours, theirs = socket.socketpair()
    log = AuditLog(os.dup(ours.fileno()), KEY, max_wait=0.1)
    ours.close()
    outcomes: list[str] = []
    while "AUDIT_UNAVAILABLE" not in outcomes and len(outcomes) < 100:  # until the socket buffers are full
        started = time.monotonic()
        try:
            await log.write(big_call(f"s-{len(outcomes)}"), serves_tokens=True)
            outcomes.append("OK")
        except AuditUnavailableError:
            outcomes.append("AUDIT_UNAVAILABLE")
        assert time.monotonic() - started < 1.0
    assert outcomes[0] == "OK" and outcomes[-1] == "AUDIT_UNAVAILABLE"
    reader, chunks = drain(theirs.fileno())
    await log.write(big_call("after"), serves_tokens=True)
    log.close()
    reader.join(5)
    theirs.close()
    request_ids = {json.loads(line)["request_id"] for line in b"".join(chunks).splitlines()}
    assert "after" in request_ids and "s-0" in request_ids
