"""`tokenservice secret sync` against a local server that answers as Kustomer's
settings endpoint does, writing to a real OpenBao."""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support import TOKENSERVICE, new_secret

pytestmark = pytest.mark.integration

API_KEY = "kustomer-api-key-" + uuid.uuid4().hex


class FakeKustomer:
    """GET /v1/auth/customer/settings on 127.0.0.1, answering whatever `reply` says."""

    def __init__(self) -> None:
        self.reply: tuple[int, dict[str, str], bytes] = (200, {}, b"{}")
        self.delay = 0.0
        self.requests: list[tuple[str, str]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                fake.requests.append((self.path, self.headers.get("Authorization", "")))
                time.sleep(fake.delay)
                status, headers, body = fake.reply
                authorized = self.headers.get("Authorization") == f"Bearer {API_KEY}"
                if self.path != "/v1/auth/customer/settings" or not authorized:
                    status, headers, body = 401, {}, b'{"errors":[{"status":401,"title":"Unauthorized"}]}'
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                # The command may have given up waiting (the timeout test).
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer_secret(self, secret: object) -> None:
        body = {"data": {"type": "customer_settings", "id": "5f1e", "attributes": {"secret": secret}}}
        self.reply = (200, {}, json.dumps(body).encode())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def kustomer():
    fake = FakeKustomer()
    yield fake
    fake.close()


@pytest.fixture
def sync_env(openbao, kustomer):
    path = f"kustomer/sync-{uuid.uuid4().hex[:8]}"
    return path, {
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "KUSTOMER_API_URL": kustomer.url,
        "KUSTOMER_API_KEY": API_KEY,
        "TOKENSERVICE_SECRET_PATH": path,
    }


def sync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TOKENSERVICE, "secret", "sync", "--org", "acme", *args], env=env, capture_output=True, text=True, timeout=30
    )


def versions(openbao, path: str) -> int:
    try:
        return openbao.client().secrets.kv.v2.read_secret_metadata(path=path)["data"]["current_version"]
    except Exception:
        return 0


def test_sync_writes_once_with_check_and_set_and_never_prints_the_secret(openbao, kustomer, sync_env):
    path, env = sync_env
    secret = new_secret()
    kustomer.answer_secret(secret)
    dry = sync(env, "--dry-run")
    assert dry.returncode == 0 and "would write version 1" in dry.stdout and versions(openbao, path) == 0
    first = sync(env)
    assert first.returncode == 0, first.stderr
    assert f"wrote version 1 of secret/{path}" in first.stdout
    assert openbao.read_secret(path) == secret
    again = sync(env)
    assert again.returncode == 0 and "already holds" in again.stdout and versions(openbao, path) == 1
    rotated = new_secret()
    kustomer.answer_secret(rotated)
    assert "wrote version 2" in sync(env).stdout and openbao.read_secret(path) == rotated
    assert kustomer.requests[0] == ("/v1/auth/customer/settings", f"Bearer {API_KEY}")
    for output in (dry, first, again):
        for needle in (secret, rotated, API_KEY):
            assert needle not in output.stdout + output.stderr


def test_api_key_from_a_file(openbao, kustomer, sync_env, tmp_path):
    path, env = sync_env
    key_file = tmp_path / "kustomer-api-key"
    key_file.write_text(API_KEY + "\n")
    kustomer.answer_secret(new_secret())
    env = {name: value for name, value in env.items() if name != "KUSTOMER_API_KEY"}
    assert sync(env, "--api-key-file", str(key_file)).returncode == 0 and versions(openbao, path) == 1
    missing = sync(env)
    assert missing.returncode == 2 and "KUSTOMER_API_KEY" in missing.stderr


@pytest.mark.parametrize(
    "reply, message",
    [
        ((401, {}, b"{}"), "org.admin and org.user"),
        ((403, {}, b"{}"), "HTTP 403"),
        ((404, {}, b"{}"), "HTTP 404"),
        ((429, {"Retry-After": "30"}, b"{}"), "retry after 30 s"),
        ((503, {}, b"upstream"), "HTTP 503"),
        ((200, {}, b"<html>maintenance</html>"), "not JSON"),
        ((200, {}, b'{"data":{"attributes":{}}}'), "data.attributes.secret"),
        ((200, {}, b'{"data":{"attributes":{"secret":""}}}'), "data.attributes.secret"),
        ((200, {}, b'{"data":{"attributes":{"secret":"short"}}}'), "would be refused"),
    ],
)
def test_every_failure_says_what_and_writes_nothing(openbao, kustomer, sync_env, reply, message):
    path, env = sync_env
    openbao.write_secret(path, kept := new_secret())
    kustomer.reply = reply
    result = sync(env)
    assert result.returncode == 1 and message in result.stderr and result.stdout == ""
    assert versions(openbao, path) == 1 and openbao.read_secret(path) == kept


def test_wrong_api_key_and_timeout(openbao, kustomer, sync_env):
    path, env = sync_env
    kustomer.answer_secret(new_secret())
    wrong = sync({**env, "KUSTOMER_API_KEY": "not-the-key"})
    assert wrong.returncode == 1 and "HTTP 401" in wrong.stderr and "not-the-key" not in wrong.stderr
    kustomer.delay = 2
    slow = sync(env, "--timeout", "0.5")
    assert slow.returncode == 1 and "did not answer within 0.5 s" in slow.stderr
    assert versions(openbao, path) == 0
