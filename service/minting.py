"""Kustomer chat login tokens: the rules for identities, minting, verifying.

A token is exactly what Kustomer's guide describes: header
{"alg":"HS256","typ":"JWT"}, payload `externalId` and/or `email` as given
plus an integer `iat`, HMAC-SHA256 signed; Kustomer accepts it for 15
minutes after `iat` and uses the email when both identities are present.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import time
import unicodedata
from collections.abc import Callable
from enum import Enum
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, TypeGuard

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from tokenservice.v1 import token_service_pb2 as pb

from service.errors import EmailInvalidError, ExternalIdInvalidError, IdentityMissingError
from service.reasons import ErrorReason, reason_name

if TYPE_CHECKING:
    # Only a type here: config and tracing import this module for Identity, and secrets imports config.
    from service.secrets import SigningSecret

TOKEN_LIFETIME_SECONDS = 15 * 60
EMAIL_MAX_BYTES = 254
EXTERNAL_ID_MAX_BYTES = 256
TOKEN_MAX_BYTES = 4096
JWT_HEADER = {"alg": "HS256", "typ": "JWT"}

# The VerifyToken reasons, as sent (VerifyTokenResponse.reason).
TOKEN_ALGORITHM_INVALID = reason_name(ErrorReason.TOKEN_ALGORITHM_INVALID)
TOKEN_EXPIRED = reason_name(ErrorReason.TOKEN_EXPIRED)
TOKEN_HEADER_INVALID = reason_name(ErrorReason.TOKEN_HEADER_INVALID)
TOKEN_IAT_MISSING = reason_name(ErrorReason.TOKEN_IAT_MISSING)
TOKEN_IDENTITY_MISSING = reason_name(ErrorReason.TOKEN_IDENTITY_MISSING)
TOKEN_ISSUED_IN_FUTURE = reason_name(ErrorReason.TOKEN_ISSUED_IN_FUTURE)
TOKEN_MALFORMED = reason_name(ErrorReason.TOKEN_MALFORMED)
TOKEN_SIGNATURE_INVALID = reason_name(ErrorReason.TOKEN_SIGNATURE_INVALID)

# Characters that can split a log line or a header, or hide what an id says:
# control (Cc), format (Cf, e.g. bidi overrides) and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Most addresses are plain ASCII in a shape email-validator always accepts
# (the tests check this against email-validator on many generated addresses);
# they skip its full RFC and IDNA analysis, which is most of a mint's cost.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EMAIL = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}})"
)
_SPECIAL_USE_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


class Identity(Enum):
    """An identity a token can assert, in the order Kustomer prefers them (it uses the email when both
    are given). The value is its one spelling outside the token: the request field, the configured
    caller policy, the metric label, the audit record and the span attribute; `proto` is its
    tokenservice.v1.Identity."""

    EMAIL = "email"
    EXTERNAL_ID = "external_id"

    @property
    def proto(self) -> pb.Identity:
        return _PROTO_OF[self]


_PROTO_OF = {Identity.EMAIL: pb.IDENTITY_EMAIL, Identity.EXTERNAL_ID: pb.IDENTITY_EXTERNAL_ID}


def identity_kind(*, email: bool, external_id: bool) -> str:
    """How audit records and span attributes name the identities a request gives: the values of the
    given ones joined by '+' in Identity's order (email, external_id, email+external_id), or none."""
    given = [
        identity.value
        for identity, present in ((Identity.EMAIL, email), (Identity.EXTERNAL_ID, external_id))
        if present
    ]
    return "+".join(given) or "none"


# Every identity_kind, for the checks that accept no other value.
IDENTITY_KINDS = frozenset(
    identity_kind(email=email, external_id=external_id) for email in (True, False) for external_id in (True, False)
)


@dataclasses.dataclass(frozen=True)
class MintedToken:
    """A signed token and what it asserts."""

    token: str = dataclasses.field(repr=False)
    issued_at: int
    valid_until: int
    secret_version: int
    identity_used: Identity


