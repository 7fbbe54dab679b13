"""Side-by-side minting benchmark: TokenService against two references.

Run it through tests/bench/run (which creates .venv first); see
tests/bench/README.md for what it measures and what each column means.

Everything it starts (OpenBao dev server, tokenservice, the Express and Go
references, h2load) listens on or connects to 127.0.0.1 only, is bounded in
time, and is stopped before it exits, also on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from concurrent import futures
from pathlib import Path
from typing import TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from prometheus_client.samples import Sample  # noqa: E402
from tokenservice.v1 import token_service_pb2 as pb  # noqa: E402
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc  # noqa: E402

from service.addresses import read_ports_file  # noqa: E402
from service.api_keys import new_api_key  # noqa: E402
from service.dev import OpenBaoDevServer, free_loopback_port  # noqa: E402
from tests.secured import Caller, SecuredFiles, toml_text, write_secured_config  # noqa: E402
from tests.support import (  # noqa: E402
    announced_workers,
    b64url_decode,
    health_stub,
    metric_samples,
    wait_until,
    workers_ready,
)

T = TypeVar("T")

TOKENSERVICE = Path(sys.executable).parent / "tokenservice"
EXPRESS_DIR = HERE / "reference-express"
GO_DIR = HERE / "reference-go"
GO_BINARY = GO_DIR / "reference-go"
SECRET_PATH = "kustomer/bench"
# The same secret, imported into Transit, for the service in transit mode.
TRANSIT_KEY = "kustomer-bench"
EXPECTED_HEADER = b'{"alg":"HS256","typ":"JWT"}'
ALLOWED_CLAIMS = {"externalId", "email", "iat"}

# The customer every benchmark request names: both identities, as a backend
# that knows both would send them.
EMAIL = "bench.user@example.com"
EXTERNAL_ID = "bench-user-000042"

MINT_PATH = "/tokenservice.v1.TokenService/MintToken"
MINT_BATCH_PATH = "/tokenservice.v1.TokenService/MintTokens"
GRPC_HEADERS = ["content-type: application/grpc", "te: trailers"]

# Row keys, in table order.
UNARY, SECURED, BATCH, EXPRESS, GO, HALF = "unary", "secured", "batch", "express", "go", "half"
UNARY_16, TRANSIT_16, TRANSIT, TRANSIT_BATCH = "unary-16", "transit-16", "transit", "transit-batch"
TRACED_ALL, TRACED_SOME = "traced-all", "traced-some"
ROW_ORDER = (
    UNARY,
    TRACED_ALL,
    TRACED_SOME,
    SECURED,
    BATCH,
    UNARY_16,
    TRANSIT_16,
    TRANSIT,
    TRANSIT_BATCH,
    EXPRESS,
    GO,
    HALF,
)
# The sampling ratio of the second traced row.
SOME_SAMPLED = 0.01
BATCH_KEYS = (BATCH, TRANSIT_BATCH)
LABELS = {
    UNARY: "tokenservice MintToken",
    TRACED_ALL: "tokenservice MintToken, tracing 100 %",
    TRACED_SOME: "tokenservice MintToken, tracing 1 %",
    SECURED: "tokenservice MintToken, TLS + API key",
    BATCH: "tokenservice MintTokens x{batch}",
    UNARY_16: "tokenservice MintToken, {in_flight} in flight",
    TRANSIT_16: "tokenservice transit MintToken, {in_flight} in flight",
    TRANSIT: "tokenservice transit MintToken",
    TRANSIT_BATCH: "tokenservice transit MintTokens x{batch}",
    EXPRESS: "reference Express+jsonwebtoken",
    GO: "reference Go grpc-go+golang-jwt",
    HALF: "tokenservice MintToken @~50% peak",
}


class BenchError(Exception):
    """Something is wrong with a server or the benchmark itself: stop, loudly."""


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes


class Children:
    """Every process this benchmark starts, so that all of them get stopped."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen] = []

    def start(
        self, argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, output: Path | None = None
    ) -> subprocess.Popen:
        sink = open(output, "wb") if output else subprocess.DEVNULL  # noqa: SIM115 (closed by the child's exit)
        try:
            process = subprocess.Popen(
                argv,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            if not isinstance(sink, int):  # not DEVNULL: the file this process opened
                sink.close()
        self._processes.append(process)
        return process

    def run(self, argv: list[str], *, timeout: float) -> str:
        """Run a command to its end (killed after `timeout` s); its stdout+stderr.
        A non-zero exit is a BenchError."""
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._processes.append(process)
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop(process, grace=0)
            raise BenchError(f"{argv[0]} did not finish within {timeout:g} s: {' '.join(argv)}") from None
        finally:
            self._forget(process)
        text = output.decode(errors="replace")
        if process.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited with {process.returncode}:\n{text}")
        return text

    def stop(self, process: subprocess.Popen, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `grace` seconds; wait for the exit."""
        if process.poll() is None:
            if grace > 0:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=grace)
            if process.poll() is None:
                process.kill()
                process.wait()
        # Each child leads its own process group (start_new_session): sweep up
        # whatever it left behind, such as tokenservice's worker processes.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        self._forget(process)

    def stop_all(self) -> None:
        for process in reversed(list(self._processes)):
            self.stop(process)

    def _forget(self, process: subprocess.Popen) -> None:
        if process in self._processes:
            self._processes.remove(process)


def _raise_on_signal(signal_number: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal_number}")


def process_tree(pid: int) -> list[int]:
    """`pid` and all its live descendants (tokenservice may run worker processes)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending.extend(children.get(current, []))
    return tree


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """VmRSS of a live process plus its descendants, in KiB."""
    total = sum(_status_kib(member, "VmRSS") for member in process_tree(pid))
    if total == 0:
        raise BenchError(f"no VmRSS for pid {pid}")
    return total


def largest_rss_kib(pid: int) -> int:
    """VmRSS of the largest of a live process and its descendants (a worker, when there are workers), in KiB."""
    return max(_status_kib(member, "VmRSS") for member in process_tree(pid))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process and its descendants have used so far."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def poll_child(
    process: subprocess.Popen,
    output: Path,
    what: str,
    condition: Callable[[], T | None],
    *,
    timeout: float,
    interval: float,
    late: str,
) -> T:
    """The first true value of `condition`, asked every `interval` s (tests.support.wait_until); a
    BenchError with the child's `output` once the child `what` has exited, or after `timeout` s (`late`)."""

    def answered() -> T | None:
        value = condition()
        if not value and process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode}:\n{output.read_text(errors='replace')}")
        return value

    try:
        return wait_until(answered, timeout=timeout, interval=interval)
    except AssertionError:
        raise BenchError(f"{late}:\n{output.read_text(errors='replace')}") from None


