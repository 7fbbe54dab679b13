"""Caller authentication against real TLS on loopback and a real OpenBao:
mTLS identities, API keys whose hashes live in Vault, per-caller policy,
rate limits, the audit trail, and that nothing secret or personal leaks."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import logging
import ssl
import uuid
from pathlib import Path

import grpc
import pytest
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import generate_latest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.api_keys import hash_api_key, new_api_key
from service.config import load_config
from service.dev import OpenBaoDevServer
from service.logs import JsonFormatter
from service.metrics import Metrics
from service.secrets import VaultSecretSource
from service.server import TokenServer
from service.vault_auth import session_from_config
from tests.certificates import CertificateAuthority, Issued
from tests.secured import ALL_RPCS, CERTIFICATE_CALLER_SPIFFE_ID, Caller, write_secured_config
from tests.support import aio_health_stub, aio_reflection_stub, hs256_open, metric_value, refusal_of

pytestmark = pytest.mark.integration

CHECKOUT_SPIFFE_ID = CERTIFICATE_CALLER_SPIFFE_ID
SUPPORT_DNS_NAME = "support.internal.example"
CALLERS = {
    "checkout": Caller(spiffe_id=CHECKOUT_SPIFFE_ID, orgs=("acme",), identities=("email",)),
    "support": Caller(dns_name=SUPPORT_DNS_NAME, orgs=("acme", "globex"), rpcs=("MintToken", "VerifyToken")),
    "reports": Caller(orgs=("acme",), identities=("external_id",), rpcs=ALL_RPCS, rate_per_second=2, burst=3),
    "backfill": Caller(orgs=("*",), rpcs=ALL_RPCS, rate_per_second=100000, burst=1000),
}


@dataclasses.dataclass
class Secured:
    """A running server with TLS, mTLS, API keys, callers and an audit file."""

    server: TokenServer
    openbao: OpenBaoDevServer
    ca: CertificateAuthority
    server_cert: Issued
    keys_path: str
    keys: dict[str, str]
    secrets: dict[str, str]
    audit_file: Path
    fingerprint_key: bytes

    @property
    def mtls_target(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def api_key_target(self) -> str:
        return f"127.0.0.1:{self.server.api_key_port}"

    def mtls_channel(self, client: Issued | None, ca: CertificateAuthority | None = None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(
            (ca or self.ca).cert_pem, client.key_pem if client else None, client.cert_pem if client else None
        )
        return grpc.aio.secure_channel(self.mtls_target, credentials, options=[("grpc.use_local_subchannel_pool", 1)])

    def key_channel(self, key: str | None) -> grpc.aio.Channel:
        credentials = grpc.ssl_channel_credentials(self.ca.cert_pem)
        if key is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(key))
        return grpc.aio.secure_channel(self.api_key_target, credentials)

    def audit(self) -> list[dict]:
        return [json.loads(line) for line in self.audit_file.read_text().splitlines()]

    def audit_of(self, request_id: str) -> list[dict]:
        return [record for record in self.audit() if record["request_id"] == request_id]

    def fingerprint(self, kind: str, value: str) -> str:
        """The documented fingerprint, computed here with hmac: HMAC-SHA256(key, kind NUL value), 32 hex digits."""
        return hmac.new(self.fingerprint_key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]

    def write_keys(self, **hashes: str) -> None:
        self.openbao.client().secrets.kv.v2.create_or_update_secret(path=self.keys_path, secret=hashes)


async def start_secured(openbao: OpenBaoDevServer, tmp_path: Path, public_health: bool = True) -> Secured:
    """An in-process server with the secured set-up of tests/secured.py: two orgs, the four CALLERS,
    a key each for reports and backfill, and the audit trail in a file of its own."""
    audit_file = tmp_path / "audit.jsonl"
    files = write_secured_config(
        openbao,
        tmp_path,
        callers=CALLERS,
        orgs={org: f"kustomer/{org}-{uuid.uuid4().hex[:8]}" for org in ("acme", "globex")},
        api_keys={"reports": [new_api_key()], "backfill": [new_api_key()]},
        settings={
            "refresh_interval_seconds": 0.5,
            "auth": {"public_health": public_health},
            "audit": {"output": str(audit_file)},
        },
    )
    config = load_config(files.config_file, {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token})
    secured = Secured(
        server=TokenServer(
            config, VaultSecretSource(config.vault, session_from_config(config.vault)), metrics=Metrics()
        ),
        openbao=openbao,
        ca=files.ca,
        server_cert=files.server,
        keys_path=files.keys_path,
        keys={caller: keys[0] for caller, keys in files.api_keys.items()},
        secrets=files.secrets,
        audit_file=audit_file,
        fingerprint_key=files.fingerprint_key,
    )
    await secured.server.start()
    await secured.server.store.load_once()
    assert secured.server.api_keys is not None, "the secured set-up has API keys"
    await secured.server.api_keys.refresh()
    return secured


@pytest.fixture
async def secured(openbao, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    running = await start_secured(openbao, tmp_path)
    try:
        yield running
    finally:
        await running.server.stop(grace=1)


@pytest.fixture
def clients(secured):
    """Client certificates: two callers', an unknown one, and one from another CA."""
    other_ca = CertificateAuthority(secured.ca.directory, name="other-ca")
    return {
        "checkout": secured.ca.issue("checkout", uris=(CHECKOUT_SPIFFE_ID,), dns=("checkout.internal.example",)),
        "support": secured.ca.issue("support", dns=(SUPPORT_DNS_NAME,)),
        "stranger": secured.ca.issue("stranger", uris=("spiffe://corp.example/ns/x/sa/stranger",)),
        "stranger-dns": secured.ca.issue("stranger-dns", dns=("stranger.internal.example",)),
        "other-ca": other_ca.issue("impostor", uris=(CHECKOUT_SPIFFE_ID,)),
    }


