"""The real `tokenservice` command: serve, dev, mint, verify, shutdown and what it logs."""

from __future__ import annotations

import platform
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import free_loopback_port
from service.malloc_arenas import ARENAS
from tests.support import (
    TOKENSERVICE,
    ServiceProcess,
    hs256_open,
    metric_value,
    new_secret,
    wait_for_health,
    wait_until,
    worker_pids,
)

pytestmark = pytest.mark.integration


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([TOKENSERVICE, *args], capture_output=True, text=True, input=stdin, timeout=30)


def test_cli_mint_and_verify_against_the_live_service(live_service):
    minted = run_cli("mint", "--addr", live_service.grpc_target, "--email", "cli@example.com")
    assert minted.returncode == 0, minted.stderr
    token = minted.stdout.strip()
    header, claims = hs256_open(token, live_service.secret)
    assert claims["email"] == "cli@example.com" and header == b'{"alg":"HS256","typ":"JWT"}'
    verified = run_cli("verify", "--addr", live_service.grpc_target, "-", stdin=token)
    assert verified.returncode == 0 and verified.stdout.startswith("valid: Kustomer will use the email")
    refused = run_cli("mint", "--addr", live_service.grpc_target, "--email", "nope")
    assert refused.returncode == 1 and refused.stdout == ""
    assert "INVALID_ARGUMENT [EMAIL_INVALID]: email:" in refused.stderr