def _text_problem(value: str, max_bytes: int) -> str | None:
    if len(value.encode()) > max_bytes:
        return f"must be at most {max_bytes} bytes in UTF-8"
    if value != value.strip():
        return "must not have leading or trailing whitespace"
    if (
        _ASCII_CONTROL.search(value)
        if value.isascii()
        else any(unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value)
    ):
        return "must not contain control, format or line-separator characters (such as CR, LF, NUL, U+2028)"
    return None


def is_plain_email(email: str) -> bool:
    """True for an ASCII address of a shape that email-validator always accepts."""
    match = _PLAIN_EMAIL.fullmatch(email)
    if match is None or len(match["local"]) > 64:
        return False
    domain = match["domain"].lower()
    labels = domain.split(".")
    if any(label[2:4] == "--" for label in labels):  # xn-- and other reserved IDNA forms
        return False
    # The domain and each parent domain, looked up: not every special domain tried as a suffix.
    return not any(".".join(labels[start:]) in _SPECIAL_USE_DOMAINS for start in range(len(labels)))


def check_identity(external_id: str, email: str) -> Identity:
    """The identity Kustomer will use; raise an InvalidRequestError naming the broken rule."""
    if not external_id and not email:
        raise IdentityMissingError(
            "email or external_id: at least one is required; set the customer's email, external id, or both",
            field="email",
        )
    if external_id:
        problem = _text_problem(external_id, EXTERNAL_ID_MAX_BYTES)
        if problem:
            raise ExternalIdInvalidError(f"external_id: {problem}", field="external_id")
    if email:
        problem = _text_problem(email, EMAIL_MAX_BYTES)
        if problem:
            raise EmailInvalidError(f"email: {problem}", field="email")
        try:
            if not is_plain_email(email):
                validate_email(email, check_deliverability=False)
        except EmailNotValidError as error:
            raise EmailInvalidError(
                f"email: must be a valid address such as name@example.com ({error})", field="email"
            ) from None
        return Identity.EMAIL
    return Identity.EXTERNAL_ID


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


# The header never changes, so neither does its segment.
_HEADER_SEGMENT = _b64url(json.dumps(JWT_HEADER, separators=(",", ":")).encode())


class TokenMinter:
    """Signs Kustomer login tokens with HS256.

    The compact JWS is assembled here rather than by pyjwt.encode, which is
    four times slower; the bytes are identical to pyjwt's (the tests compare
    them). `iat` is backdated a few seconds so that a verifier whose clock
    runs a little behind ours does not see a token issued in the future.
    """

    def __init__(self, *, backdate_seconds: int = 5, clock: Callable[[], float] = time.time) -> None:
        self._backdate_seconds = backdate_seconds
        self._clock = clock

    def mint(self, secret: SigningSecret, *, external_id: str, email: str) -> MintedToken:
        """Sign a token for the given identities, which must have passed check_identity."""
        issued_at = int(self._clock()) - self._backdate_seconds
        signing_input = _signing_input(external_id, email, issued_at)
        mac = secret.mac.copy()
        mac.update(signing_input)
        token = (signing_input + b"." + _b64url(mac.digest())).decode()
        identity = Identity.EMAIL if email else Identity.EXTERNAL_ID
        return MintedToken(token, issued_at, issued_at + TOKEN_LIFETIME_SECONDS, secret.version, identity)

    def unsigned(self, *, external_id: str, email: str) -> UnsignedToken:
        """The token `mint` would make, but for its signature: for a signer that holds the key itself."""
        issued_at = int(self._clock()) - self._backdate_seconds
        identity = Identity.EMAIL if email else Identity.EXTERNAL_ID
        return UnsignedToken(_signing_input(external_id, email, issued_at), issued_at, identity)


@dataclasses.dataclass(frozen=True)
class UnsignedToken:
    """A token's header and claims, encoded as `TokenMinter.mint` encodes them, awaiting their HMAC."""

    signing_input: bytes = dataclasses.field(repr=False)
    issued_at: int
    identity_used: Identity

    def signed(self, mac: bytes, secret_version: int) -> MintedToken:
        """The token with `mac`, the HMAC-SHA256 of `signing_input` with version `secret_version` of the key."""
        token = (self.signing_input + b"." + _b64url(mac)).decode()
        return MintedToken(
            token, self.issued_at, self.issued_at + TOKEN_LIFETIME_SECONDS, secret_version, self.identity_used
        )


