"""Traces as a collector receives them: service/tracing.py exporting over real OTLP/gRPC and
OTLP/HTTP to tests/otlp.py's receiver on loopback, checked on the decoded (and raw) bytes.

A small grpc.aio server runs a stand-in MintToken wrapped by ServerSpans, called by a client that
starts its own span (its own TracerProvider) and sends its traceparent; Vault spans go to a real
OpenBao dev server.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import hvac
import pytest
import requests
from google.rpc import code_pb2
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from tokenservice.v1 import token_service_pb2 as pb

from service import tracing
from service.dev import free_loopback_port
from service.errors import ConfigError, IdentityMissingError, SecretUnavailableError, abort_with_error
from service.logs import configure_logging
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.support import new_secret, wait_until_async

pytestmark = pytest.mark.integration

SERVICE = "tokenservice.v1.TokenService"
EMAIL = "traced.customer@example.com"
EXTERNAL_ID = "cust-7f3a9c1e"
API_KEY = "tsk_" + uuid.uuid4().hex
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0." + uuid.uuid4().hex
TRACESTATE = "vendor=opaque-value"


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(autouse=True)
def clean(receiver: OtlpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver.clear()
    for name in [name for name in os.environ if name.startswith("OTEL_")]:
        monkeypatch.delenv(name)


def export_to(monkeypatch: pytest.MonkeyPatch, receiver: OtlpReceiver, protocol: str, **variables: str) -> None:
    """Point the standard variables at the receiver."""
    endpoint = receiver.grpc_endpoint if protocol == "grpc" else receiver.http_endpoint
    for name, value in {
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "tokenservice-under-test",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test,team=platform",
        **variables,
    }.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def started() -> Iterator[list[tracing.Tracing]]:
    """Shuts down whatever Tracing a test started, also when it fails."""
    instances: list[tracing.Tracing] = []
    yield instances
    for instance in instances:
        instance.shutdown(5)


def start_tracing(
    started: list[tracing.Tracing], config: tracing.TracingConfig | None = None, worker: str | None = "worker-1"
) -> tracing.Tracing:
    instance = tracing.Tracing.from_config(config or tracing.TracingConfig(enabled=True), worker)
    started.append(instance)
    return instance


async def mint(request: pb.MintTokenRequest, context: grpc.aio.ServicerContext) -> pb.MintTokenResponse:
    """A stand-in MintToken: annotates, logs, refuses as the real one does, and returns a token."""
    # The wrong variables on purpose: an email is no caller name, and must not show up.
    tracing.annotate(org="acme", caller="backend-a", identity_kind="email+external_id", secret_version=3)
    tracing.annotate(caller=request.email)
    logging.getLogger("tokenservice.test").info("minting", extra={"fields": {"org": "acme"}})
    if request.org == "missing":
        tracing.annotate(error_reason=IdentityMissingError.reason)
        await abort_with_error(context, IdentityMissingError("request: give an email or an external id"))
    if request.org == "unavailable":
        await abort_with_error(context, SecretUnavailableError("org acme: no signing secret is loaded yet"))
    return pb.MintTokenResponse(token=TOKEN, secret_version=3)


class Served:
    """A grpc.aio server on 127.0.0.1:0 whose MintToken runs `behavior` in server spans."""

    def __init__(self, instance: tracing.Tracing, behavior=mint) -> None:
        self.server = grpc.aio.server()
        spans = instance.server_spans("127.0.0.1", services={SERVICE})
        traced = spans.wrap(behavior, SERVICE, "MintToken")
        self.finished = 0

        async def counted(request: pb.MintTokenRequest, context: grpc.aio.ServicerContext) -> pb.MintTokenResponse:
            try:
                return await traced(request, context)
            finally:
                self.finished += 1

        handler = grpc.unary_unary_rpc_method_handler(
            counted,
            request_deserializer=pb.MintTokenRequest.FromString,
            response_serializer=pb.MintTokenResponse.SerializeToString,
        )
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"MintToken": handler}),))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        spans.listening(self.port)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.port}")
        self.call = self.channel.unary_unary(
            f"/{SERVICE}/MintToken",
            request_serializer=pb.MintTokenRequest.SerializeToString,
            response_deserializer=pb.MintTokenResponse.FromString,
        )

    async def mint(self, request: pb.MintTokenRequest, **kwargs: Any) -> pb.MintTokenResponse:
        """One MintToken call, returned once the server has finished it too: the caller can have the answer
        before the server's task has ended the call's span, and a tracing shut down then would drop it."""
        before = self.finished
        try:
            return await self.call(request, **kwargs)
        finally:
            await wait_until_async(lambda: self.finished > before, timeout=5, message="the server ended the call")


@pytest.fixture
async def served() -> AsyncIterator[list[Served]]:
    running: list[Served] = []
    yield running
    for one in running:
        await one.channel.close()
        await one.server.stop(None)


async def serve(served: list[Served], instance: tracing.Tracing, behavior=mint) -> Served:
    one = Served(instance, behavior)
    await one.server.start()
    served.append(one)
    return one


async def call_with_client_span(one: Served, org: str = "acme") -> tuple[str, str, grpc.StatusCode]:
    """Call MintToken inside a client span of the caller's own provider; its (trace id, span id) and the code."""
    client_tracer = TracerProvider(sampler=ALWAYS_ON).get_tracer("caller")
    with client_tracer.start_as_current_span("caller MintToken", kind=SpanKind.CLIENT) as span:
        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier)
        metadata = (*carrier.items(), ("tracestate", TRACESTATE), ("authorization", f"Bearer {API_KEY}"))
        code = grpc.StatusCode.OK
        try:
            await one.mint(pb.MintTokenRequest(email=EMAIL, external_id=EXTERNAL_ID, org=org), metadata=metadata)
        except grpc.aio.AioRpcError as error:
            code = error.code()
    context = span.get_span_context()
    return format(context.trace_id, "032x"), format(context.span_id, "016x"), code


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.name == name]


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
async def test_server_span_continues_the_callers_trace(protocol, receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, protocol)
    instance = start_tracing(started)
    one = await serve(served, instance)

    trace_id, client_span_id, code = await call_with_client_span(one)
    assert code == grpc.StatusCode.OK
    assert instance.shutdown(5)

    [span] = named(receiver.wait_for(lambda spans: named(spans, f"{SERVICE}/MintToken")), f"{SERVICE}/MintToken")
    assert span.protocol == protocol
    assert span.kind == "SERVER"
    assert (span.trace_id, span.parent_span_id) == (trace_id, client_span_id)
    assert span.span.trace_state == TRACESTATE
    assert span.status == ("STATUS_CODE_UNSET", "")
    assert span.attributes == {
        "rpc.system": "grpc",
        "rpc.service": SERVICE,
        "rpc.method": "MintToken",
        "rpc.grpc.status_code": code_pb2.OK,
        "server.address": "127.0.0.1",
        "server.port": one.port,
        "tokenservice.org": "acme",
        "tokenservice.caller": "backend-a",
        "tokenservice.identity_kind": "email+external_id",
        "tokenservice.secret_version": 3,
    }
    assert span.resource["service.name"] == "tokenservice-under-test"
    assert span.resource["deployment.environment.name"] == "test" and span.resource["team"] == "platform"
    assert span.resource["tokenservice.worker"] == "worker-1" and span.resource["service.instance.id"]
    raw = receiver.raw()
    assert b"backend-a" in raw  # the check below looks at the bytes that carry the attributes
    for never in (EMAIL, EXTERNAL_ID, API_KEY, TOKEN, "example.com"):
        assert never.encode() not in raw