def test_logs_and_metrics_never_carry_the_secret_tokens_or_identities(openbao):
    path = "kustomer/leak-check"
    first = new_secret()
    openbao.write_secret(path, first)
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": path,
            "TOKENSERVICE_REFRESH_INTERVAL": "0.3",
        },
        args=["--log-level", "DEBUG"],
    )
    try:
        identities = ["leaky.customer@example.com", "cust-leak-8812", "bad\nline@example.com"]
        with grpc.insecure_channel(service.grpc_target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            tokens = [stub.MintToken(pb.MintTokenRequest(email=identities[0], external_id=identities[1])).token]
            with pytest.raises(grpc.RpcError):
                stub.MintToken(pb.MintTokenRequest(email=identities[2]))
            second = new_secret()
            openbao.write_secret(path, second)
            wait_until(
                lambda: stub.MintToken(pb.MintTokenRequest(email=identities[0])).secret_version == 2,
                interval=0.1,
                message="minting with secret version 2",
            )
            openbao.write_secret(path, "rejected-too-short")
            wait_until(
                lambda: '"secret rejected' in service.logs(),
                interval=0.1,
                message="the too-short secret logged as rejected",
            )
            tokens += [stub.MintToken(pb.MintTokenRequest(email=identities[0])).token]
            tokens += [
                result.token.token
                for result in stub.MintTokens(
                    pb.MintTokensRequest(requests=[pb.MintTokenRequest(external_id=identities[1])])
                ).results
            ]
            stub.VerifyToken(pb.VerifyTokenRequest(token=tokens[0]))
        metrics = urllib.request.urlopen(service.metrics_url, timeout=5).read().decode()
    finally:
        assert service.terminate() == 0
    logs = service.logs()
    assert '"signing secret adopted"' in logs and '"secret rejected' in logs
    for needle in [
        first,
        second,
        "rejected-too-short",
        openbao.root_token,
        *tokens,
        *identities,
        "leaky.customer",
        "cust-leak",
    ]:
        assert needle not in logs, f"log leaks {needle[:12]}…"
        assert needle not in metrics, f"/metrics leaks {needle[:12]}…"
    for token in tokens:
        for segment in token.split("."):
            assert segment not in logs


def test_sigterm_lets_in_flight_rpcs_finish_and_exits_zero(openbao, secret_path):
    service = ServiceProcess.start(
        {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "TOKENSERVICE_SECRET_PATH": secret_path}
    )
    big_batch = pb.MintTokensRequest(requests=[pb.MintTokenRequest(email=f"u{i}@example.com") for i in range(1000)])
    outcomes: list[object] = []
    lock = threading.Lock()

    def call_repeatedly() -> None:
        with grpc.insecure_channel(service.grpc_target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            for _ in range(40):
                try:
                    response = stub.MintTokens(big_batch, timeout=20)
                    outcome = sum(result.HasField("token") for result in response.results)
                except grpc.RpcError as error:
                    outcome = error.code()
                with lock:
                    outcomes.append(outcome)
                if outcome != 1000:
                    return

    callers = [threading.Thread(target=call_repeatedly) for _ in range(4)]
    for caller in callers:
        caller.start()
    wait_until(
        lambda: len(outcomes) >= 4, timeout=30, interval=0.01, message=lambda: f"four batches answered: {outcomes}"
    )
    service.process.send_signal(signal.SIGTERM)
    assert service.process.wait(timeout=20) == 0
    for caller in callers:
        caller.join(timeout=30)
    completed = [outcome for outcome in outcomes if outcome == 1000]
    refused = [outcome for outcome in outcomes if outcome != 1000]
    assert len(completed) >= 4, outcomes
    # A call that was refused never started: UNAVAILABLE, never CANCELLED or a cut-off batch.
    assert set(refused) <= {grpc.StatusCode.UNAVAILABLE}, outcomes
    assert '"shutting down"' in service.logs() and '"stopped"' in service.logs()


def test_bad_config_is_refused_at_start_naming_the_setting(openbao):
    result = subprocess.run(
        [TOKENSERVICE, "serve"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": "x", "TOKENSERVICE_REFRESH_INTERVAL": "often"},
    )
    assert result.returncode == 2
    assert "TOKENSERVICE_REFRESH_INTERVAL" in result.stderr and "refresh_interval_seconds" in result.stderr


def test_dev_runs_openbao_and_the_service_and_stops_both_on_ctrl_c():
    grpc_addr, metrics_port = f"127.0.0.1:{free_loopback_port()}", free_loopback_port()
    dev = subprocess.Popen(
        [TOKENSERVICE, "dev", "--grpc-addr", grpc_addr, "--metrics-addr", f"127.0.0.1:{metrics_port}"],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert dev.stderr is not None  # stderr=PIPE
    try:
        banner = ""
        while "Ctrl-C stops" not in banner:  # the service's log lines come first, on the same stderr
            line = dev.stderr.readline()
            assert line, f"dev exited before its banner:\n{banner}"
            banner += "" if line.startswith("{") else line
        assert f"tokenservice mint --addr {grpc_addr} --email someone@example.com" in banner
        assert "CALLER AUTHENTICATION IS OFF" in banner
        wait_for_health(grpc_addr, health_pb2.HealthCheckResponse.SERVING)
        minted = run_cli("mint", "--addr", grpc_addr, "--email", "someone@example.com")
        assert minted.returncode == 0 and minted.stdout.count(".") == 2
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
        assert metric_value(metrics, "tokenservice_tokens_issued_total", org="default", identity="email") == 1
        vault_addr = banner.split("Vault:")[1].split()[0]
    finally:
        dev.send_signal(signal.SIGINT)
        assert dev.wait(timeout=20) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{vault_addr}/v1/sys/health", timeout=2)


def test_workers_share_the_port_and_metrics_add_up(openbao, secret_path):
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_SECRET_PATH": secret_path,
            "TOKENSERVICE_WORKERS": "3",
        }
    )
    try:
        for connection in range(30):  # new connections land on different workers
            with grpc.insecure_channel(service.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
                pb_grpc.TokenServiceStub(channel).MintToken(pb.MintTokenRequest(external_id=f"w-{connection}"))
        metrics = urllib.request.urlopen(service.metrics_url, timeout=5).read().decode()
    finally:
        assert service.terminate() == 0
    workers = [record for record in service.log_records() if record["message"] == "worker listening"]
    assert len({record["grpc_port"] for record in workers}) == 1 and len(workers) == 3
    assert metric_value(metrics, "tokenservice_tokens_issued_total", org="default", identity="external_id") == 30
    assert metric_value(metrics, "grpc_server_handled_total", grpc_method="MintToken", grpc_code="OK") == 30
    assert metric_value(metrics, "tokenservice_secret_version", org="default") == 1
    assert metric_value(metrics, "tokenservice_vault_refresh_total", org="default", result="ok") >= 3


# glibc maps each arena but the main one as an anonymous heap of HEAP_MAX_SIZE (64 MiB on 64-bit) at an
# address aligned to that size: its used part read-write, the rest reserved without access (---p) up to
# the 64 MiB, where the kernel may have merged it with a neighbouring reservation.
_ARENA_HEAP_BYTES = 64 << 20


def _arena_heaps(pid: int) -> list[str]:
    """The process's arena heaps, as the lines of /proc/PID/maps of their read-write parts."""
    mappings = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(address, 16) for address in fields[0].split("-"))
        anonymous = len(fields) == 5
        mappings.append((start, end, fields[1] if anonymous else "file", line))
    following = [*mappings[1:], (0, 0, "", "")]
    heaps = []
    for (start, end, kind, line), (next_start, next_end, next_kind, _) in zip(mappings, following, strict=True):
        reserved_to = next_end if next_kind == "---p" and next_start == end else end
        if kind == "rw-p" and start % _ARENA_HEAP_BYTES == 0 and reserved_to >= start + _ARENA_HEAP_BYTES:
            heaps.append(line)
    return heaps


def _serving_processes_after_load(service: ServiceProcess, workers: int) -> list[int]:
    """The processes that serve gRPC (the service, or its workers) once 8 connections have minted at once."""

    def mint() -> None:
        with grpc.insecure_channel(service.grpc_target, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            for _ in range(200):
                stub.MintToken(pb.MintTokenRequest(external_id="arena-load"))

    threads = [threading.Thread(target=mint) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [service.process.pid] if workers == 1 else sorted(worker_pids(service))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
@pytest.mark.parametrize("workers", [1, 2])
def test_the_serving_processes_keep_to_two_malloc_arenas_under_load(openbao, secret_path, workers):
    environment = {
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "TOKENSERVICE_SECRET_PATH": secret_path,
        "TOKENSERVICE_WORKERS": str(workers),
    }
    capped = ServiceProcess.start(environment)
    try:
        serving = _serving_processes_after_load(capped, workers)
        assert len(serving) == workers
        heaps = {pid: _arena_heaps(pid) for pid in serving}
        assert all(len(found) <= ARENAS - 1 for found in heaps.values()), heaps
    finally:
        assert capped.terminate() == 0
    # The same load where the operator's MALLOC_ARENA_MAX lifts the cap: the count above is not one of
    # a process whose threads would share two arenas anyway.
    uncapped = ServiceProcess.start({**environment, "MALLOC_ARENA_MAX": "16"})
    try:
        heaps = {pid: _arena_heaps(pid) for pid in _serving_processes_after_load(uncapped, workers)}
        assert all(len(found) > ARENAS for found in heaps.values()), heaps
    finally:
        assert uncapped.terminate() == 0
