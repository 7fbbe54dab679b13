"""Refused calls are cheap and audited once, against a real `tokenservice serve`.

Threat: a 2 KB MintTokens call of 1,000 empty entries, refused as a whole,
wrote 1,000 audit records and cost no rate-limit tokens, so anyone who could
reach the port could flood the audit trail (and with it the disk, the log
pipeline and the event loop) for free. Now a call refused as a whole writes
one record carrying its entry count; refusals before authentication are
limited per peer address and in total, and those over the limit are counted
(a metric and a periodic summary record) instead of written one by one.
"""

from __future__ import annotations

import time
import urllib.request
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.secured import Caller, SecuredFiles, start_secured_service
from tests.support import ServiceProcess, metric_value, reflection_stub, refusal_of

BATCHER_DNS_NAME = "batcher.internal.example"
# A certificate caller that may call MintTokens only, with a small bucket of its own.
BATCHER = Caller(dns_name=BATCHER_DNS_NAME, orgs=("acme",), rpcs=("MintTokens",), rate_per_second=1, burst=50)
EMPTY_ENTRIES = pb.MintTokensRequest(requests=[pb.MintTokenRequest()] * 1000)


@pytest.fixture(scope="module")
def secured(openbao, tmp_path_factory) -> Iterator[tuple[ServiceProcess, SecuredFiles]]:
    service, files = start_secured_service(
        openbao, tmp_path_factory.mktemp("refusals"), extra_callers={"batcher": BATCHER}
    )
    try:
        yield service, files
    finally:
        service.terminate()


def api_key_channel(service: ServiceProcess, files: SecuredFiles, key: str | None) -> grpc.Channel:
    # A channel of its own each time: a new connection, so a new source port.
    return grpc.secure_channel(
        f"127.0.0.1:{service.listening['api_key_port']}",
        files.api_key_credentials(key),
        options=[("grpc.use_local_subchannel_pool", 1)],
    )


def mtls_channel(service: ServiceProcess, files: SecuredFiles, stem: str, **sans: tuple[str, ...]) -> grpc.Channel:
    client = files.ca.issue(stem, **sans)
    credentials = grpc.ssl_channel_credentials(files.ca.cert_pem, client.key_pem, client.cert_pem)
    return grpc.secure_channel(service.grpc_target, credentials)


def refused_batch(channel: grpc.Channel, request: pb.MintTokensRequest, request_id: str) -> tuple:
    with pytest.raises(grpc.RpcError) as raised:
        pb_grpc.TokenServiceStub(channel).MintTokens(request, metadata=(("x-request-id", request_id),), timeout=10)
    return refusal_of(raised.value)


def records_of(service: ServiceProcess, request_id: str) -> list[dict]:
    return [record for record in service.audit_records() if record["request_id"] == request_id]


def test_a_batch_of_empty_entries_is_two_kilobytes():
    assert len(EMPTY_ENTRIES.SerializeToString()) == 2000


@pytest.mark.parametrize("credentials", ["none", "unknown key", "policy without MintTokens"])
def test_a_batch_refused_as_a_whole_is_audited_once_with_its_entry_count(secured, credentials):
    service, files = secured
    request_id = f"flood-{uuid.uuid4().hex[:8]}"
    if credentials == "policy without MintTokens":
        channel = grpc.secure_channel(
            service.grpc_target,
            grpc.ssl_channel_credentials(files.ca.cert_pem, files.client.key_pem, files.client.cert_pem),
        )
        expected = (grpc.StatusCode.PERMISSION_DENIED, "RPC_NOT_ALLOWED", "checkout")
    else:
        channel = api_key_channel(service, files, None if credentials == "none" else "tks_not-a-key")
        expected = (
            grpc.StatusCode.UNAUTHENTICATED,
            "CREDENTIALS_MISSING" if credentials == "none" else "CREDENTIALS_INVALID",
            "unknown",
        )
    with channel:
        code, reason, _ = refused_batch(channel, EMPTY_ENTRIES, request_id)
    assert (code, reason) == expected[:2]
    [record] = records_of(service, request_id)
    assert (record["caller"], record["status"], record["reason"], record["entries"]) == (
        expected[2],
        code.name,
        reason,
        1000,
    )
    # The entries were never looked at: the record names no org, identity kind or fingerprint.
    assert (
        record["org"],
        record["identity_kind"],
        record["email_fingerprint"],
        record["external_id_fingerprint"],
        record["secret_version"],
    ) == (None, None, None, None, None)


def test_a_batch_over_the_batch_limit_is_audited_once(secured):
    service, files = secured
    request = pb.MintTokensRequest(requests=[pb.MintTokenRequest(external_id="c")] * 5000)
    with api_key_channel(service, files, files.api_key) as channel:
        code, reason, _ = refused_batch(channel, request, "over-the-limit")
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
    [record] = records_of(service, "over-the-limit")
    assert (record["caller"], record["entries"], record["reason"]) == ("reports", 5000, "BATCH_TOO_LARGE")