async def test_refusals_and_failures_follow_the_rpc_conventions(receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, "grpc")
    instance = start_tracing(started)
    one = await serve(served, instance)

    assert (await call_with_client_span(one, org="missing"))[2] == grpc.StatusCode.INVALID_ARGUMENT
    assert (await call_with_client_span(one, org="unavailable"))[2] == grpc.StatusCode.UNAVAILABLE
    assert instance.shutdown(5)

    spans = receiver.wait_for(lambda spans: len(named(spans, f"{SERVICE}/MintToken")) == 2)
    refused, failed = sorted(named(spans, f"{SERVICE}/MintToken"), key=lambda span: span.span.start_time_unix_nano)
    # A refusal is the caller's: its code, its reason, no error status. A failure of the service is an error.
    assert refused.attributes["rpc.grpc.status_code"] == code_pb2.INVALID_ARGUMENT
    assert refused.attributes["tokenservice.error_reason"] == "IDENTITY_MISSING"
    assert refused.status == ("STATUS_CODE_UNSET", "")
    assert failed.attributes["rpc.grpc.status_code"] == code_pb2.UNAVAILABLE
    assert failed.status == ("STATUS_CODE_ERROR", "UNAVAILABLE")
    assert not refused.span.events and not failed.span.events
    assert b"signing secret" not in receiver.raw() and b"give an email" not in receiver.raw()