def _signing_input(external_id: str, email: str, issued_at: int) -> bytes:
    # What json.dumps(separators=(",", ":")) writes for these claims, without its per-call encoder
    # set-up (a third of the mint in the profile): the same escaping function, the same key order.
    external_id_claim = f'"externalId":{encode_basestring_ascii(external_id)},' if external_id else ""
    email_claim = f'"email":{encode_basestring_ascii(email)},' if email else ""
    payload = f'{{{external_id_claim}{email_claim}"iat":{issued_at}}}'
    return _HEADER_SEGMENT + b"." + _b64url(payload.encode("ascii"))


@dataclasses.dataclass(frozen=True)
class Verification:
    """The outcome of checking a token; `reason` is empty when valid."""

    reason: str = ""
    detail: str = ""
    external_id: str = ""
    email: str = ""
    issued_at: int | None = None

    @property
    def valid(self) -> bool:
        return not self.reason

    @property
    def valid_until(self) -> int | None:
        return None if self.issued_at is None else self.issued_at + TOKEN_LIFETIME_SECONDS

    @property
    def identity_used(self) -> Identity | None:
        if self.email:
            return Identity.EMAIL
        return Identity.EXTERNAL_ID if self.external_id else None


@dataclasses.dataclass(frozen=True)
class SignedToken:
    """A token of the right form whose signature is still to be checked; the claims are not parsed yet."""

    signing_input: bytes = dataclasses.field(repr=False)
    signature: bytes = dataclasses.field(repr=False)
    payload: bytes = dataclasses.field(repr=False)


# The last second a google.protobuf.Timestamp holds (9999-12-31T23:59:59Z): the
# response carries iat and iat + 15 minutes, so both must fit.
_TIMESTAMP_MAX_SECONDS = 253402300799
IAT_MAX = _TIMESTAMP_MAX_SECONDS - TOKEN_LIFETIME_SECONDS
_CLAIMS = frozenset({"externalId", "email", "iat"})
_HEADER_SEGMENT_TEXT = _HEADER_SEGMENT.decode()
_B64URL_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
_NOT_COMPACT = Verification(
    TOKEN_MALFORMED, "not a compact JWS: three segments of unpadded base64url (A-Z a-z 0-9 - _) joined by '.'"
)