def first_json_line(process: subprocess.Popen, output: Path, key: str, what: str, timeout: float = 30.0) -> dict:
    """The first JSON object containing `key` that a child printed to `output`."""

    def printed() -> dict | None:
        for line in output.read_text(errors="replace").splitlines():
            if line.startswith("{") and f'"{key}"' in line:
                return json.loads(line)
        return None

    return poll_child(
        process,
        output,
        what,
        printed,
        timeout=timeout,
        interval=0.02,
        late=f"{what} did not report {key} within {timeout:g} s",
    )


# ------------------------------------------------------------------ install


def ensure_tools(children: Children) -> str:
    """h2load, node/npm, go; Express dependencies; the Go reference binary. The h2load version."""
    if shutil.which("h2load") is None:
        log("h2load is missing: apt-get install nghttp2-client")
        if os.geteuid() != 0:
            raise BenchError("h2load is missing and this is not root: apt-get install -y nghttp2-client")
        children.run(["apt-get", "update", "-qq"], timeout=300)
        children.run(["apt-get", "install", "-y", "-qq", "nghttp2-client"], timeout=300)
        if shutil.which("h2load") is None:
            raise BenchError("apt-get install nghttp2-client did not provide h2load")
    version = children.run(["h2load", "--version"], timeout=10).strip()

    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is required for the Express reference (Node.js >= 18)")
    lock_digest = hashlib.sha256((EXPRESS_DIR / "package-lock.json").read_bytes()).hexdigest()
    stamp = EXPRESS_DIR / "node_modules" / ".bench-lock-sha256"
    if not stamp.exists() or stamp.read_text() != lock_digest:
        log("reference-express: npm ci")
        children.run(["npm", "ci", "--prefix", str(EXPRESS_DIR), "--no-audit", "--no-fund"], timeout=600)
        stamp.write_text(lock_digest)

    if shutil.which("go") is None:
        raise BenchError("go is required for the Go reference (Go >= 1.26)")
    if not (REPO / "clients" / "go" / "tokenservice" / "v1" / "token_service_grpc.pb.go").exists():
        raise BenchError(
            "clients/go/tokenservice/v1 is missing: run clients/generate (the Go reference uses its stubs)"
        )
    log("reference-go: go build")
    children.run(["go", "-C", str(GO_DIR), "build", "-o", str(GO_BINARY), "."], timeout=900)
    return version


# ------------------------------------------------------------------ servers


@dataclasses.dataclass
class Service:
    """A running `tokenservice serve`."""

    process: subprocess.Popen
    grpc_target: str
    metrics_url: str
    seconds_to_listening: float
    seconds_to_serving: float  # the first health check answering SERVING
    seconds_to_all_serving: float  # every worker process has logged that it serves
    workers: int

    def metrics(self) -> list[Sample]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            return metric_samples(response.read().decode())


def metric_sum(samples: list[Sample], name: str, where: Callable[[dict], bool] = lambda labels: True) -> float:
    return sum(sample.value for sample in samples if sample.name == name and where(sample.labels))


CUT_OFF_CODES = ("CANCELLED", "UNKNOWN")


def failed_call(labels: dict) -> bool:
    """A call that failed on the server's side: neither OK nor cut off by the client (run_h2load
    bounds those by the calls h2load left unfinished)."""
    return labels.get("grpc_code") not in ("OK", *CUT_OFF_CODES)


def cut_off_call(labels: dict) -> bool:
    return labels.get("grpc_code") in CUT_OFF_CODES


def transit_hmac_requests(samples: list[Sample]) -> tuple[float, float]:
    """A transit service's Vault HMAC requests so far, and the inputs they carried, from its metrics."""
    return (
        metric_sum(samples, "tokenservice_transit_batch_size_count", _is_hmac),
        metric_sum(samples, "tokenservice_transit_batch_size_sum", _is_hmac),
    )


def _is_hmac(labels: dict) -> bool:
    return labels.get("operation") == "hmac"


def service_env(
    bao: OpenBaoDevServer, grpc_port: int, metrics_port: int, workers: int | None, audit_file: Path, ports_file: Path
) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
    if workers:
        env["TOKENSERVICE_WORKERS"] = str(workers)
    env.update(
        {
            "VAULT_ADDR": bao.addr,
            "VAULT_TOKEN": bao.root_token,
            "TOKENSERVICE_SECRET_PATH": SECRET_PATH,
            "TOKENSERVICE_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "TOKENSERVICE_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
            # Like the references, no caller authentication; the audit trail stays on, into a file.
            "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "1",
            "TOKENSERVICE_AUDIT_OUTPUT": str(audit_file),
            "TOKENSERVICE_PORTS_FILE": str(ports_file),
        }
    )
    return env


