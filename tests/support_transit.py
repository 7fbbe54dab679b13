"""Test helpers for Transit signing: an OpenBao whose requests are counted by a
file audit device, a Transit mount, and tokens holding the shipped policies.

OpenBao refuses enabling an audit device through the API; it takes one from
the server's config file, hence a server started with `-config=FILE`. Its
storage is raft on disk, so that it can be stopped and started again with its
keys and tokens intact.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
import uuid
from pathlib import Path

import hvac
import hvac.exceptions
import requests

from service.config import VaultConfig
from service.dev import find_bao, free_loopback_port, stop_process
from service.vault_auth import TokenAuth, VaultSession
from tests.support import wait_until

REPO = Path(__file__).resolve().parents[1]
TRANSIT_POLICY = REPO / "deploy" / "vault" / "tokenservice-transit-policy.hcl"
OPERATOR_POLICY = REPO / "deploy" / "vault" / "tokenservice-transit-operator-policy.hcl"


class AuditedOpenBao:
    """A real OpenBao with raft storage, a file audit device and a Transit mount at `transit/`."""

    def __init__(self, directory: Path) -> None:
        self.port = free_loopback_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.audit_log = directory / "audit.log"
        self._config = directory / "openbao.hcl"
        self._log = directory / "openbao.log"
        (directory / "data").mkdir()
        self._config.write_text(
            f'storage "raft" {{\n path = "{directory / "data"}"\n node_id = "node1"\n performance_multiplier = 1\n}}\n'
            f'listener "tcp" {{\n address = "127.0.0.1:{self.port}"\n tls_disable = 1\n}}\n'
            f'api_addr = "{self.addr}"\ncluster_addr = "http://127.0.0.1:{free_loopback_port()}"\n'
            f'audit "file" "file" {{\n options {{\n  file_path = "{self.audit_log}"\n }}\n}}\n'
        )
        self._process: subprocess.Popen | None = None
        self.root_token = ""
        self._unseal_key = ""

    def client(self, token: str | None = None) -> hvac.Client:
        return hvac.Client(url=self.addr, token=token if token is not None else self.root_token, timeout=30)

    def start(self) -> None:
        """Start (initialising and mounting Transit the first time) and unseal; no process is left on failure."""
        with self._log.open("a") as log:
            self._process = subprocess.Popen(
                [find_bao(), "server", f"-config={self._config}"], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        try:
            self._bring_up()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self._process)
        self._process = None

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel but never answered."""
        self._process.send_signal(signal.SIGSTOP)
        # The stop is asynchronous: on a busy machine a thread may still answer a request meanwhile.
        stat = Path(f"/proc/{self._process.pid}/stat")
        wait_until(
            lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T",
            timeout=5,
            interval=0.01,
            message="OpenBao stopped by SIGSTOP",
        )

    def resume(self) -> None:
        self._process.send_signal(signal.SIGCONT)

    def _bring_up(self) -> None:
        def answered() -> tuple[bool] | None:
            """(whether it is initialised,) once the server answers; a tuple, since False is an answer too."""
            try:
                return (self.client().sys.is_initialized(),)
            except (requests.RequestException, hvac.exceptions.VaultError):
                assert self._process.poll() is None, f"OpenBao exited:\n{self._log.read_text()}"
                return None

        [initialized] = wait_until(answered, timeout=15, message=lambda: f"OpenBao answering:\n{self._log.read_text()}")
        if not initialized:
            keys = self.client().sys.initialize(secret_shares=1, secret_threshold=1)
            self.root_token, self._unseal_key = keys["root_token"], keys["keys"][0]
        self.unseal()
        if not initialized:
            self.client().sys.enable_secrets_engine("transit", path="transit")
            self.client().sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})

    def seal(self) -> None:
        self.client().sys.seal()

    def unseal(self) -> None:
        self.client().sys.submit_unseal_key(self._unseal_key)
        self._wait_active()

    def _wait_active(self) -> None:
        def active() -> bool:
            try:
                with urllib.request.urlopen(f"{self.addr}/v1/sys/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(active, timeout=15, message=lambda: f"OpenBao becoming active:\n{self._log.read_text()}")

    def token_with(self, policy_file: Path) -> str:
        """A token holding only the policy in `policy_file` (not even "default")."""
        name = f"{policy_file.stem}-{uuid.uuid4().hex[:8]}"
        self.client().sys.create_or_update_policy(name, policy_file.read_text())
        token = self.client().auth.token.create(policies=[name], no_default_policy=True, ttl="1h")
        return token["auth"]["client_token"]

    def audited_requests(self, path_prefix: str) -> int:
        """How many requests the audit device logged on paths starting with `path_prefix`."""
        count = 0
        with self.audit_log.open() as log:
            for line in log:
                record = json.loads(line)
                if record.get("type") == "request" and record["request"].get("path", "").startswith(path_prefix):
                    count += 1
        return count

    def session(self, token: str, timeout_seconds: float = 2.0) -> VaultSession:
        """A VaultSession (token auth) as the service would hold one."""
        return VaultSession(VaultConfig(addr=self.addr, timeout_seconds=timeout_seconds), TokenAuth(token=token))


def new_key_name() -> str:
    """A fresh Transit key name inside the shipped policies' kustomer-* grant."""
    return f"kustomer-test-{uuid.uuid4().hex[:10]}"
