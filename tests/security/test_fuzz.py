"""Property tests of every RPC edge, against a real `tokenservice serve` process.

Hypothesis drives (a) VerifyToken with crafted tokens (valid-ish tokens, signed
with the live secret so the claim checks are reached, then mutated), (b)
MintToken and MintTokens with arbitrary unicode identities and orgs, and (c)
raw request bytes sent to each method. Every answer must be a documented one:
a response whose content an independent check confirms, or a status code with
a documented ErrorInfo reason; never UNKNOWN or INTERNAL, and no message that
echoes an identity.

The run is derandomized (the same inputs every time) with a fixed budget of
examples per property; TOKENSERVICE_FUZZ_EXAMPLES overrides it for a long run
by hand, e.g.
    TOKENSERVICE_FUZZ_EXAMPLES=25000 .venv/bin/python -m pytest -q -o timeout=0 \\
        --hypothesis-show-statistics tests/security/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import time
import unicodedata
import uuid
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.support import (
    ServiceProcess,
    b64url_decode,
    b64url_encode,
    hs256_open,
    hs256_sign,
    new_secret,
    refusal_in,
    refusal_of,
    wait_for_health,
)

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("TOKENSERVICE_FUZZ_EXAMPLES", "0"))
HEADER = b'{"alg":"HS256","typ":"JWT"}'
MARKER = "pii-marker"
OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"
SERVICE = "/tokenservice.v1.TokenService"
IAT_MAX = 253402300799 - 900

VERIFY_REASONS = {
    "TOKEN_MALFORMED",
    "TOKEN_HEADER_INVALID",
    "TOKEN_ALGORITHM_INVALID",
    "TOKEN_SIGNATURE_INVALID",
    "TOKEN_IAT_MISSING",
    "TOKEN_ISSUED_IN_FUTURE",
    "TOKEN_EXPIRED",
    "TOKEN_IDENTITY_MISSING",
}
DECODED_REASONS = {"", "TOKEN_ISSUED_IN_FUTURE", "TOKEN_EXPIRED", "TOKEN_IDENTITY_MISSING"}
INVALID = grpc.StatusCode.INVALID_ARGUMENT
MINT_ERRORS = {
    (INVALID, "IDENTITY_MISSING"),
    (INVALID, "EMAIL_INVALID"),
    (INVALID, "EXTERNAL_ID_INVALID"),
    (grpc.StatusCode.NOT_FOUND, "ORG_UNKNOWN"),
}
VERIFY_ERRORS = {(INVALID, "TOKEN_MISSING"), (INVALID, "TOKEN_TOO_LARGE"), (grpc.StatusCode.NOT_FOUND, "ORG_UNKNOWN")}
RAW_ERRORS = {
    "MintToken": MINT_ERRORS | {(INVALID, "REQUEST_MALFORMED")},
    "MintTokens": {(INVALID, "REQUEST_MALFORMED"), (INVALID, "BATCH_TOO_LARGE")},
    "VerifyToken": VERIFY_ERRORS | {(INVALID, "REQUEST_MALFORMED")},
}


def budget(default: int) -> settings:
    return settings(
        max_examples=EXAMPLES or default,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
    )


@pytest.fixture(scope="module")
def service(openbao) -> Iterator[ServiceProcess]:
    """A process of its own: thousands of calls stay out of the shared service's audit trail and metrics."""
    path = f"kustomer/fuzz-{uuid.uuid4().hex[:12]}"
    openbao.write_secret(path, new_secret())
    started = ServiceProcess.start(
        {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "TOKENSERVICE_SECRET_PATH": path}
    )
    started.secret = openbao.read_secret(path)
    try:
        yield started
    finally:
        started.terminate()


@pytest.fixture(scope="module")
def channel(service) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def stub(channel) -> pb_grpc.TokenServiceStub:
    return pb_grpc.TokenServiceStub(channel)


