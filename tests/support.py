"""Test helpers: an HS256 implementation independent of pyjwt, waiting for a
condition, reading refusals and metrics, and real processes (`tokenservice
serve`, `tokenservice dev`, an OpenBao with on-disk storage)."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import inspect
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar, overload

import grpc
import hvac
import hvac.exceptions
import requests
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from tokenservice.client import ERROR_DOMAIN, status_error_info

from service.addresses import read_ports_file
from service.dev import find_bao, free_loopback_port, stop_process

TOKENSERVICE = str(Path(sys.executable).parent / "tokenservice")
SERVING_STATUS = health_pb2.HealthCheckResponse.ServingStatus

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition",
) -> T:
    """Call `predicate` every `interval` seconds until it returns something true, and return that.

    After `timeout` seconds, AssertionError: "not within <timeout> s: <message>" (`message` may be a
    function, called then, to show the state that was reached). Exceptions from `predicate` propagate."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        _fail_after(deadline, timeout, message)
        time.sleep(interval)
    return value


@overload
async def wait_until_async(
    predicate: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


@overload
async def wait_until_async(
    predicate: Callable[[], T | None],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


async def wait_until_async(
    predicate: Callable[[], T | Awaitable[T | None] | None],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition",
) -> T:
    """`wait_until` inside an event loop: `predicate` may be a coroutine function, and the waits between
    its calls leave the loop running (for an in-process server)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        _fail_after(deadline, timeout, message)
        await asyncio.sleep(interval)


def _fail_after(deadline: float, timeout: float, message: str | Callable[[], str]) -> None:
    if time.monotonic() >= deadline:
        raise AssertionError(f"not within {timeout:g} s: {message() if callable(message) else message}")


def new_secret() -> str:
    """A random 64-character signing secret, as `tokenservice dev` writes."""
    return secrets.token_urlsafe(48)


def b64url_decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_sign(header: bytes, payload: bytes, secret: str) -> str:
    """A compact JWS built by hand with hashlib/hmac: the independent signer."""
    signing_input = f"{b64url_encode(header)}.{b64url_encode(payload)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url_encode(signature)}"


def hs256_open(token: str, secret: str) -> tuple[bytes, dict]:
    """The raw header bytes and the claims of a token, after checking its
    HMAC-SHA256 signature with the standard library (not pyjwt)."""
    header_segment, payload_segment, signature_segment = token.split(".")
    expected = hmac.new(secret.encode(), f"{header_segment}.{payload_segment}".encode(), hashlib.sha256).digest()
    assert hmac.compare_digest(expected, b64url_decode(signature_segment)), "HMAC-SHA256 signature does not match"
    return b64url_decode(header_segment), json.loads(b64url_decode(payload_segment))


class HealthCheckStub(Protocol):
    """grpc_health's HealthStub on a grpc.Channel (see `health_stub`)."""

    Check: grpc.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


class AioHealthCheckStub(Protocol):
    """grpc_health's HealthStub on a grpc.aio.Channel (see `aio_health_stub`)."""

    Check: grpc.aio.UnaryUnaryMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]
    Watch: grpc.aio.UnaryStreamMultiCallable[health_pb2.HealthCheckRequest, health_pb2.HealthCheckResponse]


# types-grpcio-health-checking's HealthStub declares neither Check nor Watch, which the generated class sets in
# its __init__: these two say what it has, and mypy reports the ignores as unused once the stubs declare them.
def health_stub(channel: grpc.Channel) -> HealthCheckStub:
    """A health-check stub on a synchronous channel."""
    return health_pb2_grpc.HealthStub(channel)  # type: ignore[return-value]


def aio_health_stub(channel: grpc.aio.Channel) -> AioHealthCheckStub:
    """A health-check stub on a grpc.aio channel."""
    return health_pb2_grpc.HealthStub(channel)  # type: ignore[return-value]


class ReflectionStub(Protocol):
    """grpc_reflection's ServerReflectionStub on a grpc.Channel (see `reflection_stub`)."""

    ServerReflectionInfo: grpc.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ]