async def mint(channel: grpc.aio.Channel, request_id: str, **fields: str) -> pb.MintTokenResponse:
    return await pb_grpc.TokenServiceStub(channel).MintToken(
        pb.MintTokenRequest(**fields), metadata=(("x-request-id", request_id),), timeout=5
    )


async def refused(call) -> tuple[grpc.StatusCode, str, float | None]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return refusal_of(raised.value)


# --- mTLS -------------------------------------------------------------------------------------------------


async def test_a_configured_spiffe_id_mints_and_is_audited(secured, clients):
    async with secured.mtls_channel(clients["checkout"]) as channel:
        response = await mint(channel, "spiffe-ok", email="ada@example.com")
    _header, claims = hs256_open(response.token, secured.secrets["acme"])
    assert claims["email"] == "ada@example.com"
    [record] = secured.audit_of("spiffe-ok")
    assert set(record) == {
        "time",
        "request_id",
        "caller",
        "peer",
        "rpc",
        "org",
        "identity_kind",
        "email_fingerprint",
        "external_id_fingerprint",
        "secret_version",
        "status",
        "reason",
        "entries",
    }
    assert record["caller"] == "checkout" and record["rpc"] == "MintToken" and record["org"] == "acme"
    assert record["identity_kind"] == "email"
    assert record["email_fingerprint"] == secured.fingerprint("email", "ada@example.com")
    assert record["external_id_fingerprint"] is None
    assert record["secret_version"] == response.secret_version == 1
    assert record["status"] == "OK" and record["reason"] is None and record["entries"] == 1
    assert record["peer"].startswith("ipv4:127.0.0.1:")
    assert record["time"].endswith("+00:00")


async def test_a_configured_dns_name_is_the_caller_when_there_is_no_spiffe_id(secured, clients):
    async with secured.mtls_channel(clients["support"]) as channel:
        minted = await mint(channel, "dns-ok", external_id="cust-7", org="globex")
        assert hs256_open(minted.token, secured.secrets["globex"])[1]["externalId"] == "cust-7"
        verdict = await pb_grpc.TokenServiceStub(channel).VerifyToken(
            pb.VerifyTokenRequest(token=(await mint(channel, "dns-ok-2", email="b@example.com")).token), timeout=5
        )
    assert verdict.valid
    [record] = secured.audit_of("dns-ok")
    assert (record["caller"], record["org"], record["identity_kind"], record["status"]) == (
        "support",
        "globex",
        "external_id",
        "OK",
    )
    assert record["external_id_fingerprint"] == secured.fingerprint("external_id", "cust-7")


