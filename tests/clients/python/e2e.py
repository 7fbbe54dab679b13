"""Checks the Python client (clients/python) against a running TokenService.

Env: TOKENSERVICE_ADDR (host:port), TOKENSERVICE_TEST_SECRET (the org's
signing secret, to verify tokens with PyJWT). Exits 0 when every check
passes, 1 otherwise; says what failed on stderr.

With OTEL_EXPORTER_OTLP_ENDPOINT set it runs the traced login instead, as the
README's "Tracing" section shows it: the SDK exports over OTLP/gRPC (the OTEL_*
variables configure it), GrpcInstrumentorClient instruments every channel,
and one MintToken runs inside this program's own span "e2e-login", whose ids
it prints on stdout as `e2e-login trace_id=<32 hex> span_id=<16 hex>`.
"""

from __future__ import annotations

import base64
import os
import sys
import time

import grpc
import jwt
from google.rpc import code_pb2, error_details_pb2
from grpc_status import rpc_status
from tokenservice.client import ErrorReason, create_channel, error_reason, parse_reason, reason_of, status_error_info
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

failures: list[str] = []


def check(ok: bool, message: str) -> None:
    if not ok:
        failures.append(message)
        print(f"FAIL: {message}", file=sys.stderr)


def verify(label: str, token: str, secret: str, want: dict[str, str]) -> None:
    header_segment = token.split(".")[0]
    header = base64.urlsafe_b64decode(header_segment + "=" * (-len(header_segment) % 4))
    check(header == b'{"alg":"HS256","typ":"JWT"}', f"{label}: header is {header!r}")
    check(jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}, f"{label}: header fields")
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["iat"]})
    except jwt.PyJWTError as error:
        check(False, f"{label}: PyJWT rejects the token: {error!r}")
        return
    check(set(claims) == {*want, "iat"}, f"{label}: claims {claims}, want keys {sorted({*want, 'iat'})}")
    for key, value in want.items():
        check(claims.get(key) == value, f"{label}: claim {key} = {claims.get(key)!r}, want {value!r}")
    iat = claims.get("iat")
    now = time.time()
    check(type(iat) is int and now - 60 <= iat <= now + 1, f"{label}: iat {iat!r} not an int within [now-60s, now+1s]")


def check_response(label: str, response: pb.MintTokenResponse, identity: int) -> None:
    check(bool(response.token), f"{label}: empty token")
    check(response.identity_used == identity, f"{label}: identity_used {response.identity_used}, want {identity}")
    check(response.secret_version >= 1, f"{label}: secret_version {response.secret_version}")
    check(response.valid_until.seconds - response.issued_at.seconds == 900, f"{label}: validity is not 15 min")


