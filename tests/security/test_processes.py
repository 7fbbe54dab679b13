"""The processes of `tokenservice serve` and `tokenservice dev`: who may bind their ports, what happens when a
worker or the supervisor dies, and that nothing they start outlives them.

A second instance on a port in use must fail to start instead of silently sharing the port through
SO_REUSEPORT (and taking half of the connections); a killed worker is replaced; a killed supervisor takes
its workers along.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import OpenBaoDevServer
from tests.support import (
    TOKENSERVICE,
    DevProcess,
    ServiceProcess,
    command_line,
    is_running,
    metric_value,
    process_tree,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.integration

SECOND_INSTANCE_TIMEOUT = 10


def start_service(openbao: OpenBaoDevServer, workers: int) -> ServiceProcess:
    path = f"kustomer/processes-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, uuid.uuid4().hex * 2)
    return ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": path,
            "TOKENSERVICE_WORKERS": str(workers),
        }
    )


@pytest.fixture(scope="module")
def single(openbao: OpenBaoDevServer) -> Iterator[ServiceProcess]:
    service = start_service(openbao, 1)
    yield service
    service.terminate()


@pytest.fixture(scope="module")
def supervised(openbao: OpenBaoDevServer) -> Iterator[ServiceProcess]:
    service = start_service(openbao, 2)
    yield service
    service.terminate()


def serve_second_instance(openbao: OpenBaoDevServer, grpc_port: int, workers: int) -> subprocess.CompletedProcess:
    """`tokenservice serve` on a port that is taken; a second instance that starts is the defect (and is killed)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
    env.update(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:0",
            "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "1",
            "TOKENSERVICE_WORKERS": str(workers),
        }
    )
    process = subprocess.Popen(
        [TOKENSERVICE, "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=SECOND_INSTANCE_TIMEOUT)
    except subprocess.TimeoutExpired:
        for pid in [process.pid, *process_tree(process.pid)]:
            os.kill(pid, signal.SIGKILL)
        _, stderr = process.communicate()
        pytest.fail(f"a second instance started on port {grpc_port}, which another instance holds:\n{stderr[-2000:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, "", stderr)


@pytest.mark.parametrize("first", ["single", "supervised"])
@pytest.mark.parametrize("second_workers", [1, 2])
def test_a_second_instance_is_refused_a_port_in_use(request, openbao, first, second_workers):
    port = request.getfixturevalue(first).listening["grpc_port"]
    refused = serve_second_instance(openbao, port, second_workers)
    assert refused.returncode == 2, refused.stderr
    assert f"setting grpc_addr: cannot listen on 127.0.0.1:{port}: in use by another process" in refused.stderr


@pytest.mark.parametrize("first", ["single", "supervised"])
def test_a_foreign_listener_without_so_reuseport_is_refused(request, first):
    port = request.getfixturevalue(first).listening["grpc_port"]
    for reuse_address in (0, 1):
        with socket.socket() as foreign:
            foreign.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, reuse_address)
            with pytest.raises(OSError) as refused:
                foreign.bind(("127.0.0.1", port))
                foreign.listen()
            assert refused.value.errno == errno.EADDRINUSE


def test_what_is_not_prevented_a_same_user_so_reuseport_socket_joins_the_workers(supervised):
    """The limit service/addresses.py documents: Linux puts any socket of the same user with SO_REUSEPORT in
    the group. A single process does not use SO_REUSEPORT, so there nothing can join."""
    with socket.socket() as joining:
        joining.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        joining.bind(("127.0.0.1", supervised.listening["grpc_port"]))


def test_the_single_process_does_not_let_a_so_reuseport_socket_join(single):
    with socket.socket() as joining:
        joining.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        with pytest.raises(OSError) as refused:
            joining.bind(("127.0.0.1", single.listening["grpc_port"]))
        assert refused.value.errno == errno.EADDRINUSE


def established_inodes(port: int) -> set[str]:
    """Socket inodes of established TCP connections whose local port is `port` (IPv4 and IPv6 tables)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def test_a_killed_worker_is_replaced_and_the_new_one_serves(supervised):
    before = worker_pids(supervised)
    assert len(before) == 2
    victim = min(before)
    started = time.monotonic()
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: '"worker replaced"' in supervised.logs(), timeout=15, message="a replacement worker listening")
    replaced_after = time.monotonic() - started
    after = worker_pids(supervised)
    assert supervised.process.poll() is None and len(after) == 2 and victim not in after
    (replacement,) = after - before
    channels = [
        grpc.insecure_channel(supervised.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(24)
    ]
    try:
        for n, channel in enumerate(channels):
            pb_grpc.TokenServiceStub(channel).MintToken(pb.MintTokenRequest(external_id=f"r-{n}"), timeout=5)
        served_by_replacement = socket_inodes(replacement) & established_inodes(supervised.listening["grpc_port"])
    finally:
        for channel in channels:
            channel.close()
    assert served_by_replacement, "no connection reached the replacement worker"
    metrics = urllib.request.urlopen(supervised.metrics_url, timeout=5).read().decode()
    assert metric_value(metrics, "tokenservice_worker_restarts_total") == 1
    assert metric_value(metrics, "tokenservice_workers_serving") == 2
    records = supervised.log_records()
    exited = [r for r in records if r["message"] == "worker exited"]
    assert [(r["pid"], r["exit_code"]) for r in exited] == [(victim, -signal.SIGKILL)]
    replaced = [r for r in records if r["message"] == "worker replaced"]
    assert [r["pid"] for r in replaced] == [replacement]
    print(f"replacement worker listening {replaced_after:.2f} s after kill -9 of the old one")


def test_killing_the_supervisor_stops_its_workers(openbao):
    service = start_service(openbao, 2)
    tree = process_tree(service.process.pid)
    try:
        assert len(worker_pids(service)) == 2
        os.kill(service.process.pid, signal.SIGKILL)
        service.process.wait(timeout=5)
        started = time.monotonic()
        wait_until(
            lambda: not any(is_running(pid) for pid in tree),
            timeout=10,
            message=lambda: (
                f"the supervisor's processes exit: {[command_line(pid) for pid in tree if is_running(pid)]}"
            ),
        )
        print(f"all {len(tree)} processes of the killed supervisor gone after {time.monotonic() - started:.2f} s")
        with socket.socket() as successor:  # the port is free again: nothing of the old instance holds it
            successor.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            successor.bind(("127.0.0.1", service.listening["grpc_port"]))
            successor.listen()
    finally:
        for pid in tree:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)


def test_killing_dev_stops_openbao_and_the_service(tmp_path):
    dev = DevProcess.start(tmp_path)
    tree = process_tree(dev.process.pid)
    run_directory = Path(dev.banner_value("ports:")).parent
    try:
        assert any("bao" in command_line(pid) for pid in tree)
        os.kill(dev.process.pid, signal.SIGKILL)
        dev.process.wait(timeout=5)
        wait_until(
            lambda: not any(is_running(pid) for pid in tree),
            timeout=10,
            message=lambda: f"dev's processes exit: {[command_line(pid) for pid in tree if is_running(pid)]}",
        )
    finally:
        for pid in tree:
            if is_running(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(run_directory)  # what a killed dev cannot remove; its root token died with OpenBao
