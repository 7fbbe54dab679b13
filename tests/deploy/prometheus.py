"""A real Prometheus (Debian package "prometheus") on 127.0.0.1, scraping the
given host:port targets every second; use it as a context manager.
`.query(expr)` runs an instant query through its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from service.dev import free_loopback_port
from tests.support import wait_until


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    assert found, "the prometheus binary is missing: apt-get install prometheus (deploy/validate installs it)"
    return found


class Prometheus:
    """A real Prometheus server on 127.0.0.1, scraping `targets` every second."""

    def __init__(
        self,
        targets: list[str],
        rule_files: Sequence[Path] = (),
        labels: dict[str, str] | None = None,
        workdir: Path | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self._workdir = Path(workdir or tempfile.mkdtemp(prefix="prometheus-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._startup_timeout = startup_timeout
        scrape = {
            "job_name": "tokenservice",
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "metrics_path": "/metrics",
            "static_configs": [{"targets": targets, "labels": labels or {}}],
        }
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [scrape],
        }
        self.config_file = self._workdir / "prometheus.yml"
        self.config_file.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log_file = self._workdir / "prometheus.log"
        self._process: subprocess.Popen | None = None

    def __enter__(self) -> Prometheus:
        log = self.log_file.open("wb")
        self._process = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={self.config_file}",
                f"--storage.tsdb.path={self._workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        try:
            wait_until(
                self._ready,
                timeout=self._startup_timeout,
                interval=0.1,
                message=lambda: f"prometheus ready:\n{self.logs()}",
            )
        except AssertionError:
            self.__exit__()
            raise
        return self

    def _ready(self) -> bool:
        process = self._process
        assert process is not None, "prometheus was not started"
        assert process.poll() is None, f"prometheus exited with {process.returncode}:\n{self.logs()}"
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def __exit__(self, *exc_info: object) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        shutil.rmtree(self._workdir / "data", ignore_errors=True)

    def logs(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def api(self, path: str, **params: str) -> dict:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        """An instant query's vector: [{"metric": {...}, "value": [t, "v"]}, ...]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def wait_for(self, expr: str, predicate: Callable[[list[dict]], object], timeout: float = 30.0) -> list[dict]:
        """Poll `expr` until predicate(result) is true; that result."""
        last: list[list[dict]] = [[]]

        def holds() -> bool:
            last[0] = self.query(expr)
            return bool(predicate(last[0]))

        wait_until(holds, timeout=timeout, interval=0.5, message=lambda: f"{expr}: still {last[0]}\n{self.logs()}")
        return last[0]