@pytest.mark.parametrize("client", ["stranger", "stranger-dns"])
async def test_a_certificate_of_no_configured_caller_is_unauthenticated(secured, clients, client):
    async with secured.mtls_channel(clients[client]) as channel:
        code, reason, _ = await refused(mint(channel, f"unknown-san-{client}", email="ada@example.com"))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    [record] = secured.audit_of(f"unknown-san-{client}")
    assert (record["caller"], record["status"], record["reason"]) == (
        "unknown",
        "UNAUTHENTICATED",
        "CREDENTIALS_INVALID",
    )
    assert record["email_fingerprint"] == secured.fingerprint("email", "ada@example.com")
    assert record["secret_version"] is None


@pytest.mark.parametrize("client", [None, "other-ca"])
async def test_the_mtls_port_refuses_the_handshake_without_a_certificate_of_the_client_ca(secured, clients, client):
    async with secured.mtls_channel(clients[client] if client else None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await mint(channel, "no-handshake", email="ada@example.com")
    # The TLS handshake fails, so no RPC (and no audit record) exists: grpcio can only require client
    # certificates, not request them optionally; API-key callers use the api_key_addr port.
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert secured.audit_of("no-handshake") == []


# --- API keys ---------------------------------------------------------------------------------------------


async def test_api_key_missing_or_wrong_is_unauthenticated(secured):
    async with secured.key_channel(None) as channel:
        missing = await refused(mint(channel, "key-missing", external_id="c-1"))
    async with secured.key_channel(new_api_key()) as channel:
        wrong = await refused(mint(channel, "key-wrong", external_id="c-1"))
    assert missing[:2] == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    assert wrong[:2] == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    assert [r["reason"] for r in secured.audit_of("key-missing") + secured.audit_of("key-wrong")] == [
        "CREDENTIALS_MISSING",
        "CREDENTIALS_INVALID",
    ]
    metrics = generate_latest(secured.server.metrics.registry).decode()
    assert metric_value(metrics, "tokenservice_auth_failures_total", reason="CREDENTIALS_MISSING") == 1
    assert metric_value(metrics, "tokenservice_auth_failures_total", reason="CREDENTIALS_INVALID") == 1


async def test_a_key_revoked_in_vault_stops_working_within_one_refresh(secured):
    async with secured.key_channel(secured.keys["reports"]) as channel:
        await mint(channel, "before-revoke", external_id="c-1")
        secured.write_keys(backfill=hash_api_key(secured.keys["backfill"]))
        await asyncio.sleep(0.5 * 1.1 + 0.3)  # one refresh interval, its jitter, and the Vault read
        code, reason, _ = await refused(mint(channel, "after-revoke", external_id="c-1"))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    async with secured.key_channel(secured.keys["backfill"]) as channel:
        await mint(channel, "other-key-still-works", external_id="c-1")


async def test_a_key_added_in_vault_works_without_restart(secured):
    new_key = new_api_key()
    secured.write_keys(
        reports=f"{hash_api_key(secured.keys['reports'])}, {hash_api_key(new_key)}",
        backfill=hash_api_key(secured.keys["backfill"]),
    )
    await asyncio.sleep(0.5 * 1.1 + 0.3)
    async with secured.key_channel(new_key) as channel:
        await mint(channel, "added-key", external_id="c-1")
    assert secured.audit_of("added-key")[0]["caller"] == "reports"


# --- policy -----------------------------------------------------------------------------------------------


async def test_policy_denies_org_identity_kind_and_rpc(secured, clients):
    async with secured.mtls_channel(clients["checkout"]) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        org = await refused(mint(channel, "deny-org", email="ada@example.com", org="globex"))
        identity = await refused(mint(channel, "deny-identity", external_id="c-1"))
        verify_rpc = await refused(stub.VerifyToken(pb.VerifyTokenRequest(token="x.y.z"), timeout=5))
        batch_rpc = await refused(
            stub.MintTokens(
                pb.MintTokensRequest(requests=[pb.MintTokenRequest(email="ada@example.com")]),
                metadata=(("x-request-id", "deny-batch"),),
                timeout=5,
            )
        )
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert org[:2] == (denied, "ORG_NOT_ALLOWED")
    assert identity[:2] == (denied, "IDENTITY_NOT_ALLOWED")
    assert verify_rpc[:2] == (denied, "RPC_NOT_ALLOWED")
    assert batch_rpc[:2] == (denied, "RPC_NOT_ALLOWED")
    for request_id, reason, org_name, kind in [
        ("deny-org", "ORG_NOT_ALLOWED", "globex", "email"),
        ("deny-identity", "IDENTITY_NOT_ALLOWED", "acme", "external_id"),
        ("deny-batch", "RPC_NOT_ALLOWED", "acme", "email"),
    ]:
        [record] = secured.audit_of(request_id)
        assert (record["caller"], record["status"], record["reason"], record["org"], record["identity_kind"]) == (
            "checkout",
            "PERMISSION_DENIED",
            reason,
            org_name,
            kind,
        )
    metrics = generate_latest(secured.server.metrics.registry).decode()
    assert metric_value(metrics, "tokenservice_auth_failures_total", reason="RPC_NOT_ALLOWED") == 2
    assert (
        metric_value(
            metrics, "tokenservice_mint_errors_total", org="globex", reason="ORG_NOT_ALLOWED", caller="checkout"
        )
        == 1
    )


async def test_a_batch_entry_outside_the_policy_fails_alone(secured):
    async with secured.key_channel(secured.keys["reports"]) as channel:
        response = await pb_grpc.TokenServiceStub(channel).MintTokens(
            pb.MintTokensRequest(
                requests=[pb.MintTokenRequest(external_id="c-1"), pb.MintTokenRequest(email="ada@example.com")]
            ),
            metadata=(("x-request-id", "batch-mixed"),),
            timeout=5,
        )
    assert response.results[0].WhichOneof("outcome") == "token"
    assert response.results[1].error.code == code_pb2.PERMISSION_DENIED
    assert [(r["status"], r["identity_kind"]) for r in secured.audit_of("batch-mixed")] == [
        ("OK", "external_id"),
        ("PERMISSION_DENIED", "email"),
    ]


# --- rate limits ------------------------------------------------------------------------------------------


async def test_a_caller_over_its_rate_is_held_back_and_another_is_not(secured):
    async with (
        secured.key_channel(secured.keys["reports"]) as reports,
        secured.key_channel(secured.keys["backfill"]) as backfill,
    ):
        for n in range(3):  # the burst
            await mint(reports, f"rate-{n}", external_id="c-1")
        code, reason, retry_delay = await refused(mint(reports, "rate-over", external_id="c-1"))
        assert retry_delay is not None, (code, reason)
        for n in range(20):
            await mint(backfill, f"unaffected-{n}", external_id="c-1")
        await asyncio.sleep(retry_delay)
        await mint(reports, "rate-after-waiting", external_id="c-1")
    assert (code, reason) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    assert 0.3 < retry_delay <= 0.5  # one token at 2 tokens/s, less the time the three calls took
    [record] = secured.audit_of("rate-over")
    assert (record["caller"], record["status"], record["reason"]) == ("reports", "RESOURCE_EXHAUSTED", "RATE_LIMITED")
    metrics = generate_latest(secured.server.metrics.registry).decode()
    assert metric_value(metrics, "tokenservice_rate_limited_total", caller="reports") == 1
    assert metric_value(metrics, "tokenservice_rate_limited_total", caller="backfill") == 0
    assert (
        metric_value(metrics, "tokenservice_tokens_issued_total", org="acme", identity="external_id", caller="backfill")
        == 20
    )


async def test_a_batch_larger_than_the_burst_is_refused_as_too_large(secured):
    async with secured.key_channel(secured.keys["reports"]) as channel:
        code, reason, _ = await refused(
            pb_grpc.TokenServiceStub(channel).MintTokens(
                pb.MintTokensRequest(requests=[pb.MintTokenRequest(external_id=f"c-{n}") for n in range(4)]), timeout=5
            )
        )
    assert (code, reason) == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")


# --- health and reflection ----------------------------------------------------------------------------------


async def test_health_and_reflection_need_no_credentials_by_default(secured):
    async with secured.key_channel(None) as channel:
        health = await aio_health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        services = await list_services(channel)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{secured.server.health_port}") as plain:
        probe = await aio_health_stub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await pb_grpc.TokenServiceStub(plain).MintToken(pb.MintTokenRequest(email="a@example.com"), timeout=5)
    assert health.status == probe.status == health_pb2.HealthCheckResponse.SERVING
    assert "tokenservice.v1.TokenService" in services
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED  # the probe port serves health alone


async def list_services(channel: grpc.aio.Channel) -> list[str]:
    stub = aio_reflection_stub(channel)
    async for response in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])):
        return [service.name for service in response.list_services_response.service]
    return []