def log_records(output: Path) -> list[dict]:
    records = []
    for line in output.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                records.append(json.loads(line))
    return records


def start_service(
    children: Children,
    bao: OpenBaoDevServer,
    workdir: Path,
    tag: str,
    workers: int | None,
    timeout: float = 60.0,
    secured: SecuredSetup | None = None,
    transit: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Service:
    """Start `tokenservice serve` and time it to a listening port and to health SERVING.

    With `secured`, it runs with its config: callers, TLS, and health on a plaintext port. With
    `transit`, with that config, whose org signs through Vault Transit."""
    grpc_port, metrics_port = free_loopback_port(), free_loopback_port()
    output = workdir / f"tokenservice-{tag}.log"
    ports_file = workdir / f"tokenservice-{tag}.ports.json"
    started = time.monotonic()
    audit_file = workdir / f"tokenservice-{tag}.audit"
    env = {**service_env(bao, grpc_port, metrics_port, workers, audit_file, ports_file), **(extra_env or {})}
    argv = [str(TOKENSERVICE), "serve"]
    if secured is not None:
        env["TOKENSERVICE_INSECURE_NO_CALLER_AUTH"] = ""
        argv += ["--config", str(secured.config_file)]
    if transit is not None:
        del env["TOKENSERVICE_SECRET_PATH"]  # the transit org reads no KV path
        argv += ["--config", str(transit)]
    process = children.start(argv, env=env, output=output)
    deadline = started + timeout

    def until(condition: Callable[[], T | None], interval: float) -> T:
        try:
            return poll_child(
                process,
                output,
                "tokenservice",
                condition,
                timeout=deadline - time.monotonic(),
                interval=interval,
                late=f"tokenservice was not SERVING within {timeout:g} s",
            )
        except BenchError:
            children.stop(process)
            raise

    def accepts() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", grpc_port)) == 0

    until(accepts, 0.002)
    listening = time.monotonic()
    target = f"127.0.0.1:{grpc_port}"
    health_target = f"127.0.0.1:{secured.health_port}" if secured else target
    options = [
        ("grpc.initial_reconnect_backoff_ms", 10),
        ("grpc.min_reconnect_backoff_ms", 10),
        ("grpc.max_reconnect_backoff_ms", 20),
    ]
    with grpc.insecure_channel(health_target, options=options) as channel:
        health = health_stub(channel)

        def answers_serving() -> bool:
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
            except grpc.RpcError:
                return False
            return status == health_pb2.HealthCheckResponse.SERVING

        until(answers_serving, 0.002)
    serving = time.monotonic()

    def every_worker_ready() -> dict | None:
        """The service's announcement, once every worker it announces has logged that it is ready: with
        several worker processes, the health check reached one of them (as tests.support.ServiceProcess)."""
        announcement = read_ports_file(ports_file, process.pid)
        if announcement is None or not workers_ready(log_records(output), announced_workers(announcement)):
            return None
        return announcement

    announcement = until(every_worker_ready, 0.005)
    all_serving = time.monotonic()
    return Service(
        process,
        target,
        f"http://127.0.0.1:{metrics_port}/metrics",
        listening - started,
        serving - started,
        all_serving - started,
        announced_workers(announcement),
    )


class SpanSink:
    """An OTLP/gRPC endpoint on loopback that takes span exports and only counts them: the collector
    of the traced rows, as cheap as an endpoint can be, since it shares the CPUs with the servers."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        # Bytes in, bytes out: no (de)serializer.
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(self._export)
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService", {"Export": handler}
                ),
            )
        )
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()

    def _export(self, request: bytes, _context: grpc.ServicerContext) -> bytes:
        self.requests += 1
        self.bytes += len(request)
        return b""  # an empty ExportTraceServiceResponse: everything accepted

    def environment(self, *, sampler: str, ratio: float | None = None) -> dict[str, str]:
        env = {
            "TOKENSERVICE_TRACING": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{self.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            "OTEL_TRACES_SAMPLER": sampler,
        }
        if ratio is not None:
            env["OTEL_TRACES_SAMPLER_ARG"] = str(ratio)
        return env

    def stop(self) -> None:
        self._server.stop(grace=None)


def transit_config(bao: OpenBaoDevServer, workdir: Path, secret: str) -> Path:
    """Transit on the dev server, the benchmark's secret imported as TRANSIT_KEY, and a config whose
    default org signs with that key."""
    from service.transit_import import import_secret

    bao.client().sys.enable_secrets_engine("transit", path="transit")
    import_secret(bao.client(), "transit", TRANSIT_KEY, secret.encode(), org="default", dry_run=False)
    config_file = workdir / "transit.toml"
    config_file.write_text(toml_text({"orgs": {"default": {"signing": "transit", "transit_key": TRANSIT_KEY}}}))
    return config_file


@dataclasses.dataclass
class SecuredSetup:
    """What a `tokenservice serve` with caller authentication needs, written by tests/secured.py: TLS
    on the gRPC port (server certificate only, so API keys are accepted there), one caller with an API
    key whose hash is in OpenBao and no rate limit to speak of, the audit fingerprint key, and health
    on a plaintext port. Its org is the benchmark's SECRET_PATH, whose secret it writes: every server
    signs with that, so it is created before anything reads the secret."""

    files: SecuredFiles
    health_port: int

    @classmethod
    def create(cls, bao: OpenBaoDevServer, workdir: Path, limits: Mapping[str, object] | None = None) -> SecuredSetup:
        """`limits` is the service's [limits] section."""
        health_port = free_loopback_port()
        files = write_secured_config(
            bao,
            workdir,
            tls="tls",
            workers=None,  # TOKENSERVICE_WORKERS, or the service's default
            orgs={"default": SECRET_PATH},
            callers={"bench": Caller(orgs=("*",), rate_per_second=1e9, burst=1_000_000)},
            api_keys={"bench": [new_api_key()]},
            keys_path="tokenservice/bench-api-keys",
            settings={"health_addr": f"127.0.0.1:{health_port}", **({"limits": limits} if limits else {})},
        )
        return cls(files, health_port)

    @property
    def config_file(self) -> Path:
        return self.files.config_file

    @property
    def api_key(self) -> str:
        return self.files.api_key

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.composite_channel_credentials(
            grpc.ssl_channel_credentials(self.files.ca.cert_pem), grpc.access_token_call_credentials(self.api_key)
        )


@dataclasses.dataclass
class Reference:
    process: subprocess.Popen
    port: int
    stats_port: int = 0

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.stats_port}/stats", timeout=5) as response:
            return json.loads(response.read())