def reflection_stub(channel: grpc.Channel) -> ReflectionStub:
    """A reflection stub on a synchronous channel.

    types-grpcio-reflection types the generated stub's ServerReflectionInfo as `binascii.Incomplete`, an
    exception class (see `aio_reflection_stub`)."""
    return reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[return-value]


class AioReflectionStub(Protocol):
    """grpc_reflection's ServerReflectionStub on a grpc.aio.Channel (see `aio_reflection_stub`)."""

    ServerReflectionInfo: grpc.aio.StreamStreamMultiCallable[
        reflection_pb2.ServerReflectionRequest, reflection_pb2.ServerReflectionResponse
    ]


def aio_reflection_stub(channel: grpc.aio.Channel) -> AioReflectionStub:
    """A reflection stub on a grpc.aio channel.

    types-grpcio-reflection types the generated stub's channel as a grpc.Channel only (it takes either, as
    grpc_health's does), and its ServerReflectionInfo as `binascii.Incomplete`, an exception class."""
    return reflection_pb2_grpc.ServerReflectionStub(channel)  # type: ignore[arg-type, return-value]


def wait_for_health(target: str, status: int, service: str = "", timeout: float = 15.0) -> None:
    """Wait until the server's health check for `service` reports `status`, a name of
    health_pb2.HealthCheckResponse such as SERVING or NOT_SERVING."""
    last: list[str] = ["no answer yet"]

    def reports_status() -> bool:
        try:
            answered = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
        except grpc.RpcError as error:
            last[0] = error.code().name
            return False
        last[0] = SERVING_STATUS.Name(answered)
        return answered == status

    with grpc.insecure_channel(target) as channel:
        stub = health_stub(channel)
        wait_until(
            reports_status,
            timeout=timeout,
            message=lambda: f"health of {service!r} at {target} is {last[0]}, wanted {SERVING_STATUS.Name(status)}",
        )


# What a worker logs when a part of its readiness turns on, and off (service/secrets.py, service/api_keys.py);
# it answers SERVING once every part it has is on. A worker's changes of a part alternate, the first to on,
# so the ons less the offs are the workers on.
_READINESS_LOGS = (
    (
        lambda record: record.get("message") == "readiness changed" and record.get("serving") is True,
        lambda record: record.get("message") == "readiness changed" and record.get("serving") is False,
    ),
    (
        lambda record: record.get("message") == "API key set in use",
        lambda record: str(record.get("message")).startswith("API key set is stale"),
    ),
)


def announced_workers(announcement: dict) -> int:
    """The worker processes a service's ports file announces: a supervisor's `workers`, else the one process."""
    return int(announcement.get("workers", 1))


def workers_ready(records: list[dict], workers: int) -> bool:
    """True when the log `records` show `workers` workers ready in each part of readiness any has logged.

    Only meaningful once one worker answered SERVING: its log then names every part the service has."""
    for turned_on, turned_off in _READINESS_LOGS:
        ons, offs = sum(map(turned_on, records)), sum(map(turned_off, records))
        if ons and ons - offs < workers:
            return False
    return True