async def test_health_and_reflection_can_require_credentials(openbao, tmp_path):
    running = await start_secured(openbao, tmp_path, public_health=False)
    try:
        async with running.key_channel(None) as anonymous:
            health = await refused(aio_health_stub(anonymous).Check(health_pb2.HealthCheckRequest(), timeout=5))
            with pytest.raises(grpc.aio.AioRpcError) as reflection_refused:
                await list_services(anonymous)
            with pytest.raises(grpc.aio.AioRpcError) as watch_refused:
                async for _ in aio_health_stub(anonymous).Watch(health_pb2.HealthCheckRequest(), timeout=5):
                    pass
        async with running.key_channel(running.keys["reports"]) as known:
            allowed = await aio_health_stub(known).Check(health_pb2.HealthCheckRequest(), timeout=5)
            services = await list_services(known)
            watch = aio_health_stub(known).Watch(health_pb2.HealthCheckRequest(), timeout=5)
            watched = await watch.read()
            assert isinstance(watched, health_pb2.HealthCheckResponse), watched  # not grpc.aio.EOF
            watch.cancel()
    finally:
        await running.server.stop(grace=1)
    assert health[:2] == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_MISSING")
    assert reflection_refused.value.code() == watch_refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert allowed.status == watched.status == health_pb2.HealthCheckResponse.SERVING and services


