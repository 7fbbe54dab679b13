"""Every example.sh retries UNAVAILABLE with backoff, then gives up: pointed
at a loopback port nobody listens on, it tries 5 times, prints nothing on
stdout and exits non-zero. (INVALID_ARGUMENT is never retried, and Java's and
Rust's attempts are counted: see test_clients.py.) Needs no server."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from service.dev import free_loopback_port
from tests.clients.common import REPO

# Each example.sh builds what it needs first (cold: a Go build, npm ci).
pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("lang", ["python", "go", "typescript"])
def test_example_retries_unavailable_then_fails(lang):
    env = {**os.environ, "TOKENSERVICE_ADDR": f"127.0.0.1:{free_loopback_port()}", "PYTHON": sys.executable}
    result = subprocess.run(
        [str(REPO / "clients" / lang / "example.sh"), "someone@example.com"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode != 0 and result.stdout == "", result
    assert result.stderr.count("retrying") == 4, result.stderr
    assert "UNAVAILABLE" in result.stderr.upper()