def traced_login(addr: str, secret: str) -> int:
    """One MintToken inside the span "e2e-login", through an instrumented channel; spans flushed on return."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.grpc import GrpcInstrumentorClient
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER apply
    # Built before instrumenting, so that the exporter's own channel carries no spans.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # The instrumentation finds the global provider and the global (W3C tracecontext) propagator.
    trace.set_tracer_provider(provider)
    GrpcInstrumentorClient().instrument()
    email = "py-traced@example.com"
    try:
        with trace.get_tracer("tokenservice-e2e").start_as_current_span("e2e-login") as span:
            with create_channel(addr) as channel:
                response = pb_grpc.TokenServiceStub(channel).MintToken(pb.MintTokenRequest(email=email), timeout=10)
            verify("traced", response.token, secret, {"email": email})
            ids = span.get_span_context()
            print(f"e2e-login trace_id={ids.trace_id:032x} span_id={ids.span_id:016x}")
    finally:
        provider.shutdown()
    if failures:
        return 1
    print("python client e2e: traced login OK", file=sys.stderr)
    return 0


def main() -> int:
    addr = os.environ["TOKENSERVICE_ADDR"]
    secret = os.environ["TOKENSERVICE_TEST_SECRET"]
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return traced_login(addr, secret)
    tokens: dict[str, dict[str, str]] = {}
    with create_channel(addr) as channel:
        stub = pb_grpc.TokenServiceStub(channel)

        email = "py-e2e@example.com"
        response = stub.MintToken(pb.MintTokenRequest(email=email), timeout=10)
        check_response("by email", response, pb.IDENTITY_EMAIL)
        verify("by email", response.token, secret, {"email": email})
        tokens[response.token] = {"email": email}

        # No timeout= here: the channel's default deadline applies.
        response = stub.MintToken(pb.MintTokenRequest(external_id="py-customer-42"))
        check_response("by external id", response, pb.IDENTITY_EXTERNAL_ID)
        verify("by external id", response.token, secret, {"externalId": "py-customer-42"})
        tokens[response.token] = {"externalId": "py-customer-42"}

        batch = stub.MintTokens(
            pb.MintTokensRequest(
                requests=[
                    pb.MintTokenRequest(email="py-batch@example.com"),
                    pb.MintTokenRequest(email="not-an-email"),
                    pb.MintTokenRequest(external_id="py-batch-7"),
                    pb.MintTokenRequest(external_id="py-batch-8", email="py-both@example.com"),
                ]
            ),
            timeout=10,
        )
        if len(batch.results) != 4:
            print(f"FAIL: MintTokens returned {len(batch.results)} results, want 4", file=sys.stderr)
            return 1
        wants = {
            0: ({"email": "py-batch@example.com"}, pb.IDENTITY_EMAIL),
            2: ({"externalId": "py-batch-7"}, pb.IDENTITY_EXTERNAL_ID),
            3: ({"externalId": "py-batch-8", "email": "py-both@example.com"}, pb.IDENTITY_EMAIL),
        }
        for index, (claims, identity) in wants.items():
            result = batch.results[index]
            if result.WhichOneof("outcome") != "token":
                check(False, f"batch[{index}]: no token: {result.error}")
                continue
            check_response(f"batch[{index}]", result.token, identity)
            verify(f"batch[{index}]", result.token.token, secret, claims)
            tokens[result.token.token] = claims
        bad = batch.results[1]
        info = status_error_info(bad.error) if bad.WhichOneof("outcome") == "error" else None
        check(
            bad.WhichOneof("outcome") == "error"
            and bad.error.code == code_pb2.INVALID_ARGUMENT
            and info is not None
            and info.reason == "EMAIL_INVALID"
            and info.domain == "tokenservice.v1",
            f"batch[1]: {bad}",
        )
        check(reason_of(bad.error) == ErrorReason.EMAIL_INVALID, f"batch[1]: reason_of {reason_of(bad.error)}")

        for token, claims in tokens.items():
            verified = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=10)
            check(verified.valid and verified.reason == "", f"VerifyToken: {verified}")
            check(
                verified.email == claims.get("email", "") and verified.external_id == claims.get("externalId", ""),
                f"VerifyToken: {verified} for {claims}",
            )
        first, second = list(tokens)[:2]
        spliced = first.rsplit(".", 1)[0] + "." + second.rsplit(".", 1)[1]  # another token's signature
        verified = stub.VerifyToken(pb.VerifyTokenRequest(token=spliced), timeout=10)
        check(
            not verified.valid and parse_reason(verified.reason) == ErrorReason.TOKEN_SIGNATURE_INVALID,
            f"VerifyToken(spliced): {verified}",
        )

        try:
            stub.MintToken(pb.MintTokenRequest(email="not-an-email"), timeout=10)
            check(False, "MintToken(not-an-email) succeeded")
        except grpc.RpcError as error:
            check(error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"not-an-email: code {error.code()}")
            # A sync call's RpcError is also its grpc.Call, which grpc's stubs cannot say: they give the two
            # incompatible details() and trailing_metadata(), so that mypy holds no object can be both.
            status = rpc_status.from_call(error)  # type: ignore[arg-type]
            infos = []
            for detail in status.details if status else []:
                if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                    info = error_details_pb2.ErrorInfo()
                    detail.Unpack(info)
                    infos.append(info)
            check(
                len(infos) == 1 and infos[0].reason == "EMAIL_INVALID" and infos[0].domain == "tokenservice.v1",
                f"not-an-email: ErrorInfo {infos}",
            )
            check(error_reason(error) == "EMAIL_INVALID", f"error_reason: {error_reason(error)!r}")
            check(reason_of(error) == ErrorReason.EMAIL_INVALID, f"reason_of: {reason_of(error)}")

    # Calls without timeout= get the channel's default deadline: an
    # interceptor after create_channel's own sees it.
    seen: list[float | None] = []

    class Probe(grpc.UnaryUnaryClientInterceptor):
        def intercept_unary_unary(self, continuation, client_call_details, request):
            seen.append(client_call_details.timeout)
            return continuation(client_call_details, request)

    with create_channel(addr, default_timeout=7.0, interceptors=[Probe()]) as channel:
        pb_grpc.TokenServiceStub(channel).MintToken(pb.MintTokenRequest(email=email))
    check(seen == [7.0], f"default deadline: the call's timeout was {seen}")

    if failures:
        print(f"python client e2e: {len(failures)} checks failed", file=sys.stderr)
        return 1
    print(f"python client e2e: OK ({len(tokens)} tokens verified with PyJWT)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