def refusal(error: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a failed call, checking that its google.rpc.Status carries
    both and a message that echoes no input."""
    code, reason, _ = refusal_of(error)
    details = error.details()
    assert details and MARKER not in details
    return code, reason


def entry_refusal(status: status_pb2.Status) -> tuple[grpc.StatusCode, str]:
    """The status code and ErrorInfo reason of a failed MintTokens entry, whose message echoes no input."""
    assert status.message and MARKER not in status.message
    return refusal_in(status)


# --- (a) VerifyToken with crafted tokens --------------------------------------------------------------------------

# Text with everything JSON can spell, lone surrogates included, and the marker so echoes show.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=30)
identity_text = st.one_of(
    st.just(""), st.text(max_size=30), st.text(max_size=20).map(lambda text: MARKER + text), any_text, st.emails()
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), any_text)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(any_text, children, max_size=3)),
    max_leaves=6,
)
recent_iats = st.integers(-1200, 120).map(lambda offset: int(time.time()) + offset)
odd_iats = st.one_of(
    st.integers(),
    st.integers(IAT_MAX - 2, IAT_MAX + 2),
    st.integers(2**63 - 2, 2**64 + 2),
    st.sampled_from([0, -1, 1.5, 1e300, True, False, None, "1700000000"]),
    json_values,
)
odd_headers = st.one_of(
    st.just(b'{"typ":"JWT","alg":"HS256"}'),
    st.fixed_dictionaries(
        {},
        optional={
            "alg": st.one_of(st.sampled_from(["HS256", "none", "HS512", "RS256", "hs256"]), json_values),
            "typ": st.one_of(st.just("JWT"), json_values),
            "kid": json_values,
            "crit": json_values,
        },
    ).map(lambda header: json.dumps(header).encode("utf-8", "surrogatepass")),
    st.binary(max_size=40),
)
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def chance(draw, tenths: int) -> bool:
    """True in about `tenths` draws out of ten: most tokens stay valid-ish, so the deep checks are reached."""
    return draw(st.integers(0, 9)) < tenths


@st.composite
def claims_sets(draw) -> list[tuple[str, object]]:
    claims = [
        (name, draw(identity_text if chance(draw, 9) else json_values))
        for name in ("externalId", "email")
        if chance(draw, 6)
    ]
    if chance(draw, 9):
        claims.append(("iat", draw(recent_iats if chance(draw, 8) else odd_iats)))
    if chance(draw, 1):
        claims += draw(st.lists(st.tuples(any_text, json_values), min_size=1, max_size=2))
    if chance(draw, 1):  # a duplicate: two readers of the token could see different claims
        claims.append(("email", draw(identity_text)))
    return draw(st.permutations(claims))


@st.composite
def payloads(draw) -> bytes:
    if chance(draw, 1):
        return draw(st.binary(max_size=60))
    separator, colon = draw(st.sampled_from([(",", ":"), (", ", ": ")]))
    ensure_ascii = draw(st.booleans())
    members = [
        json.dumps(name, ensure_ascii=ensure_ascii) + colon + json.dumps(value, ensure_ascii=ensure_ascii)
        for name, value in draw(claims_sets())
    ]
    return ("{" + separator.join(members) + "}").encode("utf-8", "surrogatepass")


def mutated(token: str, kind: str, position: int, text: str) -> str:
    at = position % (len(token) + 1)
    segments = token.split(".")
    return {
        "none": token,
        "pad": token + "=" * (1 + position % 2),
        "insert": token[:at] + text + token[at:],
        "delete": token[:at] + token[at + 1 :],
        "replace": token[:at] + text + token[at + len(text) :],
        "flip last bits": token[:-1] + B64URL[(B64URL.find(token[-1]) ^ (1 + position % 3)) % 64],
        "drop segment": ".".join(segments[: position % 3] + segments[position % 3 + 1 :]),
        "extra segment": token + "." + b64url_encode(text.encode("utf-8", "surrogatepass")),
        "swap segments": ".".join(reversed(segments)),
    }[kind]


@st.composite
def crafted_tokens(draw, secret: str) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.text(B64URL + ".=+/ \n\té\x00", max_size=120))
    header = HEADER if chance(draw, 7) else draw(odd_headers)
    token = hs256_sign(header, draw(payloads()), secret if chance(draw, 8) else OTHER_SECRET)
    kind = (
        "none"
        if chance(draw, 7)
        else draw(
            st.sampled_from(
                [
                    "pad",
                    "insert",
                    "delete",
                    "replace",
                    "flip last bits",
                    "drop segment",
                    "extra segment",
                    "swap segments",
                ]
            )
        )
    )
    return mutated(token, kind, draw(st.integers(0, 10_000)), draw(st.text(B64URL + ".=+/ \n", min_size=1, max_size=4)))


def strictly_decoded(token: str, secret: str) -> dict:
    """The claims of a token that must be exactly as the minter writes it, checked without the service's code."""
    segments = token.split(".")
    assert all(b64url_encode(b64url_decode(segment)) == segment for segment in segments), "non-canonical base64url"
    header, _ = hs256_open(token, secret)
    assert header == HEADER

    def unique(pairs: list) -> dict:
        assert len({key for key, _ in pairs}) == len(pairs), "duplicate keys"
        return dict(pairs)

    claims = json.loads(b64url_decode(segments[1]).decode("utf-8"), object_pairs_hook=unique)
    assert isinstance(claims, dict) and claims.keys() <= {"externalId", "email", "iat"}
    assert type(claims["iat"]) is int and 0 <= claims["iat"] <= IAT_MAX
    return claims


def check_verification(token: str, secret: str, response: pb.VerifyTokenResponse, started: float) -> None:
    assert response.valid == (response.reason == "")
    if response.reason not in DECODED_REASONS:
        assert response.reason in VERIFY_REASONS and response.detail and MARKER not in response.detail
        assert (response.email, response.external_id, response.HasField("issued_at")) == ("", "", False)
        return
    claims = strictly_decoded(token, secret)
    assert (response.external_id, response.email) == (claims.get("externalId", ""), claims.get("email", ""))
    assert response.issued_at.seconds == claims["iat"] and response.valid_until.seconds == claims["iat"] + 900
    if response.valid:
        assert response.detail == "" and (response.email or response.external_id)
        assert started - 900 - 1 <= claims["iat"] <= time.time()
    else:
        assert response.detail and MARKER not in response.detail


@budget(2500)
@given(data=st.data())
def test_verify_token_answers_every_crafted_token_as_documented(service, stub, data):
    token = data.draw(crafted_tokens(service.secret))
    started = time.time()
    try:
        response = stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=10)
    except grpc.RpcError as error:
        assert refusal(error) in VERIFY_ERRORS
        event(f"refused {refusal(error)[1]}")  # --hypothesis-show-statistics shows how deep the inputs reach
        return
    event(response.reason or "valid")
    check_verification(token, service.secret, response, started)


