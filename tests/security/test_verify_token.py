"""Crafted tokens against a real `tokenservice serve`: VerifyToken is strict and total.

Every crafted token gets its exact documented outcome: valid=false with one
of the TOKEN_* reasons (or, for a decodable token, the reason and the claims),
never an RPC error. Tokens are signed with tests.support.hs256_sign, not pyjwt.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.support import b64url_decode, b64url_encode, hs256_sign

HEADER = b'{"alg":"HS256","typ":"JWT"}'
# Every identity below carries this marker, so a detail that echoes token content shows.
MARKER = "pii-marker"
EMAIL = f"{MARKER}@example.com"
# The last second google.protobuf.Timestamp can hold, and the last iat whose valid_until still fits.
TIMESTAMP_MAX = 253402300799
IAT_MAX = TIMESTAMP_MAX - 900
OTHER_SECRET = "another-secret-that-is-long-enough-0123456789"


@pytest.fixture(scope="module")
def stub(live_service) -> Iterator[pb_grpc.TokenServiceStub]:
    with grpc.insecure_channel(live_service.grpc_target) as channel:
        yield pb_grpc.TokenServiceStub(channel)


def now() -> int:
    return int(time.time()) - 10


def claims_json(**claims: object) -> bytes:
    return json.dumps(claims, separators=(",", ":")).encode()


def signed(payload: bytes, header: bytes = HEADER, secret: str | None = None) -> Callable[[str], str]:
    """A token builder: the live secret is known only once the service runs."""
    return lambda live_secret: hs256_sign(header, payload, secret or live_secret)


def edited(edit: Callable[[str], str], payload: bytes | None = None) -> Callable[[str], str]:
    """A correctly signed token for EMAIL, then changed by `edit`."""
    return lambda secret: edit(hs256_sign(HEADER, payload or claims_json(email=EMAIL, iat=now()), secret))


def segment_edit(index: int, change: Callable[[str], str]) -> Callable[[str], str]:
    def edit(token: str) -> str:
        segments = token.split(".")
        segments[index] = change(segments[index])
        return ".".join(segments)

    return edit


def flip_trailing_bit(segment: str) -> str:
    """The same bytes with a non-zero unused bit in the last character: a non-canonical encoding."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(segment) % 4 in (2, 3), "the last character must carry unused bits"
    flipped = segment[:-1] + alphabet[alphabet.index(segment[-1]) ^ 1]
    assert b64url_decode(flipped) == b64url_decode(segment)  # lenient decoders read the same bytes
    return flipped


def verify(stub: pb_grpc.TokenServiceStub, token: str) -> pb.VerifyTokenResponse:
    return stub.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=10)