async def test_vault_requests_are_client_spans_under_the_server_span(openbao, receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, "http/protobuf")
    instance = start_tracing(started)
    path = f"kustomer/traced-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, secret := new_secret())

    def read(secret_path: str) -> None:
        client = hvac.Client(
            url=openbao.addr, token=openbao.root_token, timeout=5, session=tracing.vault_http_session()
        )
        with contextlib.suppress(hvac.exceptions.InvalidPath):
            client.secrets.kv.v2.read_secret_version(path=secret_path, raise_on_deleted_version=True)

    async def mint_reading_vault(request, context):
        # Vault calls run in worker threads; the span must follow them there.
        await asyncio.to_thread(read, path)
        await asyncio.to_thread(read, f"{path}-missing")
        return pb.MintTokenResponse(token=TOKEN)

    one = await serve(served, instance, mint_reading_vault)
    await call_with_client_span(one)
    assert instance.shutdown(5)

    spans = receiver.wait_for(lambda spans: len(spans) == 3)
    [server] = named(spans, f"{SERVICE}/MintToken")
    found, missing = sorted(
        named(spans, "GET /v1/{mount}/data/{path}"), key=lambda span: span.span.start_time_unix_nano
    )
    for span in (found, missing):
        assert span.kind == "CLIENT"
        assert (span.trace_id, span.parent_span_id) == (server.trace_id, server.span_id)
        assert span.attributes["http.request.method"] == "GET"
        assert span.attributes["server.address"] == "127.0.0.1"
        assert span.attributes["server.port"] == openbao.port
        assert span.attributes["url.template"] == "/v1/{mount}/data/{path}"
        assert span.attributes["tokenservice.vault.operation"] == "kv.read"
    assert found.attributes["url.full"] == f"{openbao.addr}/v1/secret/data/{path}"
    assert found.attributes["http.response.status_code"] == 200 and "error.type" not in found.attributes
    assert found.status[0] == "STATUS_CODE_UNSET"
    assert missing.attributes["http.response.status_code"] == 404
    assert missing.attributes["error.type"] == "404" and missing.status == ("STATUS_CODE_ERROR", "404")
    raw = receiver.raw()
    assert path.encode() in raw
    for never in (openbao.root_token, secret):
        assert never.encode() not in raw


async def test_an_unreachable_vault_is_an_error_of_its_type(receiver, monkeypatch, started):
    export_to(monkeypatch, receiver, "grpc")
    instance = start_tracing(started)
    closed = f"http://127.0.0.1:{free_loopback_port()}"

    with tracing.background_root_span("tokenservice.refresh"):
        client = hvac.Client(url=closed, token="hvs.not-sent-anywhere", timeout=1, session=tracing.vault_http_session())
        with pytest.raises(requests.exceptions.ConnectionError):
            client.auth.token.renew_self()
    assert instance.shutdown(5)

    [span] = named(receiver.wait_for(lambda spans: len(spans) == 2), "POST /v1/auth/token/renew-self")
    assert span.attributes["error.type"] == "ConnectionError"
    assert span.attributes["tokenservice.vault.operation"] == "token.renew"
    assert span.status == ("STATUS_CODE_ERROR", "ConnectionError")
    assert "http.response.status_code" not in span.attributes
    assert b"hvs.not-sent-anywhere" not in receiver.raw()


