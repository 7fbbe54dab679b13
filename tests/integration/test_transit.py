"""Signing through Vault Transit against a real OpenBao: the secret is imported
with the operator's policy, and the service's token, holding only the Transit
policy, signs and verifies without ever being able to read it.

Signatures are checked with Python's own hmac of the secret that was imported,
and the token's HS256 with tests.support.hs256_open (not pyjwt). Transit
requests are counted with the server's file audit device.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import random
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import hvac
import hvac.exceptions
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding
from prometheus_client import CollectorRegistry

from service.config import VaultConfig
from service.errors import SignerUnavailableError
from service.secret_sync import SyncError
from service.transit import TransitMetrics, TransitSettings, TransitSignature, TransitSigner
from service.transit_import import import_secret, wrap_for_import
from service.vault_auth import TokenAuth, VaultSession
from tests.support import b64url_encode, hs256_open, wait_until_async
from tests.support_transit import OPERATOR_POLICY, TRANSIT_POLICY, AnsweringVault, AuditedOpenBao, new_key_name

pytestmark = pytest.mark.integration

HEADER = b64url_encode(b'{"alg":"HS256","typ":"JWT"}')
# Inputs carry this marker, so that a test can tell whether an input leaked into an error.
MARKER = "leak-marker-3f1c"


@pytest.fixture(scope="module")
def bao(tmp_path_factory) -> Iterator[AuditedOpenBao]:
    server = AuditedOpenBao(tmp_path_factory.mktemp("transit"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def operator(bao: AuditedOpenBao) -> hvac.Client:
    """A client whose token holds only the operator policy."""
    return bao.client(bao.token_with(OPERATOR_POLICY))


@pytest.fixture(scope="module")
def service_token(bao: AuditedOpenBao) -> str:
    """A token holding only the service's Transit policy."""
    return bao.token_with(TRANSIT_POLICY)


def new_secret() -> bytes:
    return secrets.token_urlsafe(48).encode()


def signing_input(n: int = 0) -> bytes:
    payload = json.dumps({"email": f"{MARKER}-{n}@example.com", "iat": 1_700_000_000 + n}, separators=(",", ":"))
    return f"{HEADER}.{b64url_encode(payload.encode())}".encode()


def expected_mac(secret: bytes, data: bytes) -> bytes:
    return hmac.new(secret, data, hashlib.sha256).digest()


def signer(
    bao: AuditedOpenBao,
    token: str,
    key: str,
    *,
    sessions: int = 1,
    registry: CollectorRegistry | None = None,
    max_batch_size: int = TransitSettings.max_batch_size,
) -> TransitSigner:
    return TransitSigner(
        [bao.session(token) for _ in range(sessions)],
        org="acme",
        key=key,
        settings=TransitSettings(max_batch_size=max_batch_size),
        metrics=TransitMetrics(registry) if registry is not None else None,
    )


@pytest.fixture
def imported_key(operator: hvac.Client) -> tuple[str, bytes]:
    """A fresh Transit key holding a fresh secret, imported with the operator's policy."""
    key, secret = new_key_name(), new_secret()
    result = import_secret(operator, "transit", key, secret, org="acme", dry_run=False)
    assert (result.current_version, result.new_version) == (0, 1)
    return key, secret


async def test_a_token_signed_by_transit_verifies_with_an_independent_hmac_of_the_imported_secret(
    bao, service_token, imported_key
):
    key, secret = imported_key
    transit = signer(bao, service_token, key)
    try:
        data = signing_input()
        mac, version = await transit.sign(data)
        assert version == 1 and mac == expected_mac(secret, data)
        token = f"{data.decode()}.{b64url_encode(mac)}"
        header, claims = hs256_open(token, secret.decode())
        assert json.loads(header) == {"alg": "HS256", "typ": "JWT"} and claims["iat"] == 1_700_000_000
        assert await transit.verify_signature(data, mac) is True
        assert await transit.verify_signature(data, expected_mac(b"another secret", data)) is False
        assert await transit.verify_signature(data + b"x", mac) is False
        assert await transit.verify_signature(data, mac[:-1]) is False
    finally:
        await transit.close()


