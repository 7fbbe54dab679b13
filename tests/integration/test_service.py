"""The service in-process on port 0, against a real OpenBao dev server; its
shutdown under load as a real `tokenservice serve` process."""

from __future__ import annotations

import asyncio
import collections
import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from prometheus_client import generate_latest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import OpenBaoDevServer, free_loopback_port
from service.server import max_receive_message_bytes
from tests.servers import start_server, stop_server, vault_config
from tests.support import (
    ServiceProcess,
    aio_health_stub,
    aio_reflection_stub,
    hs256_open,
    hs256_sign,
    metric_value,
    new_secret,
    refusal_in,
    refusal_of,
    rpc_status_of,
    wait_until,
    wait_until_async,
)

pytestmark = pytest.mark.integration

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def health_of(running, service: str = "") -> int:
    stub = aio_health_stub(running.channel)
    return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2)).status


def metrics_of(running) -> str:
    return generate_latest(running.server.metrics.registry).decode()


@pytest.mark.parametrize(
    "request_fields, claims, identity",
    [
        ({"email": "someone@example.com"}, {"email": "someone@example.com"}, pb.IDENTITY_EMAIL),
        ({"external_id": "cust-1234"}, {"externalId": "cust-1234"}, pb.IDENTITY_EXTERNAL_ID),
        (
            {"email": "someone@example.com", "external_id": "cust-1234"},
            {"email": "someone@example.com", "externalId": "cust-1234"},
            pb.IDENTITY_EMAIL,
        ),
    ],
)
async def test_mint_signs_with_the_vault_secret(running, openbao, secret_path, request_fields, claims, identity):
    before = int(time.time())
    response = await running.stub.MintToken(pb.MintTokenRequest(**request_fields), timeout=5)
    header, payload = hs256_open(response.token, openbao.read_secret(secret_path))
    assert header == b'{"alg":"HS256","typ":"JWT"}'
    assert payload == {**claims, "iat": response.issued_at.seconds}
    assert before - 6 <= payload["iat"] <= int(time.time()) - 5
    assert response.valid_until.seconds == payload["iat"] + 900
    assert response.secret_version == 1 and response.identity_used == identity


BAD_REQUESTS = [
    (pb.MintTokenRequest(), grpc.StatusCode.INVALID_ARGUMENT, "IDENTITY_MISSING"),
    (pb.MintTokenRequest(email="not-an-email"), grpc.StatusCode.INVALID_ARGUMENT, "EMAIL_INVALID"),
    (pb.MintTokenRequest(email="x" * 250 + "@a.io"), grpc.StatusCode.INVALID_ARGUMENT, "EMAIL_INVALID"),
    (pb.MintTokenRequest(email="a@example.com\r\n"), grpc.StatusCode.INVALID_ARGUMENT, "EMAIL_INVALID"),
    (pb.MintTokenRequest(email="a\u2028b@example.com"), grpc.StatusCode.INVALID_ARGUMENT, "EMAIL_INVALID"),
    (pb.MintTokenRequest(external_id="x" * 257), grpc.StatusCode.INVALID_ARGUMENT, "EXTERNAL_ID_INVALID"),
    (pb.MintTokenRequest(external_id="a\x00b"), grpc.StatusCode.INVALID_ARGUMENT, "EXTERNAL_ID_INVALID"),
    (pb.MintTokenRequest(external_id=" padded"), grpc.StatusCode.INVALID_ARGUMENT, "EXTERNAL_ID_INVALID"),
    (pb.MintTokenRequest(email="a@example.com", org="nope"), grpc.StatusCode.NOT_FOUND, "ORG_UNKNOWN"),
]


@pytest.mark.parametrize("request_message, code, reason", BAD_REQUESTS)
async def test_bad_input_gets_a_named_error_and_the_service_carries_on(running, request_message, code, reason):
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.stub.MintToken(request_message, timeout=5)
    assert refusal_of(raised.value)[:2] == (code, reason)
    assert (raised.value.details() or "").split(":")[0] in ("email or external_id", "email", "external_id", "org")
    assert (await running.stub.MintToken(pb.MintTokenRequest(email="ok@example.com"), timeout=5)).token
    assert await health_of(running) == SERVING


INVALID_UTF8_STRING_FIELD = b"\x12\x02\xc3\x28"


