"""A local Kubernetes TokenReview endpoint for Vault's Kubernetes auth method.

An HTTPS server on 127.0.0.1 that answers
POST /apis/authentication.k8s.io/v1/tokenreviews like the Kubernetes API
server does, for service-account tokens it issued itself (`.issue_token`). Its
CA certificate and reviewer token are what Vault's auth/kubernetes/config
needs: `.host`, `.ca_pem`, `.reviewer_jwt`. Tokens are signed JWTs in the
Kubernetes format (RS256, iss kubernetes/serviceaccount claims), made with the
openssl CLI; every review is recorded in `.reviews`.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

from service.dev import free_loopback_port


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
        run(
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "kubernetes-ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=tokenservice-test-kubernetes-ca",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
        run(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
            "-subj",
            "/CN=kube-apiserver",
        )
        (workdir / "apiserver.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        run(
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "kubernetes-ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "apiserver.crt",
            "-days",
            "1",
            "-extfile",
            "apiserver.ext",
        )
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
        self.port = free_loopback_port()
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

    def issue_token(
        self, account: ServiceAccount, audiences: list[str], expires_in: int = 600, path: Path | None = None
    ) -> str:
        """A bound service-account token, as the kubelet's projected volume holds; written to `path` if given."""
        now = int(time.time())
        claims = {
            "aud": audiences,
            "exp": now + expires_in,
            "iat": now,
            "nbf": now,
            "jti": str(uuid.uuid4()),
            "iss": "https://kubernetes.default.svc.cluster.local",
            "sub": f"system:serviceaccount:{account.namespace}:{account.name}",
            "kubernetes.io": {
                "namespace": account.namespace,
                "serviceaccount": {"name": account.name, "uid": account.uid},
            },
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
                "groups": [
                    "system:serviceaccounts",
                    f"system:serviceaccounts:{account.namespace}",
                    "system:authenticated",
                ],
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
                    f"system:serviceaccount:{api.reviewer.namespace}:{api.reviewer.name}"
                ):
                    self._reply(
                        401,
                        {
                            "kind": "Status",
                            "apiVersion": "v1",
                            "status": "Failure",
                            "message": "Unauthorized",
                            "reason": "Unauthorized",
                            "code": 401,
                        },
                    )
                    return
                spec = request.get("spec", {})
                status = api.review(spec.get("token", ""), spec.get("audiences") or [])
                self._reply(
                    201,
                    {
                        "kind": "TokenReview",
                        "apiVersion": "authentication.k8s.io/v1",
                        "metadata": {"creationTimestamp": None},
                        "spec": spec,
                        "status": status,
                    },
                )

        return Handler


@dataclasses.dataclass
class KubernetesAuth:
    """Vault's Kubernetes auth method, mounted and configured against `kubernetes_api`."""

    mount: str
    role: str
    policy: str
    account: ServiceAccount
    audience: str
    token_file: Path
