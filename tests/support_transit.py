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
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from service.config import VaultConfig
from service.vault_auth import TokenAuth, VaultSession
from tests.support import OpenBaoFileServer, wait_until

REPO = Path(__file__).resolve().parents[1]
TRANSIT_POLICY = REPO / "deploy" / "vault" / "tokenservice-transit-policy.hcl"
OPERATOR_POLICY = REPO / "deploy" / "vault" / "tokenservice-transit-operator-policy.hcl"


class AuditedOpenBao(OpenBaoFileServer):
    """A real OpenBao with raft storage, a file audit device and a Transit mount at `transit/`."""

    def __init__(self, directory: Path) -> None:
        self.audit_log = directory / "audit.log"
        super().__init__(directory, f'audit "file" "file" {{\n options {{\n  file_path = "{self.audit_log}"\n }}\n}}\n')

    def _mount_engines(self) -> None:
        super()._mount_engines()
        self.client().sys.enable_secrets_engine("transit", path="transit")

    def unseal(self) -> None:
        super().unseal()
        self._wait_active()

    def pause(self) -> None:
        """Freeze the process: connections are accepted by the kernel but never answered."""
        self.process.send_signal(signal.SIGSTOP)
        # The stop is asynchronous: on a busy machine a thread may still answer a request meanwhile.
        stat = Path(f"/proc/{self.process.pid}/stat")
        wait_until(
            lambda: stat.read_text().rsplit(")", 1)[1].split()[0] == "T",
            timeout=5,
            interval=0.01,
            message="OpenBao stopped by SIGSTOP",
        )

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

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


class AnsweringVault:
    """An HTTP server on 127.0.0.1 that answers as a misbehaving Vault might: any token is accepted
    (a GET, as lookup-self at login, gets a token that never expires), and every POST gets the
    status, headers and body set on it, chunked or not, after a second once `delay` is set. It keeps
    each POST's headers in `seen`."""

    def __init__(self) -> None:
        self.status = 200
        self.headers: list[tuple[str, str]] = []
        self.body = b'{"data":{}}'
        self.chunked = False
        self.delay = threading.Event()
        self.seen: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                lookup = b'{"data": {"ttl": 0, "renewable": false}}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(lookup)))
                self.end_headers()
                self.wfile.write(lookup)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server.seen.append(dict(self.headers))
                if server.delay.is_set():
                    threading.Event().wait(1.0)
                self.send_response(server.status)
                for name, value in server.headers:
                    self.send_header(name, value)
                if server.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for start in range(0, len(server.body), 65536):
                        piece = server.body[start : start + 65536]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(server.body)))
                    self.end_headers()
                    self.wfile.write(server.body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
