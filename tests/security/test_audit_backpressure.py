"""An audit output that stops taking writes, against a real `tokenservice serve`.

Threat: the audit trail was written with a blocking os.write on the event
loop, so an output that stops taking writes (a pipe nobody reads: a stuck
log collector on stdout, a FIFO) froze every RPC, health included, for as
long as it lasted. Now the trail is written without blocking and what the
output does not take is buffered (bounded); a mint waits a bounded time for
its records to be written and otherwise fails closed with UNAVAILABLE
AUDIT_UNAVAILABLE (no token leaves without its record), while health and
VerifyToken keep answering. What was buffered is written once the output
moves again, and what could not be buffered is counted in a summary record,
so no record is lost silently.
"""

from __future__ import annotations

import json
import os
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.secured import OpenBao, SecuredFiles, start_secured_service
from tests.support import ServiceProcess, health_stub, metric_value, refusal_of, wait_until

BATCH = 1000
# The service's default bounded wait for an audit write is 0.5 s; this allows for a loaded machine.
ANSWER_BOUND_SECONDS = 3.0


class FifoReader:
    """The read end of a FIFO: opened at once (so the service can open it for writing), read only on demand."""

    def __init__(self, path) -> None:
        os.mkfifo(path)
        self._fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self._chunks: list[bytes] = []
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def start_reading(self) -> None:
        os.set_blocking(self._fd, True)
        self._thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self._fd, 1 << 16):
            self._chunks.append(chunk)

    def read_to_end(self, timeout: float = 20) -> bytes:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the service never closed the audit output"
        os.close(self._fd)
        return b"".join(self._chunks)


def timed(call, *args, **kwargs) -> tuple[str, float]:
    """The outcome ("OK" or the ErrorInfo reason) of a call, and how long it took."""
    started = time.monotonic()
    try:
        call(*args, **kwargs)
        outcome = "OK"
    except grpc.RpcError as error:
        outcome = refusal_of(error)[1] if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED else "DEADLINE_EXCEEDED"
    return outcome, time.monotonic() - started


def start_with_unread_audit(
    openbao: OpenBao, directory: Path, **audit: float
) -> tuple[FifoReader, ServiceProcess, SecuredFiles]:
    """The secured service writing its audit trail into a FIFO that nobody reads yet, with the smallest
    buffer (the first batch's records fill it, so the next calls' find no room at all) and these other
    [audit] settings; callers are not rate limited."""
    reader = FifoReader(directory / "audit.fifo")
    service, files = start_secured_service(
        openbao,
        directory,
        rate_per_second=100000,
        settings={"audit": {"max_queued_bytes": 65536, **audit}},
        env={"TOKENSERVICE_AUDIT_OUTPUT": str(directory / "audit.fifo")},
    )
    return reader, service, files


