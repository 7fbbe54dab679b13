"""Transit signing traced, from a real `tokenservice serve` (a Transit org) against a real OpenBao's
Transit engine to a real OTLP receiver: each batch request to Transit is one CLIENT span, parented to
a call it serves and linked to the others, and nothing exported holds an input, a token or a secret."""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import OpenBaoDevServer
from service.transit_import import import_secret
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.support import ServiceProcess, new_secret, wait_until

pytestmark = pytest.mark.integration

SERVICE = "tokenservice.v1.TokenService"
MINT = f"{SERVICE}/MintToken"
CALLS = 12


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as started:
        yield started


@pytest.fixture(scope="module")
def transit_key(openbao: OpenBaoDevServer) -> tuple[str, str, bytes]:
    """(mount, key, secret): a Transit mount of this module's own, with the org's secret imported as a key."""
    mount, key, secret = f"transit-{uuid.uuid4().hex[:8]}", f"kustomer-{uuid.uuid4().hex[:8]}", new_secret().encode()
    openbao.client().sys.enable_secrets_engine("transit", path=mount)
    import_secret(openbao.client(), mount, key, secret, org="acme", dry_run=False)
    return mount, key, secret


def serve_transit(
    openbao: OpenBaoDevServer,
    receiver: OtlpReceiver,
    directory: Path,
    mount: str,
    key: str,
    token: str,
    env: dict[str, str] | None = None,
) -> ServiceProcess:
    config = directory / "tokenservice.toml"
    config.write_text(
        f'workers = 1\ndefault_org = "acme"\n[vault]\naddr = "{openbao.addr}"\n'
        f'[orgs.acme]\nsigning = "transit"\ntransit_key = "{key}"\ntransit_mount = "{mount}"\n'
    )
    return ServiceProcess.start(
        {
            "VAULT_TOKEN": token,
            "TOKENSERVICE_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **(env or {}),
        },
        ["--config", str(config)],
    )


@pytest.fixture(scope="module")
def traced(
    openbao: OpenBaoDevServer, receiver: OtlpReceiver, transit_key: tuple[str, str, bytes], tmp_path_factory
) -> Iterator[ServiceProcess]:
    mount, key, _ = transit_key
    service = serve_transit(openbao, receiver, tmp_path_factory.mktemp("transit"), mount, key, openbao.root_token)
    try:
        yield service
    finally:
        service.terminate()


def traceparent(sampled: bool) -> tuple[str, str]:
    """(trace id, traceparent) of a caller's span, sampled or not."""
    trace_id = secrets.token_hex(16)
    return trace_id, f"00-{trace_id}-{secrets.token_hex(8)}-{'01' if sampled else '00'}"


def mint_concurrently(target: str, sampled: list[bool]) -> tuple[list[str], list[str]]:
    """One MintToken per entry of `sampled`, all at once so that Transit requests serve several: the trace
    ids and the tokens, in order."""
    traces = [traceparent(flag) for flag in sampled]

    def mint(index: int) -> str:
        with grpc.insecure_channel(target) as channel:
            return (
                pb_grpc.TokenServiceStub(channel)
                .MintToken(
                    pb.MintTokenRequest(email=f"transit-{index}@example.com", external_id=f"transit-id-{index}"),
                    timeout=10,
                    metadata=(("traceparent", traces[index][1]),),
                )
                .token
            )

    with ThreadPoolExecutor(len(sampled)) as pool:
        tokens = list(pool.map(mint, range(len(sampled))))
    return [trace_id for trace_id, _ in traces], tokens


def transit_spans(spans: list[ReceivedSpan], operation: str) -> list[ReceivedSpan]:
    """The Transit batch requests' spans (the service's own, not the requests hvac sent for them)."""
    return [
        span
        for span in spans
        if span.kind == "CLIENT"
        and span.attributes.get("tokenservice.vault.operation") == f"transit.{operation}"
        and "tokenservice.batch_size" in span.attributes
    ]


