"""Identity rules, minting and verification, checked with a signer other than pyjwt."""

from __future__ import annotations

import json
import random

import jwt
import pytest
from email_validator import validate_email
from tokenservice.v1 import token_service_pb2 as pb

from service.errors import EmailInvalidError, ExternalIdInvalidError, IdentityMissingError
from service.minting import (
    IDENTITY_KINDS,
    Identity,
    TokenMinter,
    TokenVerifier,
    check_identity,
    identity_kind,
    is_plain_email,
)
from service.secrets import SigningSecret
from tests.support import b64url_encode, hs256_open, hs256_sign

SECRET = "k" * 32 + "-unit-test-secret-0123456789abcdef"
NOW = 1_800_000_000


def mint(**identities: str):
    minter = TokenMinter(backdate_seconds=5, clock=lambda: NOW + 0.9)
    return minter.mint(
        SigningSecret(SECRET.encode(), 7, loaded_at=NOW),
        external_id=identities.get("external_id", ""),
        email=identities.get("email", ""),
    )


def test_header_is_exactly_the_one_kustomer_documents():
    header, _ = hs256_open(mint(email="someone@example.com").token, SECRET)
    assert header == b'{"alg":"HS256","typ":"JWT"}'


@pytest.mark.parametrize(
    "identities, claims, used",
    [
        ({"email": "someone@example.com"}, {"email": "someone@example.com"}, Identity.EMAIL),
        ({"external_id": "user-42"}, {"externalId": "user-42"}, Identity.EXTERNAL_ID),
        (
            {"email": "a@example.org", "external_id": "user-42"},
            {"email": "a@example.org", "externalId": "user-42"},
            Identity.EMAIL,
        ),
    ],
)
def test_payload_carries_the_identities_as_given_and_a_backdated_iat(identities, claims, used):
    minted = mint(**identities)
    _, payload = hs256_open(minted.token, SECRET)
    assert payload == {**claims, "iat": NOW - 5}
    assert (minted.issued_at, minted.valid_until) == (NOW - 5, NOW - 5 + 900)
    assert minted.identity_used is used and minted.secret_version == 7


@pytest.mark.parametrize(
    "identities",
    [
        {"email": "someone@example.com"},
        {"external_id": "cust-1"},
        {"email": "üser@exämple.de", "external_id": 'ид-42 \\ "quoted" </script>'},
        {"external_id": "😀" * 64},
    ],
)
def test_fast_path_tokens_are_byte_identical_to_pyjwt(identities):
    claims = {}
    if identities.get("external_id"):
        claims["externalId"] = identities["external_id"]
    if identities.get("email"):
        claims["email"] = identities["email"]
    claims["iat"] = NOW - 5
    reference = jwt.encode(claims, SECRET.encode(), algorithm="HS256", headers={"typ": "JWT"})
    assert mint(**identities).token == reference


def test_unicode_email_is_kept_byte_for_byte():
    _, payload = hs256_open(mint(email="üser@exämple.de").token, SECRET)
    assert payload["email"] == "üser@exämple.de"


@pytest.mark.parametrize(
    "external_id, email, error",
    [
        ("", "", IdentityMissingError),
        ("", "not-an-email", EmailInvalidError),
        ("", "two@@example.com", EmailInvalidError),
        ("", "a" * 243 + "@example.com", EmailInvalidError),  # 255 bytes
        ("", " someone@example.com", EmailInvalidError),
        ("", "someone@example.com\n", EmailInvalidError),
        ("", "some\x00one@example.com", EmailInvalidError),
        ("", "some\u2028one@example.com", EmailInvalidError),
        ("x" * 257, "", ExternalIdInvalidError),
        ("é" * 129, "", ExternalIdInvalidError),  # 258 bytes in UTF-8
        ("user\r\nSet-Cookie: x", "", ExternalIdInvalidError),
        ("user\u202eevil", "", ExternalIdInvalidError),
        ("user ", "", ExternalIdInvalidError),
        ("\tuser", "someone@example.com", ExternalIdInvalidError),
    ],
)
def test_bad_identities_are_refused_naming_the_field(external_id, email, error):
    with pytest.raises(error) as raised:
        check_identity(external_id, email)
    assert raised.value.field in raised.value.message
    assert email.strip() == "" or email not in raised.value.message


def test_identity_limits_are_inclusive():
    assert check_identity("x" * 256, "") is Identity.EXTERNAL_ID
    assert check_identity("", "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com") is Identity.EMAIL


def test_each_identity_has_its_spelling_and_its_own_proto_value():
    """The spelling is what configs, metric labels, audit records and spans carry; the proto has no
    identity that Identity lacks, nor one that two identities share."""
    assert [(identity.value, identity.proto) for identity in Identity] == [
        ("email", pb.IDENTITY_EMAIL),
        ("external_id", pb.IDENTITY_EXTERNAL_ID),
    ]
    assert set(pb.Identity.values()) - {pb.IDENTITY_UNSPECIFIED} == {identity.proto for identity in Identity}


@pytest.mark.parametrize(
    "email, external_id, kind",
    [(True, True, "email+external_id"), (True, False, "email"), (False, True, "external_id"), (False, False, "none")],
)
def test_identity_kinds_name_the_identities_given(email, external_id, kind):
    assert identity_kind(email=email, external_id=external_id) == kind
    assert kind in IDENTITY_KINDS


