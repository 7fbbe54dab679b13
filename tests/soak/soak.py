"""Soak: steady MintToken load against a real `tokenservice serve` for a set time,
with a secret rotation every minute; reports errors and memory growth.

With --secured, the service runs as production does (tests/secured.py: mTLS,
API keys, callers, the audit trail) and half the caller threads use the
client certificate, half the API key.

Not part of CI. Run:  .venv/bin/python -m tests.soak.soak --minutes 5 [--secured]
"""

from __future__ import annotations

import argparse
import collections
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.dev import OpenBaoDevServer
from tests.secured import SecuredFiles, start_secured_service
from tests.support import ServiceProcess, new_secret

SECRET_PATH = "kustomer/chat"


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (the supervisor, its workers and their helpers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(descendant for child in children for descendant in process_tree(int(child)))]


def largest(sizes: dict[int, int]) -> int:
    """The RSS of the biggest process of a tree: a worker, or the only process."""
    return max(sizes.values())


def rss_kib(pid: int) -> dict[int, int]:
    """VmRSS of each process of the tree."""
    sizes = {}
    for member in process_tree(pid):
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes[member] = int(line.split()[1])
    return sizes


def caller(channel_factory, stop: threading.Event, outcomes: collections.Counter, latencies: list[float]) -> None:
    with channel_factory() as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        while not stop.is_set():
            started = time.perf_counter()
            try:
                stub.MintToken(pb.MintTokenRequest(email="soak@example.com"), timeout=5)
                outcomes["OK"] += 1
            except grpc.RpcError as error:
                outcomes[error.code().name] += 1
            latencies.append(time.perf_counter() - started)


def secured_channel(service: ServiceProcess, files: SecuredFiles, *, certificate: bool) -> grpc.Channel:
    """A channel as the `checkout` caller (its certificate, on grpc_addr) or `reports` (its key, on the key port)."""
    ca = files.ca.cert_pem
    if certificate:
        credentials = grpc.ssl_channel_credentials(ca, files.client.key_pem, files.client.cert_pem)
        return grpc.secure_channel(service.grpc_target, credentials)
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca), grpc.access_token_call_credentials(files.api_key)
    )
    return grpc.secure_channel(f"127.0.0.1:{service.listening['api_key_port']}", credentials)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--callers", type=int, default=4)
    parser.add_argument("--secured", action="store_true", help="mTLS and API-key callers, as in production")
    args = parser.parse_args()
    with OpenBaoDevServer() as vault, tempfile.TemporaryDirectory() as directory:
        if args.secured:
            service, files = start_secured_service(vault, Path(directory), workers=2, rate_per_second=1e6)
            secret_path = files.secret_path
            factories = [
                lambda: secured_channel(service, files, certificate=True),
                lambda: secured_channel(service, files, certificate=False),
            ]
        else:
            secret_path = SECRET_PATH
            vault.write_secret(SECRET_PATH, new_secret())
            service = ServiceProcess.start(
                {
                    "VAULT_ADDR": vault.addr,
                    "VAULT_TOKEN": vault.root_token,
                    "TOKENSERVICE_SECRET_PATH": SECRET_PATH,
                    "TOKENSERVICE_REFRESH_INTERVAL": "5",
                }
            )
            factories = [lambda: grpc.insecure_channel(service.grpc_target)]
        outcomes: collections.Counter = collections.Counter()
        latencies: list[float] = []
        stop = threading.Event()
        threads = [
            threading.Thread(target=caller, args=(factories[n % len(factories)], stop, outcomes, latencies))
            for n in range(args.callers)
        ]
        for thread in threads:
            thread.start()
        samples = [(0.0, rss_kib(service.process.pid))]
        started = time.monotonic()
        end = started + args.minutes * 60
        next_rotation = started + 60
        while time.monotonic() < end:
            time.sleep(min(10, max(0.0, end - time.monotonic())))
            if time.monotonic() >= next_rotation:
                vault.write_secret(secret_path, new_secret())
                next_rotation += 60
            samples.append((time.monotonic() - started, rss_kib(service.process.pid)))
        stop.set()
        for thread in threads:
            thread.join()
        exit_code = service.terminate()
        audit_path = service.audit_path
        audit_records = sum(1 for _ in audit_path.open()) if audit_path is not None and audit_path.exists() else 0
    elapsed = time.monotonic() - started
    total = sum(outcomes.values())
    after_warmup = [largest(rss) for at, rss in samples if at >= 30] or [largest(samples[-1][1])]
    print(f"duration {elapsed:.0f} s, {args.callers} callers, {total} calls ({total / elapsed:.0f}/s)")
    print(f"outcomes: {dict(outcomes)}")
    print(
        f"latency p50 {statistics.median(latencies) * 1000:.2f} ms, "
        f"p99 {statistics.quantiles(latencies, n=100)[98] * 1000:.2f} ms"
    )
    print(
        f"processes: {len(samples[-1][1])}; RSS KiB of the largest: start {largest(samples[0][1])}, "
        f"after 30 s {after_warmup[0]}, end {after_warmup[-1]}, max {max(largest(rss) for _, rss in samples)}; "
        f"growth after warm-up {after_warmup[-1] - after_warmup[0]} KiB; "
        f"all processes at the end: {sum(samples[-1][1].values())} KiB"
    )
    print(f"audit records: {audit_records}")
    print(f"exit code after SIGTERM: {exit_code}")


if __name__ == "__main__":
    main()