async def test_the_service_token_signs_verifies_and_reads_key_info_but_cannot_read_kv_or_the_key(
    bao, service_token, imported_key
):
    key, secret = imported_key
    bao.client().secrets.kv.v2.create_or_update_secret(path=f"kustomer/{key}", secret={"secret": "kv-secret"})
    transit = signer(bao, service_token, key)
    try:
        info = await transit.refresh_key_info()
        assert info.latest_version == 1 and not info.exportable and not info.allow_plaintext_backup
        mac, _ = await transit.sign(signing_input())
        assert await transit.verify_signature(signing_input(), mac)
    finally:
        await transit.close()
    client = bao.client(service_token)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.read_secret_version(
            path=f"kustomer/{key}", mount_point="secret", raise_on_deleted_version=True
        )
    for method, path in [
        ("GET", f"transit/export/hmac-key/{key}"),
        ("GET", f"transit/backup/{key}"),
        ("POST", f"transit/keys/{key}/config"),
        ("POST", f"transit/keys/{key}/import_version"),
        ("GET", "transit/wrapping_key"),
        ("POST", "transit/hmac/not-kustomer"),
    ]:
        with pytest.raises(hvac.exceptions.Forbidden):
            client.adapter.request(method, f"/v1/{path}", json={})
    # What the key read does return holds no key material.
    answer = json.dumps(client.adapter.get(f"/v1/transit/keys/{key}"))
    assert secret.decode() not in answer and base64.b64encode(secret).decode() not in answer


async def test_rotation_by_import_version_signs_with_the_new_version_and_verifies_only_the_latest(
    bao, service_token, operator, imported_key
):
    key, old_secret = imported_key
    transit = signer(bao, service_token, key)
    try:
        data = signing_input()
        old_mac, old_version = await transit.sign(data)
        await transit.refresh_key_info()
        assert (old_version, transit.latest_version) == (1, 1)

        new_secret_value = new_secret()
        dry = import_secret(operator, "transit", key, new_secret_value, org="acme", dry_run=True)
        assert (dry.current_version, dry.new_version) == (1, 2) and "dry run" in dry.describe()
        assert (await transit.refresh_key_info()).latest_version == 1
        rotated = import_secret(operator, "transit", key, new_secret_value, org="acme", dry_run=False)
        assert (rotated.current_version, rotated.new_version) == (1, 2)
        again = import_secret(operator, "transit", key, new_secret_value, org="acme", dry_run=False)
        assert again.new_version is None and "nothing imported" in again.describe()
        for result in (dry, rotated, again):
            assert new_secret_value.decode() not in result.describe() and old_secret.decode() not in result.describe()

        new_mac, new_version = await transit.sign(data)
        assert new_version == 2 and new_mac == expected_mac(new_secret_value, data)
        # The signature taught the signer the new latest version, before any refresh.
        assert transit.latest_version == 2
        assert await transit.verify_signature(data, new_mac) is True
        assert await transit.verify_signature(data, old_mac) is False
        assert (await transit.refresh_key_info()).latest_version == 2
    finally:
        await transit.close()


@pytest.mark.parametrize("sessions", [1, 2])
async def test_64_callers_in_flight_cause_at_most_one_hmac_request_per_five_tokens(
    bao, service_token, imported_key, sessions
):
    key, secret = imported_key
    registry = CollectorRegistry()
    transit = signer(bao, service_token, key, sessions=sessions, registry=registry, max_batch_size=128)
    hmac_path = f"transit/hmac/{key}"
    per_caller = 10
    try:
        await transit.sign(signing_input())  # logs the sessions in before counting
        before = bao.audited_requests(hmac_path)

        async def caller(n: int) -> None:
            for i in range(per_caller):
                # Callers arrive independently, not in lock step with the batches.
                await asyncio.sleep(random.random() * 0.002)
                data = signing_input(n * per_caller + i)
                mac, _ = await transit.sign(data)
                assert mac == expected_mac(secret, data)

        await asyncio.gather(*(caller(n) for n in range(64)))
    finally:
        await transit.close()
    tokens = 64 * per_caller
    requests = bao.audited_requests(hmac_path) - before
    assert 0 < requests <= 0.2 * tokens, f"{requests} HMAC requests for {tokens} tokens"
    assert (
        registry.get_sample_value("tokenservice_transit_batch_size_sum", {"org": "acme", "operation": "hmac"})
        == tokens + 1
    )


async def test_sign_many_sends_its_entries_in_as_few_requests_as_the_batch_limit_allows(
    bao, service_token, imported_key
):
    key, secret = imported_key
    transit = signer(bao, service_token, key, max_batch_size=64)
    hmac_path = f"transit/hmac/{key}"
    try:
        await transit.sign(signing_input())
        before = bao.audited_requests(hmac_path)
        inputs = [signing_input(n) for n in range(150)]
        results = await transit.sign_many(inputs)
    finally:
        await transit.close()
    signatures = [result for result in results if isinstance(result, TransitSignature)]
    assert signatures == results, results  # no input failed
    assert [mac for mac, _ in signatures] == [expected_mac(secret, data) for data in inputs]
    assert {version for _, version in signatures} == {1}
    assert bao.audited_requests(hmac_path) - before == 3