def test_no_other_identity_kind_exists():
    assert sorted(IDENTITY_KINDS) == ["email", "email+external_id", "external_id", "none"]


def verifier(now: float = NOW) -> TokenVerifier:
    return TokenVerifier(clock=lambda: now)


def signed(claims: dict, header: dict | None = None, secret: str = SECRET) -> str:
    header_bytes = json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode()
    return hs256_sign(header_bytes, json.dumps(claims).encode(), secret)


def test_verifier_accepts_a_token_signed_by_another_implementation():
    outcome = verifier().verify(signed({"externalId": "u1", "iat": NOW - 60}), SECRET.encode())
    assert outcome.valid and outcome.external_id == "u1" and outcome.valid_until == NOW - 60 + 900


@pytest.mark.parametrize(
    "token, reason",
    [
        ("not a token", "TOKEN_MALFORMED"),
        (
            signed({"email": "a@example.com", "iat": NOW}, secret="another-secret-of-enough-length-000"),
            "TOKEN_SIGNATURE_INVALID",
        ),
        (
            signed({"email": "a@example.com", "iat": NOW}, header={"alg": "HS512", "typ": "JWT"}),
            "TOKEN_ALGORITHM_INVALID",
        ),
        (
            signed({"email": "a@example.com", "iat": NOW}, header={"alg": "none", "typ": "JWT"}),
            "TOKEN_ALGORITHM_INVALID",
        ),
        (
            signed({"email": "a@example.com", "iat": NOW}, header={"alg": "HS256", "typ": "JWT", "kid": "x"}),
            "TOKEN_HEADER_INVALID",
        ),
        (signed({"email": "a@example.com"}), "TOKEN_IAT_MISSING"),
        (signed({"email": "a@example.com", "iat": "yesterday"}), "TOKEN_MALFORMED"),
        (signed({"email": "a@example.com", "iat": NOW + 30}), "TOKEN_ISSUED_IN_FUTURE"),
        (signed({"email": "a@example.com", "iat": NOW - 901}), "TOKEN_EXPIRED"),
        (signed({"iat": NOW}), "TOKEN_IDENTITY_MISSING"),
        (signed({"email": 42, "iat": NOW}), "TOKEN_MALFORMED"),
        # Each of these once made VerifyToken answer INTERNAL, or (the padding) valid.
        (
            signed({"email": "a@example.com", "iat": NOW}, header={"alg": "HS256", "typ": "JWT", "kid": 7}),
            "TOKEN_HEADER_INVALID",
        ),
        (
            signed({"email": "a@example.com", "iat": NOW}, header={"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
            "TOKEN_HEADER_INVALID",
        ),
        (signed({"email": "a@example.com", "iat": 2**63}), "TOKEN_MALFORMED"),
        (signed({"email": "\ud800", "iat": NOW}), "TOKEN_MALFORMED"),
        (signed({"email": "a@example.com", "iat": NOW}) + "=", "TOKEN_MALFORMED"),
    ],
)
def test_verifier_names_what_is_wrong(token, reason):
    outcome = verifier().verify(token, SECRET.encode())
    assert not outcome.valid and outcome.reason == reason and outcome.detail


def test_tampered_payload_fails_the_signature():
    header, _payload, signature = mint(email="someone@example.com").token.split(".")
    forged = b64url_encode(json.dumps({"email": "boss@example.com", "iat": NOW - 5}).encode())
    outcome = verifier().verify(f"{header}.{forged}.{signature}", SECRET.encode())
    assert outcome.reason == "TOKEN_SIGNATURE_INVALID" and outcome.email == ""


def test_token_is_valid_until_exactly_fifteen_minutes_after_iat():
    token = signed({"email": "a@example.com", "iat": NOW})
    assert verifier(NOW + 900).verify(token, SECRET.encode()).valid
    assert verifier(NOW + 901).verify(token, SECRET.encode()).reason == "TOKEN_EXPIRED"


def generated_addresses(count: int) -> list[str]:
    """Addresses near the edges of the plain shape: dots, hyphens, odd TLDs, special-use domains."""
    rng = random.Random(20261127)
    local_chars = "aZ09._-+!#'~"
    domain_parts = [
        "example",
        "ex-ample",
        "-bad",
        "bad-",
        "xn--p1ai",
        "ab--cd",
        "a",
        "9",
        "com",
        "c0m",
        "co",
        "local",
        "test",
        "localhost",
        "invalid",
        "onion",
        "arpa",
        "home",
        "x" * 63,
        "x" * 64,
    ]
    addresses = []
    for _ in range(count):
        local = "".join(rng.choice(local_chars) for _ in range(rng.randint(0, 70)))
        domain = ".".join(rng.choice(domain_parts) for _ in range(rng.randint(1, 4)))
        addresses.append(f"{local}@{domain}")
    return addresses


def test_the_plain_email_fast_path_accepts_only_what_email_validator_accepts():
    accepted = 0
    for address in generated_addresses(20000):
        if is_plain_email(address):
            accepted += 1
            validate_email(address, check_deliverability=False)  # raises if the fast path was wrong
    assert accepted > 1000  # the generator does reach the fast path
