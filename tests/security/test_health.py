"""grpc.health.v1 answers the names the service serves, and no other, at once, on
the gRPC server (its API-key port, without credentials: health is public) and on
the plaintext health port, of a real `tokenservice serve` set up as production."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.bench.hostile import flood, watch_with_name
from tests.secured import SecuredFiles
from tests.security.test_resource_limits import start
from tests.support import ServiceProcess, health_stub, rss_kib, wait_until_async

pytestmark = pytest.mark.integration

SERVED = ("", "tokenservice.v1.TokenService", "liveness")
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
MIB = 1024


@pytest.fixture(scope="module")
def secured(openbao, tmp_path_factory) -> Iterator[tuple[ServiceProcess, SecuredFiles]]:
    service, files = start(openbao, tmp_path_factory.mktemp("health"))
    try:
        yield service, files
    finally:
        service.terminate()


def channel_to(secured: tuple[ServiceProcess, SecuredFiles], port: str) -> grpc.Channel:
    service, files = secured
    if port == "health port":
        return grpc.insecure_channel(f"127.0.0.1:{service.listening['health_port']}")
    return grpc.secure_channel(
        f"127.0.0.1:{service.listening['api_key_port']}", grpc.ssl_channel_credentials(files.ca.cert_pem)
    )


@pytest.mark.parametrize("port", ["grpc port", "health port"])
def test_check_and_watch_answer_the_served_names(secured, port):
    with channel_to(secured, port) as channel:
        stub = health_stub(channel)
        for name in SERVED:
            assert stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status == SERVING
            watch = stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert next(watch).status == SERVING
            watch.cancel()


@pytest.mark.parametrize("port", ["grpc port", "health port"])
@pytest.mark.parametrize("name", ["tokenservice.v1.Other", "x" * 500, "LIVENESS"])
def test_an_unknown_name_is_not_found_at_once_by_check_and_watch(secured, port, name):
    with channel_to(secured, port) as channel:
        stub = health_stub(channel)
        with pytest.raises(grpc.RpcError) as checked:
            stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as watched:
            next(stub.Watch(health_pb2.HealthCheckRequest(service=name), timeout=5))
        took = time.monotonic() - started
    assert checked.value.code() == watched.value.code() == grpc.StatusCode.NOT_FOUND
    assert took < 1, "Watch of an unknown name was held instead of refused"
    details = watched.value.details() or ""
    assert name not in details and "'liveness'" in details


def test_the_health_port_reads_no_more_than_a_health_request_needs(secured):
    big = health_pb2.HealthCheckRequest(service="x" * 2048)
    with channel_to(secured, "health port") as channel, pytest.raises(grpc.RpcError) as raised:
        health_stub(channel).Check(big, timeout=5)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    with channel_to(secured, "grpc port") as channel, pytest.raises(grpc.RpcError) as raised:
        health_stub(channel).Check(big, timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_two_thousand_watches_of_huge_names_leave_the_process_as_it_was(secured):
    """The reported flood: 2,000 Watch streams naming 100 KB services, over 10 connections, no credentials."""
    service, _files = secured
    for port in ("grpc port", "health port"):
        with channel_to(secured, port) as channel:
            health_stub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    baseline = rss_kib(service.process.pid)

    async def hold(port: int, tls: bool) -> tuple:
        async with flood(
            port, watch_with_name(100_000), connections=10, streams_per_connection=200, tls=tls
        ) as watches:
            await wait_until_async(
                lambda: watches.answered >= watches.opened,
                timeout=10,
                interval=0.1,
                message=lambda: f"every Watch answered: {watches.summary()}",
            )
            return watches, rss_kib(service.process.pid)

    results = [
        asyncio.run(hold(service.listening["api_key_port"], tls=True)),
        asyncio.run(hold(service.listening["health_port"], tls=False)),
    ]
    peak = max(rss for _, rss in results)
    for watches, _ in results:
        # Both servers allow 100 streams a connection: the peer could open 1,000 of its 2,000.
        assert watches.opened == 1000 and watches.refused_locally == 1000, watches.summary()
        assert watches.open_now == 0, watches.summary()
    # Read (16 at a time: calls without credentials) and NOT_FOUND, or refused unread as over those 16.
    api_port = results[0][0]
    assert api_port.statuses["NOT_FOUND"] + api_port.statuses["RESOURCE_EXHAUSTED"] == 1000, api_port.summary()
    assert results[1][0].statuses["RESOURCE_EXHAUSTED"] == 1000  # over the health port's message limit
    assert peak - baseline < 50 * MIB, f"RSS grew from {baseline // MIB} to {peak // MIB} MiB"


def test_watch_streams_end_at_shutdown_so_it_does_not_wait_its_grace(openbao, tmp_path):
    service, files = start(openbao, tmp_path)
    statuses = []
    try:
        with channel_to((service, files), "grpc port") as channel:
            watch = health_stub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=20)
            statuses.append(next(watch).status)
            signalled = time.monotonic()
            service.process.send_signal(signal.SIGTERM)
            statuses.extend(response.status for response in watch)  # ends when the server ends it
            ended = time.monotonic() - signalled
        assert service.process.wait(timeout=15) == 0
        stopped = time.monotonic() - signalled
    finally:
        service.stop()
    assert statuses == [SERVING, NOT_SERVING]
    assert ended < 3 and stopped < 3, (ended, stopped)