# --- certificate rotation -----------------------------------------------------------------------------------


def served_certificate_fingerprint(port: int, ca: CertificateAuthority) -> str:
    context = ssl.create_default_context(cafile=str(ca.cert_file))
    context.set_alpn_protocols(["h2"])
    import socket

    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None, "the server sent no certificate"
    return hashlib.sha256(certificate).hexdigest()


async def test_server_certificate_rotation_reaches_new_connections_and_drops_no_call(secured):
    failures: list[str] = []
    calls = 0
    stop = asyncio.Event()

    async def keep_calling() -> None:
        nonlocal calls
        while not stop.is_set():
            try:  # a new connection each time, so each one handshakes with the current certificate
                async with secured.key_channel(secured.keys["backfill"]) as channel:
                    await mint(channel, "rotation", external_id="c-1")
                calls += 1
            except grpc.aio.AioRpcError as error:
                failures.append(f"{error.code()}: {error.details()}")

    before = served_certificate_fingerprint(secured.server.api_key_port, secured.ca)
    callers = [asyncio.create_task(keep_calling()) for _ in range(3)]
    await asyncio.sleep(0.5)
    rotated = secured.ca.issue_server("server")  # cert-manager rewrites the same files
    await asyncio.sleep(1.5)
    after = await asyncio.to_thread(served_certificate_fingerprint, secured.server.api_key_port, secured.ca)
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.gather(*callers)
    assert before == secured.server_cert.fingerprint
    assert after == rotated.fingerprint != before
    assert failures == [] and calls > 10


async def test_a_half_written_rotation_keeps_the_previous_certificate(secured, caplog):
    secured.server_cert.key_file.write_bytes(secured.ca.issue("unrelated").key_pem)  # key no longer fits
    await asyncio.sleep(1.2)
    async with secured.key_channel(secured.keys["backfill"]) as channel:
        await mint(channel, "after-bad-rotation", external_id="c-1")
    assert served_certificate_fingerprint(secured.server.api_key_port, secured.ca) == secured.server_cert.fingerprint
    assert any("cannot be used; keeping the current ones" in r.getMessage() for r in caplog.records)


# --- nothing leaks ------------------------------------------------------------------------------------------