async def test_background_refresh_is_its_own_root_trace(receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, "grpc")
    instance = start_tracing(started)
    refreshes: list[asyncio.Task] = []

    async def refresh() -> None:
        with tracing.background_root_span("tokenservice.refresh signing_secret"):
            tracing.annotate(org="acme", outcome="unchanged")
            with tracing.vault_span("kv.read", "GET", "http://vault.invalid:8200/v1/secret/data/x?version=2") as span:
                span.set_status_code(200)

    async def mint_starting_a_refresh(request, context):
        # Started from inside a call: the task inherits the call's context, the refresh must not.
        refreshes.append(asyncio.create_task(refresh()))
        await refreshes[-1]
        return pb.MintTokenResponse(token=TOKEN)

    one = await serve(served, instance, mint_starting_a_refresh)
    await call_with_client_span(one)
    assert instance.shutdown(5)

    spans = receiver.wait_for(lambda spans: len(spans) == 3)
    [server] = named(spans, f"{SERVICE}/MintToken")
    [root] = named(spans, "tokenservice.refresh signing_secret")
    [vault] = named(spans, "GET /v1/secret/data/x")
    assert root.parent_span_id == "" and not root.span.links and root.kind == "INTERNAL"
    assert root.trace_id != server.trace_id
    assert root.attributes == {"tokenservice.org": "acme", "tokenservice.outcome": "unchanged"}
    assert (vault.trace_id, vault.parent_span_id) == (root.trace_id, root.span_id)
    assert vault.attributes["url.full"] == "http://vault.invalid:8200/v1/secret/data/x"


async def test_log_records_of_a_traced_call_carry_its_ids(receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, "grpc")
    instance = start_tracing(started)
    one = await serve(served, instance)
    logs = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", logs)
    try:
        await call_with_client_span(one)
        logging.getLogger("tokenservice.test").info("outside any call")
    finally:
        root.handlers[:], root.level = handlers, level
    assert instance.shutdown(5)

    [server] = named(receiver.wait_for(lambda spans: len(spans) == 1), f"{SERVICE}/MintToken")
    records = [json.loads(line) for line in logs.getvalue().splitlines()]
    [inside] = [record for record in records if record["message"] == "minting"]
    [outside] = [record for record in records if record["message"] == "outside any call"]
    assert (inside["trace_id"], inside["span_id"]) == (server.trace_id, server.span_id)
    assert inside["org"] == "acme"
    assert "trace_id" not in outside and "span_id" not in outside


async def test_sampled_out_calls_export_nothing(receiver, monkeypatch, started, served):
    export_to(monkeypatch, receiver, "grpc", OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0")
    instance = start_tracing(started)
    one = await serve(served, instance)

    for _ in range(20):
        assert (await call_with_client_span(one))[2] == grpc.StatusCode.OK
    assert instance.shutdown(5)
    assert receiver.requests == []


async def test_a_call_the_caller_did_not_sample_records_nothing_not_even_its_vault_requests(
    receiver, monkeypatch, started, served
):
    # Roots would all be kept (ratio 1): a Vault span that lost its unsampled parent would be exported.
    export_to(
        monkeypatch, receiver, "grpc", OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="1"
    )
    instance = start_tracing(started)
    logs = io.StringIO()

    async def mint_reading_vault(request, context):
        with tracing.vault_span("kv.read", "GET", "http://vault.invalid:8200/v1/secret/data/x") as span:
            span.set_status_code(200)
        tracing.annotate(org="acme")
        logging.getLogger("tokenservice.test").info("minting unsampled")
        return pb.MintTokenResponse(token=TOKEN)

    one = await serve(served, instance, mint_reading_vault)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", logs)
    try:
        unsampled = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-00"
        await one.mint(pb.MintTokenRequest(email=EMAIL), metadata=(("traceparent", unsampled),))
    finally:
        root.handlers[:], root.level = handlers, level
    assert instance.shutdown(5)

    assert receiver.requests == []
    [record] = [json.loads(line) for line in logs.getvalue().splitlines() if "minting unsampled" in line]
    assert "trace_id" not in record and "span_id" not in record


async def test_a_ratio_sampler_keeps_its_ratio_of_calls(receiver, monkeypatch, started, served):
    # The sampler is asked before the SDK sets a span up, and the SDK asks it again: both must see the
    # same trace id, or a call would be kept only when two draws both keep it (a quarter, not a half).
    export_to(monkeypatch, receiver, "grpc", OTEL_TRACES_SAMPLER="traceidratio", OTEL_TRACES_SAMPLER_ARG="0.5")
    instance = start_tracing(started)
    one = await serve(served, instance)

    calls = 400
    for _ in range(calls):
        await one.mint(pb.MintTokenRequest(email=EMAIL))
    assert instance.shutdown(5)

    kept = named(receiver.spans(), f"{SERVICE}/MintToken")
    # Binomial(400, 0.5): 200 +- 10; outside 150..250 is five standard deviations away.
    assert 150 <= len(kept) <= 250, len(kept)
    bound = round(0.5 * 2**64)
    assert all(int(span.trace_id, 16) & (2**64 - 1) < bound for span in kept)


async def test_parent_based_sampling_follows_the_caller(receiver, monkeypatch, started, served):
    export_to(
        monkeypatch, receiver, "grpc", OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0"
    )
    instance = start_tracing(started)
    one = await serve(served, instance)

    trace_id, client_span_id, _ = await call_with_client_span(one)  # the caller sampled its trace
    with tracing.background_root_span("tokenservice.refresh"):  # a root: the ratio, 0, decides
        pass
    assert instance.shutdown(5)

    [span] = receiver.spans()
    assert (span.name, span.trace_id, span.parent_span_id) == (f"{SERVICE}/MintToken", trace_id, client_span_id)


def test_otel_sdk_disabled_turns_tracing_off(monkeypatch, started):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert not start_tracing(started).enabled


async def test_the_file_overrides_the_environment(receiver, monkeypatch, started, served):
    # The environment points at a closed gRPC port; the file at the receiver's HTTP one.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_loopback_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-the-environment")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    config = tracing.parse_tracing_settings(
        {
            "enabled": True,
            "endpoint": receiver.http_endpoint,
            "protocol": "http/protobuf",
            "sampler": "always_on",
            "service_name": "from-the-file",
            "resource_attributes": {"region": "eu-1"},
        }
    )
    instance = start_tracing(started, config, worker=None)
    one = await serve(served, instance)
    await call_with_client_span(one)
    assert instance.shutdown(5)

    [span] = receiver.wait_for(lambda spans: len(spans) == 1)
    assert span.protocol == "http/protobuf"
    assert span.resource["service.name"] == "from-the-file" and span.resource["region"] == "eu-1"
    assert "tokenservice.worker" not in span.resource


