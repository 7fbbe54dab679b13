"""Audit records: fields, fingerprints, and one line per record whatever the values."""

from __future__ import annotations

import hashlib
import hmac
import json
import os

import pytest

from service.audit import AuditedCall, AuditLog, MintAttempt
from service.config import AuditConfig
from service.errors import ConfigError

KEY = b"k" * 32


def attempt(**overrides) -> AuditedCall:
    """A call with one attempt; `overrides` may set fields of either."""
    call_fields = {"rpc": "MintToken", "request_id": "r-1", "peer": "ipv4:127.0.0.1:5000", "caller": "web"}
    attempt_fields = {"org": "acme", "email": "ada@example.com", "external_id": "", "status": "OK",
                      "secret_version": 3}
    for name, value in overrides.items():
        (call_fields if name in call_fields else attempt_fields)[name] = value
    return AuditedCall(**call_fields, attempts=[MintAttempt(**attempt_fields)])


def write_records(tmp_path, *calls: AuditedCall) -> list[str]:
    path = tmp_path / "audit.jsonl"
    log = AuditLog.from_config(AuditConfig(output=str(path), fingerprint_key_file=str(key_file(tmp_path))),
                               caller_auth=True)
    for call in calls:
        log.record(call)
    log.close()
    return path.read_text().split("\n")[:-1]


def key_file(tmp_path):
    path = tmp_path / "fingerprint.key"
    path.write_bytes(KEY + b"\n")
    return path


def test_a_record_holds_fingerprints_not_identities(tmp_path):
    [line] = write_records(tmp_path, attempt(external_id="cust-9"))
    record = json.loads(line)
    expected = hmac.new(KEY, b"email\0ada@example.com", hashlib.sha256).hexdigest()[:32]
    assert record["email_fingerprint"] == expected
    assert record["external_id_fingerprint"] == hmac.new(KEY, b"external_id\0cust-9", hashlib.sha256).hexdigest()[:32]
    assert record["identity_kind"] == "email+external_id"
    assert "ada@example.com" not in line and "cust-9" not in line
    assert (record["caller"], record["org"], record["secret_version"], record["status"]) == ("web", "acme", 3, "OK")


def test_no_value_can_split_a_record_or_forge_a_field(tmp_path):
    hostile = 'x\n{"caller":"admin"}\r\u2028\u2029\u0085\x00"\\\udcff'
    lines = write_records(tmp_path, attempt(caller=hostile, peer=hostile, request_id=hostile, org=hostile,
                                            status=hostile, reason=hostile),
                          attempt(request_id="second"))
    assert len(lines) == 2 and all(line.isascii() for line in lines)
    first = json.loads(lines[0])
    assert all(first[field] == hostile for field in ("caller", "peer", "request_id", "org", "status", "reason"))
    assert json.loads(lines[1])["request_id"] == "second"


def test_the_same_identity_has_the_same_fingerprint_and_kinds_do_not_collide(tmp_path):
    lines = write_records(tmp_path, attempt(), attempt(), attempt(email="", external_id="ada@example.com"))
    records = [json.loads(line) for line in lines]
    assert records[0]["email_fingerprint"] == records[1]["email_fingerprint"]
    assert records[2]["external_id_fingerprint"] != records[0]["email_fingerprint"]


def test_caller_auth_needs_a_long_enough_fingerprint_key(tmp_path):
    with pytest.raises(ConfigError, match="audit.fingerprint_key_file: required with caller authentication"):
        AuditLog.from_config(AuditConfig(output=str(tmp_path / "a")), caller_auth=True)
    short = tmp_path / "short.key"
    short.write_bytes(b"too-short")
    with pytest.raises(ConfigError, match="9 bytes; use at least 32"):
        AuditLog.from_config(AuditConfig(output=str(tmp_path / "a"), fingerprint_key_file=str(short)),
                             caller_auth=True)


def test_records_from_several_writers_stay_whole(tmp_path):
    path = tmp_path / "audit.jsonl"
    logs = [AuditLog.from_config(AuditConfig(output=str(path), fingerprint_key_file=str(key_file(tmp_path))),
                                 caller_auth=True) for _ in range(2)]
    for n in range(200):
        call = attempt(request_id=f"r-{n}")
        call.attempts *= 3
        logs[n % 2].record(call)
    for log in logs:
        log.close()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["request_id"] for r in records) == sorted(f"r-{n}" for n in range(200) for _ in range(3))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