class TokenVerifier:
    """Checks tokens as strictly as the minter writes them, and answers every input.

    Parsed by hand with base64, json and hmac: pyjwt decodes leniently (it
    accepted a padded signature) and raises on some crafted headers, and a
    verifier that must be total is easier to show so when each step is ours.
    The checks run in this order and the first failure is the answer:

    - TOKEN_MALFORMED: not three segments of canonical unpadded base64url
      (only A-Z a-z 0-9 - _, no `=`, no non-zero unused bits);
    - the header segment must be the minter's bytes exactly, else
      TOKEN_MALFORMED when it is not a JSON object with unique keys,
      TOKEN_ALGORITHM_INVALID when its alg is not "HS256", and
      TOKEN_HEADER_INVALID for anything else (an extra kid or crit, another
      key order, whitespace);
    - TOKEN_SIGNATURE_INVALID: the HMAC-SHA256 of the org's key does not
      match; claims are parsed only after this, and not returned before it;
    - TOKEN_MALFORMED: the payload is not UTF-8 JSON (RFC 8259, no NaN, no
      BOM) holding one object with unique keys and no claims but externalId,
      email and iat;
    - TOKEN_IAT_MISSING, then TOKEN_MALFORMED when iat is not an integer in
      [0, IAT_MAX] or externalId/email are not strings of valid Unicode;
    - TOKEN_ISSUED_IN_FUTURE, TOKEN_EXPIRED, TOKEN_IDENTITY_MISSING.

    No detail echoes token content: it may be personal data.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def verify(self, token: str, key: bytes) -> Verification:
        """Check `token` against `key`; never raises for a bad token."""
        signed = self.parse(token)
        if isinstance(signed, Verification):
            return signed
        expected = hmac.new(key, signed.signing_input, hashlib.sha256).digest()
        return self.conclude(signed, signature_matches=hmac.compare_digest(expected, signed.signature))

    def parse(self, token: str) -> SignedToken | Verification:
        """The parts to check the signature of, or the refusal when the token's form is wrong: the
        first half of `verify`, for a signer that checks signatures itself (such as Vault Transit)."""
        segments = token.split(".") if token.isascii() else []
        if len(segments) != 3:
            return _NOT_COMPACT
        header_segment, payload_segment, signature_segment = segments
        if header_segment != _HEADER_SEGMENT_TEXT:
            return _header_problem(header_segment)
        payload, signature = _b64url_decode(payload_segment), _b64url_decode(signature_segment)
        if payload is None or signature is None:
            return _NOT_COMPACT
        return SignedToken(f"{header_segment}.{payload_segment}".encode(), signature, payload)

    def conclude(self, signed: SignedToken, *, signature_matches: bool) -> Verification:
        """The outcome once the signature has been checked (in constant time): the second half of `verify`."""
        if not signature_matches:
            return Verification(TOKEN_SIGNATURE_INVALID, "signature does not match the org's current secret")
        claims = _json_object(signed.payload)
        if claims is None or not claims.keys() <= _CLAIMS:
            return Verification(
                TOKEN_MALFORMED,
                "payload must be a UTF-8 JSON object with unique keys holding "
                "only the claims externalId, email and iat",
            )
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, object]) -> Verification:
        if "iat" not in claims:
            return Verification(TOKEN_IAT_MISSING, "the iat claim is required")
        issued_at, external_id, email = claims["iat"], claims.get("externalId", ""), claims.get("email", "")
        if type(issued_at) is not int or not 0 <= issued_at <= IAT_MAX:
            return Verification(TOKEN_MALFORMED, f"iat must be an integer number of seconds from 0 to {IAT_MAX}")
        if not _is_unicode_text(external_id) or not _is_unicode_text(email):
            return Verification(TOKEN_MALFORMED, "externalId and email must be strings of valid Unicode")
        decoded = Verification(external_id=external_id, email=email, issued_at=issued_at)
        now = self._clock()
        if issued_at > now:
            return dataclasses.replace(decoded, reason=TOKEN_ISSUED_IN_FUTURE, detail="iat is in the future")
        if now - issued_at > TOKEN_LIFETIME_SECONDS:
            return dataclasses.replace(decoded, reason=TOKEN_EXPIRED, detail="iat is older than 15 minutes")
        if not external_id and not email:
            return dataclasses.replace(decoded, reason=TOKEN_IDENTITY_MISSING, detail="neither email nor externalId")
        return decoded


def _b64url_decode(segment: str) -> bytes | None:
    """The bytes of a canonical unpadded base64url segment, or None: a second
    spelling of the same bytes (unused bits set, padding) is not accepted."""
    if len(segment) % 4 == 1 or not _B64URL_SEGMENT.fullmatch(segment):
        return None
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    return data if _b64url(data) == segment.encode() else None


def _header_problem(segment: str) -> Verification:
    data = _b64url_decode(segment)
    header = None if data is None else _json_object(data)
    if header is None:
        return Verification(TOKEN_MALFORMED, "header must be base64url of a JSON object with unique keys")
    if header.get("alg") != "HS256":
        return Verification(TOKEN_ALGORITHM_INVALID, "alg must be HS256")
    return Verification(
        TOKEN_HEADER_INVALID, f'header must be exactly {{"alg":"HS256","typ":"JWT"}}, encoded as {_HEADER_SEGMENT_TEXT}'
    )


def _json_object(data: bytes) -> dict[str, object] | None:
    """`data` as a JSON object with unique keys, or None for anything else."""
    try:
        value = json.loads(data.decode(), object_pairs_hook=_unique_keys, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    return value if isinstance(value, dict) else None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise ValueError("duplicate key")  # two readers of the token could see different claims
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _is_unicode_text(value: object) -> TypeGuard[str]:
    """A str that UTF-8 can encode: JSON escapes can spell lone surrogates,
    which protobuf strings (and Kustomer) cannot carry."""
    if not isinstance(value, str):
        return False
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