def served(span: ReceivedSpan) -> set[tuple[str, str]]:
    """The (trace id, span id) of the calls a Transit span says it served: its parent and its links."""
    links = {(link.trace_id.hex(), link.span_id.hex()) for link in span.span.links}
    return {(span.trace_id, span.parent_span_id), *links}


def test_each_transit_request_is_a_client_span_of_the_calls_it_serves(traced, receiver, openbao, transit_key):
    mount, key, secret = transit_key
    receiver.clear()
    trace_ids, tokens = mint_concurrently(traced.grpc_target, [True] * CALLS)

    def exported() -> tuple[list[ReceivedSpan], list[ReceivedSpan]] | None:
        spans = receiver.spans()
        calls = [span for span in spans if span.name == MINT and span.trace_id in trace_ids]
        batches = transit_spans(spans, "hmac")
        done = len(calls) == CALLS and sum(batch.attributes["tokenservice.batch_size"] for batch in batches) >= CALLS
        return (calls, batches) if done else None

    calls, batches = wait_until(exported, message="the server spans of the calls and their Transit spans")
    call_ids = {(call.trace_id, call.span_id) for call in calls}
    covered = set().union(*(served(batch) for batch in batches))
    assert call_ids <= covered, "every call is the parent of a Transit span or linked from one"
    assert covered <= call_ids, "a Transit span names only calls it served"
    for batch in batches:
        assert batch.name == "POST /v1/{mount}/hmac/{key}"
        assert batch.attributes["tokenservice.batch_size"] == len(served(batch))
        assert batch.attributes["tokenservice.org"] == "acme"
        assert batch.attributes["http.request.method"] == "POST"
        assert batch.attributes["url.full"] == f"{openbao.addr}/v1/{mount}/hmac/{key}/sha2-256"
        assert batch.attributes["url.template"] == "/v1/{mount}/hmac/{key}"
        assert batch.attributes["server.address"] == "127.0.0.1"
        assert batch.attributes["server.port"] == openbao.port
        assert batch.attributes["http.response.status_code"] == 200 and "error.type" not in batch.attributes
        assert batch.status == ("STATUS_CODE_UNSET", "")
    assert len(batches) < CALLS, "concurrent calls shared Transit requests"

    raw = receiver.raw()
    signing_inputs = [token.rpartition(".")[0].encode() for token in tokens]
    for never in (
        secret,
        base64.b64encode(secret),
        openbao.root_token.encode(),
        b"example.com",
        *(token.encode() for token in tokens),
        *signing_inputs,
        *(base64.b64encode(signing_input) for signing_input in signing_inputs),
    ):
        assert never not in raw


def test_a_batch_is_parented_to_a_sampled_call_and_links_only_sampled_ones(traced, receiver):
    receiver.clear()
    sampled = [index % 3 == 0 for index in range(CALLS)]
    trace_ids, _ = mint_concurrently(traced.grpc_target, sampled)
    kept = {trace_id for trace_id, flag in zip(trace_ids, sampled, strict=True) if flag}

    def exported() -> tuple[list[ReceivedSpan], list[ReceivedSpan]] | None:
        spans = receiver.spans()
        calls = [span for span in spans if span.name == MINT and span.trace_id in trace_ids]
        batches = [batch for batch in transit_spans(spans, "hmac") if batch.trace_id in kept]
        done = len(calls) == len(kept) and {call.span_id for call in calls} <= {
            span_id for batch in batches for _, span_id in served(batch)
        }
        return (calls, batches) if done else None

    calls, batches = wait_until(exported, message="the sampled calls' server spans and their Transit spans")
    assert {call.trace_id for call in calls} == kept, "the calls whose caller did not sample are not recorded"
    for batch in batches:
        assert {trace_id for trace_id, _ in served(batch)} <= kept


