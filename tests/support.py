"""Test helpers: an HS256 implementation independent of pyjwt, and a running
`tokenservice serve` process."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

TOKENSERVICE = str(Path(sys.executable).parent / "tokenservice")


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


def wait_for_health(target: str, status: int, service: str = "", timeout: float = 15.0) -> None:
    """Wait until the server's health check for `service` reports `status`."""
    deadline = time.monotonic() + timeout
    last = None
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                last = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1).status
                if last == status:
                    return
            except grpc.RpcError as error:
                last = error.code()
            time.sleep(0.05)
    raise AssertionError(f"health of {service!r} at {target} is {last}, wanted {status}")


@dataclasses.dataclass
class ServiceProcess:
    """A `tokenservice serve` child process on loopback ports it chose itself."""

    process: subprocess.Popen
    log_path: Path
    grpc_target: str = ""
    metrics_url: str = ""
    secret: str = ""
    org: str = "default"

    @classmethod
    def start(cls, env: dict[str, str], args: list[str] = (), wait_serving: bool = True) -> ServiceProcess:
        log = tempfile.NamedTemporaryFile(prefix="tokenservice-", suffix=".log", delete=False)
        full_env = {key: value for key, value in os.environ.items() if not key.startswith(("VAULT_", "TOKENSERVICE_"))}
        full_env.update({"TOKENSERVICE_GRPC_ADDR": "127.0.0.1:0", "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:0", **env})
        process = subprocess.Popen([TOKENSERVICE, "serve", *args], env=full_env, stdout=log, stderr=log,
                                   stdin=subprocess.DEVNULL)
        service = cls(process, Path(log.name))
        grpc_port, metrics_port = service._wait_for_ports()
        service.grpc_target = f"127.0.0.1:{grpc_port}"
        service.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        if wait_serving:
            wait_for_health(service.grpc_target, health_pb2.HealthCheckResponse.SERVING)
        return service

    def _wait_for_ports(self, timeout: float = 15.0) -> tuple[int, int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_text().splitlines():
                if '"listening"' in line:
                    record = json.loads(line)
                    return record["grpc_port"], record["metrics_port"]
            if self.process.poll() is not None:
                raise AssertionError(f"tokenservice exited with {self.process.returncode}:\n{self.logs()}")
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"tokenservice did not start listening:\n{self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text()

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.logs().splitlines() if line.startswith("{")]

    def terminate(self, timeout: float = 20.0) -> int:
        """SIGTERM, then wait for the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def metric_value(metrics_text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text format (0 when absent)."""
    for line in metrics_text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ""))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return 0.0