@dataclasses.dataclass
class ServiceProcess:
    """A `tokenservice serve` child process on loopback ports it chose itself; `start` returns once
    every worker is SERVING, unless told not to wait."""

    process: subprocess.Popen
    log_path: Path
    grpc_target: str = ""
    metrics_url: str = ""
    secret: str = ""
    org: str = "default"
    audit_path: Path | None = None
    listening: dict = dataclasses.field(default_factory=dict)
    ports_path: Path | None = None

    @classmethod
    def start(cls, env: dict[str, str], args: Sequence[str] = (), wait_serving: bool = True) -> ServiceProcess:
        # The service writes the log (kept for `logs()`); this process only hands it over.
        with tempfile.NamedTemporaryFile(prefix="tokenservice-", suffix=".log", delete=False) as log:
            audit_path = Path(log.name).with_suffix(".audit")
            full_env = {
                key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))
            }
            full_env.update(
                {
                    "TOKENSERVICE_GRPC_ADDR": "127.0.0.1:0",
                    "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:0",
                    "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "1",
                    "TOKENSERVICE_AUDIT_OUTPUT": str(audit_path),
                    "TOKENSERVICE_PORTS_FILE": str(Path(log.name).with_suffix(".ports.json")),
                    **env,
                }
            )
            process = subprocess.Popen(
                [TOKENSERVICE, "serve", *args], env=full_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        service = cls(
            process, Path(log.name), audit_path=audit_path, ports_path=Path(full_env["TOKENSERVICE_PORTS_FILE"])
        )
        service.listening = service._wait_for_listening()
        service.grpc_target = f"127.0.0.1:{service.listening['grpc_port']}"
        service.metrics_url = f"http://127.0.0.1:{service.listening['metrics_port']}/metrics"
        if wait_serving:
            try:
                service._wait_all_serving()
            except AssertionError:
                service.stop()
                raise
        return service

    def _wait_all_serving(self, timeout: float = 15.0) -> None:
        """Wait until every worker is SERVING: a health check reaches one of them only, so after it
        answers SERVING, wait until the log shows each announced worker ready (`workers_ready`)."""
        wait_for_health(self.health_target, health_pb2.HealthCheckResponse.SERVING, timeout=timeout)
        workers = announced_workers(self.listening)
        wait_until(
            lambda: workers_ready(self.log_records(), workers),
            timeout=timeout,
            message=lambda: f"all {workers} workers of tokenservice ready:\n{self.logs()}",
        )

    @property
    def health_target(self) -> str:
        """The plaintext address that answers health checks (health_addr when TLS is on)."""
        health_port = self.listening.get("health_port")
        return f"127.0.0.1:{health_port}" if health_port else self.grpc_target

    def _wait_for_listening(self, timeout: float = 15.0) -> dict:
        """The service's announcement in its ports file, once every port is bound (and every worker listens)."""

        def announced() -> dict | None:
            assert self.ports_path is not None, "tokenservice was started without a ports file"
            found = read_ports_file(self.ports_path, self.process.pid)
            if found is None and self.process.poll() is not None:
                raise AssertionError(f"tokenservice exited with {self.process.returncode}:\n{self.logs()}")
            return found

        try:
            return wait_until(announced, timeout=timeout, message=lambda: f"tokenservice listening:\n{self.logs()}")
        except AssertionError:
            self.stop()
            raise

    def logs(self) -> str:
        return self.log_path.read_text()

    def audit_records(self) -> list[dict]:
        """The audit trail, one record per line (every line must be one JSON object)."""
        if self.audit_path is None or not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]

    def log_records(self) -> list[dict]:
        """The JSON log records of every complete line (a running worker may be writing the last one)."""
        text = self.logs()
        return [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines() if line.startswith("{")]

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def refusal_of(error: grpc.RpcError) -> tuple[grpc.StatusCode, str, float | None]:
    """The code, ErrorInfo reason and RetryInfo delay (None without one) of a failed call, sync or grpc.aio.

    The call must carry a google.rpc.Status whose first detail is an ErrorInfo of the service's domain."""
    status = rpc_status_of(error)
    assert status is not None, f"no google.rpc.Status in the trailers of {error.code()}: {error.details()}"
    retry = error_details_pb2.RetryInfo()
    retry_delay = next(
        (retry.retry_delay.ToNanoseconds() / 1e9 for detail in status.details if detail.Unpack(retry)), None
    )
    return error.code(), reason_in(status), retry_delay


def rpc_status_of(error: grpc.RpcError) -> status_pb2.Status | None:
    """The google.rpc.Status in the trailers of a failed call, sync or grpc.aio; None without one."""
    # grpc_status types from_call's argument as a grpc.Call, which a sync call's RpcError is; it reads only
    # code(), details() and trailing_metadata(), which grpc.aio's AioRpcError (no grpc.Call) has as well.
    return rpc_status.from_call(error)  # type: ignore[arg-type]


