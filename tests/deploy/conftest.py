"""Fixtures for the deployment tests: a real Prometheus, and a local Kubernetes
TokenReview endpoint for Vault's Kubernetes auth method.

Every server here listens on 127.0.0.1 only and is stopped by its fixture.

- `start_prometheus(targets, rule_files)`: a real Prometheus (Debian package
  "prometheus") scraping the given host:port targets every second; use it as a
  context manager. `.query(expr)` runs an instant query through its HTTP API.
- `kubernetes_api`: an HTTPS server on 127.0.0.1 that answers
  POST /apis/authentication.k8s.io/v1/tokenreviews like the Kubernetes API
  server does, for service-account tokens it issued itself (`.issue_token`).
  Its CA certificate and reviewer token are what Vault's auth/kubernetes/config
  needs: `.host`, `.ca_pem`, `.reviewer_jwt`. Tokens are signed JWTs in the
  Kubernetes format (RS256, iss kubernetes/serviceaccount claims), made with
  the openssl CLI; every review is recorded in `.reviews`.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --------------------------------------------------------------------------- Prometheus


def prometheus_binary() -> str:
    found = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    assert found, "the prometheus binary is missing: apt-get install prometheus (deploy/validate installs it)"
    return found


class Prometheus:
    """A real Prometheus server on 127.0.0.1, scraping `targets` every second."""

    def __init__(self, targets: list[str], rule_files: list[Path] = (), labels: dict[str, str] | None = None,
                 workdir: Path | None = None, startup_timeout: float = 30.0) -> None:
        self._workdir = Path(workdir or tempfile.mkdtemp(prefix="prometheus-"))
        self._workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
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
            [prometheus_binary(), f"--config.file={self.config_file}",
             f"--storage.tsdb.path={self._workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + self._startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise AssertionError(f"prometheus exited with {self._process.returncode}:\n{self.logs()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise AssertionError(f"prometheus was not ready within {self._startup_timeout:g} s:\n{self.logs()}")

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

    def wait_for(self, expr: str, predicate, timeout: float = 30.0) -> list[dict]:
        """Poll `expr` until predicate(result) is true; the last result."""
        deadline = time.monotonic() + timeout
        result: list[dict] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if predicate(result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr}: still {result} after {timeout:g} s\n{self.logs()}")


@pytest.fixture
def start_prometheus(tmp_path):
    """A factory: start_prometheus(targets, rule_files=(), labels=None) -> Prometheus (a context manager)."""

    def start(targets: list[str], rule_files: list[Path] = (), labels: dict[str, str] | None = None) -> Prometheus:
        return Prometheus(targets, rule_files, labels, workdir=tmp_path / f"prometheus-{uuid.uuid4().hex[:6]}")

    return start


# --------------------------------------------------------------------------- Kubernetes TokenReview


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclasses.dataclass
class ServiceAccount:
    namespace: str
    name: str
    uid: str


class KubernetesTokenReviewAPI:
    """The TokenReview part of a Kubernetes API server, over HTTPS on 127.0.0.1."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        openssl = shutil.which("openssl")
        assert openssl, "the openssl CLI is missing (Debian package openssl)"

        def run(*args: str, stdin: bytes | None = None) -> bytes:
            completed = subprocess.run([openssl, *args], cwd=workdir, input=stdin, capture_output=True, timeout=60)
            assert completed.returncode == 0, f"openssl {' '.join(args)}: {completed.stderr.decode()}"
            return completed.stdout

        self._openssl = run
        # A CA, and a serving certificate for 127.0.0.1 that it signs.
        run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "kubernetes-ca.crt", "-days", "1", "-subj", "/CN=tokenservice-test-kubernetes-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "apiserver.key", "-out", "apiserver.csr", "-subj", "/CN=kube-apiserver")
        (workdir / "apiserver.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        run("x509", "-req", "-in", "apiserver.csr", "-CA", "kubernetes-ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "apiserver.crt", "-days", "1", "-extfile", "apiserver.ext")
        cert_file, key_file = workdir / "apiserver.crt", workdir / "apiserver.key"
        self.ca_file = workdir / "kubernetes-ca.crt"
        self.ca_pem = self.ca_file.read_text()
        # The service-account token signing key (the API server's --service-account-key-file).
        run("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa-signing.key")
        self._valid: dict[str, tuple[ServiceAccount, list[str], float]] = {}
        self.reviews: list[dict] = []
        self.reviewer = ServiceAccount("kube-system", "vault-token-reviewer", str(uuid.uuid4()))
        self.reviewer_jwt = self.issue_token(self.reviewer, audiences=["https://kubernetes.default.svc"])

        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert_file, key_file)
        self.port = free_port()
        self.host = f"https://127.0.0.1:{self.port}"
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._server.socket = self._context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def issue_token(self, account: ServiceAccount, audiences: list[str], expires_in: int = 600,
                    path: Path | None = None) -> str:
        """A bound service-account token, as the kubelet's projected volume holds; written to `path` if given."""
        now = int(time.time())
        claims = {
            "aud": audiences, "exp": now + expires_in, "iat": now, "nbf": now, "jti": str(uuid.uuid4()),
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{account.namespace}:{account.name}",
            "kubernetes.io": {"namespace": account.namespace,
                              "serviceaccount": {"name": account.name, "uid": account.uid}},
        }
        header = {"alg": "RS256", "kid": "tokenservice-test"}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        signature = self._openssl("dgst", "-sha256", "-sign", "sa-signing.key", stdin=signing_input.encode())
        token = f"{signing_input}.{_b64url(signature)}"
        self._valid[token] = (account, audiences, now + expires_in)
        if path is not None:
            path.write_text(token)
        return token

    def revoke(self, token: str) -> None:
        """The API server forgets the token (as when its pod or service account is deleted)."""
        self._valid.pop(token, None)

    def review(self, token: str, audiences: list[str]) -> dict:
        """The status of a TokenReview, as the API server computes it."""
        found = self._valid.get(token)
        if found is None or found[2] < time.time():
            return {"authenticated": False, "error": "invalid bearer token, token has been invalidated"}
        account, token_audiences, _ = found
        if audiences and not set(audiences) & set(token_audiences):
            return {"authenticated": False, "error": "token audiences do not match the requested audiences"}
        return {
            "authenticated": True,
            "audiences": sorted(set(audiences) & set(token_audiences)) if audiences else token_audiences,
            "user": {
                "username": f"system:serviceaccount:{account.namespace}:{account.name}",
                "uid": account.uid,
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{account.namespace}",
                           "system:authenticated"],
            },
        }

    def _handler(self):
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                if urllib.parse.urlparse(self.path).path != "/apis/authentication.k8s.io/v1/tokenreviews":
                    self._reply(404, {"kind": "Status", "status": "Failure", "code": 404, "reason": "NotFound"})
                    return
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                caller = api.review(bearer, [])
                api.reviews.append({"caller_authenticated": caller["authenticated"], "request": request})
                if not caller["authenticated"] or caller["user"]["username"] != (
                        f"system:serviceaccount:{api.reviewer.namespace}:{api.reviewer.name}"):
                    self._reply(401, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                      "message": "Unauthorized", "reason": "Unauthorized", "code": 401})
                    return
                spec = request.get("spec", {})
                status = api.review(spec.get("token", ""), spec.get("audiences") or [])
                self._reply(201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                                  "metadata": {"creationTimestamp": None}, "spec": spec, "status": status})

        return Handler