def test_a_stalled_audit_output_fails_mints_closed_and_stalls_nothing_else(openbao, tmp_path):
    reader, service, files = start_with_unread_audit(openbao, tmp_path)
    calls: dict[str, tuple[str, int]] = {}  # request id -> (outcome, entries)
    try:
        credentials = files.api_key_credentials(files.api_key)
        key_port = f"127.0.0.1:{service.listening['api_key_port']}"
        with (
            grpc.secure_channel(key_port, credentials) as keyed,
            grpc.secure_channel(key_port, grpc.ssl_channel_credentials(files.ca.cert_pem)) as anonymous,
            grpc.insecure_channel(service.health_target) as probe,
        ):
            stub = pb_grpc.TokenServiceStub(keyed)

            def batch(request_id: str) -> tuple[str, float]:
                request = pb.MintTokensRequest(
                    requests=[pb.MintTokenRequest(external_id=f"c-{n}") for n in range(BATCH)]
                )
                outcome, took = timed(stub.MintTokens, request, metadata=(("x-request-id", request_id),), timeout=10)
                calls[request_id] = (outcome, BATCH)
                return outcome, took

            # A batch's records (~350 KB) overfill the pipe (64 KiB) that nobody reads.
            stalled = [batch(f"stall-{n}") for n in range(3)]
            assert all(took < ANSWER_BOUND_SECONDS for _, took in stalled), stalled
            assert [outcome for outcome, _ in stalled] == ["AUDIT_UNAVAILABLE"] * 3

            # Meanwhile everything that writes no audit record answers at once, and a refusal answers too.
            health, took = timed(health_stub(probe).Check, health_pb2.HealthCheckRequest(), timeout=5)
            assert (health, took < 1.0) == ("OK", True)
            verify, took = timed(stub.VerifyToken, pb.VerifyTokenRequest(token="a.b.c"), timeout=5)
            assert (verify, took < 1.0) == ("OK", True)
            refusal, took = timed(
                pb_grpc.TokenServiceStub(anonymous).MintToken,
                pb.MintTokenRequest(email="a@example.com"),
                metadata=(("x-request-id", "stall-refused"),),
                timeout=5,
            )
            calls["stall-refused"] = (refusal, 1)
            assert (refusal, took < ANSWER_BOUND_SECONDS) == ("CREDENTIALS_MISSING", True)
            with urllib.request.urlopen(service.metrics_url, timeout=5) as response:
                metrics = response.read().decode()
            assert metric_value(metrics, "tokenservice_audit_unavailable_total") == 3

            # Once the output is read again, mints are served again.
            reader.start_reading()
            wait_until(
                lambda: batch(f"recovered-{len(calls)}")[0] == "OK",
                timeout=10,
                interval=0.1,
                message="a batch served once the audit output is read again",
            )
        assert service.terminate() == 0
        trail = reader.read_to_end()
    finally:
        service.stop()
    lines = trail.decode("ascii").splitlines()
    records = [json.loads(line) for line in lines]  # every line whole: no record split by the stall
    entries_by_call: dict[str, int] = defaultdict(int)
    for record in records:
        if record["request_id"] is not None:
            entries_by_call[record["request_id"]] += record["entries"]
    unrecorded = sum(entries for request_id, (_, entries) in calls.items() if not entries_by_call[request_id])
    summarised = sum(r["entries"] for r in records if r["request_id"] is None and r["reason"] == "AUDIT_UNAVAILABLE")
    assert unrecorded == summarised >= 2 * BATCH  # the calls that found no room are in the summary
    assert entries_by_call["stall-0"] == BATCH  # buffered while stalled, written once read
    for request_id, (outcome, entries) in calls.items():
        assert entries_by_call[request_id] in (0, entries), request_id
        if outcome == "OK":
            assert entries_by_call[request_id] == entries, f"{request_id} was served without its records"


def test_mints_cut_off_while_their_records_wait_are_counted_by_why_never_as_unknown(openbao, tmp_path):
    # A mint that waits for the audit trail (here up to 30 s) ends when its caller's deadline passes or
    # the caller cancels it. grpc cancels the call's task then; the metrics used to count both as UNKNOWN,
    # a code the service never answers, and one the error-ratio alert counts as a server-side failure.
    reader, service, files = start_with_unread_audit(openbao, tmp_path, max_wait_seconds=30)
    try:
        key_port = f"127.0.0.1:{service.listening['api_key_port']}"
        with grpc.secure_channel(key_port, files.api_key_credentials(files.api_key)) as keyed:
            stub = pb_grpc.TokenServiceStub(keyed)
            batch = pb.MintTokensRequest(requests=[pb.MintTokenRequest(external_id=f"c-{n}") for n in range(BATCH)])
            outcome, took = timed(stub.MintTokens, batch, timeout=1)  # its records overfill the unread pipe
            assert (outcome, took < ANSWER_BOUND_SECONDS) == ("DEADLINE_EXCEEDED", True)
            waiting = stub.MintToken.future(pb.MintTokenRequest(external_id="cancelled"), timeout=20)
            time.sleep(0.5)
            assert waiting.cancel()

            def handled(code: str, method: str) -> float:
                with urllib.request.urlopen(service.metrics_url, timeout=5) as response:
                    text = response.read().decode()
                return metric_value(text, "grpc_server_handled_total", grpc_code=code, grpc_method=method)

            wait_until(lambda: handled("CANCELLED", "MintToken") == 1, timeout=5, message="the cancelled mint counted")
            assert handled("DEADLINE_EXCEEDED", "MintTokens") == 1
            assert handled("UNKNOWN", "MintToken") == handled("UNKNOWN", "MintTokens") == 0
        reader.start_reading()
        assert service.terminate() == 0
        reader.read_to_end()
    finally:
        service.stop()