# --- (b) MintToken and MintTokens with arbitrary identities and orgs ---------------------------------------------

mint_text = st.one_of(
    st.just(""),
    st.text(max_size=40),
    st.text(max_size=300),
    st.emails(),
    st.text(max_size=20).map(lambda text: f"{MARKER}{text}@example.com"),
)
mint_requests = st.builds(
    pb.MintTokenRequest,
    email=mint_text,
    external_id=mint_text,
    org=st.one_of(st.just(""), st.just("default"), st.text(max_size=20)),
)


def obeys_external_id_rules(external_id: str) -> bool:
    return (
        len(external_id.encode()) <= 256
        and external_id == external_id.strip()
        and not any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in external_id)
    )


def check_minted(request: pb.MintTokenRequest, minted: pb.MintTokenResponse, secret: str, stub) -> None:
    assert request.org in ("", "default") and (request.email or request.external_id)
    assert obeys_external_id_rules(request.external_id) and len(request.email.encode()) <= 254
    header, claims = hs256_open(minted.token, secret)
    expected = {"externalId": request.external_id, "email": request.email}
    assert header == HEADER and claims == {
        **{key: value for key, value in expected.items() if value},
        "iat": minted.issued_at.seconds,
    }
    assert minted.identity_used == (pb.IDENTITY_EMAIL if request.email else pb.IDENTITY_EXTERNAL_ID)
    verified = stub.VerifyToken(pb.VerifyTokenRequest(token=minted.token), timeout=10)
    assert (verified.valid, verified.email, verified.external_id) == (True, request.email, request.external_id)