def refusal_in(status: status_pb2.Status) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason of a google.rpc.Status, such as a failed MintTokens entry's."""
    return status_code(status.code), reason_in(status)


def status_code(number: int) -> grpc.StatusCode:
    """The grpc.StatusCode of a status number (a google.rpc.Status code, a grpc-status header): the names
    of google.rpc.Code are grpc.StatusCode's."""
    return grpc.StatusCode[code_pb2.Code.Name(number)]


def reason_in(status: status_pb2.Status) -> str:
    """The ErrorInfo reason of a google.rpc.Status (a failed call's, or a failed MintTokens entry's), read
    with the Python client package's `status_error_info`; the service puts it first, in its own domain."""
    info = status_error_info(status)
    assert info is not None, f"no ErrorInfo in the google.rpc.Status: {status}"
    # types-protobuf types a message's DESCRIPTOR as either descriptor class and Any.Is as taking the pure-Python
    # one only, though Is(Message.DESCRIPTOR) is protobuf's own idiom (it compares the full names).
    first_is_info = status.details[0].Is(info.DESCRIPTOR)  # type: ignore[arg-type]
    assert info.domain == ERROR_DOMAIN and first_is_info, (
        f"the ErrorInfo is not the first detail, or of another domain than {ERROR_DOMAIN}: {status}"
    )
    return info.reason


def rss_kib(pid: int) -> int:
    """A live process's resident memory (VmRSS), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of the first sample called `name` (with its suffix: "x_total", "x_bucket") whose labels
    include `labels`, in Prometheus text format; 0 when there is none."""
    for sample in metric_samples(metrics_text):
        if sample.name == name and labels.items() <= sample.labels.items():
            return sample.value
    return 0.0


def metric_samples(metrics_text: str) -> list[Sample]:
    """Every sample of a page in Prometheus text format, as prometheus_client's parser reads it."""
    return [sample for family in text_string_to_metric_families(metrics_text) for sample in family.samples]


class OpenBaoFileServer:
    """A real OpenBao server with on-disk storage, so that it can be stopped,
    restarted, sealed and unsealed during a test without losing its data.

    OpenBao 2 no longer has the `file` backend; single-node integrated
    storage (raft) is its on-disk storage.
    """

    def __init__(self, directory: Path, extra_config: str = "") -> None:
        """`extra_config` is more of the server's HCL, for what the API refuses (an audit device)."""
        self.port = free_loopback_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self._bao = find_bao()
        self._config = directory / "openbao.hcl"
        (directory / "data").mkdir()
        self._config.write_text(
            f'storage "raft" {{\n path = "{directory / "data"}"\n node_id = "node1"\n performance_multiplier = 1\n}}\n'
            f'listener "tcp" {{\n address = "127.0.0.1:{self.port}"\n tls_disable = 1\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "http://127.0.0.1:{free_loopback_port()}"\n{extra_config}'
        )
        self._log = directory / "openbao.log"
        self._process: subprocess.Popen | None = None
        self.root_token = ""
        self._unseal_key = ""

    @property
    def process(self) -> subprocess.Popen:
        """The server's process, between `start` and `stop`."""
        assert self._process is not None, "OpenBao is not running"
        return self._process

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token if token is not None else self.root_token, timeout=30)

    def start(self) -> None:
        """Start the server (initialising it the first time) and unseal it; no process is left on failure."""
        with self._log.open("a") as log:
            self._process = subprocess.Popen(
                [self._bao, "server", f"-config={self._config}"], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        try:
            self._bring_up()
        except BaseException:
            self.stop()
            raise

    def _bring_up(self) -> None:
        def answered() -> tuple[bool] | None:
            """(whether it is initialised,) once the server answers; a tuple, since False is an answer too."""
            try:
                return (self.client().sys.is_initialized(),)
            except (requests.RequestException, hvac.exceptions.VaultError):
                assert self.process.poll() is None, f"OpenBao exited:\n{self._log.read_text()}"
                return None

        [initialized] = wait_until(answered, timeout=15, message=lambda: f"OpenBao answering:\n{self._log.read_text()}")
        if not initialized:
            keys = self.client().sys.initialize(secret_shares=1, secret_threshold=1)
            self.root_token, self._unseal_key = keys["root_token"], keys["keys"][0]
            self.unseal()
            self._wait_active()
            self._mount_engines()
        else:
            self.unseal()
            self._wait_active()

    def _mount_engines(self) -> None:
        """What a new server mounts: KV v2 at secret/."""
        self.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})
        self._wait_kv_upgraded()

    def _wait_kv_upgraded(self) -> None:
        def upgraded() -> bool:
            try:
                self.client().secrets.kv.v2.read_secret_metadata(path="readiness-probe")
            except hvac.exceptions.InvalidPath:
                return True
            except hvac.exceptions.InvalidRequest:  # "Upgrading from non-versioned to versioned data"
                return False
            return True

        wait_until(upgraded, timeout=15, message="the KV v2 mount finishing its upgrade")

    def _wait_active(self) -> None:
        def active() -> bool:
            try:
                with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(active, timeout=15, message=lambda: f"OpenBao becoming active:\n{self._log.read_text()}")

    def unseal(self) -> None:
        self.client().sys.submit_unseal_key(self._unseal_key)

    def seal(self) -> None:
        self.client().sys.seal()

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None

    def write_secret(self, path: str, value: str) -> int:
        response = self.client().secrets.kv.v2.create_or_update_secret(path=path, secret={"secret": value})
        return int(response["data"]["version"])