async def test_default_service_name(receiver, monkeypatch, started):
    export_to(monkeypatch, receiver, "grpc")
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    instance = start_tracing(started)
    with tracing.background_root_span("tokenservice.refresh"):
        pass
    assert instance.shutdown(5)
    [span] = receiver.wait_for(lambda spans: len(spans) == 1)
    assert span.resource["service.name"] == "tokenservice"


def test_shutdown_flushes_pending_spans_and_keeps_its_grace_period(receiver, monkeypatch, started):
    # Spans wait for the next batch a minute away: only shutdown sends them.
    export_to(monkeypatch, receiver, "grpc", OTEL_BSP_SCHEDULE_DELAY="60000")
    instance = start_tracing(started)
    for _ in range(5):
        with tracing.background_root_span("tokenservice.refresh"):
            pass
    time.sleep(0.3)
    assert receiver.requests == []
    assert instance.shutdown(5)
    assert len(receiver.spans()) == 5

    # A collector that never answers: the exporter would retry for 30 s; shutdown gives up in time.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{free_loopback_port()}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "30")
    stuck = start_tracing(started)
    with tracing.background_root_span("tokenservice.refresh"):
        pass
    began = time.monotonic()
    stuck.shutdown(0.5)
    assert time.monotonic() - began < 1.5


def test_annotate_takes_only_its_names_and_shapes(receiver, monkeypatch, started):
    with pytest.raises(TypeError):
        # A name annotate does not take, on purpose: mypy rightly refuses the call this test makes.
        tracing.annotate(email=EMAIL)  # type: ignore[call-arg]  # refused even with tracing off
    export_to(monkeypatch, receiver, "grpc")
    instance = start_tracing(started)
    with tracing.background_root_span("wrong shapes"):
        tracing.annotate(
            org=EMAIL,
            caller="Bearer x",
            identity_kind=EXTERNAL_ID,
            secret_version=-1,
            batch_size=True,
            error_reason="reason with spaces",
            outcome=TOKEN,
        )
    with tracing.background_root_span("right shapes"):
        tracing.annotate(
            org="acme",
            caller="backend-a",
            identity_kind="email",
            secret_version=0,
            batch_size=1000,
            error_reason="RATE_LIMITED",
            outcome="adopted",
        )
    assert instance.shutdown(5)

    spans = receiver.wait_for(lambda spans: len(spans) == 2)
    assert named(spans, "wrong shapes")[0].attributes == {}
    assert named(spans, "right shapes")[0].attributes == {
        "tokenservice.org": "acme",
        "tokenservice.caller": "backend-a",
        "tokenservice.identity_kind": "email",
        "tokenservice.secret_version": 0,
        "tokenservice.batch_size": 1000,
        "tokenservice.error_reason": "RATE_LIMITED",
        "tokenservice.outcome": "adopted",
    }
    for never in (EMAIL, EXTERNAL_ID, TOKEN):
        assert never.encode() not in receiver.raw()


