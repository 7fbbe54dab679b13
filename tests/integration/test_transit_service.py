"""Transit signing in a real `tokenservice serve` process against a real OpenBao
with a file audit device: the org secrets come from a local stand-in for
Kustomer's settings endpoint through `tokenservice secret sync`, and the
service's Vault token holds the Transit policy alone.

Tokens are checked with tests.support.hs256_open (the standard library's hmac,
not the service, not pyjwt) against the secret the stand-in served. Vault
requests are counted in the audit device's log, not by the service.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import socket
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.errors
import h2.events
import hvac
import hvac.exceptions
import pytest
import requests
from grpc_health.v1 import health_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import find_bao, free_loopback_port, stop_process
from service.transit_import import import_secret
from service.vault_http import VaultHttp
from tests.integration.test_secret_sync import API_KEY, FakeKustomer
from tests.support import (
    TOKENSERVICE,
    DevProcess,
    ServiceProcess,
    hs256_open,
    new_secret,
    refusal_of,
    wait_for_health,
)
from tests.support_transit import OPERATOR_POLICY, TRANSIT_POLICY, AuditedOpenBao, new_key_name

pytestmark = pytest.mark.integration

KV_POLICY = TRANSIT_POLICY.parent / "tokenservice-policy.hcl"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
REFRESH_SECONDS = 0.5
# One refresh interval with its jitter (10 %), and room for the read itself on a loaded machine.
ONE_REFRESH = REFRESH_SECONDS * 1.1 + 0.5


def token_for(bao: AuditedOpenBao, *policy_files: Path) -> tuple[str, list[str]]:
    """A token holding exactly these policies (not even "default"), and the policies' names."""
    names = []
    for policy_file in policy_files:
        names.append(f"{policy_file.stem}-{uuid.uuid4().hex[:8]}")
        bao.client().sys.create_or_update_policy(names[-1], policy_file.read_text())
    token = bao.client().auth.token.create(policies=names, no_default_policy=True, ttl="1h")
    return token["auth"]["client_token"], names


def requests_by(bao: AuditedOpenBao, policy: str) -> list[str]:
    """The paths of every request the audit device logged from a token holding `policy`."""
    paths = []
    for line in bao.audit_log.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "request" and policy in (record.get("auth") or {}).get("policies", []):
            paths.append(record["request"]["path"])
    return paths


def write_config(
    path: Path, bao: AuditedOpenBao, orgs: str, *, default_org: str, token_file: Path | None = None, extra: str = ""
) -> Path:
    """A service config; `orgs` and `extra` are TOML tables."""
    token = f'token_file = "{token_file}"\n' if token_file else ""
    path.write_text(
        f'workers = 1\nrefresh_interval_seconds = {REFRESH_SECONDS}\ndefault_org = "{default_org}"\n'
        f'[vault]\naddr = "{bao.addr}"\n{token}{extra}{orgs}'
    )
    return path


def transit_org(name: str, key: str) -> str:
    return f'[orgs.{name}]\nsigning = "transit"\ntransit_key = "{key}"\n'