def start_express(children: Children, secret: str, workdir: Path) -> Reference:
    output = workdir / "reference-express.log"
    env = {**os.environ, "KUSTOMER_SECRET": secret, "PORT": "0", "NODE_ENV": "production"}
    process = children.start(["node", str(EXPRESS_DIR / "server.js")], env=env, cwd=EXPRESS_DIR, output=output)
    return Reference(process, first_json_line(process, output, "port", "reference-express")["port"])


def start_go(children: Children, secret: str, workdir: Path) -> Reference:
    output = workdir / "reference-go.log"
    env = {**os.environ, "KUSTOMER_SECRET": secret, "GRPC_PORT": "0", "STATS_PORT": "0"}
    process = children.start([str(GO_BINARY)], env=env, cwd=GO_DIR, output=output)
    ports = first_json_line(process, output, "grpc_port", "reference-go")
    return Reference(process, ports["grpc_port"], ports["stats_port"])


# ------------------------------------------------------------ verification


def check_token(verifier: pb_grpc.TokenServiceStub, token: str, who: str, email: str, external_id: str) -> None:
    """Fail unless `token` is exactly a Kustomer login token the service's VerifyToken accepts."""
    parts = token.split(".")
    if len(parts) != 3:
        raise BenchError(f"{who}: not a compact JWS: {token[:60]!r}")
    header = b64url_decode(parts[0])
    if header != EXPECTED_HEADER:
        raise BenchError(f"{who}: header is {header!r}, not exactly {EXPECTED_HEADER!r}")
    claims = json.loads(b64url_decode(parts[1]))
    if set(claims) - ALLOWED_CLAIMS or type(claims.get("iat")) is not int:
        raise BenchError(f"{who}: claims {sorted(claims)} are not externalId/email plus an integer iat")
    verdict = verifier.VerifyToken(pb.VerifyTokenRequest(token=token), timeout=10)
    if not verdict.valid:
        raise BenchError(f"{who}: the service's VerifyToken rejects its token: {verdict.reason} ({verdict.detail})")
    if verdict.email != email or verdict.external_id != external_id:
        raise BenchError(
            f"{who}: token carries email={verdict.email!r} externalId={verdict.external_id!r}, "
            f"asked for {email!r} / {external_id!r}"
        )


def batch_entries(size: int) -> list[pb.MintTokenRequest]:
    return [
        pb.MintTokenRequest(external_id=f"bench-user-{index:06d}", email=f"bench.user+{index}@example.com")
        for index in range(size)
    ]


