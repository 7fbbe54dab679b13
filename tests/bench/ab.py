"""A/B benchmark of checkouts of this repository: unary MintToken req/s and the server's CPU per call.

    .venv/bin/python tests/bench/ab.py CHECKOUT_A CHECKOUT_B [CHECKOUT ...] [--rounds 3] [--duration 10] [--workers 1]
        [--clients 16] [--streams 4] [--transit]

Each checkout needs its own .venv (run its scripts/setup; `git worktree add --detach DIR COMMIT` makes
one). All the services run at once against one OpenBao dev server, as in tests/bench/bench.py (no caller
authentication, the audit trail into a file), and h2load loads one at a time, the order rotating by one
in each round (with two: alternating which goes first). CPU per call (user + system time of the service's
processes over the run, divided by its calls) varies less than req/s on a shared machine: read both.
With --transit, each checkout's default org signs through the dev server's Transit (the secret
imported as in tests/bench/bench.py), and the first checkout also serves in KV mode beside them: each
round prints every Transit service's rate as a ratio of that KV service's, the ratio the Transit
target is set in (--streams 1: 16 calls in flight), and the Vault HMAC requests a token.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tokenservice.v1 import token_service_pb2 as pb

from service.dev import OpenBaoDevServer, free_loopback_port
from tests.bench.bench import (
    SECRET_PATH,
    Children,
    cpu_seconds,
    ensure_tools,
    grpc_frame,
    transit_config,
    transit_hmac_requests,
)
from tests.support import metric_samples, wait_until

MINT_PATH = "/tokenservice.v1.TokenService/MintToken"
SUCCEEDED = re.compile(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded")


@dataclass
class Contender:
    checkout: Path
    process: subprocess.Popen
    grpc_port: int
    metrics_port: int
    rounds: list[tuple[float, float]]
    mode: str = "kv"
    ratios: list[float] = field(default_factory=list)  # --transit: this round's req/s over the KV service's

    @property
    def name(self) -> str:
        return f"{self.checkout} ({self.mode})"

    def hmac_requests(self) -> tuple[float, float]:
        """Transit: the Vault HMAC requests so far, and the inputs they carried."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return transit_hmac_requests(metric_samples(response.read().decode()))


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def h2load(port: int, request: Path, load: list[str], clients: int, streams: int) -> int:
    """The calls that succeeded of an h2load run of `request` against `port`; `load` says how long
    (["-D", seconds]) or how many (["-n", calls])."""
    argv = ["h2load", "-t", "1", "-c", str(clients), "-m", str(streams), "-d", str(request), *load]
    argv += ["-H", "content-type: application/grpc", "-H", "te: trailers", f"http://127.0.0.1:{port}{MINT_PATH}"]
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = SUCCEEDED.search(output)
    if match is None:
        raise SystemExit(f"h2load printed no request count:\n{output}")
    return int(match.group(1))


@contextlib.contextmanager
def compared(prefix: str) -> Iterator[tuple[Children, OpenBaoDevServer, Path, Path, str]]:
    """What comparing checkouts needs: the children to stop at the end, an OpenBao dev server holding
    the benchmark's secret, a work directory (named with `prefix`), the unary request file in it, and
    the secret."""
    children, bao, workdir = Children(), OpenBaoDevServer(), Path(tempfile.mkdtemp(prefix=prefix))
    secret = secrets.token_urlsafe(48)
    try:
        ensure_tools(children)
        bao.start()
        bao.write_secret(SECRET_PATH, secret)
        yield children, bao, workdir, unary_request(workdir), secret
    finally:
        children.stop_all()
        bao.stop()


def unary_request(workdir: Path) -> Path:
    """A file holding one MintToken request as h2load sends it."""
    request = workdir / "unary.bin"
    message = pb.MintTokenRequest(external_id="ab", email="ab@example.com")
    request.write_bytes(grpc_frame(message.SerializeToString()))
    return request