def test_a_call_dropped_at_the_root_leaves_its_transit_request_unrecorded(openbao, receiver, transit_key, tmp_path):
    # A ratio sampler that is not parent-based decides a child by its trace id: the Transit request of a
    # call dropped at the root must have that call's fate, not be kept (or orphaned) by a draw of its own.
    mount, key, _ = transit_key
    # A service name of its own: the module's other service exports to the same receiver.
    name = f"tokenservice-root-drop-{uuid.uuid4().hex[:8]}"
    env = {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5", "OTEL_SERVICE_NAME": name}
    service = serve_transit(openbao, receiver, tmp_path, mount, key, openbao.root_token, env)
    receiver.clear()
    calls = 40
    try:
        with grpc.insecure_channel(service.grpc_target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            for index in range(calls):  # one at a time: each Transit request serves one call
                stub.MintToken(pb.MintTokenRequest(email=f"root-{index}@example.com"), timeout=10)
    finally:
        service.terminate()  # flushes the pending spans

    spans = [span for span in receiver.spans() if span.resource.get("service.name") == name]
    kept = {span.span_id: span for span in spans if span.name == MINT}
    batches = transit_spans(spans, "hmac")
    # Binomial(40, 0.5): 20 +- 3.2; none or all kept is twelve standard deviations away.
    assert 0 < len(kept) < calls, len(kept)
    assert sorted(batch.parent_span_id for batch in batches) == sorted(kept), (
        "a Transit span exactly for each call kept, parented to it"
    )
    assert all(batch.trace_id == kept[batch.parent_span_id].trace_id for batch in batches)


def test_verify_is_a_transit_span_of_its_call(traced, receiver):
    _, [token] = mint_concurrently(traced.grpc_target, [True])
    receiver.clear()
    trace_id, parent = traceparent(True)
    with grpc.insecure_channel(traced.grpc_target) as channel:
        verdict = pb_grpc.TokenServiceStub(channel).VerifyToken(
            pb.VerifyTokenRequest(token=token), timeout=10, metadata=(("traceparent", parent),)
        )
    assert verdict.valid

    def exported() -> tuple[ReceivedSpan, ReceivedSpan] | None:
        spans = [span for span in receiver.spans() if span.trace_id == trace_id]
        server = [span for span in spans if span.name == f"{SERVICE}/VerifyToken"]
        batches = transit_spans(spans, "verify")
        return (server[0], batches[0]) if server and batches else None

    server, batch = wait_until(exported, message="the VerifyToken span and its Transit span")
    assert batch.parent_span_id == server.span_id and not batch.span.links
    assert batch.name == "POST /v1/{mount}/verify/{key}" and batch.attributes["tokenservice.batch_size"] == 1
    assert token.encode() not in receiver.raw() and token.rpartition(".")[2].encode() not in receiver.raw()


def test_a_refused_transit_request_is_an_error_of_its_status(openbao, receiver, transit_key, tmp_path):
    mount, key, _ = transit_key
    # Enough to read the key (the service starts), not to sign with it.
    policy = f"read-only-{uuid.uuid4().hex[:8]}"
    openbao.client().sys.create_or_update_policy(policy, f'path "{mount}/keys/{key}" {{ capabilities = ["read"] }}')
    token = openbao.client().auth.token.create(policies=[policy], no_default_policy=True, ttl="1h")
    service = serve_transit(openbao, receiver, tmp_path, mount, key, token["auth"]["client_token"])
    try:
        receiver.clear()
        trace_id, parent = traceparent(True)
        with grpc.insecure_channel(service.grpc_target) as channel, pytest.raises(grpc.RpcError) as refused:
            pb_grpc.TokenServiceStub(channel).MintToken(
                pb.MintTokenRequest(email="refused@example.com"), timeout=10, metadata=(("traceparent", parent),)
            )
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE

        def exported() -> list[ReceivedSpan]:
            return transit_spans([span for span in receiver.spans() if span.trace_id == trace_id], "hmac")

        [batch] = wait_until(exported, message="the refused Transit request's span")
        assert batch.attributes["http.response.status_code"] == 403
        assert batch.attributes["error.type"] == "403" and batch.status == ("STATUS_CODE_ERROR", "403")
        assert token["auth"]["client_token"].encode() not in receiver.raw()
    finally:
        service.terminate()