def sample_tokens(
    key: str, target: str | int, batch: int, credentials: grpc.ChannelCredentials | None = None
) -> list[tuple[str, str, str]]:
    """One token (several for a batch) from a server: (token, email, external_id)."""
    if key == EXPRESS:
        body = json.dumps({"externalId": EXTERNAL_ID, "email": EMAIL}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{target}/login", data=body, method="POST", headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return [(json.loads(response.read())["token"], EMAIL, EXTERNAL_ID)]
    with (
        grpc.secure_channel(str(target), credentials, options=[("grpc.ssl_target_name_override", "localhost")])
        if credentials
        else grpc.insecure_channel(str(target))
    ) as channel:
        stub = pb_grpc.TokenServiceStub(channel)
        if key in BATCH_KEYS:
            entries = batch_entries(batch)
            results = stub.MintTokens(pb.MintTokensRequest(requests=entries), timeout=30).results
            if len(results) != batch or any(not result.HasField("token") for result in results):
                raise BenchError(f"MintTokens x{batch}: not every entry was minted")
            return [
                (results[index].token.token, entries[index].email, entries[index].external_id)
                for index in (0, batch // 2, batch - 1)
            ]
        response = stub.MintToken(pb.MintTokenRequest(external_id=EXTERNAL_ID, email=EMAIL), timeout=10)
        return [(response.token, EMAIL, EXTERNAL_ID)]


# ------------------------------------------------------------------- h2load


@dataclasses.dataclass
class Target:
    key: str
    label: str
    url: str
    data_file: Path
    headers: list[str]
    h1: bool
    clients: int
    streams: int
    tokens_per_request: int
    pid: int
    address: str | int  # what sample_tokens needs
    # (ok, not ok, cut off) so far, server side; cut off: the calls that ended CANCELLED or UNKNOWN, as those
    # h2load resets when its time is up do (the server sees no status for them).
    server_counts: Callable[[], tuple[float, float, float]] | None = None
    credentials: grpc.ChannelCredentials | None = None  # what sample_tokens needs for a TLS target


@dataclasses.dataclass
class Run:
    rps: float
    succeeded: int
    failures: int  # h2load failed + errored + timeout + non-2xx
    server_failures: float  # server-side non-OK during the run (gRPC targets)
    p50_ms: float
    p99_ms: float
    samples: int
    cpu_percent: float  # server CPU over the whole h2load run (warm-up included), % of one core


def percentile(sorted_values: list[int], p: float) -> float:
    """Nearest-rank percentile."""
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def run_h2load(
    children: Children,
    target: Target,
    workdir: Path,
    tag: str,
    *,
    duration: float | None = None,
    warmup: float = 0.0,
    rps_per_client: int | None = None,
    requests: int | None = None,
) -> Run:
    log_file = workdir / f"h2load-{tag}.tsv"
    argv = [
        "h2load",
        "-t",
        "1",
        "-c",
        str(target.clients),
        "-m",
        str(target.streams),
        "-d",
        str(target.data_file),
        "--log-file",
        str(log_file),
    ]
    for header in target.headers:
        argv += ["-H", header]
    if target.h1:
        argv.append("--h1")
    skip_before_us = 0
    if rps_per_client:
        # h2load starts every client's --rps timer at once, so all clients send in the same
        # microsecond: a burst of `clients` calls per tick, whose queue p99 then measures. Opening one
        # connection per millisecond spreads the clients over the tick, as independent callers are.
        # --rate excludes -D (and its warm-up): count the calls, and drop the warm-up's from the log.
        assert duration is not None, "a paced run (rps_per_client) lasts `duration` seconds"
        requests = rps_per_client * target.clients * math.ceil(duration + warmup)
        argv += [f"--rps={rps_per_client}", "--rate=1", "--rate-period=1ms"]
        skip_before_us = round(warmup * 1e6)
    if requests is not None:
        argv += ["-n", str(requests)]
        limit = 600.0 + requests / 100
    else:
        assert duration is not None, "a run without a count of requests lasts `duration` seconds"
        argv += ["-D", f"{duration:g}"]
        if warmup > 0:
            argv += [f"--warm-up-time={warmup:g}"]
        limit = duration + warmup + 60
    argv.append(target.url)

    before = target.server_counts() if target.server_counts else (0.0, 0.0, 0.0)
    cpu_before, wall_before = cpu_seconds(target.pid), time.monotonic()
    output = children.run(argv, timeout=limit)
    cpu_percent = 100 * (cpu_seconds(target.pid) - cpu_before) / (time.monotonic() - wall_before)
    after = target.server_counts() if target.server_counts else (0.0, 0.0, 0.0)
    (workdir / f"h2load-{tag}.out").write_text(output)

    finished = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", output)
    counts = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        output,
    )
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    if not (finished and counts and codes):
        raise BenchError(f"cannot read h2load's output for {target.label}:\n{output}")
    succeeded = int(counts.group(4))
    failures = (
        int(counts.group(5)) + int(counts.group(6)) + int(counts.group(7)) + sum(int(codes.group(i)) for i in (2, 3, 4))
    )
    logged = [line.split("\t") for line in log_file.read_text().splitlines() if line.strip()]
    first_start = min((int(fields[0]) for fields in logged), default=0)
    durations = sorted(int(fields[2]) for fields in logged if int(fields[0]) >= first_start + skip_before_us)
    if not durations or succeeded == 0:
        raise BenchError(f"h2load completed no request against {target.label}:\n{output}")
    server_ok, server_failed, cut_off = (end - start for end, start in zip(after, before, strict=True))
    # h2load resets the calls still open when its time is up, as many as it keeps in flight: only more fail.
    server_failed += max(0.0, cut_off - target.clients * target.streams)
    if target.server_counts and server_ok < succeeded:
        raise BenchError(
            f"{target.label}: h2load counted {succeeded} successes but the server only "
            f"{server_ok:g} OK calls; the gRPC status is not what h2load thinks"
        )
    return Run(
        float(finished.group(1)),
        succeeded,
        failures,
        server_failed,
        percentile(durations, 50) / 1000,
        percentile(durations, 99) / 1000,
        len(durations),
        cpu_percent,
    )


def grpc_frame(message: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, 4-byte big-endian length, bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


# ------------------------------------------------------------------ report


def spread(values: list[float], digits: int) -> str:
    median = statistics.median(values)
    text = f"{median:,.{digits}f}"
    if len(values) > 1:
        text += f" [{min(values):,.{digits}f}-{max(values):,.{digits}f}]"
    return text


def render_table(rows: list[dict]) -> str:
    columns = ["server", "req/s", "tokens/s", "p50 ms", "p99 ms", "failed", "CPU %", "RSS MiB", "token verified"]
    cells = [[row[column] for column in columns] for row in rows]
    widths = [max(len(column), *(len(line[index]) for line in cells)) for index, column in enumerate(columns)]

    def line(values: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                value.ljust(width) if index in (0, len(columns) - 1) else value.rjust(width)
                for index, (value, width) in enumerate(zip(values, widths, strict=True))
            )
            + " |"
        )

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(columns), separator, *(line(cell) for cell in cells)])