MALFORMED_TOKENS = {
    # `=` padding, anywhere: base64url in a JWS has none (RFC 7515 §2).
    "padded signature": edited(lambda token: token + "="),
    "padded signature twice": edited(lambda token: token + "=="),
    "padded payload": edited(segment_edit(1, lambda segment: segment + "=" * (-len(segment) % 4 or 4))),
    "padded header": edited(segment_edit(0, lambda segment: segment + "=")),
    "non-canonical last signature character": edited(segment_edit(2, flip_trailing_bit)),
    "non-canonical last payload character": edited(
        segment_edit(1, flip_trailing_bit), claims_json(email=EMAIL, iat=1_700_000_000, externalId="a")
    ),
    "non-canonical header encoding": lambda secret: segment_edit(0, flip_trailing_bit)(
        hs256_sign(HEADER + b" ", claims_json(email=EMAIL, iat=1), secret)
    ),
    "standard-alphabet + in the signature": edited(segment_edit(2, lambda segment: "+" + segment[1:])),
    "standard-alphabet / in the payload": edited(segment_edit(1, lambda segment: "/" + segment[1:])),
    "extra segment": edited(lambda token: token + ".e30"),
    "trailing dot": edited(lambda token: token + "."),
    "JWE-shaped, five segments": edited(lambda token: token + ".e30.e30"),
    "two segments": edited(lambda token: token.rsplit(".", 1)[0]),
    "all segments empty": lambda secret: "..",
    "one dot": lambda secret: ".",
    "leading space": edited(lambda token: " " + token),
    "trailing newline": edited(lambda token: token + "\n"),
    "space inside": edited(lambda token: token[:20] + " " + token[20:]),
    "non-ASCII character": edited(lambda token: token[:-1] + "é"),
    "segment of length 1 mod 4": edited(segment_edit(2, lambda segment: segment + "AA")),
    # The header decodes but is not a JSON object with unique keys.
    "header not JSON": signed(claims_json(email=EMAIL, iat=1), header=b"alg=HS256"),
    "header a JSON array": signed(claims_json(email=EMAIL, iat=1), header=b'["HS256"]'),
    "header with a duplicate alg": signed(
        claims_json(email=EMAIL, iat=1), header=b'{"alg":"none","alg":"HS256","typ":"JWT"}'
    ),
    "header nested too deep to parse": signed(claims_json(email=EMAIL, iat=1), header=b"[" * 1400 + b"]" * 1400),
    # Signed with the right secret, so the claims themselves are what is wrong.
    "iat beyond 64 bits": signed(b'{"email":"%s","iat":%d}' % (EMAIL.encode(), 2**64)),
    "iat just under 2**63": signed(claims_json(email=EMAIL, iat=2**63 - 1)),
    "iat the last Timestamp second (valid_until would not fit)": signed(claims_json(email=EMAIL, iat=TIMESTAMP_MAX)),
    "iat one past the last that fits": signed(claims_json(email=EMAIL, iat=IAT_MAX + 1)),
    "iat negative": signed(claims_json(email=EMAIL, iat=-1)),
    "iat before year 1": signed(claims_json(email=EMAIL, iat=-62135596801)),
    "iat a float": signed(claims_json(email=EMAIL, iat=1_700_000_000.0)),
    "iat in exponent form": signed(b'{"email":"%s","iat":17e8}' % EMAIL.encode()),
    "iat true": signed(claims_json(email=EMAIL, iat=True)),
    "iat a string": signed(claims_json(email=EMAIL, iat=str(1_700_000_000))),
    "iat null": signed(claims_json(email=EMAIL, iat=None)),
    "iat NaN": signed(b'{"email":"%s","iat":NaN}' % EMAIL.encode()),
    "iat Infinity": signed(b'{"email":"%s","iat":Infinity}' % EMAIL.encode()),
    "lone high surrogate in email": signed(b'{"email":"\\ud800%s","iat":1700000000}' % EMAIL.encode()),
    "lone low surrogate in externalId": signed(b'{"externalId":"%s\\udc00","iat":1700000000}' % MARKER.encode()),
    "email a number": signed(claims_json(email=42, iat=1_700_000_000)),
    "externalId null": signed(claims_json(externalId=None, email=EMAIL, iat=1_700_000_000)),
    "duplicate email claim": signed(b'{"email":"a@example.com","email":"%s","iat":1700000000}' % EMAIL.encode()),
    "claim other than externalId, email, iat": signed(claims_json(email=EMAIL, iat=1_700_000_000, exp=1)),
    "payload a JSON array": signed(b'[{"email":"%s","iat":1700000000}]' % EMAIL.encode()),
    "payload a JSON string": signed(b'"%s"' % EMAIL.encode()),
    "payload empty": signed(b""),
    "payload not UTF-8": signed(b'{"email":"\xff%s","iat":1700000000}' % EMAIL.encode()),
    "payload UTF-16": signed(claims_json(email=EMAIL, iat=1_700_000_000).decode().encode("utf-16")),
    "payload with a UTF-8 byte order mark": signed(b"\xef\xbb\xbf" + claims_json(email=EMAIL, iat=1_700_000_000)),
    "payload with a raw control character in a string": signed(b'{"email":"%s\n","iat":1700000000}' % EMAIL.encode()),
    "payload nested too deep to parse": signed(
        b'{"email":"%s","iat":1,"x":%s%s}' % (EMAIL.encode(), b"[" * 1400, b"]" * 1400)
    ),
    "payload with trailing data": signed(claims_json(email=EMAIL, iat=1_700_000_000) + b"{}"),
}

HEADER_INVALID_TOKENS = {
    # Unsigned (another secret): the header is refused before the signature is looked at.
    "kid, a string": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS256","typ":"JWT","kid":"k1"}', OTHER_SECRET),
    "kid, a number": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS256","typ":"JWT","kid":7}', OTHER_SECRET),
    "crit, a list": signed(
        claims_json(email=EMAIL, iat=1), b'{"alg":"HS256","typ":"JWT","crit":["exp"]}', OTHER_SECRET
    ),
    "crit, a string": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS256","typ":"JWT","crit":"x"}', OTHER_SECRET),
    # Signed with the right secret: a header other than the minter's bytes is refused all the same.
    "keys reordered": signed(claims_json(email=EMAIL, iat=1), b'{"typ":"JWT","alg":"HS256"}'),
    "spaces between tokens": signed(claims_json(email=EMAIL, iat=1), b'{"alg": "HS256", "typ": "JWT"}'),
    "trailing newline in the JSON": signed(claims_json(email=EMAIL, iat=1), HEADER + b"\n"),
    "typ missing": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS256"}'),
    "typ lower case": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS256","typ":"jwt"}'),
    "alg written with a unicode escape": signed(
        claims_json(email=EMAIL, iat=1), b'{"alg":"HS\\u0032\\u0035\\u0036","typ":"JWT"}'
    ),
}

ALGORITHM_INVALID_TOKENS = {
    "alg none": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"none","typ":"JWT"}', OTHER_SECRET),
    "alg HS512": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"HS512","typ":"JWT"}'),
    "alg RS256": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"RS256","typ":"JWT"}'),
    "alg missing": signed(claims_json(email=EMAIL, iat=1), b'{"typ":"JWT"}'),
    "alg a list": signed(claims_json(email=EMAIL, iat=1), b'{"alg":["HS256"],"typ":"JWT"}'),
    "alg lower case": signed(claims_json(email=EMAIL, iat=1), b'{"alg":"hs256","typ":"JWT"}'),
}

