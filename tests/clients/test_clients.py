"""Each of the five clients (clients/<lang>) against a real `tokenservice serve` process.

Its e2e program mints by email, by external id and in a batch with one bad entry, verifies every
token with its language's mainstream JWT library and reads the EMAIL_INVALID ErrorInfo:

- go: tests/clients/go, github.com/golang-jwt/jwt/v5, status.FromError;
- java: com.tokenservice.example.EndToEnd, com.auth0:java-jwt, io.grpc.protobuf.StatusProto;
- python: tests/clients/python/e2e.py (this interpreter, which has the client installed:
  pip install ./clients/python), PyJWT, grpc_status.rpc_status.from_call;
- rust: examples/e2e.rs, the jsonwebtoken crate, tonic_types::StatusExt;
- typescript: clients/typescript/test/e2e.ts, jsonwebtoken, the grpc-status-details-bin trailer.

Then its example.sh: prints only the token, never retries INVALID_ARGUMENT, passes TLS credentials
and an API key, and retries UNAVAILABLE with backoff, then gives up: pointed at a loopback port nobody
listens on, it tries 5 times, prints nothing on stdout and exits non-zero.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import pytest

from service.dev import free_loopback_port
from tests.clients.common import (
    LANGUAGES,
    assert_example_does_not_retry_invalid_argument,
    assert_example_mints_over_mtls_and_with_an_api_key,
    assert_example_prints_a_verified_token,
    client_env,
    e2e_program,
    run_e2e,
    run_failing_example,
)

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Client:
    """What the tests expect of one language's client."""

    # pytest's timeout for each of its tests, which may do a cold build first.
    timeout: float
    e2e_timeout: float
    # Where its e2e program reports success, and the words that say so.
    e2e_stream: Literal["stdout", "stderr"]
    e2e_passed: tuple[str, ...]
    example_email: str


BY_LANGUAGE = {
    "go": Client(
        timeout=600,  # a cold `go build` downloads and compiles grpc (a minute or two on 2 cores)
        e2e_timeout=60,
        e2e_stream="stderr",
        e2e_passed=("go client e2e: OK",),
        example_email="go-example@example.com",
    ),
    "java": Client(
        timeout=900,  # a cold build downloads Maven's plugins and the dependencies (~15 s here)
        e2e_timeout=120,
        e2e_stream="stdout",
        e2e_passed=("java client end-to-end:", "checks passed"),
        example_email="java-example@example.com",
    ),
    "python": Client(
        timeout=120,  # the default: nothing to build
        e2e_timeout=60,
        e2e_stream="stderr",
        e2e_passed=("python client e2e: OK",),
        example_email="py-example@example.com",
    ),
    "rust": Client(
        # A cold build (debug profile, both examples) fetches and compiles tonic, hyper and jsonwebtoken
        # (~2 min on 2 cores).
        timeout=900,
        e2e_timeout=120,
        e2e_stream="stdout",
        e2e_passed=("rust client end-to-end:", "checks passed"),
        example_email="rust-example@example.com",
    ),
    "typescript": Client(
        timeout=600,  # a cold `npm ci` + tsc takes ~30 s
        e2e_timeout=60,
        e2e_stream="stderr",
        e2e_passed=("typescript client e2e: OK",),
        example_email="ts-example@example.com",
    ),
}


def for_languages(*languages: str) -> pytest.MarkDecorator:
    """Parametrise a test's `language` over `languages`, each with its client's timeout and its name as the id."""
    return pytest.mark.parametrize(
        "language",
        [pytest.param(lang, id=lang, marks=pytest.mark.timeout(BY_LANGUAGE[lang].timeout)) for lang in languages],
    )


@pytest.fixture
def client(language: str) -> Client:
    """`language`'s client, its e2e program built first (once per test run; see e2e_program), so that a
    broken build shows as an error in setup and a cold one does not eat into an example.sh's own timeout."""
    e2e_program(language)
    return BY_LANGUAGE[language]


@for_languages(*LANGUAGES)
def test_client_end_to_end(language, client, live_service):
    result = run_e2e(language, client_env(live_service), timeout=client.e2e_timeout)
    output = getattr(result, client.e2e_stream)
    assert all(words in output for words in client.e2e_passed), output


@for_languages(*LANGUAGES)
def test_example_prints_only_a_token(language, client, live_service):
    assert_example_prints_a_verified_token(language, live_service, client.example_email)


@for_languages(*LANGUAGES)
def test_example_does_not_retry_invalid_argument(language, client, live_service):
    assert_example_does_not_retry_invalid_argument(language, live_service)


@for_languages(*LANGUAGES)
def test_example_passes_tls_credentials_and_an_api_key(language, client, secured_live_service):
    assert_example_mints_over_mtls_and_with_an_api_key(language, secured_live_service)


# How each example.sh reports a retry, and the words of its own (Java's and Rust's) for the UNAVAILABLE it
# gave up on.
RETRIES = {
    "go": ("retrying", None),
    "java": ("UNAVAILABLE (attempt", "MintToken failed: UNAVAILABLE"),
    "python": ("retrying", None),
    "rust": ("UNAVAILABLE (attempt", "MintToken failed: Unavailable"),
    "typescript": ("retrying", None),
}


@for_languages(*LANGUAGES)
def test_example_retries_unavailable_then_gives_up(language, client):
    env = {**os.environ, "TOKENSERVICE_ADDR": f"127.0.0.1:{free_loopback_port()}"}  # nothing listens there
    result = run_failing_example(language, "someone@example.com", env)
    retried, gave_up = RETRIES[language]
    # 5 attempts: 4 backoffs, then the final UNAVAILABLE is reported.
    assert result.stderr.count(retried) == 4, result.stderr
    assert "UNAVAILABLE" in result.stderr.upper(), result.stderr
    if gave_up is not None:
        assert gave_up in result.stderr, result.stderr