@pytest.mark.parametrize(
    "method, garbage",
    [
        *(
            (method, garbage)
            for method in ("MintToken", "MintTokens", "VerifyToken")
            for garbage in (b"\xff\xff\xff", b"\x0a\x05ab")
        ),
        ("MintToken", INVALID_UTF8_STRING_FIELD),
        ("VerifyToken", INVALID_UTF8_STRING_FIELD),
        ("MintTokens", b"\x0a\x04" + INVALID_UTF8_STRING_FIELD),
    ],
)
async def test_undecodable_request_bytes_are_invalid_argument_not_unknown(running, method, garbage):
    call = running.channel.unary_unary(f"/tokenservice.v1.TokenService/{method}")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(garbage, timeout=5)
    assert refusal_of(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_MALFORMED")
    assert await health_of(running) == SERVING


async def test_oversized_message_is_refused_before_parsing(running):
    call = running.channel.unary_unary("/tokenservice.v1.TokenService/MintToken")
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call(b"\x0a" + b"\xff" * 5 + b"x" * (max_receive_message_bytes(1000) + 10), timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_the_largest_valid_batch_fits_the_message_limit(running):
    entry = pb.MintTokenRequest(
        email="a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com", external_id="e" * 256, org="default"
    )
    response = await running.stub.MintTokens(pb.MintTokensRequest(requests=[entry] * 1000), timeout=30)
    assert len(response.results) == 1000 and all(result.HasField("token") for result in response.results)
    assert max_receive_message_bytes(1000) < 1024 * 1024


async def test_batch_results_keep_order_and_fail_only_bad_entries(running, openbao, secret_path):
    requests = [
        pb.MintTokenRequest(email="one@example.com"),
        pb.MintTokenRequest(email="broken"),
        pb.MintTokenRequest(external_id="three"),
        pb.MintTokenRequest(),
        pb.MintTokenRequest(external_id="five", org="nope"),
    ]
    response = await running.stub.MintTokens(pb.MintTokensRequest(requests=requests), timeout=5)
    outcomes = [result.WhichOneof("outcome") for result in response.results]
    assert outcomes == ["token", "error", "token", "error", "error"]
    secret = openbao.read_secret(secret_path)
    assert hs256_open(response.results[0].token.token, secret)[1]["email"] == "one@example.com"
    assert hs256_open(response.results[2].token.token, secret)[1]["externalId"] == "three"
    assert [refusal_in(response.results[i].error) for i in (1, 3, 4)] == [
        (grpc.StatusCode.INVALID_ARGUMENT, "EMAIL_INVALID"),
        (grpc.StatusCode.INVALID_ARGUMENT, "IDENTITY_MISSING"),
        (grpc.StatusCode.NOT_FOUND, "ORG_UNKNOWN"),
    ]


async def test_batch_over_the_limit_fails_as_a_whole(openbao, secret_path):
    running = await start_server(vault_config(openbao, secret_path, batch_limit=3))
    try:
        await running.server.store.load_once()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.MintTokens(pb.MintTokensRequest(requests=[pb.MintTokenRequest(email="a@b.io")] * 4))
        assert refusal_of(raised.value)[:2] == (grpc.StatusCode.INVALID_ARGUMENT, "BATCH_TOO_LARGE")
        assert (
            len(
                (
                    await running.stub.MintTokens(
                        pb.MintTokensRequest(requests=[pb.MintTokenRequest(email="a@b.io")] * 3)
                    )
                ).results
            )
            == 3
        )
    finally:
        await stop_server(running)


def forged(secret: str, claims: dict) -> str:
    return hs256_sign(b'{"alg":"HS256","typ":"JWT"}', json.dumps(claims).encode(), secret)


async def test_verify_token(running, openbao, secret_path):
    secret = openbao.read_secret(secret_path)
    minted = await running.stub.MintToken(pb.MintTokenRequest(email="v@example.com", external_id="v1"))
    good = await running.stub.VerifyToken(pb.VerifyTokenRequest(token=minted.token))
    assert (good.valid, good.reason, good.email, good.external_id) == (True, "", "v@example.com", "v1")
    assert good.issued_at == minted.issued_at and good.identity_used == pb.IDENTITY_EMAIL
    now = int(time.time())
    header, payload, signature = minted.token.split(".")
    cases = {
        f"{header}.{payload}.{signature[:-2]}AA": "TOKEN_SIGNATURE_INVALID",
        forged(secret, {"email": "old@example.com", "iat": now - 16 * 60}): "TOKEN_EXPIRED",
        forged(secret, {"email": "future@example.com", "iat": now + 120}): "TOKEN_ISSUED_IN_FUTURE",
        forged(secret, {"iat": now}): "TOKEN_IDENTITY_MISSING",
        "garbage": "TOKEN_MALFORMED",
    }
    for token, reason in cases.items():
        outcome = await running.stub.VerifyToken(pb.VerifyTokenRequest(token=token))
        assert (outcome.valid, outcome.reason) == (False, reason)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await running.stub.VerifyToken(pb.VerifyTokenRequest(token=""))
    assert refusal_of(raised.value)[1] == "TOKEN_MISSING"


async def test_rotation_is_picked_up_without_restart(running, openbao, secret_path):
    first = await running.stub.MintToken(pb.MintTokenRequest(email="r@example.com"))
    rotated = new_secret()
    version = openbao.write_secret(secret_path, rotated)

    async def rotated_in():
        return (await running.stub.MintToken(pb.MintTokenRequest(email="r@example.com"))).secret_version == version

    await wait_until_async(rotated_in, message=f"tokens signed with version {version}")
    latest = await running.stub.MintToken(pb.MintTokenRequest(email="r@example.com"))
    assert first.secret_version == 1 and version == 2
    hs256_open(latest.token, rotated)
    old = await running.stub.VerifyToken(pb.VerifyTokenRequest(token=first.token))
    assert old.reason == "TOKEN_SIGNATURE_INVALID"


async def test_an_invalid_new_version_is_not_adopted(running, openbao, secret_path):
    openbao.write_secret(secret_path, "too-short")

    async def rejected():
        return (
            metric_value(metrics_of(running), "tokenservice_vault_refresh_total", org="default", result="rejected") >= 1
        )

    await wait_until_async(rejected, message="the too-short version counted as rejected")
    response = await running.stub.MintToken(pb.MintTokenRequest(email="keep@example.com"))
    assert response.secret_version == 1
    hs256_open(response.token, _first_secret(openbao, secret_path))
    assert await health_of(running) == SERVING


def _first_secret(openbao: OpenBaoDevServer, path: str) -> str:
    response = openbao.client().secrets.kv.v2.read_secret_version(
        path=path, version=1, mount_point="secret", raise_on_deleted_version=True
    )
    return response["data"]["data"]["secret"]


async def test_health_reflection_and_metrics_after_known_traffic(running):
    assert await health_of(running) == SERVING
    assert await health_of(running, "tokenservice.v1.TokenService") == SERVING
    for _ in range(3):
        await running.stub.MintToken(pb.MintTokenRequest(email="m@example.com"))
    await running.stub.MintToken(pb.MintTokenRequest(external_id="m-1"))
    with pytest.raises(grpc.aio.AioRpcError):
        await running.stub.MintToken(pb.MintTokenRequest(email="bad"))
    with pytest.raises(grpc.aio.AioRpcError):
        await running.stub.MintToken(pb.MintTokenRequest(email="m@example.com", org="ghost"))
    handled = {"grpc_service": "tokenservice.v1.TokenService", "grpc_method": "MintToken", "grpc_type": "unary"}

    def every_call_counted() -> str | None:
        # The handled counter moves after the status is sent, so the last call may not be counted yet.
        text = metrics_of(running)
        return text if metric_value(text, "grpc_server_handling_seconds_count", **handled) == 6 else None

    text = await wait_until_async(
        every_call_counted, timeout=5, message="every MintToken call in grpc_server_handling_seconds"
    )
    assert metric_value(text, "tokenservice_tokens_issued_total", org="default", identity="email") == 3
    assert metric_value(text, "tokenservice_tokens_issued_total", org="default", identity="external_id") == 1
    assert metric_value(text, "tokenservice_mint_errors_total", org="default", reason="EMAIL_INVALID") == 1
    assert metric_value(text, "tokenservice_mint_errors_total", org="unknown", reason="ORG_UNKNOWN") == 1
    assert metric_value(text, "tokenservice_mint_duration_seconds_count") == 4
    assert metric_value(text, "tokenservice_secret_version", org="default") == 1
    assert metric_value(text, "tokenservice_secret_loaded", org="default") == 1
    assert metric_value(text, "tokenservice_secret_last_refresh_timestamp_seconds", org="default") > time.time() - 60
    assert metric_value(text, "grpc_server_started_total", **handled) == 6
    assert metric_value(text, "grpc_server_handled_total", grpc_code="OK", **handled) == 4
    assert metric_value(text, "grpc_server_handled_total", grpc_code="INVALID_ARGUMENT", **handled) == 1
    assert metric_value(text, "grpc_server_handled_total", grpc_code="NOT_FOUND", **handled) == 1
    assert metric_value(text, "grpc_server_handling_seconds_count", **handled) == 6
    assert "m@example.com" not in text and "ghost" not in text

    reflection = aio_reflection_stub(running.channel)
    responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    async for response in responses:
        names = {service.name for service in response.list_services_response.service}
        assert {"tokenservice.v1.TokenService", "grpc.health.v1.Health"} <= names
        break


async def test_vault_down_after_start_keeps_minting_with_the_last_good_secret():
    with OpenBaoDevServer() as vault:
        vault.write_secret("kustomer/chat", secret := new_secret())
        running = await start_server(vault_config(vault, "kustomer/chat"))
        try:
            await running.server.store.load_once()
            vault.stop()

            async def failures_counted():
                return (
                    metric_value(metrics_of(running), "tokenservice_vault_refresh_total", org="default", result="error")
                    >= 2
                )

            await wait_until_async(failures_counted, message="two failed refreshes counted")
            response = await running.stub.MintToken(pb.MintTokenRequest(email="still@example.com"))
            hs256_open(response.token, secret)
            assert await health_of(running) == SERVING
        finally:
            await stop_server(running)


async def test_vault_down_at_start_refuses_to_mint_then_serves_once_it_is_up():
    vault = OpenBaoDevServer(port=free_loopback_port())
    config = vault_config(vault, "kustomer/chat")
    running = await start_server(config)
    try:
        await asyncio.sleep(0.3)
        assert await health_of(running) == NOT_SERVING
        assert await health_of(running, "tokenservice.v1.TokenService") == NOT_SERVING
        assert await health_of(running, "liveness") == SERVING  # waiting for Vault is not a reason to restart
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.MintToken(pb.MintTokenRequest(email="early@example.com"))
        assert refusal_of(raised.value)[:2] == (grpc.StatusCode.UNAVAILABLE, "SECRET_UNAVAILABLE")
        assert "retry" in (raised.value.details() or "")

        with vault:
            vault.write_secret("kustomer/chat", secret := new_secret())

            async def serving():
                return await health_of(running) == SERVING

            await wait_until_async(serving, timeout=15, message="SERVING once Vault is up")
            hs256_open((await running.stub.MintToken(pb.MintTokenRequest(email="late@example.com"))).token, secret)
    finally:
        await stop_server(running)


# --- shutdown under steady traffic, against a real `tokenservice serve` ----------------------------------------


def _keep_minting(target: str, stop: threading.Event, outcomes: list[tuple[str, str]]) -> None:
    """Call MintToken back to back, retrying at once whatever happens, as a busy client does, until `stop`."""
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        while not stop.is_set():
            try:
                stub.MintToken(pb.MintTokenRequest(email="steady@example.com"), timeout=5)
                outcomes.append(("OK", ""))
            except grpc.RpcError as error:
                # Without a google.rpc.Status the call never reached a running server (the port had closed).
                reason = refusal_of(error)[1] if rpc_status_of(error) is not None else ""
                outcomes.append((error.code().name, reason))


def test_sigterm_under_steady_traffic_stops_once_the_accepted_calls_are_done(openbao, secret_path):
    # shutdown_grace_seconds is its default, 10 s.
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": secret_path,
            "TOKENSERVICE_WORKERS": "1",
        }
    )
    stop = threading.Event()
    outcomes: list[tuple[str, str]] = []
    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(_keep_minting, service.grpc_target, stop, outcomes) for _ in range(4)]
        try:
            wait_until(lambda: outcomes.count(("OK", "")) >= 200, timeout=30, message="200 tokens minted")
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            exit_code = service.process.wait(timeout=15)
            took = time.monotonic() - signalled
        finally:
            stop.set()
            service.stop()
        for client in clients:
            client.result(timeout=10)  # raises what failed in a client, such as a Status without the ErrorInfo
    assert exit_code == 0
    assert took < 3, f"shutdown took {took:.1f} s of its 10 s grace under steady traffic"
    failures = collections.Counter(outcome for outcome in outcomes if outcome != ("OK", ""))
    # Refused before it started (SHUTTING_DOWN), or never reached a running server (the port closed): both
    # safe to retry. Never CANCELLED, DEADLINE_EXCEEDED or another reason: no accepted call was cut off.
    assert failures[("UNAVAILABLE", "SHUTTING_DOWN")] >= 1, failures
    assert set(failures) <= {("UNAVAILABLE", "SHUTTING_DOWN"), ("UNAVAILABLE", "")}, failures