def service_env(
    bao: OpenBaoDevServer, grpc_port: int, metrics_port: int, workers: int, workdir: Path
) -> dict[str, str]:
    """What a compared service runs with: no caller authentication, the audit trail into a file."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
    env.update(
        {
            "VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.root_token,
            "TOKENSERVICE_SECRET_PATH": SECRET_PATH,
            "TOKENSERVICE_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "TOKENSERVICE_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "1",
            "TOKENSERVICE_AUDIT_OUTPUT": str(workdir / f"audit-{grpc_port}"),
            "TOKENSERVICE_WORKERS": str(workers),
        }
    )
    return env


def start(
    children: Children,
    bao: OpenBaoDevServer,
    checkout: Path,
    workers: int,
    workdir: Path,
    transit: Path | None = None,
) -> Contender:
    """`checkout`'s service in KV mode, or with `transit`'s config (its org signing through Transit)."""
    grpc_port, metrics_port = free_loopback_port(), free_loopback_port()
    env = service_env(bao, grpc_port, metrics_port, workers, workdir)
    argv = [str(checkout / ".venv" / "bin" / "tokenservice"), "serve"]
    if transit is not None:
        del env["TOKENSERVICE_SECRET_PATH"]  # a transit org reads no KV path
        argv += ["--config", str(transit)]
    process = children.start(argv, env=env, output=workdir / f"log-{grpc_port}", cwd=checkout)
    return Contender(checkout, process, grpc_port, metrics_port, [], "transit" if transit else "kv")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--clients", type=int, default=16, help="h2load connections (default 16)")
    parser.add_argument("--streams", type=int, default=4, help="streams a connection (default 4)")
    parser.add_argument(
        "--transit", action="store_true", help="the checkouts sign through Transit, beside a KV service of the first"
    )
    args = parser.parse_args()
    if len(args.checkouts) < 2:
        parser.error("name at least two checkouts to compare")
    with compared("tokenservice-ab-") as (children, bao, workdir, request, secret):
        checkouts = [checkout.resolve() for checkout in args.checkouts]
        transit = transit_config(bao, workdir, secret) if args.transit else None
        contenders = [start(children, bao, checkout, args.workers, workdir, transit) for checkout in checkouts]
        kv = start(children, bao, checkouts[0], args.workers, workdir) if args.transit else None
        every = contenders + ([kv] if kv else [])
        for contender in every:
            wait_until(functools.partial(accepts, contender.grpc_port), timeout=30, message="the service listening")
        for round_number in range(args.rounds):
            shift = round_number % len(every)
            for contender in every[shift:] + every[:shift]:
                measure(contender, request, args)
            if kv is not None:
                for contender in contenders:
                    contender.ratios.append(contender.rounds[-1][0] / kv.rounds[-1][0])
        for contender in every:
            rates, costs = zip(*contender.rounds, strict=True)
            ratios = contender.ratios
            print(
                f"{contender.name}: median {statistics.median(rates):,.0f} req/s "
                f"[{min(rates):,.0f}-{max(rates):,.0f}], median {statistics.median(costs):.0f} µs CPU a call "
                f"[{min(costs):.0f}-{max(costs):.0f}]"
                + (
                    f"; of KV: median {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}]"
                    if ratios
                    else ""
                )
            )
    return 0


def measure(contender: Contender, request: Path, args: argparse.Namespace) -> None:
    """One round of `contender`: a second of warm-up, then `args.duration` seconds measured."""
    h2load(contender.grpc_port, request, ["-D", "1"], args.clients, args.streams)
    transit = contender.mode == "transit"
    before, hmac_before = cpu_seconds(contender.process.pid), contender.hmac_requests() if transit else (0.0, 0.0)
    calls = h2load(contender.grpc_port, request, ["-D", f"{args.duration:g}"], args.clients, args.streams)
    cpu_per_call = (cpu_seconds(contender.process.pid) - before) / calls * 1e6
    contender.rounds.append((calls / args.duration, cpu_per_call))
    batches = ""
    if transit:
        requests, inputs = (after - first for after, first in zip(contender.hmac_requests(), hmac_before, strict=True))
        batches = f", {requests / inputs:.3f} HMAC requests a token" if inputs else ""
    print(
        f"round {len(contender.rounds)}, {contender.name}: {calls / args.duration:,.0f} req/s, "
        f"{cpu_per_call:.0f} µs CPU a call{batches} (load average {os.getloadavg()[0]:.1f})",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
