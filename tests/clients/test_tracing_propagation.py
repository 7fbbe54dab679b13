"""A login's trace from the calling program into TokenService, for each of the five clients.

Each client's e2e program, given the OTEL_* variables, sets up its language's OpenTelemetry SDK and
gRPC instrumentation (as its README's "Tracing" section shows), starts its own span "e2e-login",
calls MintToken inside it and exports over OTLP/gRPC to tests/otlp.py's receiver on loopback; it
prints that span's ids. The chain checked on the exported spans: program span -> the
instrumentation's CLIENT span -> (the traceparent on the wire) -> the server's SERVER span.

- Against a small stand-in TokenService (grpc, in this process) that records the traceparent each
  call carried: proves propagation from the program alone.
- Against a real `tokenservice serve` with [tracing] enabled, exporting to the same receiver: the
  server span `tokenservice.v1.TokenService/MintToken` continues the program's trace.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.clients.common import LANGUAGES, e2e_program, run_e2e, without_otel
from tests.otlp import OtlpReceiver, ReceivedSpan
from tests.support import ServiceProcess, hs256_sign

# The first build of a client downloads and compiles its gRPC and OpenTelemetry libraries.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

METHOD = "tokenservice.v1.TokenService/MintToken"
PROGRAM_IDS = re.compile(r"^e2e-login trace_id=([0-9a-f]{32}) span_id=([0-9a-f]{16})$", re.MULTILINE)
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})\Z")
# The instrumentation scope of each language's CLIENT span: its ecosystem's gRPC instrumentation
# (Rust has none; clients/rust/examples/support/otel.rs plays its part, as the README shows).
CLIENT_SCOPES = {
    "go": "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
    "java": "io.opentelemetry.grpc-1.6",
    "python": "opentelemetry.instrumentation.grpc",
    "rust": "tokenservice-client",
    "typescript": "@opentelemetry/instrumentation-grpc",
}
SAMPLED = 0x01  # of the trace flags; newer SDKs also set 0x02, "random" (W3C Trace Context level 2)
# Every program's traced login mints for <lang>-traced@example.com (py- and ts- for Python and TypeScript).
TRACED_EMAIL_TAIL = b"-traced@example.com"


class StandInTokenService(pb_grpc.TokenServiceServicer):
    """MintToken answering with a real HS256 token for the email, and recording each call's traceparent."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.traceparents: list[str] = []

    def MintToken(self, request: pb.MintTokenRequest, context: grpc.ServicerContext) -> pb.MintTokenResponse:
        traceparent = dict(context.invocation_metadata()).get("traceparent", "")
        assert isinstance(traceparent, str), "a text header's value is a str (a -bin header's is bytes)"
        self.traceparents.append(traceparent)
        now = int(datetime.datetime.now(datetime.UTC).timestamp())
        payload = json.dumps({"email": request.email, "iat": now}, separators=(",", ":")).encode()
        response = pb.MintTokenResponse(
            token=hs256_sign(b'{"alg":"HS256","typ":"JWT"}', payload, self.secret),
            secret_version=1,
            identity_used=pb.IDENTITY_EMAIL,
        )
        response.issued_at.FromSeconds(now)
        response.valid_until.FromSeconds(now + 900)
        return response


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver() as running:
        yield running


@pytest.fixture(scope="module")
def stand_in() -> Iterator[tuple[str, StandInTokenService]]:
    service = StandInTokenService(secrets.token_urlsafe(48))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_TokenServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", service
    finally:
        server.stop(grace=None)