async def test_concurrent_verifications_are_batched_too(bao, service_token, imported_key):
    key, secret = imported_key
    transit = signer(bao, service_token, key)
    verify_path = f"transit/verify/{key}"
    inputs = [signing_input(n) for n in range(40)]
    try:
        await transit.refresh_key_info()
        before = bao.audited_requests(verify_path)
        valid = await asyncio.gather(*(transit.verify_signature(data, expected_mac(secret, data)) for data in inputs))
        forged = await asyncio.gather(
            *(transit.verify_signature(data, expected_mac(b"x" * 32, data)) for data in inputs)
        )
    finally:
        await transit.close()
    assert all(valid) and not any(forged)
    assert bao.audited_requests(verify_path) - before <= 4


async def test_errors_name_what_to_fix_never_the_input_and_are_counted_by_kind(bao, service_token, imported_key):
    registry = CollectorRegistry()
    missing = TransitSigner(
        [bao.session(bao.root_token)], org="acme", key=new_key_name(), metrics=TransitMetrics(registry)
    )
    outside = TransitSigner(
        [bao.session(service_token)], org="beta", key="outside-the-policy", metrics=TransitMetrics(CollectorRegistry())
    )
    try:
        with pytest.raises(SignerUnavailableError) as no_key:
            await missing.sign(signing_input())
        assert "tokenservice secret sync --org acme" in no_key.value.message
        with pytest.raises(SignerUnavailableError) as denied:
            await outside.sign(signing_input())
        assert "tokenservice-transit-policy.hcl" in denied.value.message
        with pytest.raises(SignerUnavailableError) as no_key_info:
            await missing.refresh_key_info()
    finally:
        await missing.close()
        await outside.close()
    for error in (no_key.value, denied.value, no_key_info.value):
        assert error.reason == "SIGNER_UNAVAILABLE" and MARKER not in error.message
    assert registry.get_sample_value("tokenservice_transit_errors_total", {"org": "acme", "kind": "key_missing"}) == 2


async def test_the_service_token_cannot_import_and_the_operator_policy_suffices(bao, service_token, operator):
    key = new_key_name()
    with pytest.raises(SyncError, match=r"tokenservice-transit-operator-policy\.hcl"):
        import_secret(bao.client(service_token), "transit", key, new_secret(), org="acme", dry_run=False)
    first, second = new_secret(), new_secret()
    assert import_secret(operator, "transit", key, first, org="acme", dry_run=False).new_version == 1
    assert import_secret(operator, "transit", key, second, org="acme", dry_run=False).new_version == 2
    data = bao.client().adapter.get(f"/v1/transit/keys/{key}")["data"]
    assert data["type"] == "hmac" and data["imported_key"] and not data["imported_key_allow_rotation"]
    assert not data["exportable"] and not data["allow_plaintext_backup"]
    # The operator cannot take the secret out again, nor change how the key may be used.
    for method, path in [
        ("GET", f"transit/export/hmac-key/{key}"),
        ("GET", f"transit/backup/{key}"),
        ("POST", f"transit/keys/{key}/config"),
        ("POST", f"transit/keys/{key}/rotate"),
        ("DELETE", f"transit/keys/{key}"),
    ]:
        with pytest.raises(hvac.exceptions.Forbidden):
            operator.adapter.request(method, f"/v1/{path}", json={})


async def test_vault_stopped_fails_fast_and_signing_resumes_when_it_is_back(tmp_path: Path):
    server = AuditedOpenBao(tmp_path)
    server.start()
    changes: list[bool] = []
    try:
        key, secret = new_key_name(), new_secret()
        import_secret(
            server.client(server.token_with(OPERATOR_POLICY)), "transit", key, secret, org="acme", dry_run=False
        )
        transit = TransitSigner(
            [server.session(server.token_with(TRANSIT_POLICY))],
            org="acme",
            key=key,
            settings=TransitSettings(timeout_seconds=1.0, unhealthy_after_failures=2),
            on_health_change=changes.append,
        )
        data = signing_input()
        assert (await transit.sign(data)).mac == expected_mac(secret, data)

        server.seal()
        with pytest.raises(SignerUnavailableError, match="sealed"):
            await transit.sign(data)
        server.unseal()
        assert (await signature_once_resumed(transit, data)).mac == expected_mac(secret, data)

        server.pause()  # hangs: only the timeout ends the call
        started = time.monotonic()
        with pytest.raises(SignerUnavailableError, match=r"within 0\.3 s"):
            await transit.sign(data, timeout=0.3)  # the call's own deadline, shorter than the setting
        assert time.monotonic() - started < 0.6
        started = time.monotonic()
        ticker = asyncio.create_task(largest_loop_lag(1.0))
        with pytest.raises(SignerUnavailableError, match="within 1 s"):
            await transit.sign(data)
        assert time.monotonic() - started < 1.5
        assert await ticker < 0.1, "the hung Vault request blocked the event loop"
        server.resume()
        server.stop()  # refuses connections: the call fails at once
        for _ in range(2):
            started = time.monotonic()
            with pytest.raises(SignerUnavailableError, match="unreachable"):
                await transit.sign(data)
            assert time.monotonic() - started < 0.5
        # A tuple, since mypy would take `transit.healthy` as still False after an `assert not transit.healthy`.
        assert (transit.healthy, changes) == (False, [False])

        server.start()
        assert (await signature_once_resumed(transit, data)).mac == expected_mac(secret, data)
        assert (transit.healthy, changes) == (True, [False, True])
        await transit.close()
    finally:
        server.stop()