async def test_no_secret_key_token_or_identity_in_logs_audit_or_metrics(secured, clients, caplog):
    emails, tokens = ["leak.check+1@example.com", "ada.lovelace@example.org"], []
    async with secured.mtls_channel(clients["checkout"]) as channel:
        for email in emails:
            tokens.append((await mint(channel, "leak", email=email)).token)
        await refused(mint(channel, "leak-denied", external_id="leak-external-id-42"))
    async with secured.key_channel(secured.keys["reports"]) as channel:
        tokens.append((await mint(channel, "leak", external_id="leak-external-id-43")).token)
    async with secured.key_channel(secured.keys["backfill"][:-2] + "xx") as channel:
        await refused(mint(channel, "leak-bad-key", email=emails[0]))
    formatter = JsonFormatter()
    logs = "\n".join(formatter.format(record) for record in caplog.get_records("setup") + caplog.records)
    audit = secured.audit_file.read_text()
    metrics = generate_latest(secured.server.metrics.registry).decode()
    forbidden = [
        *secured.secrets.values(),
        *secured.keys.values(),
        *tokens,
        *emails,
        "leak-external-id-42",
        "leak-external-id-43",
        secured.fingerprint_key.decode(),
        secured.server_cert.key_pem.decode(),
    ]
    for text, where in [(logs, "logs"), (audit, "audit"), (metrics, "metrics")]:
        for value in forbidden:
            assert value not in text, f"{where} contains a forbidden value"
        for token in tokens:
            assert token.split(".")[2] not in text, f"{where} contains a token signature"
    assert len(secured.audit_of("leak")) == 3 and "API keys adopted" in logs


# --- more attack paths --------------------------------------------------------------------------------------


async def test_a_certificate_and_a_key_of_different_callers_are_refused(secured, clients):
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(secured.ca.cert_pem, clients["checkout"].key_pem, clients["checkout"].cert_pem),
        grpc.access_token_call_credentials(secured.keys["backfill"]),
    )
    async with grpc.aio.secure_channel(secured.mtls_target, credentials) as channel:
        code, reason, _ = await refused(mint(channel, "mixed-credentials", email="ada@example.com", org="globex"))
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")


@pytest.mark.parametrize("authorization", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer ", "tks_not-even-bearer"])
async def test_malformed_authorization_metadata_is_unauthenticated(secured, authorization):
    async with secured.key_channel(None) as channel:
        code, reason, _ = await refused(
            pb_grpc.TokenServiceStub(channel).MintToken(
                pb.MintTokenRequest(external_id="c-1"), metadata=(("authorization", authorization),), timeout=5
            )
        )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")


async def test_a_request_id_that_could_forge_audit_fields_is_replaced(secured):
    forged = 'x","caller":"checkout'
    async with secured.key_channel(secured.keys["backfill"]) as channel:
        await mint(channel, forged, external_id="c-1")
    [record] = [r for r in secured.audit() if r["caller"] == "backfill"]
    assert record["request_id"] != forged and len(record["request_id"]) == 32


async def test_an_unauthenticated_oversized_batch_cannot_flood_the_audit_trail(secured):
    async with secured.key_channel(None) as channel:
        await refused(
            pb_grpc.TokenServiceStub(channel).MintTokens(
                pb.MintTokensRequest(requests=[pb.MintTokenRequest(external_id="c")] * 5000), timeout=10
            )
        )
    [record] = secured.audit()  # one record for the call, with its entry count
    assert (record["reason"], record["entries"]) == ("CREDENTIALS_MISSING", 5000)


async def test_verify_token_is_no_oracle_for_orgs_outside_the_policy(secured, clients):
    async with secured.mtls_channel(clients["support"]) as support:
        token = (await mint(support, "oracle", email="ada@example.com", org="globex")).token
    async with secured.key_channel(secured.keys["reports"]) as reports:
        code, reason, _ = await refused(
            pb_grpc.TokenServiceStub(reports).VerifyToken(pb.VerifyTokenRequest(token=token, org="globex"), timeout=5)
        )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "ORG_NOT_ALLOWED")
    async with secured.mtls_channel(clients["checkout"]) as checkout:
        code, reason, _ = await refused(
            pb_grpc.TokenServiceStub(checkout).VerifyToken(pb.VerifyTokenRequest(token=token, org="globex"), timeout=5)
        )
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "RPC_NOT_ALLOWED")


async def test_a_plaintext_client_gets_no_answer_from_the_tls_ports(secured):
    for target in (secured.mtls_target, secured.api_key_target):
        async with grpc.aio.insecure_channel(target) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await mint(channel, "plaintext", external_id="c-1")
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert secured.audit_of("plaintext") == []