def test_an_empty_batch_costs_a_rate_token(secured):
    service, files = secured
    outcomes = []
    with mtls_channel(service, files, "batcher", dns=(BATCHER_DNS_NAME,)) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        for _ in range(80):
            try:
                stub.MintTokens(pb.MintTokensRequest(), timeout=5)
                outcomes.append("OK")
            except grpc.RpcError as error:
                outcomes.append(refusal_of(error)[1])
    # The bucket holds 50 and refills at 1/s: 80 calls in a few seconds cannot all pass.
    assert set(outcomes) == {"OK", "RATE_LIMITED"}
    assert outcomes.count("OK") <= 50 + 10 and outcomes[:50] == ["OK"] * 50


def metrics_text(service: ServiceProcess) -> str:
    with urllib.request.urlopen(service.metrics_url, timeout=5) as response:
        return response.read().decode()


def test_a_public_reflection_stream_without_credentials_is_limited_per_peer_address(openbao, tmp_path):
    # With health and reflection public (the default), one reflection stream answers as many requests as
    # it is sent, each about half a millisecond of the service's CPU: 20,000 took a core for 9.4 s. Each
    # request is now charged to the peer's bucket, as a refusal is; a caller with credentials is not.
    service, files = start_secured_service(openbao, tmp_path)
    try:
        with api_key_channel(service, files, None) as anonymous:
            answered, refusal = reflect(anonymous, 1000)
        assert 20 <= answered <= 25  # the default burst of 20, and 10 a second for as long as it ran
        assert refusal is not None and refusal[:2] == (grpc.StatusCode.RESOURCE_EXHAUSTED, "PEER_RATE_LIMITED")
        assert refusal[2] is not None and refusal[2] > 0
        # A key the service does not know is no credential: the same bucket, already spent.
        with api_key_channel(service, files, "not-a-key-of-the-set") as unknown:
            answered, refusal = reflect(unknown, 1000)
        assert answered <= 5 and refusal is not None and refusal[1] == "PEER_RATE_LIMITED"
        with api_key_channel(service, files, files.api_key) as known:
            assert reflect(known, 200) == (200, None)
        assert metric_value(metrics_text(service), "tokenservice_peer_rate_limited_total", scope="peer") == 2
    finally:
        assert service.terminate() == 0


def reflect(channel: grpc.Channel, count: int) -> tuple[int, tuple[grpc.StatusCode, str, float | None] | None]:
    """How many of `count` reflection requests on one stream were answered, and the refusal that ended it."""
    requests = (
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tokenservice.v1.TokenService")
        for _ in range(count)
    )
    answered = 0
    try:
        for _ in reflection_stub(channel).ServerReflectionInfo(requests, timeout=10):
            answered += 1
    except grpc.RpcError as error:
        return answered, refusal_of(error)
    return answered, None


def test_refusals_before_authentication_are_limited_per_peer_address(openbao, tmp_path):
    service, files = start_secured_service(openbao, tmp_path)
    try:
        channels = [api_key_channel(service, files, None) for _ in range(3)]
        outcomes: list[tuple[str, float | None]] = []
        started = time.monotonic()
        for n in range(60):  # round robin over three connections: three source ports, one address
            try:
                pb_grpc.TokenServiceStub(channels[n % 3]).MintToken(
                    pb.MintTokenRequest(email="a@example.com"), metadata=(("x-request-id", f"peer-{n}"),), timeout=5
                )
                outcomes.append(("OK", None))
            except grpc.RpcError as error:
                _code, reason, retry_delay = refusal_of(error)
                outcomes.append((reason, retry_delay))
        elapsed = time.monotonic() - started
        with api_key_channel(service, files, files.api_key) as known:
            # A caller with credentials, from the same address, is not held back.
            pb_grpc.TokenServiceStub(known).MintToken(pb.MintTokenRequest(external_id="c-1"), timeout=5)
        for channel in channels:
            channel.close()
        metrics = metrics_text(service)
        individual = service.audit_records()
    finally:
        assert service.terminate() == 0
    reasons = [reason for reason, _ in outcomes]
    refused, limited = reasons.count("CREDENTIALS_MISSING"), reasons.count("PEER_RATE_LIMITED")
    assert refused + limited == 60
    # The default bucket: 20 at once, then 10 a second.
    assert 20 <= refused <= 20 + 10 * elapsed + 1 and limited >= 20
    assert all(delay is not None and 0 < delay <= 0.11 for reason, delay in outcomes if reason == "PEER_RATE_LIMITED")
    assert metric_value(metrics, "tokenservice_peer_rate_limited_total", scope="peer") == limited
    # Only the refusals within the limit are audited one by one; those over it are in a summary.
    flood = [r for r in individual if r["request_id"] and r["request_id"].startswith("peer-")]
    assert len(flood) == refused and {r["reason"] for r in flood} == {"CREDENTIALS_MISSING"}
    summaries = [r for r in service.audit_records() if r["reason"] == "PEER_RATE_LIMITED"]
    assert sum(r["calls"] for r in summaries) == sum(r["entries"] for r in summaries) == limited
    assert all(
        (r["rpc"], r["request_id"], r["peer"], r["caller"], r["status"])
        == ("MintToken", None, None, "unknown", "RESOURCE_EXHAUSTED")
        for r in summaries
    )
