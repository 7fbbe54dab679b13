"""The Java client (clients/java) against a real `tokenservice serve` process:
com.tokenservice.example.EndToEnd mints by email, by external id and in a
batch with one bad entry, verifies every token with com.auth0:java-jwt and
reads the EMAIL_INVALID ErrorInfo with io.grpc.protobuf.StatusProto; then
clients/java/example.sh: prints only the token, never retries
INVALID_ARGUMENT, retries UNAVAILABLE with backoff."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest

from tests.clients.common import REPO, client_env, run
from tests.support import hs256_open

JAVA = REPO / "clients" / "java"
EXAMPLE = str(JAVA / "example.sh")

# The module fixture builds once; a cold build downloads Maven's plugins and
# the dependencies (~15 s here), hence the timeout above the default 120 s.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def java_classpath() -> str:
    run([str(JAVA / "build.sh")], cwd=JAVA, timeout=600)
    return (JAVA / "target" / "classpath.txt").read_text().strip()


def test_java_client_end_to_end(java_classpath, live_service):
    result = run(["java", "-cp", java_classpath, "com.tokenservice.example.EndToEnd"], cwd=REPO,
                 env=client_env(live_service), timeout=120)
    assert "java client end-to-end:" in result.stdout and "checks passed" in result.stdout, result.stdout


def test_java_example_prints_only_a_token(java_classpath, live_service):
    email = "java-example@example.com"
    result = run([EXAMPLE, email], cwd=REPO, env=client_env(live_service), timeout=300)
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and token.count(".") == 2, result.stdout
    header, claims = hs256_open(token, live_service.secret)
    assert json.loads(header) == {"alg": "HS256", "typ": "JWT"}
    assert set(claims) == {"email", "iat"} and claims["email"] == email


def test_java_example_does_not_retry_invalid_argument(java_classpath, live_service):
    result = subprocess.run([EXAMPLE, "not-an-email"], cwd=REPO, env=client_env(live_service),
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == "", result
    assert "EMAIL_INVALID" in result.stderr and "retrying" not in result.stderr, result.stderr


def test_java_example_retries_unavailable(java_classpath):
    with socket.socket() as probe:  # a loopback port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "TOKENSERVICE_ADDR": f"127.0.0.1:{port}"}
    result = subprocess.run([EXAMPLE, "someone@example.com"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode != 0 and result.stdout == "", result
    # 5 attempts: 4 backoffs, then the final UNAVAILABLE is reported.
    assert result.stderr.count("UNAVAILABLE (attempt") == 4, result.stderr
    assert "MintToken failed: UNAVAILABLE" in result.stderr, result.stderr
