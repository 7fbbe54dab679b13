"""Instructions per unary MintToken of checkouts of this repository, counted by callgrind.

    .venv/bin/python tests/bench/instructions.py CHECKOUT [CHECKOUT ...] [--calls 1000] [--env NAME=VALUE ...]

Wall-clock A/B runs (tests/bench/ab.py) on a shared 2-core machine vary by several per cent from
round to round, more than the differences worth finding. Instructions do not: each checkout's
`tokenservice serve` (one worker, set up as ab.py sets it up: no caller authentication, the audit
trail into a file, one OpenBao dev server for all) runs under valgrind's callgrind; after 300 calls
of warm-up its counters are zeroed, h2load sends `--calls` more (4 connections, 4 streams each), and
the counters are dumped. The figure is every thread's instructions over those calls, divided by
them; two runs of one checkout have agreed within 0.5 %. Valgrind runs one thread at a time, so
what it counts is work, not contention. Needs valgrind (Debian `valgrind`) and h2load. A benchmark,
not a test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from service.dev import OpenBaoDevServer, free_loopback_port
from tests.bench.ab import accepts, compared, h2load, service_env
from tests.bench.bench import Children
from tests.support import wait_until

WARM_UP_CALLS = 300
# Python under valgrind runs some 50 times slower: imports alone take tens of seconds.
START_TIMEOUT_SECONDS = 600


def send(port: int, request: Path, calls: int) -> int:
    return h2load(port, request, ["-n", str(calls)], clients=4, streams=4)


def instructions_a_call(
    children: Children,
    bao: OpenBaoDevServer,
    checkout: Path,
    request: Path,
    calls: int,
    workdir: Path,
    extra_env: dict[str, str],
) -> float:
    grpc_port = free_loopback_port()
    env = {**service_env(bao, grpc_port, free_loopback_port(), 1, workdir), **extra_env}
    counts = workdir / f"callgrind-{grpc_port}"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={counts}.%p"]
    argv += [str(checkout / ".venv" / "bin" / "python"), str(checkout / ".venv" / "bin" / "tokenservice"), "serve"]
    process = children.start(argv, env=env, output=workdir / f"log-{grpc_port}", cwd=checkout)
    try:
        wait_until(lambda: accepts(grpc_port), timeout=START_TIMEOUT_SECONDS, message=f"{checkout} listening")
        send(grpc_port, request, WARM_UP_CALLS)
        subprocess.run(["callgrind_control", "--zero", str(process.pid)], check=True, capture_output=True)
        done = send(grpc_port, request, calls)
        subprocess.run(["callgrind_control", "--dump=measured", str(process.pid)], check=True, capture_output=True)
    finally:
        children.stop(process)
    [dump] = [path for path in workdir.glob(f"{counts.name}.{process.pid}.*") if "measured" in path.read_text()[:4096]]
    totals = next(line for line in dump.read_text().splitlines() if line.startswith(("summary:", "totals:")))
    return int(totals.split()[1]) / done


def environment_variable(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=VALUE")
    return name, value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=environment_variable,
        help="set for every checkout's service, e.g. TOKENSERVICE_TRACING=1 (repeat for several)",
    )
    args = parser.parse_args()
    with compared("tokenservice-callgrind-") as (children, bao, workdir, request, _secret):
        for checkout in args.checkouts:
            count = instructions_a_call(children, bao, checkout.resolve(), request, args.calls, workdir, dict(args.env))
            print(f"{checkout}: {count / 1000:,.1f} k instructions a call", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