def otel_env(receiver: OtlpReceiver, service_name: str) -> dict[str, str]:
    """This environment without OTEL_* of its own, exporting everything to the receiver over OTLP/gRPC."""
    return {
        **without_otel(os.environ),
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.grpc_endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_SERVICE_NAME": service_name,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }


def traced_login(lang: str, receiver: OtlpReceiver, addr: str, secret: str) -> tuple[ReceivedSpan, ReceivedSpan]:
    """Run `lang`'s traced login against `addr`; its (program span, instrumentation CLIENT span) as received."""
    env = {**otel_env(receiver, f"{lang}-e2e"), "TOKENSERVICE_ADDR": addr, "TOKENSERVICE_TEST_SECRET": secret}
    result = run_e2e(lang, env)
    printed = PROGRAM_IDS.findall(result.stdout)
    assert len(printed) == 1, f"want one 'e2e-login trace_id=... span_id=...' line\n{result.stdout}\n{result.stderr}"
    trace_id, span_id = printed[0]
    # The program flushes before it exits; the wait covers the receiver's own threads.
    ours = in_trace(
        receiver.wait_for(
            lambda spans: (
                {span_id, "CLIENT"}
                <= {value for span in in_trace(spans, trace_id) for value in (span.span_id, span.kind)}
            )
        ),
        trace_id,
    )
    programs = [span for span in ours if span.span_id == span_id]
    assert len(programs) == 1, f"the program's span {span_id} did not arrive: {describe(ours)}"
    program = programs[0]
    assert program.name == "e2e-login" and program.parent_span_id == "", describe([program])
    assert program.resource.get("service.name") == f"{lang}-e2e", program.resource
    clients = [span for span in ours if span.kind == "CLIENT" and span.name.endswith(METHOD)]
    assert len(clients) == 1, f"want one CLIENT span for {METHOD} in the trace: {describe(ours)}"
    client = clients[0]
    assert client.parent_span_id == program.span_id, describe([program, client])
    assert client.scope == CLIENT_SCOPES[lang], client.scope
    assert client.resource.get("service.name") == f"{lang}-e2e", client.resource
    assert TRACED_EMAIL_TAIL not in receiver.raw(), "an exported span holds the customer's email"
    return program, client


def in_trace(spans: list[ReceivedSpan], trace_id: str) -> list[ReceivedSpan]:
    return [span for span in spans if span.trace_id == trace_id]


def describe(spans: list[ReceivedSpan]) -> list[str]:
    return [f"{span.kind} {span.name} {span.span_id} parent={span.parent_span_id or '-'}" for span in spans]


@pytest.fixture(scope="module", params=LANGUAGES)
def lang(request: pytest.FixtureRequest) -> str:
    e2e_program(request.param)  # built once, outside the tests' own timing
    return request.param


def test_the_client_instrumentation_sends_the_programs_trace(lang, receiver, stand_in):
    addr, service = stand_in
    program, client = traced_login(lang, receiver, addr, service.secret)
    sent = [value for value in service.traceparents if value.startswith(f"00-{program.trace_id}-")]
    assert len(sent) == 1, f"no call carried a traceparent of trace {program.trace_id}: {service.traceparents}"
    # The wire carries the CLIENT span as the parent, sampled.
    match = TRACEPARENT.match(sent[0])
    assert match is not None and match.group(1, 2) == (program.trace_id, client.span_id), (sent[0], client.span_id)
    assert int(match.group(3), 16) & SAMPLED, sent[0]


@pytest.fixture(scope="module")
def traced_service(openbao, receiver: OtlpReceiver, tmp_path_factory) -> Iterator[ServiceProcess]:
    """A real `tokenservice serve`, [tracing] enabled in its config file, exporting to the receiver."""
    path = f"kustomer/traced-{uuid.uuid4().hex[:12]}"
    openbao.write_secret(path, secrets.token_urlsafe(48))
    config = Path(tmp_path_factory.mktemp("traced")) / "tokenservice.toml"
    config.write_text("[tracing]\nenabled = true\n")
    service = ServiceProcess.start(
        {
            **otel_env(receiver, "tokenservice"),
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": path,
            "TOKENSERVICE_CONFIG": str(config),
        }
    )
    service.secret = openbao.read_secret(path)
    try:
        yield service
    finally:
        service.terminate()


def test_the_server_span_continues_the_programs_trace(lang, receiver, traced_service):
    program, client = traced_login(lang, receiver, traced_service.grpc_target, traced_service.secret)
    spans = receiver.wait_for(
        lambda spans: any(span.kind == "SERVER" and span.name == METHOD for span in in_trace(spans, program.trace_id))
    )
    servers = [span for span in in_trace(spans, program.trace_id) if span.kind == "SERVER"]
    assert len(servers) == 1 and servers[0].name == METHOD, describe(in_trace(spans, program.trace_id))
    server = servers[0]
    assert server.parent_span_id == client.span_id, describe([program, client, server])
    assert server.resource.get("service.name") == "tokenservice", server.resource
    assert server.attributes.get("rpc.system") == "grpc" and server.attributes.get("rpc.grpc.status_code") == 0, (
        server.attributes
    )
    assert TRACED_EMAIL_TAIL not in receiver.raw(), "an exported span holds the customer's email"