# -------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tests/bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds before each run (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per server, interleaved (default 3)")
    parser.add_argument("--clients", type=int, default=16, help="h2load connections for gRPC (default 16)")
    parser.add_argument(
        "--streams",
        type=int,
        default=4,
        help="concurrent streams per gRPC connection (default 4); Express gets "
        "clients*streams HTTP/1.1 connections with one request each, the same load in flight",
    )
    parser.add_argument("--batch", type=int, default=100, help="MintTokens batch size (default 100)")
    parser.add_argument(
        "--mints",
        type=int,
        default=100_000,
        help="MintToken calls for the memory check on a fresh process (default 100000)",
    )
    parser.add_argument("--startup-runs", type=int, default=3, help="starts timed to SERVING (default 3)")
    parser.add_argument(
        "--service-workers",
        type=int,
        help="TOKENSERVICE_WORKERS for the service (default: unset, the service's own default)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--keep", type=Path, help="keep h2load logs and server logs in this directory")
    args = parser.parse_args(argv)
    for name in ("duration", "repeats", "clients", "streams", "batch", "mints", "startup_runs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive")
    if args.warmup < 0:
        parser.error("--warmup must not be negative")
    if args.mints < args.clients * 2:
        parser.error("--mints must be at least twice --clients")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signal_number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signal_number, _raise_on_signal)
    children = Children()
    workdir = Path(tempfile.mkdtemp(prefix="tokenservice-bench-"))
    bao = OpenBaoDevServer()
    began = time.monotonic()
    try:
        return bench(args, children, bao, workdir)
    except BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbenchmark interrupted; stopping every process it started", file=sys.stderr)
        return 130
    finally:
        children.stop_all()
        bao.stop()
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for path in workdir.iterdir():
                shutil.copy2(path, args.keep / path.name)
        shutil.rmtree(workdir, ignore_errors=True)
        log(f"done in {time.monotonic() - began:.0f} s")


