"""Traces from a real `tokenservice serve` (two workers) to a real OTLP receiver: the server span of
each call continues the caller's W3C trace, background refreshes are root traces whose children are
the Vault requests, the audit record and the logs of a traced call carry its ids, and no identity,
token or secret reaches the exported bytes."""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import OpenBaoDevServer
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.secured import SecuredFiles, start_secured_service
from tests.support import ServiceProcess, new_secret, wait_until

SERVICE = "tokenservice.v1.TokenService"
EMAIL = f"traced-{uuid.uuid4().hex[:8]}@example.com"
EXTERNAL_ID = f"traced-id-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def traced(openbao: OpenBaoDevServer, receiver: OtlpReceiver) -> Iterator[ServiceProcess]:
    path = f"kustomer/traced-{uuid.uuid4().hex[:12]}"
    openbao.write_secret(path, new_secret())
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": path,
            "TOKENSERVICE_WORKERS": "2",
            "TOKENSERVICE_REFRESH_INTERVAL": "1",
            "TOKENSERVICE_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_SERVICE_NAME": "tokenservice-traced",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        }
    )
    service.secret = openbao.read_secret(path)
    try:
        yield service
    finally:
        service.terminate()


@pytest.fixture(scope="module")
def secured_traced(
    openbao: OpenBaoDevServer, receiver: OtlpReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServiceProcess, SecuredFiles]]:
    """The production set-up of tests/secured.py (mTLS on grpc_addr, API keys on their own port), traced."""
    service, files = start_secured_service(
        openbao,
        tmp_path_factory.mktemp("secured-traced"),
        env={
            "TOKENSERVICE_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    try:
        yield service, files
    finally:
        service.terminate()


def _traceparent() -> tuple[str, str, str]:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01"


def _server_spans(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    return wait_until(
        lambda: [span for span in receiver.spans() if span.trace_id == trace_id and span.kind == "SERVER"],
        message=f"no server span of trace {trace_id} was exported",
    )


def test_the_server_span_continues_the_callers_trace_with_the_services_attributes(traced, receiver):
    trace_id, parent_id, traceparent = _traceparent()
    with grpc.insecure_channel(traced.grpc_target) as channel:
        response = pb_grpc.TokenServiceStub(channel).MintToken(
            pb.MintTokenRequest(email=EMAIL, external_id=EXTERNAL_ID),
            timeout=5,
            metadata=(("traceparent", traceparent), ("tracestate", "vendor=value")),
        )

    [span] = _server_spans(receiver, trace_id)
    assert span.name == f"{SERVICE}/MintToken"
    assert span.parent_span_id == parent_id
    assert span.span.trace_state == "vendor=value"
    attributes = span.attributes
    assert attributes["rpc.system"] == "grpc" and attributes["rpc.service"] == SERVICE
    assert attributes["rpc.method"] == "MintToken" and attributes["rpc.grpc.status_code"] == 0
    assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == int(
        traced.grpc_target.split(":")[1]
    )
    assert attributes["tokenservice.org"] == "default" and attributes["tokenservice.caller"] == "unknown"
    assert attributes["tokenservice.identity_kind"] == "email"
    assert attributes["tokenservice.secret_version"] == response.secret_version == 1
    assert span.resource["service.name"] == "tokenservice-traced"
    assert span.resource["tokenservice.worker"].startswith("tokenservice-worker-")

    def audited() -> list[dict]:
        return [record for record in traced.audit_records() if record.get("trace_id") == trace_id]

    [record] = wait_until(audited, message="the audit record of the traced call")
    assert record["span_id"] == span.span_id and record["status"] == "OK"
    assert response.token.encode() not in receiver.raw()


def test_a_traced_batch_carries_its_size_and_caller_and_an_untraced_call_no_span(traced, receiver):
    trace_id, _, traceparent = _traceparent()
    entries = [pb.MintTokenRequest(email=EMAIL), pb.MintTokenRequest(external_id=EXTERNAL_ID), pb.MintTokenRequest()]
    with grpc.insecure_channel(traced.grpc_target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        stub.MintTokens(pb.MintTokensRequest(requests=entries), timeout=5, metadata=(("traceparent", traceparent),))
        unsampled = "00-" + "1" * 32 + "-" + "2" * 16 + "-00"  # the caller's trace, not sampled
        stub.MintToken(pb.MintTokenRequest(email=EMAIL), timeout=5, metadata=(("traceparent", unsampled),))

    [span] = _server_spans(receiver, trace_id)
    assert span.attributes["tokenservice.batch_size"] == 3
    assert span.attributes["tokenservice.caller"] == "unknown"
    unsampled_records = [record for record in traced.audit_records() if record.get("trace_id") == "1" * 32]
    assert unsampled_records == [] and not [s for s in receiver.spans() if s.trace_id == "1" * 32]


def test_a_refused_call_names_its_reason_and_never_the_identity(traced, receiver):
    trace_id, _, traceparent = _traceparent()
    with grpc.insecure_channel(traced.grpc_target) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.TokenServiceStub(channel).MintToken(
            pb.MintTokenRequest(email=f"not an address {EMAIL}"), timeout=5, metadata=(("traceparent", traceparent),)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    [span] = _server_spans(receiver, trace_id)
    assert span.attributes["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert span.attributes["tokenservice.error_reason"] == "EMAIL_INVALID"
    assert not span.span.events


def test_background_refreshes_are_root_traces_with_their_vault_requests_as_children(traced, receiver):
    def refresh_roots() -> list[ReceivedSpan]:
        return [span for span in receiver.spans() if span.name.startswith("tokenservice.refresh")]

    roots = wait_until(refresh_roots, message="no background refresh span was exported")
    assert all(not root.parent_span_id and not root.span.links for root in roots)
    traced_ids = {root.trace_id for root in roots}

    def vault_children() -> list[ReceivedSpan]:
        return [
            span
            for span in receiver.spans()
            if span.kind == "CLIENT" and span.trace_id in traced_ids and span.attributes.get("http.request.method")
        ]

    children = wait_until(vault_children, message="no Vault request span under a refresh")
    assert any(child.attributes.get("http.response.status_code") == 200 for child in children)
    assert all("?" not in str(child.attributes.get("url.full", "")) for child in children)


def test_nothing_exported_holds_an_identity_a_token_or_a_secret(traced, receiver):
    wait_until(lambda: receiver.spans(), message="nothing was exported")
    raw = receiver.raw()
    for never in (EMAIL, EXTERNAL_ID, traced.secret, "example.com"):
        assert never.encode() not in raw


def test_the_server_span_names_the_port_the_call_came_in_on(secured_traced, receiver):
    service, files = secured_traced
    api_key_port = service.listening["api_key_port"]
    by_certificate = grpc.ssl_channel_credentials(files.ca.cert_pem, files.client.key_pem, files.client.cert_pem)
    by_key = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(files.ca.cert_pem), grpc.access_token_call_credentials(files.api_key)
    )
    traces = {}
    for target, credentials in ((service.grpc_target, by_certificate), (f"127.0.0.1:{api_key_port}", by_key)):
        trace_id, _, traceparent = _traceparent()
        with grpc.secure_channel(target, credentials) as channel:
            pb_grpc.TokenServiceStub(channel).MintToken(
                pb.MintTokenRequest(email=EMAIL), timeout=5, metadata=(("traceparent", traceparent),)
            )
        traces[target] = trace_id

    [on_grpc_addr] = _server_spans(receiver, traces[service.grpc_target])
    [on_api_key_addr] = _server_spans(receiver, traces[f"127.0.0.1:{api_key_port}"])
    assert on_grpc_addr.attributes["server.port"] == int(service.grpc_target.rpartition(":")[2])
    assert on_grpc_addr.attributes["tokenservice.caller"] == "checkout"
    assert on_api_key_addr.attributes["server.port"] == api_key_port != on_grpc_addr.attributes["server.port"]
    assert on_api_key_addr.attributes["tokenservice.caller"] == "reports"
    assert on_api_key_addr.attributes["server.address"] == on_grpc_addr.attributes["server.address"] == "127.0.0.1"
    assert files.api_key.encode() not in receiver.raw()