def process_tree(root: int) -> list[int]:
    """`root`'s living descendants (not `root` itself), read from /proc: no psutil needed."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            # The command name (field 2) may hold spaces and parentheses; the fields after the last ')' do not.
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state != "Z":
                parents[int(entry.name)] = int(ppid)
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def command_line(pid: int) -> str:
    """The process's argv joined by spaces ('' once it is gone); what `ps` shows any local user."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def worker_pids(service: ServiceProcess) -> set[int]:
    """The supervisor's worker processes (multiprocessing spawns them; its resource tracker is not one)."""
    return {pid for pid in process_tree(service.process.pid) if "spawn_main" in command_line(pid)}


def is_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclasses.dataclass
class DevProcess:
    """A `tokenservice dev` child process, its output in a file, started on ports it chose itself."""

    process: subprocess.Popen
    output_path: Path

    @classmethod
    def start(cls, directory: Path, timeout: float = 30.0, args: Sequence[str] = ()) -> DevProcess:
        output_path = directory / "dev.out"
        env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
        with output_path.open("w") as output:
            process = subprocess.Popen(
                [TOKENSERVICE, "dev", "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", *args],
                stdout=output,
                stderr=output,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        dev = cls(process, output_path)

        def banner_printed() -> bool:
            assert process.poll() is None, f"tokenservice dev exited with {process.returncode}:\n{dev.output()}"
            return "Ctrl-C stops" in dev.output()

        try:
            wait_until(
                banner_printed, timeout=timeout, message=lambda: f"the banner of tokenservice dev:\n{dev.output()}"
            )
        except AssertionError:
            dev.stop()
            raise
        return dev

    def output(self) -> str:
        return self.output_path.read_text()

    def banner(self) -> list[str]:
        """The banner's lines, without the service's JSON log lines around them."""
        lines = [line for line in self.output().splitlines() if not line.startswith("{")]
        start = next(n for n, line in enumerate(lines) if line.startswith("tokenservice dev:"))
        end = next(n for n, line in enumerate(lines) if line.startswith("Ctrl-C stops"))
        return lines[start : end + 1]

    def banner_value(self, label: str) -> str:
        """The first word after `label` in the banner ("gRPC:" gives the address)."""
        return next(line.split(label, 1)[1].split()[0] for line in self.banner() if label in line)

    def stop(self) -> int:
        """Ctrl-C, then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise
