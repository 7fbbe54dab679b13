"""Helpers for the client end-to-end tests: build a client program once,
run it against the live `tokenservice serve` process, show its output."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Build outputs of the client tests (.gitignored with the rest of .cache/).
BUILD_DIR = REPO / ".cache" / "clients-e2e"


def run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a build or test step; fail with its output if it exits non-zero."""
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (
        f"{' '.join(cmd)} (in {cwd}) exited {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}")
    return result


def client_env(live_service) -> dict[str, str]:
    """The environment a client program gets: where the server is, and the
    secret to verify tokens with."""
    return {**os.environ, "TOKENSERVICE_ADDR": live_service.grpc_target,
            "TOKENSERVICE_TEST_SECRET": live_service.secret}