@budget(700)
@given(request=mint_requests)
def test_mint_token_answers_every_identity_and_org_as_documented(service, stub, request):
    # With only an external id for the default org, the documented rules alone decide.
    decided_by_rules = request.external_id and not request.email and request.org in ("", "default")
    try:
        minted = stub.MintToken(request, timeout=10)
    except grpc.RpcError as error:
        assert refusal(error) in MINT_ERRORS
        assert not decided_by_rules or not obeys_external_id_rules(request.external_id)
        event(f"refused {refusal(error)[1]}")
        return
    event("minted")
    check_minted(request, minted, service.secret, stub)


@budget(250)
@given(requests=st.lists(mint_requests, max_size=6))
def test_mint_tokens_answers_every_entry_as_documented(service, stub, requests):
    response = stub.MintTokens(pb.MintTokensRequest(requests=requests), timeout=10)
    assert len(response.results) == len(requests)
    for request, result in zip(requests, response.results, strict=True):
        if result.HasField("token"):
            check_minted(request, result.token, service.secret, stub)
        else:
            assert entry_refusal(result.error) in MINT_ERRORS


# --- (c) raw request bytes to each method ------------------------------------------------------------------------


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


@st.composite
def protobuf_fields(draw) -> bytes:
    """One field with any number and wire type (0-7, so invalid ones too), its length prefix possibly a lie."""
    number, wire_type = draw(st.integers(0, 20)), draw(st.integers(0, 7))
    key = varint(number << 3 | wire_type)
    if wire_type == 0:
        return key + varint(draw(st.integers(0, 2**70)))
    if wire_type == 1:
        return key + draw(st.binary(min_size=8, max_size=8))
    if wire_type == 5:
        return key + draw(st.binary(min_size=4, max_size=4))
    if wire_type == 2:
        body = draw(st.one_of(st.binary(max_size=40), st.text(max_size=20).map(str.encode), nested_messages))
        return key + varint(draw(st.one_of(st.just(len(body)), st.integers(0, 2**35)))) + body
    return key + draw(st.binary(max_size=4))


nested_messages = st.builds(
    pb.MintTokenRequest, email=st.text(max_size=10), external_id=st.text(max_size=10), org=st.text(max_size=5)
).map(lambda request: request.SerializeToString())
raw_requests = st.one_of(
    st.binary(max_size=200),
    st.lists(protobuf_fields(), max_size=6).map(b"".join),
    st.builds(pb.VerifyTokenRequest, token=st.text(max_size=60), org=st.text(max_size=8)).map(
        lambda request: request.SerializeToString()
    ),
    nested_messages,
    st.lists(nested_messages, max_size=4).map(
        lambda entries: b"".join(b"\x0a" + varint(len(entry)) + entry for entry in entries)
    ),
)
RESPONSES: dict[str, type[Message]] = {
    "MintToken": pb.MintTokenResponse,
    "MintTokens": pb.MintTokensResponse,
    "VerifyToken": pb.VerifyTokenResponse,
}


@budget(2500)
@given(method=st.sampled_from(sorted(RESPONSES)), data=raw_requests)
def test_raw_request_bytes_get_a_documented_answer(channel, method, data):
    try:
        answer = channel.unary_unary(f"{SERVICE}/{method}")(data, timeout=10)
    except grpc.RpcError as error:
        assert refusal(error) in RAW_ERRORS[method]
        event(f"{method} refused {refusal(error)[1]}")
        return
    event(f"{method} answered")
    RESPONSES[method].FromString(answer)


def test_the_service_stayed_up_and_logged_no_unexpected_error(service):
    wait_for_health(service.health_target, health_pb2.HealthCheckResponse.SERVING)
    logs = service.logs()
    assert "unexpected error" not in logs and "Traceback" not in logs and MARKER not in logs
