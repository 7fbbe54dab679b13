"""Kustomer chat login tokens: the rules for identities, minting, verifying.

A token is exactly what Kustomer's guide describes: header
{"alg":"HS256","typ":"JWT"}, payload `externalId` and/or `email` as given
plus an integer `iat`, HMAC-SHA256 signed; Kustomer accepts it for 15
minutes after `iat` and uses the email when both identities are present.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import time
import unicodedata
from collections.abc import Callable
from enum import Enum
from json.encoder import encode_basestring_ascii

import jwt
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from service.errors import EmailInvalidError, ExternalIdInvalidError, IdentityMissingError
from service.secrets import SigningSecret

TOKEN_LIFETIME_SECONDS = 15 * 60
EMAIL_MAX_BYTES = 254
EXTERNAL_ID_MAX_BYTES = 256
TOKEN_MAX_BYTES = 4096
JWT_HEADER = {"alg": "HS256", "typ": "JWT"}

# Characters that can split a log line or a header, or hide what an id says:
# control (Cc), format (Cf, e.g. bidi overrides) and line/paragraph separators.
_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})
_ASCII_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# Most addresses are plain ASCII in a shape email-validator always accepts
# (the tests check this against email-validator on many generated addresses);
# they skip its full RFC and IDNA analysis, which is most of a mint's cost.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_EMAIL = re.compile(
    rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?\.)+[A-Za-z]{{2,63}})")
_SPECIAL_USE_DOMAINS = frozenset(SPECIAL_USE_DOMAIN_NAMES)


class Identity(Enum):
    """The identity Kustomer uses from a token; values are metric labels."""

    EXTERNAL_ID = "external_id"
    EMAIL = "email"


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
    if _ASCII_CONTROL.search(value) if value.isascii() else any(
            unicodedata.category(char) in _FORBIDDEN_CATEGORIES for char in value):
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
            field="email")
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
                f"email: must be a valid address such as name@example.com ({error})", field="email") from None
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
        # What json.dumps(separators=(",", ":")) writes for these claims, without its per-call encoder
        # set-up (a third of the mint in the profile): the same escaping function, the same key order.
        external_id_claim = f'"externalId":{encode_basestring_ascii(external_id)},' if external_id else ""
        email_claim = f'"email":{encode_basestring_ascii(email)},' if email else ""
        payload = f'{{{external_id_claim}{email_claim}"iat":{issued_at}}}'
        signing_input = _HEADER_SEGMENT + b"." + _b64url(payload.encode("ascii"))
        mac = secret.mac.copy()
        mac.update(signing_input)
        token = (signing_input + b"." + _b64url(mac.digest())).decode()
        identity = Identity.EMAIL if email else Identity.EXTERNAL_ID
        return MintedToken(token, issued_at, issued_at + TOKEN_LIFETIME_SECONDS, secret.version, identity)


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


class TokenVerifier:
    """Checks tokens as Kustomer would: HS256 only, our header, 15 minutes from iat."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    def verify(self, token: str, key: bytes) -> Verification:
        """Check `token` against `key`; never raises for a bad token."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            return Verification("TOKEN_MALFORMED", "not a compact JWS (header.payload.signature, base64url)")
        if header.get("alg") != "HS256":
            return Verification("TOKEN_ALGORITHM_INVALID", "alg must be HS256")
        if header != JWT_HEADER:
            return Verification("TOKEN_HEADER_INVALID", 'header must be exactly {"alg":"HS256","typ":"JWT"}')
        try:
            claims = jwt.decode(
                token, key, algorithms=["HS256"],
                options={"require": ["iat"], "verify_iat": False, "verify_exp": True, "verify_nbf": True})
        except jwt.InvalidSignatureError:
            return Verification("TOKEN_SIGNATURE_INVALID", "signature does not match the org's current secret")
        except jwt.MissingRequiredClaimError:
            return Verification("TOKEN_IAT_MISSING", "the iat claim is required")
        except jwt.InvalidTokenError:
            return Verification("TOKEN_MALFORMED", "payload is not a valid JWT claims set")
        return self._check_claims(claims)

    def _check_claims(self, claims: dict) -> Verification:
        issued_at, external_id, email = claims["iat"], claims.get("externalId", ""), claims.get("email", "")
        if not isinstance(issued_at, int) or isinstance(issued_at, bool):
            return Verification("TOKEN_MALFORMED", "iat must be an integer number of seconds")
        if not isinstance(external_id, str) or not isinstance(email, str):
            return Verification("TOKEN_MALFORMED", "externalId and email must be strings")
        decoded = Verification(external_id=external_id, email=email, issued_at=issued_at)
        now = self._clock()
        if issued_at > now:
            return dataclasses.replace(decoded, reason="TOKEN_ISSUED_IN_FUTURE", detail="iat is in the future")
        if now - issued_at > TOKEN_LIFETIME_SECONDS:
            return dataclasses.replace(decoded, reason="TOKEN_EXPIRED", detail="iat is older than 15 minutes")
        if not external_id and not email:
            return dataclasses.replace(decoded, reason="TOKEN_IDENTITY_MISSING", detail="neither email nor externalId")
        return decoded