def test_tracing_off_imports_no_sdk_and_wraps_nothing():
    program = textwrap.dedent("""
        import sys
        from service import logs, server, servicer, tracing
        off = tracing.Tracing.from_config(tracing.TracingConfig(enabled=False), "worker-0")
        async def behavior(request, context):
            return None
        assert off.server_spans("127.0.0.1", 50051).wrap(behavior, "tokenservice.v1.TokenService", "MintToken") \\
            is behavior
        tracing.annotate(org="acme", batch_size=3)
        with tracing.vault_span("kv.read", "GET", "http://127.0.0.1:8200/v1/secret/data/x") as span:
            span.set_status_code(200)
        with tracing.background_root_span("tokenservice.refresh"):
            assert tracing.current_trace_ids() is None
        assert tracing.vault_http_session() is None
        assert off.shutdown(1)
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
    """)
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("table", "environ", "named_in_error"),
    [
        ({"enabled": "maybe"}, {}, "setting tracing.enabled (from tracing.toml): must be true or false"),
        ({"enabled": True, "protocol": "http/json"}, {}, "setting tracing.protocol"),
        ({"enabled": True, "exporter": "console"}, {}, "setting tracing.exporter"),
        ({"enabled": True, "endpoint": "otel-collector:4317"}, {}, "setting tracing.endpoint"),
        ({"enabled": True, "sampler": "traceidratio", "sampler_arg": 1.5}, {}, "setting tracing.sampler_arg"),
        ({"enabled": True, "sampler_arg": 0.5}, {}, "applies only to the samplers"),
        ({"enabled": True, "resource_attributes": {"a": [1]}}, {}, "setting tracing.resource_attributes"),
        ({"enabled": True, "endpiont": "http://x:4317"}, {}, "unknown setting(s) tracing.endpiont"),
        ({"enabled": True}, {"OTEL_TRACES_EXPORTER": "console"}, "environment variable OTEL_TRACES_EXPORTER"),
        (
            {"enabled": True},
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"},
            "environment variable OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        ),
        ({"enabled": True}, {"OTEL_TRACES_SAMPLER": "sometimes"}, "environment variable OTEL_TRACES_SAMPLER"),
        (
            {"enabled": True},
            {"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "half"},
            "environment variable OTEL_TRACES_SAMPLER_ARG",
        ),
    ],
)
def test_bad_settings_are_refused_by_name(table, environ, named_in_error):
    with pytest.raises(ConfigError) as refused:
        tracing.parse_tracing_settings(table, "tracing.toml", environ)
    assert named_in_error in str(refused.value)


def test_settings_parse():
    assert tracing.parse_tracing_settings({}, environ={}) == tracing.TracingConfig()
    # Off, the environment is not checked: a variable meant for another program does not stop the service.
    assert not tracing.parse_tracing_settings({}, environ={"OTEL_TRACES_SAMPLER": "sometimes"}).enabled
    assert tracing.parse_tracing_settings(
        {
            "enabled": "1",
            "exporter": "none",
            "protocol": "HTTP/protobuf",
            "sampler": "parentbased_traceidratio",
            "sampler_arg": "0.01",
            "service_name": " ts ",
            "endpoint": "https://collector:4318",
        },
        environ={},
    ) == tracing.TracingConfig(
        enabled=True,
        exporter="none",
        protocol="http/protobuf",
        sampler="parentbased_traceidratio",
        sampler_arg=0.01,
        service_name="ts",
        endpoint="https://collector:4318",
    )