@pytest.fixture(scope="session")
def kubernetes_api(tmp_path_factory) -> Iterator[KubernetesTokenReviewAPI]:
    """A local HTTPS Kubernetes TokenReview endpoint (see the module docstring)."""
    api = KubernetesTokenReviewAPI(tmp_path_factory.mktemp("kubernetes-api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


@dataclasses.dataclass
class KubernetesAuth:
    """Vault's Kubernetes auth method, mounted and configured against `kubernetes_api`."""

    mount: str
    role: str
    policy: str
    account: ServiceAccount
    audience: str
    token_file: Path


@pytest.fixture
def vault_kubernetes_auth(openbao, kubernetes_api, tmp_path) -> KubernetesAuth:
    """OpenBao's Kubernetes auth, configured by deploy/vault/setup.sh against the local TokenReview endpoint,
    with the role for service account tokenservice-test/tokenservice and its token (audience "vault") in a file,
    as the pod's projected volume would hold it. Each test gets its own mount."""
    mount = f"kubernetes-{uuid.uuid4().hex[:8]}"
    reviewer_file = tmp_path / "reviewer.jwt"
    reviewer_file.write_text(kubernetes_api.reviewer_jwt)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    from service.dev import find_bao

    (bin_dir / "bao").symlink_to(find_bao())
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path),
        "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token,
        "K8S_AUTH_MOUNT": mount, "SA_NAMESPACE": "tokenservice-test", "SA_NAME": "tokenservice",
        "ROLE_NAME": "tokenservice", "POLICY_NAME": "tokenservice",
        "KUBERNETES_HOST": kubernetes_api.host, "KUBERNETES_CA_CERT_FILE": str(kubernetes_api.ca_file),
        "TOKEN_REVIEWER_JWT_FILE": str(reviewer_file),
    }
    setup = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "setup.sh"
    completed = subprocess.run(["sh", str(setup)], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    account = ServiceAccount("tokenservice-test", "tokenservice", str(uuid.uuid4()))
    token_file = tmp_path / "vault-token"
    kubernetes_api.issue_token(account, audiences=["vault"], path=token_file)
    return KubernetesAuth(mount, "tokenservice", "tokenservice", account, "vault", token_file)