async def largest_loop_lag(duration: float) -> float:
    """The longest the event loop was late for a 10 ms tick during `duration`."""
    lag, end = 0.0, time.monotonic() + duration
    while time.monotonic() < end:
        before = time.monotonic()
        await asyncio.sleep(0.01)
        lag = max(lag, time.monotonic() - before - 0.01)
    return lag


async def signature_once_resumed(transit: TransitSigner, data: bytes, timeout: float = 10.0):
    """The first signature Transit gives within `timeout` (a connection kept alive across the restart may fail once)."""

    async def signed():
        try:
            return await transit.sign(data)
        except SignerUnavailableError:
            return None

    return await wait_until_async(signed, timeout=timeout, interval=0.1, message="signing resuming")


def test_the_import_wraps_the_secret_as_transit_byok_requires():
    """The wrapped form unwraps, with the wrapping key's private half, to exactly the secret."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    secret = new_secret()
    wrapped = base64.b64decode(wrap_for_import(secret, pem))
    ephemeral = private.decrypt(
        wrapped[:256], padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    assert len(ephemeral) == 32 and aes_key_unwrap_with_padding(ephemeral, wrapped[256:]) == secret
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    with pytest.raises(SyncError, match="at least 2048"):
        wrap_for_import(
            secret,
            small.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
        )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"data": {"batch_results": []}}',
        b'{"data": {"batch_results": [{"hmac": "vault:v1:not-base64"}, {"hmac": "vault:v1:AAAA"}]}}',
    ],
)
async def test_an_answer_that_is_not_transit_fails_every_input_as_signer_unavailable(body):
    fake = AnsweringVault()
    fake.body = body
    registry = CollectorRegistry()
    session = VaultSession(VaultConfig(addr=fake.url, timeout_seconds=2), TokenAuth(token="t"))
    transit = TransitSigner([session], org="acme", key="kustomer-acme", metrics=TransitMetrics(registry))
    try:
        results = await transit.sign_many([signing_input(0), signing_input(1)])
    finally:
        await transit.close()
        fake.close()
    for result in results:
        assert isinstance(result, SignerUnavailableError), result
        assert MARKER not in result.message and "kustomer-acme" in result.message
    malformed = registry.get_sample_value("tokenservice_transit_errors_total", {"org": "acme", "kind": "malformed"})
    assert malformed is not None and malformed >= 1


async def test_a_vault_that_never_answers_fails_each_input_at_the_deadline_and_is_counted():
    # A listening socket that is never accepted from: the kernel completes the handshake, nothing answers.
    silent = socket.create_server(("127.0.0.1", 0))
    registry = CollectorRegistry()
    session = VaultSession(
        VaultConfig(addr=f"http://127.0.0.1:{silent.getsockname()[1]}", timeout_seconds=5), TokenAuth(token="t")
    )
    transit = TransitSigner([session], org="acme", key="kustomer-acme", metrics=TransitMetrics(registry))
    try:
        started = time.monotonic()
        many = await transit.sign_many([signing_input(0), signing_input(1)], timeout=0.3)
        with pytest.raises(SignerUnavailableError) as one:
            await transit.sign(signing_input(2), timeout=0.3)
        elapsed = time.monotonic() - started
    finally:
        await transit.close()
        silent.close()
    assert all(isinstance(result, SignerUnavailableError) for result in many)
    assert all("did not answer for org acme within 0.3 s" in str(error) for error in [*many, one.value])
    assert 0.6 <= elapsed < 2.0
    assert registry.get_sample_value("tokenservice_transit_errors_total", {"org": "acme", "kind": "deadline"}) == 3