def bench(args: argparse.Namespace, children: Children, bao: OpenBaoDevServer, workdir: Path) -> int:
    h2load_version = ensure_tools(children)
    load_before = os.getloadavg()[0]
    log("starting OpenBao dev server")
    bao.start()
    secured_setup = SecuredSetup.create(bao, workdir)  # writes the secret every server signs with
    secret = bao.read_secret(SECRET_PATH)
    problems: list[str] = []

    # Start-up: process start to a listening port and to health SERVING.
    startups = []
    for index in range(args.startup_runs):
        service = start_service(children, bao, workdir, f"startup-{index}", args.service_workers)
        startups.append(service)
        children.stop(service.process)
    log("startup to SERVING: " + ", ".join(f"{s.seconds_to_all_serving * 1000:.0f} ms" for s in startups))

    # The servers under test.
    service = start_service(children, bao, workdir, "main", args.service_workers)
    secured = start_service(children, bao, workdir, "secured", args.service_workers, secured=secured_setup)
    transit = start_service(
        children, bao, workdir, "transit", args.service_workers, transit=transit_config(bao, workdir, secret)
    )
    sink = SpanSink()
    traced_all = start_service(
        children,
        bao,
        workdir,
        "traced-all",
        args.service_workers,
        extra_env=sink.environment(sampler="parentbased_always_on"),
    )
    traced_some = start_service(
        children,
        bao,
        workdir,
        "traced-some",
        args.service_workers,
        extra_env=sink.environment(sampler="parentbased_traceidratio", ratio=SOME_SAMPLED),
    )
    express = start_express(children, secret, workdir)
    go = start_go(children, secret, workdir)
    log(f"servers: tokenservice {service.grpc_target}, express 127.0.0.1:{express.port}, go 127.0.0.1:{go.port}")

    def service_counts(method: str, server: Service = service) -> Callable[[], tuple[float, float, float]]:
        def counts() -> tuple[float, float, float]:
            samples = server.metrics()
            ok = metric_sum(
                samples,
                "grpc_server_handled_total",
                lambda labels: labels.get("grpc_method") == method and labels.get("grpc_code") == "OK",
            )
            failed = metric_sum(samples, "grpc_server_handled_total", failed_call)
            failed += metric_sum(samples, "tokenservice_mint_errors_total")  # per-entry errors of a batch
            return ok, failed, metric_sum(samples, "grpc_server_handled_total", cut_off_call)

        return counts

    def go_counts() -> tuple[float, float, float]:
        stats = go.stats()
        return float(stats["ok"]), float(stats["errors"]), 0.0

    unary_request = pb.MintTokenRequest(external_id=EXTERNAL_ID, email=EMAIL).SerializeToString()
    (workdir / "unary.bin").write_bytes(grpc_frame(unary_request))
    batch_request = pb.MintTokensRequest(requests=batch_entries(args.batch)).SerializeToString()
    (workdir / "batch.bin").write_bytes(grpc_frame(batch_request))
    (workdir / "express.json").write_bytes(json.dumps({"externalId": EXTERNAL_ID, "email": EMAIL}).encode())

    service_url, transit_url = f"http://{service.grpc_target}", f"http://{transit.grpc_target}"
    in_flight = args.clients * args.streams
    targets = [
        Target(
            UNARY,
            LABELS[UNARY],
            service_url + MINT_PATH,
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            1,
            service.process.pid,
            service.grpc_target,
            service_counts("MintToken"),
        ),
        Target(
            TRACED_ALL,
            LABELS[TRACED_ALL],
            f"http://{traced_all.grpc_target}{MINT_PATH}",
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            1,
            traced_all.process.pid,
            traced_all.grpc_target,
            service_counts("MintToken", traced_all),
        ),
        Target(
            TRACED_SOME,
            LABELS[TRACED_SOME],
            f"http://{traced_some.grpc_target}{MINT_PATH}",
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            1,
            traced_some.process.pid,
            traced_some.grpc_target,
            service_counts("MintToken", traced_some),
        ),
        Target(
            SECURED,
            LABELS[SECURED],
            f"https://{secured.grpc_target}{MINT_PATH}",
            workdir / "unary.bin",
            [*GRPC_HEADERS, f"authorization: Bearer {secured_setup.api_key}"],
            False,
            args.clients,
            args.streams,
            1,
            secured.process.pid,
            secured.grpc_target,
            service_counts("MintToken", secured),
            secured_setup.credentials(),
        ),
        Target(
            BATCH,
            LABELS[BATCH].format(batch=args.batch),
            service_url + MINT_BATCH_PATH,
            workdir / "batch.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            args.batch,
            service.process.pid,
            service.grpc_target,
            service_counts("MintTokens"),
        ),
        # At a quarter of the calls in flight: the comparison the transit targets are set at.
        Target(
            UNARY_16,
            LABELS[UNARY_16].format(in_flight=args.clients),
            service_url + MINT_PATH,
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            1,
            1,
            service.process.pid,
            service.grpc_target,
            service_counts("MintToken"),
        ),
        Target(
            TRANSIT_16,
            LABELS[TRANSIT_16].format(in_flight=args.clients),
            transit_url + MINT_PATH,
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            1,
            1,
            transit.process.pid,
            transit.grpc_target,
            service_counts("MintToken", transit),
        ),
        Target(
            TRANSIT,
            LABELS[TRANSIT],
            transit_url + MINT_PATH,
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            1,
            transit.process.pid,
            transit.grpc_target,
            service_counts("MintToken", transit),
        ),
        Target(
            TRANSIT_BATCH,
            LABELS[TRANSIT_BATCH].format(batch=args.batch),
            transit_url + MINT_BATCH_PATH,
            workdir / "batch.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            args.batch,
            transit.process.pid,
            transit.grpc_target,
            service_counts("MintTokens", transit),
        ),
        Target(
            EXPRESS,
            LABELS[EXPRESS],
            f"http://127.0.0.1:{express.port}/login",
            workdir / "express.json",
            ["content-type: application/json"],
            True,
            args.clients * args.streams,
            1,
            1,
            express.process.pid,
            express.port,
        ),
        Target(
            GO,
            LABELS[GO],
            f"http://127.0.0.1:{go.port}{MINT_PATH}",
            workdir / "unary.bin",
            GRPC_HEADERS,
            False,
            args.clients,
            args.streams,
            1,
            go.process.pid,
            f"127.0.0.1:{go.port}",
            go_counts,
        ),
    ]

    # Every server's tokens must pass the project's own verifier, before and after the load.
    verified: dict[str, bool] = {}
    with grpc.insecure_channel(service.grpc_target) as channel:
        verifier = pb_grpc.TokenServiceStub(channel)

        def verify_all(when: str) -> None:
            for target in targets:
                for token, email, external_id in sample_tokens(
                    target.key, target.address, args.batch, target.credentials
                ):
                    check_token(verifier, token, f"{target.label} ({when} the load)", email, external_id)
                verified[target.key] = True
            log(f"{when} the load: every server's token passed the service's VerifyToken")

        verify_all("before")
        runs: dict[str, list[Run]] = {target.key: [] for target in targets}
        hmac_requests: dict[str, list[float]] = {TRANSIT_16: [], TRANSIT: []}
        for repeat in range(args.repeats):
            for target in targets:
                log(f"run {repeat + 1}/{args.repeats}: {target.label} for {args.duration:g} s")
                requests_before = transit_hmac_requests(transit.metrics())
                run = run_h2load(
                    children, target, workdir, f"{target.key}-{repeat}", duration=args.duration, warmup=args.warmup
                )
                runs[target.key].append(run)
                if target.key in hmac_requests:
                    # Warm-up calls included on both sides: the service's own count of its Vault requests.
                    requests, inputs = (
                        after - before
                        for after, before in zip(transit_hmac_requests(transit.metrics()), requests_before, strict=True)
                    )
                    hmac_requests[target.key].append(requests / inputs if inputs else math.inf)
                log(
                    f"  {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, "
                    f"{run.failures} failed, {run.server_failures:g} server-side non-OK, "
                    f"server CPU {run.cpu_percent:.0f}%"
                )

        # p99 of this service at about half its peak unary rate.
        peak = statistics.median(run.rps for run in runs[UNARY])
        per_client = max(1, round(peak / 2 / args.clients))
        half_target = dataclasses.replace(targets[0], key=HALF, label=LABELS[HALF])
        runs[HALF] = []
        for repeat in range(args.repeats):
            log(f"half-rate run {repeat + 1}/{args.repeats}: {per_client * args.clients} req/s offered")
            run = run_h2load(
                children,
                half_target,
                workdir,
                f"half-{repeat}",
                duration=args.duration,
                warmup=args.warmup,
                rps_per_client=per_client,
            )
            runs[HALF].append(run)
            log(f"  {run.rps:,.0f} req/s, p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms")
        verify_all("after")

    rss = {target.key: rss_kib(target.pid) for target in targets}
    rss[HALF] = rss[UNARY]
    for server in (service, transit):
        total_failed = metric_sum(server.metrics(), "grpc_server_handled_total", failed_call)
        if total_failed:
            problems.append(f"tokenservice counted {total_failed:g} non-OK gRPC calls (grpc_server_handled_total)")
    for stopped in (
        express.process,
        go.process,
        service.process,
        secured.process,
        transit.process,
        traced_all.process,
        traced_some.process,
    ):
        children.stop(stopped)
    log(f"span sink: {sink.requests} OTLP export requests, {sink.bytes / 1e6:.1f} MB")
    if not sink.requests:
        problems.append("the traced rows exported no span to the sink")
    sink.stop()

    # Memory: RSS of a fresh process after --mints MintToken calls.
    log(f"memory check: {args.mints} MintToken calls on a fresh process")
    fresh = start_service(children, bao, workdir, "memory", args.service_workers)
    memory = [(0, rss_kib(fresh.process.pid))]
    memory_processes = len(process_tree(fresh.process.pid))
    mint_target = dataclasses.replace(
        targets[0], url=f"http://{fresh.grpc_target}{MINT_PATH}", pid=fresh.process.pid, server_counts=None
    )
    done = 0
    for step in (args.mints // 10, args.mints - args.mints // 10):
        run = run_h2load(children, mint_target, workdir, f"memory-{done}", requests=step)
        if run.failures or run.succeeded != step:
            problems.append(f"memory check: {run.failures} of {step} MintToken calls failed")
        done += step
        memory.append((done, rss_kib(fresh.process.pid)))
    largest_process_kib = largest_rss_kib(fresh.process.pid)
    issued = metric_sum(fresh.metrics(), "tokenservice_tokens_issued_total")
    if issued != args.mints:
        problems.append(f"memory check: the service issued {issued:g} tokens, expected {args.mints}")
    children.stop(fresh.process)

    # The table.
    def label(key: str) -> str:
        return LABELS[key].format(batch=args.batch, in_flight=args.clients)

    rows = []
    for key in ROW_ORDER:
        key_runs = runs[key]
        tokens = next((target.tokens_per_request for target in targets if target.key == key), 1)
        failures = sum(run.failures for run in key_runs) + sum(run.server_failures for run in key_runs)
        if failures:
            problems.append(f"{label(key)}: {failures:g} failed requests")
        rows.append(
            {
                "server": label(key),
                "req/s": spread([run.rps for run in key_runs], 0),
                "tokens/s": f"{statistics.median(run.rps for run in key_runs) * tokens:,.0f}",
                "p50 ms": spread([run.p50_ms for run in key_runs], 2),
                "p99 ms": spread([run.p99_ms for run in key_runs], 2),
                "failed": f"{failures:g}",
                "CPU %": f"{statistics.median(run.cpu_percent for run in key_runs):.0f}",
                "RSS MiB": f"{rss[key] / 1024:.0f}",
                "token verified": "yes" if verified.get(key, key == HALF) else "NO",
            }
        )
    load_after = os.getloadavg()[0]
    # Runs are interleaved, so run i of one server and run i of another shared the same stretch of time.
    ratios = {
        f"{label(numerator)} / {label(denominator)}": [
            top.rps / bottom.rps for top, bottom in zip(runs[numerator], runs[denominator], strict=True)
        ]
        for numerator, denominator in (
            (UNARY, EXPRESS),
            (UNARY, GO),
            (SECURED, EXPRESS),
            (TRANSIT_16, UNARY_16),
            (TRANSIT, UNARY),
        )
    }
    startup_serving = [s.seconds_to_serving * 1000 for s in startups]
    startup_all = [s.seconds_to_all_serving * 1000 for s in startups]
    startup_listening = [s.seconds_to_listening * 1000 for s in startups]
    notes = [
        f"{h2load_version}, -t 1, on 127.0.0.1 with the servers ({os.cpu_count()} CPUs shared by all); "
        f"gRPC: h2c -c {args.clients} -m {args.streams}; Express: --h1 -c {args.clients * args.streams} -m 1 "
        f"(same {args.clients * args.streams} requests in flight)",
        f"1-min load average {load_before:.1f} before, {load_after:.1f} after (after counts the benchmark's own load)"
        + (
            " (above the CPU count before: other work competed for the CPUs, the figures are noisy)"
            if load_before > (os.cpu_count() or 1)
            else ""
        ),
        f"{args.repeats} interleaved run(s) of {args.duration:g} s after {args.warmup:g} s warm-up; "
        "median [min-max] over runs; p50/p99 from h2load --log-file per-request times",
        "req/s ratios, run by run: " + "; ".join(f"{name}: {spread(values, 3)}" for name, values in ratios.items()),
        f"transit: Vault HMAC requests per token (the service's tokenservice_transit_batch_size, warm-up "
        f"included): {spread(hmac_requests[TRANSIT], 3)} at {in_flight} in flight, "
        f"{spread(hmac_requests[TRANSIT_16], 3)} at {args.clients}; the transit service's OpenBao is the dev "
        "server, without an audit device",
        f"@~50% peak: h2load --rps {per_client}/client = {per_client * args.clients} req/s offered, "
        f"the {args.clients} clients started 1 ms apart (--rate 1 --rate-period 1ms) so that they do not all "
        f"send in the same microsecond (peak median {peak:,.0f})",
        f"tokenservice ({service.workers} worker process(es)) start to listening: {spread(startup_listening, 0)} ms; "
        f"to health SERVING (local OpenBao): {spread(startup_serving, 0)} ms; to every worker SERVING: "
        f"{spread(startup_all, 0)} ms ({args.startup_runs} starts)",
        f"tokenservice RSS (VmRSS summed over its {memory_processes} "
        "processes), fresh start: "
        + ", ".join(f"{kib / 1024:.1f} MiB after {count:,} mints" for count, kib in memory)
        + f" ({(memory[-1][1] - memory[1][1]) / 1024:+.1f} MiB over the last {args.mints - args.mints // 10:,}); "
        f"largest process then: {largest_process_kib / 1024:.1f} MiB",
    ]
    print(render_table(rows))
    for note in notes:
        print(f"- {note}")
    sys.stdout.flush()
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "runs": {key: [dataclasses.asdict(run) for run in value] for key, value in runs.items()},
                    "startup_ms": {
                        "listening": startup_listening,
                        "serving": startup_serving,
                        "all_serving": startup_all,
                    },
                    "service_workers": service.workers,
                    "memory_kib": memory,
                    "largest_process_kib": largest_process_kib,
                    "ratios": ratios,
                    "transit_hmac_requests_per_token": hmac_requests,
                    "notes": notes,
                    "problems": problems,
                    "settings": {key: str(value) for key, value in vars(args).items()},
                },
                indent=2,
            )
        )
    if problems:
        print("\nBENCHMARK FAILED (correctness):\n" + "\n".join(f"- {p}" for p in problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