SIGNATURE_INVALID_TOKENS = {
    "another secret": signed(claims_json(email=EMAIL, iat=1_700_000_000), secret=OTHER_SECRET),
    "empty signature": edited(segment_edit(2, lambda segment: "")),
    "truncated signature": edited(segment_edit(2, lambda segment: segment[:-3])),
    "unsigned empty payload": lambda secret: hs256_sign(HEADER, b"", OTHER_SECRET),
    "payload swapped after signing": lambda secret: ".".join(
        [
            *hs256_sign(HEADER, claims_json(email=EMAIL, iat=now()), secret).split(".")[:1],
            b64url_encode(claims_json(email="boss@example.com", iat=now())),
            hs256_sign(HEADER, claims_json(email=EMAIL, iat=now()), secret).split(".")[2],
        ]
    ),
}


def assert_refused(response: pb.VerifyTokenResponse, reason: str) -> None:
    assert (response.valid, response.reason) == (False, reason), response
    assert response.detail and MARKER not in response.detail and "k1" not in response.detail
    assert (response.email, response.external_id, response.HasField("issued_at")) == ("", "", False)
    assert response.identity_used == pb.IDENTITY_UNSPECIFIED


@pytest.mark.parametrize("name", MALFORMED_TOKENS)
def test_malformed_tokens_are_token_malformed(stub, live_service, name):
    assert_refused(verify(stub, MALFORMED_TOKENS[name](live_service.secret)), "TOKEN_MALFORMED")


@pytest.mark.parametrize("name", HEADER_INVALID_TOKENS)
def test_any_header_but_the_minters_bytes_is_header_invalid(stub, live_service, name):
    assert_refused(verify(stub, HEADER_INVALID_TOKENS[name](live_service.secret)), "TOKEN_HEADER_INVALID")


@pytest.mark.parametrize("name", ALGORITHM_INVALID_TOKENS)
def test_an_alg_other_than_hs256_is_algorithm_invalid(stub, live_service, name):
    assert_refused(verify(stub, ALGORITHM_INVALID_TOKENS[name](live_service.secret)), "TOKEN_ALGORITHM_INVALID")


@pytest.mark.parametrize("name", SIGNATURE_INVALID_TOKENS)
def test_a_signature_not_made_with_the_org_secret_is_signature_invalid(stub, live_service, name):
    assert_refused(verify(stub, SIGNATURE_INVALID_TOKENS[name](live_service.secret)), "TOKEN_SIGNATURE_INVALID")


def test_iat_missing(stub, live_service):
    assert_refused(verify(stub, hs256_sign(HEADER, claims_json(email=EMAIL), live_service.secret)), "TOKEN_IAT_MISSING")


def timestamp(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


@pytest.mark.parametrize(
    "iat, reason",
    [
        (0, "TOKEN_EXPIRED"),
        (IAT_MAX, "TOKEN_ISSUED_IN_FUTURE"),
    ],
)
def test_iat_at_the_ends_of_its_range_is_decoded_and_fits_the_response(stub, live_service, iat, reason):
    response = verify(stub, hs256_sign(HEADER, claims_json(email=EMAIL, iat=iat), live_service.secret))
    assert (response.valid, response.reason, response.email) == (False, reason, EMAIL)
    assert (response.issued_at, response.valid_until) == (timestamp(iat), timestamp(iat + 900))
    assert MARKER not in response.detail


@pytest.mark.parametrize(
    "claims, external_id, email",
    [
        (b'{"externalId":"%s\\ud83d\\ude00","iat":%%d}' % MARKER.encode(), MARKER + "\U0001f600", ""),
        (b'{"externalId":"%s\\u0000\\n\\u202e\\u2028","iat":%%d}' % MARKER.encode(), MARKER + "\x00\n\u202e\u2028", ""),
        (b'{"externalId":"%s","iat":%%d}' % (MARKER.encode() * 250), MARKER * 250, ""),
        (b'{ "email" : "%s" ,\n "iat" : %%d }' % EMAIL.encode(), "", EMAIL),
        (b'{"iat":%%d,"email":"%s","externalId":""}' % EMAIL.encode(), "", EMAIL),
    ],
)
def test_claims_that_pass_come_back_as_they_are(stub, live_service, claims, external_id, email):
    issued_at = now()
    response = verify(stub, hs256_sign(HEADER, claims % issued_at, live_service.secret))
    assert (response.valid, response.reason, response.detail) == (True, "", "")
    assert (response.external_id, response.email, response.issued_at) == (external_id, email, timestamp(issued_at))
    assert response.identity_used == (pb.IDENTITY_EMAIL if email else pb.IDENTITY_EXTERNAL_ID)


def test_a_minted_token_verifies(stub):
    minted = stub.MintToken(pb.MintTokenRequest(email=EMAIL, external_id=MARKER), timeout=10)
    response = verify(stub, minted.token)
    assert (response.valid, response.email, response.external_id) == (True, EMAIL, MARKER)
    assert (response.issued_at, response.valid_until) == (minted.issued_at, minted.valid_until)