def secret_sync(
    bao: AuditedOpenBao, kustomer: FakeKustomer, config: Path, token: str, org: str, *args: str
) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "VAULT_ADDR": bao.addr,
        "VAULT_TOKEN": token,
        "KUSTOMER_API_URL": kustomer.url,
        "KUSTOMER_API_KEY": API_KEY,
    }
    return subprocess.run(
        [TOKENSERVICE, "secret", "sync", "--org", org, "--config", str(config), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


def start(config: Path, *, wait_serving: bool = True) -> ServiceProcess:
    return ServiceProcess.start({}, ["--config", str(config)], wait_serving=wait_serving)


def mint(
    service: ServiceProcess, org: str, email: str = "someone@example.com", timeout: float = 5.0
) -> pb.MintTokenResponse:
    with grpc.insecure_channel(service.grpc_target) as channel:
        return pb_grpc.TokenServiceStub(channel).MintToken(pb.MintTokenRequest(email=email, org=org), timeout=timeout)


def verify(service: ServiceProcess, org: str, token: str) -> pb.VerifyTokenResponse:
    with grpc.insecure_channel(service.grpc_target) as channel:
        return pb_grpc.TokenServiceStub(channel).VerifyToken(pb.VerifyTokenRequest(token=token, org=org), timeout=5)


def warm_wrapping_key(bao: AuditedOpenBao) -> None:
    """Transit makes its 4096-bit wrapping key on the first read, which can outlast a short timeout."""
    bao.client().adapter.get("/v1/transit/wrapping_key")


@pytest.fixture(scope="module")
def bao(tmp_path_factory) -> Iterator[AuditedOpenBao]:
    server = AuditedOpenBao(tmp_path_factory.mktemp("transit-service"))
    server.start()
    try:
        warm_wrapping_key(server)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def kustomer() -> Iterator[FakeKustomer]:
    fake = FakeKustomer()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def operator_token(bao: AuditedOpenBao) -> str:
    return bao.token_with(OPERATOR_POLICY)


@dataclasses.dataclass
class TransitDeployment:
    service: ServiceProcess
    config: Path
    keys: dict[str, str]
    secrets: dict[str, str]
    policy: str


@pytest.fixture(scope="module")
def deployed(bao, kustomer, operator_token, tmp_path_factory) -> Iterator[TransitDeployment]:
    """Orgs acme and beta in transit mode, their secrets synced from the stand-in, and a service whose
    token holds only the Transit policy."""
    directory = tmp_path_factory.mktemp("transit-deployed")
    keys = {"acme": new_key_name(), "beta": new_key_name()}
    orgs = "".join(transit_org(org, key) for org, key in keys.items())
    sync_config = write_config(directory / "sync.toml", bao, orgs, default_org="acme")
    secrets = {}
    for org in keys:
        secrets[org] = new_secret()
        kustomer.answer_secret(secrets[org])
        synced = secret_sync(bao, kustomer, sync_config, operator_token, org)
        assert synced.returncode == 0, synced.stderr
    token, (policy,) = token_for(bao, TRANSIT_POLICY)
    token_file = directory / "vault-token"
    token_file.write_text(token)
    service = start(write_config(directory / "service.toml", bao, orgs, default_org="acme", token_file=token_file))
    try:
        yield TransitDeployment(service, sync_config, keys, secrets, policy)
    finally:
        service.stop()


def test_a_transit_token_verifies_with_an_independent_hmac_of_the_secret_kustomer_served(deployed, bao):
    response = mint(deployed.service, "acme", "someone@example.com")
    header, claims = hs256_open(response.token, deployed.secrets["acme"])
    assert header == b'{"alg":"HS256","typ":"JWT"}' and claims["email"] == "someone@example.com"
    assert response.secret_version == 1 and response.valid_until.seconds - response.issued_at.seconds == 900
    verdict = verify(deployed.service, "acme", response.token)
    assert verdict.valid and verdict.email == "someone@example.com"
    # The other org's key signed nothing of this: its verification refuses the token.
    assert verify(deployed.service, "beta", response.token).reason == "TOKEN_SIGNATURE_INVALID"


def test_the_service_holds_only_the_transit_grant_and_never_asks_for_kv(deployed, bao):
    mint(deployed.service, "acme")
    paths = requests_by(bao, deployed.policy)
    assert any(path.startswith(f"transit/hmac/{deployed.keys['acme']}") for path in paths)
    assert not [path for path in paths if not path.startswith(("transit/", "auth/token/lookup-self"))], paths
    logs = deployed.service.logs()
    for secret in deployed.secrets.values():
        assert secret not in logs


def test_verify_parses_strictly_before_asking_vault(deployed, bao):
    good = mint(deployed.service, "acme").token
    before = requests_by(bao, deployed.policy).count(f"transit/verify/{deployed.keys['acme']}/sha2-256")
    header, payload, signature = good.split(".")
    for token, reason in [
        (f"{header}.{payload}", "TOKEN_MALFORMED"),
        (f"{header}.{payload}.{signature}=", "TOKEN_MALFORMED"),
        (f"eyJhbGciOiJub25lIn0.{payload}.{signature}", "TOKEN_ALGORITHM_INVALID"),
    ]:
        assert verify(deployed.service, "acme", token).reason == reason
    after = requests_by(bao, deployed.policy).count(f"transit/verify/{deployed.keys['acme']}/sha2-256")
    assert after == before


def test_rotation_by_secret_sync_is_used_within_one_refresh_and_only_the_latest_version_verifies(
    deployed, bao, kustomer, operator_token
):
    old = mint(deployed.service, "beta")
    assert old.secret_version == 1 and verify(deployed.service, "beta", old.token).valid
    rotated = new_secret()
    kustomer.answer_secret(rotated)
    dry = secret_sync(bao, kustomer, deployed.config, operator_token, "beta", "--dry-run")
    assert dry.returncode == 0 and "would import" in dry.stdout and "as version 2" in dry.stdout, dry.stderr
    synced = secret_sync(bao, kustomer, deployed.config, operator_token, "beta")
    assert synced.returncode == 0 and "as version 2" in synced.stdout, synced.stderr
    again = secret_sync(bao, kustomer, deployed.config, operator_token, "beta")
    assert again.returncode == 0 and "nothing imported" in again.stdout
    for output in (dry, synced, again):
        for needle in (rotated, deployed.secrets["beta"], API_KEY):
            assert needle not in output.stdout + output.stderr

    # No mint since the rotation: only the refresh can have told the service that version 2 is the latest.
    time.sleep(ONE_REFRESH)
    assert verify(deployed.service, "beta", old.token).reason == "TOKEN_SIGNATURE_INVALID"
    new = mint(deployed.service, "beta")
    assert new.secret_version == 2
    hs256_open(new.token, rotated)
    assert verify(deployed.service, "beta", new.token).valid
    deployed.secrets["beta"] = rotated


def mint_over_http2(target: str, org: str, *, in_flight: int, total: int) -> list[str]:
    """`total` MintToken calls over one raw HTTP/2 connection, `in_flight` at a time, a new one as soon as
    one ends, as h2load sends them: a few microseconds of client work a call, so that the service, not a
    Python gRPC client, sets the pace, as it does with many callers. A stream the server refuses
    (REFUSED_STREAM: grpc-core counts a stream until its call is done on the server, so a client that
    starts the next at once can exceed max_concurrent_streams for a moment) is sent again, as gRPC
    clients retry it transparently; any other reset fails the call."""
    message = pb.MintTokenRequest(external_id="concurrent-caller", org=org).SerializeToString()
    body = b"\x00" + struct.pack(">I", len(message)) + message
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/tokenservice.v1.TokenService/MintToken"),
        (":authority", target),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    tokens: list[str] = []
    answers: dict[int, bytes] = {}

    def start_call() -> None:
        stream = connection.get_next_available_stream_id()
        connection.send_headers(stream, headers)
        connection.send_data(stream, body, end_stream=True)
        answers[stream] = b""

    host, port = target.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        connection.initiate_connection()
        for _ in range(in_flight):
            start_call()
        started = in_flight
        while len(tokens) < total:
            sock.sendall(connection.data_to_send())
            received = sock.recv(65536)
            assert received, f"the service closed the connection with {len(answers)} calls unanswered"
            for event in connection.receive_data(received):
                if isinstance(event, h2.events.DataReceived):
                    answers[event.stream_id] += event.data
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.TrailersReceived):
                    assert dict(event.headers).get(b"grpc-status") == b"0", event.headers
                elif isinstance(event, h2.events.StreamReset):
                    assert event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM, event
                    del answers[event.stream_id]
                    start_call()
                elif isinstance(event, h2.events.ConnectionTerminated):
                    raise AssertionError(f"the service ended the connection: {event}")
                elif isinstance(event, h2.events.StreamEnded):
                    tokens.append(pb.MintTokenResponse.FromString(answers.pop(event.stream_id)[5:]).token)
                    if started < total:
                        start_call()
                        started += 1
    return tokens


def test_64_calls_in_flight_need_at_most_one_hmac_request_per_five_tokens(deployed, bao):
    hmac_path = f"transit/hmac/{deployed.keys['acme']}/sha2-256"
    mint(deployed.service, "acme")  # the connection to Vault is open before the count
    before = requests_by(bao, deployed.policy).count(hmac_path)
    tokens = mint_over_http2(deployed.service.grpc_target, "acme", in_flight=64, total=1280)
    requests = requests_by(bao, deployed.policy).count(hmac_path) - before
    assert len(tokens) == 1280
    for token in set(tokens):
        assert hs256_open(token, deployed.secrets["acme"])[1]["externalId"] == "concurrent-caller"
    assert 0 < requests <= 0.2 * len(tokens), f"{requests} HMAC requests for {len(tokens)} tokens"


def test_a_batch_is_signed_in_as_few_requests_as_the_batch_limit_allows(deployed, bao):
    hmac_path = f"transit/hmac/{deployed.keys['acme']}/sha2-256"
    before = requests_by(bao, deployed.policy).count(hmac_path)
    entries = [pb.MintTokenRequest(external_id=f"batch-{n}", org="acme") for n in range(200)]
    with grpc.insecure_channel(deployed.service.grpc_target) as channel:
        results = pb_grpc.TokenServiceStub(channel).MintTokens(pb.MintTokensRequest(requests=entries), timeout=10)
    for entry, result in zip(entries, results.results, strict=True):
        assert hs256_open(result.token.token, deployed.secrets["acme"])[1]["externalId"] == entry.external_id
    assert requests_by(bao, deployed.policy).count(hmac_path) - before == 2  # max_batch_size 128


def test_mixed_orgs_kv_and_transit_are_served_side_by_side(bao, kustomer, operator_token, tmp_path):
    kv_secret, transit_key = new_secret(), new_key_name()
    kv_path = f"kustomer/mixed-{uuid.uuid4().hex[:8]}"
    bao.client().secrets.kv.v2.create_or_update_secret(path=kv_path, secret={"secret": kv_secret})
    orgs = f'[orgs.shop]\npath = "{kv_path}"\n' + transit_org("vault", transit_key)
    config = write_config(tmp_path / "sync.toml", bao, orgs, default_org="shop")
    transit_secret = new_secret()
    kustomer.answer_secret(transit_secret)
    assert secret_sync(bao, kustomer, config, operator_token, "vault").returncode == 0
    token, _ = token_for(bao, KV_POLICY, TRANSIT_POLICY)
    (tmp_path / "token").write_text(token)
    service = start(
        write_config(tmp_path / "service.toml", bao, orgs, default_org="shop", token_file=tmp_path / "token")
    )
    try:
        entries = [
            pb.MintTokenRequest(email="a@example.com", org="shop"),
            pb.MintTokenRequest(email="b@example.com", org="vault"),
            pb.MintTokenRequest(email="not an email", org="vault"),
            pb.MintTokenRequest(email="c@example.com", org="nope"),
            pb.MintTokenRequest(external_id="d", org="vault"),
            pb.MintTokenRequest(external_id="e"),
        ]
        with grpc.insecure_channel(service.grpc_target) as channel:
            results = (
                pb_grpc.TokenServiceStub(channel).MintTokens(pb.MintTokensRequest(requests=entries), timeout=10).results
            )
        assert [result.WhichOneof("outcome") for result in results] == [
            "token",
            "token",
            "error",
            "error",
            "token",
            "token",
        ]
        assert hs256_open(results[0].token.token, kv_secret)[1]["email"] == "a@example.com"
        assert hs256_open(results[1].token.token, transit_secret)[1]["email"] == "b@example.com"
        assert hs256_open(results[4].token.token, transit_secret)[1]["externalId"] == "d"
        assert hs256_open(results[5].token.token, kv_secret)[1]["externalId"] == "e"
        assert (results[2].error.code, results[3].error.code) == (
            grpc.StatusCode.INVALID_ARGUMENT.value[0],
            grpc.StatusCode.NOT_FOUND.value[0],
        )
        unary_kv, unary_transit = mint(service, "shop"), mint(service, "vault")
        hs256_open(unary_kv.token, kv_secret)
        hs256_open(unary_transit.token, transit_secret)
        assert verify(service, "shop", unary_kv.token).valid and verify(service, "vault", unary_transit.token).valid
        assert verify(service, "vault", unary_kv.token).reason == "TOKEN_SIGNATURE_INVALID"
        assert verify(service, "shop", unary_transit.token).reason == "TOKEN_SIGNATURE_INVALID"
        records = [record for record in service.audit_records() if record.get("rpc") == "MintTokens"]
        assert len(records) == len(entries)
    finally:
        service.stop()


def test_vault_unavailable_fails_fast_with_signer_unavailable_and_heals_without_a_restart(tmp_path):
    bao = AuditedOpenBao(tmp_path)
    bao.start()
    service = None
    try:
        key, secret = new_key_name(), new_secret()
        token, _ = token_for(bao, TRANSIT_POLICY)
        (tmp_path / "token").write_text(token)
        config = write_config(
            tmp_path / "service.toml",
            bao,
            transit_org("acme", key),
            default_org="acme",
            token_file=tmp_path / "token",
            extra="[transit]\ntimeout_seconds = 3\nunhealthy_after_failures = 2\n",
        )
        service = start(config, wait_serving=False)
        pid = service.process.pid

        # No key yet: not serving, and a mint says what to do.
        time.sleep(ONE_REFRESH)
        wait_for_health(service.health_target, NOT_SERVING)
        with pytest.raises(grpc.RpcError) as missing:
            mint(service, "acme")
        assert refusal_of(missing.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "SIGNER_UNAVAILABLE")
        assert "tokenservice secret sync --org acme" in (missing.value.details() or "")
        import_secret(
            bao.client(bao.token_with(OPERATOR_POLICY)), "transit", key, secret.encode(), org="acme", dry_run=False
        )
        wait_for_health(service.health_target, SERVING)
        hs256_open(mint(service, "acme").token, secret)

        # Vault hangs: the call fails within its own deadline, before the 3 s Transit timeout.
        bao.pause()
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as hung:
            mint(service, "acme", timeout=1.0)
        assert refusal_of(hung.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "SIGNER_UNAVAILABLE"), hung.value
        assert time.monotonic() - started < 1.0
        bao.resume()

        # Vault stopped: refused connections fail at once, health turns NOT_SERVING.
        bao.stop()
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as down:
                mint(service, "acme", timeout=2.0)
            assert refusal_of(down.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "SIGNER_UNAVAILABLE")
            assert time.monotonic() - started < 0.5
        wait_for_health(service.health_target, NOT_SERVING)

        # Vault back: the same process serves again.
        bao.start()
        wait_for_health(service.health_target, SERVING, timeout=20)
        hs256_open(mint(service, "acme").token, secret)
        assert service.process.poll() is None and service.process.pid == pid
        logs = service.logs()
        assert secret not in logs and token not in logs
    finally:
        if service is not None:
            service.stop()
        bao.stop()


@pytest.fixture
def tls_bao(tmp_path) -> Iterator[tuple[str, Path, str]]:
    """`bao server -dev -dev-tls`: a real OpenBao behind TLS with its own CA; (address, CA file, root token)."""
    port, root = free_loopback_port(), uuid.uuid4().hex
    process = subprocess.Popen(
        [
            find_bao(),
            "server",
            "-dev",
            "-dev-tls",
            f"-dev-tls-cert-dir={tmp_path}",
            f"-dev-listen-address=127.0.0.1:{port}",
            "-dev-no-store-token",
        ],
        env={"PATH": "/usr/bin:/bin", "BAO_DEV_ROOT_TOKEN_ID": root},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    ca, addr = tmp_path / "vault-ca.pem", f"https://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if ca.exists() and hvac.Client(url=addr, verify=str(ca)).sys.is_initialized():
                    break
            except Exception:
                assert time.monotonic() < deadline and process.poll() is None, "bao -dev-tls did not start"
                time.sleep(0.05)
        yield addr, ca, root
    finally:
        stop_process(process)


async def test_the_transit_connection_trusts_exactly_what_hvac_trusts(tls_bao, monkeypatch):
    addr, ca, root = tls_bao
    for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(variable, raising=False)
    client = hvac.Client(url=addr, token=root, verify=str(ca))
    client.sys.enable_secrets_engine("transit", path="transit")
    key, secret = new_key_name(), new_secret()
    import_secret(client, "transit", key, secret.encode(), org="acme", dry_run=False)
    body = {"batch_input": [{"input": base64.b64encode(b"probe").decode()}] * 100}  # a chunked answer
    path = f"/v1/transit/hmac/{key}/sha2-256"

    trusted = VaultHttp.like(client)
    assert trusted is not None  # None only when requests would use a proxy
    answer = await trusted.post(path, body, root, timeout=5)
    assert isinstance(answer, dict)
    assert len(answer["data"]["batch_results"]) == 100
    await trusted.close()
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca))  # requests' own variable, as deploy/README.md documents
    from_environment = VaultHttp.like(hvac.Client(url=addr, token=root))
    assert from_environment is not None
    answered_again = await from_environment.post(path, body, root, timeout=5)
    assert isinstance(answered_again, dict) and answered_again["data"] == answer["data"]
    await from_environment.close()
    monkeypatch.delenv("REQUESTS_CA_BUNDLE")
    untrusted = VaultHttp.like(hvac.Client(url=addr, token=root))
    assert untrusted is not None
    with pytest.raises(requests.ConnectionError):
        await untrusted.post(path, body, root, timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        hvac.Client(url=addr, token=root).sys.is_initialized()  # hvac refuses that certificate too
    with pytest.raises(hvac.exceptions.Forbidden):
        await trusted.post(path, body, "not-a-token", timeout=5)
    await trusted.close()
    await untrusted.close()


def test_dev_transit_runs_the_default_org_in_transit_mode_and_says_how_to_rotate(tmp_path):
    dev = DevProcess.start(tmp_path, args=["--transit"])
    try:
        banner = "\n".join(dev.banner())
        assert "transit/keys/kustomer-default version 1" in banner and "transit import-version" in banner
        assert "tokenservice secret sync --org default" in banner
        grpc_addr = dev.banner_value("gRPC:")
        with grpc.insecure_channel(grpc_addr) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            minted = stub.MintToken(pb.MintTokenRequest(email="someone@example.com"), timeout=10)
            assert minted.secret_version == 1
            assert stub.VerifyToken(pb.VerifyTokenRequest(token=minted.token), timeout=10).valid
        rotate = next(line for line in dev.banner() if "import-version" in line).strip()
        assert subprocess.run(rotate, shell=True, capture_output=True, timeout=30).returncode == 0
        with grpc.insecure_channel(grpc_addr) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            rotated = stub.MintToken(pb.MintTokenRequest(email="someone@example.com"), timeout=10)
            assert rotated.secret_version == 2
            assert stub.VerifyToken(pb.VerifyTokenRequest(token=rotated.token), timeout=10).valid
    finally:
        assert dev.stop() == 0
