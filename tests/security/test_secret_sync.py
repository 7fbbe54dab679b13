"""`tokenservice secret sync` sends the Kustomer admin API key only to the Kustomer API.

The key opens the org's settings, chat signing secret included, so where it
goes is decided before anything else runs:

- `--org` must be an org name (a DNS label) before the config or the key is
  read and before any name is looked up: a hostile one must never become the
  host of the URL (`evil.example/`, `acme.evil.example`, `a@evil.example`);
- KUSTOMER_API_URL must be https, or plain http on a loopback address
  literal only (the tests' stand-in);
- redirects are not followed, and a plaintext loopback request goes to no
  environment proxy; ~/.netrc never replaces the key.

The command runs in-process (service.cli.main) with socket.getaddrinfo and
socket.socket.connect replaced by recorders that refuse: a lookup or
connection the command attempts is recorded and nothing leaves the machine.
Where a request must really be made, local HTTP servers on 127.0.0.1 answer.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import cli

API_KEY = "kustomer-admin-key-" + os.urandom(8).hex()
SETTINGS_PATH = "/v1/auth/customer/settings"
HOSTILE_ORGS = [
    "evil.example/",
    "acme.evil.example",
    "a@evil.example",
    "evil.example#",
    "evil.example?x=",
    "acme:443",
    "acme/../x",
    "127.0.0.1",
    "ACME",
    "Acme",
    "..",
    "acme..",
    "-acme",
    "acme-",
    "a" * 64,
    "",
    " acme",
    "acme\n",
    "acme\r\nHost: evil.example",
    "caf\u00e9",
    "\uff41cme",
    "acme\u200b",
    "acme_corp",
]


class NetworkRecorder:
    """Stands in for name resolution and outgoing connections: records them and refuses."""

    def __init__(self) -> None:
        self.lookups: list[tuple[object, object]] = []
        self.connects: list[object] = []

    def getaddrinfo(self, host: object, port: object, *args: object, **kwargs: object) -> list:
        self.lookups.append((host, port))
        raise socket.gaierror(socket.EAI_NONAME, "name lookups are recorded, not made, in this test")

    def connect(self, address: object) -> None:
        self.connects.append(address)
        raise ConnectionRefusedError("connections are recorded, not made, in this test")


@pytest.fixture
def environment(monkeypatch, tmp_path) -> dict[str, str]:
    """A clean environment in which `secret sync` would run: a Vault token, the key, a HOME of its own."""
    for name in list(os.environ):
        if name.startswith(("TOKENSERVICE_", "VAULT_", "KUSTOMER_", "BAO_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    values = {
        "VAULT_ADDR": "http://127.0.0.1:9",
        "VAULT_TOKEN": "not-used",
        "KUSTOMER_API_KEY": API_KEY,
        "HOME": str(tmp_path),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def network(monkeypatch) -> NetworkRecorder:
    recorder = NetworkRecorder()
    monkeypatch.setattr(socket, "getaddrinfo", recorder.getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: recorder.connect(address))
    return recorder


def sync(capsys, *args: str) -> tuple[int, str]:
    code = cli.main(["secret", "sync", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_recorder_sees_the_lookup_a_valid_org_makes(environment, network, capsys):
    """The control: with a valid org and no KUSTOMER_API_URL the command resolves Kustomer's host."""
    code, output = sync(capsys, "--org", "acme")
    assert code == 1 and "cannot reach the Kustomer API" in output
    assert network.lookups == [("acme.api.kustomerapp.com", 443)]


@pytest.mark.parametrize("org", HOSTILE_ORGS, ids=repr)
def test_a_hostile_org_name_is_refused_before_any_lookup(environment, network, capsys, org):
    code, output = sync(capsys, f"--org={org}")
    assert code == 2 and "--org" in output and "DNS label" in output, output
    assert network.lookups == [] and network.connects == []
    assert API_KEY not in output


def test_the_org_is_checked_before_the_config_and_the_key_are_read(environment, network, capsys, tmp_path):
    code, output = sync(
        capsys,
        "--org",
        "evil.example/",
        "--config",
        str(tmp_path / "missing.toml"),
        "--api-key-file",
        str(tmp_path / "missing-key"),
    )
    assert code == 2 and "--org" in output and "missing" not in output, output
    assert network.lookups == []


@pytest.mark.parametrize(
    "url",
    [
        "http://kustomer.example",
        "http://acme.api.kustomerapp.com",
        "http://localhost:8080",
        "http://10.0.0.1:80",
        "http://0.0.0.0:80",
        "http://[::2]:80",
        "http://127.0.0.1.evil.example",
        "ftp://127.0.0.1:21",
        "kustomer.example",
        "https://",
        "https://user:pass@acme.api.kustomerapp.com",
        "https://acme.api.kustomerapp.com/?next=x",
        "https://acme.api.kustomerapp.com/#x",
    ],
)
def test_a_url_that_could_expose_the_key_is_refused_before_any_lookup(environment, network, capsys, monkeypatch, url):
    monkeypatch.setenv("KUSTOMER_API_URL", url)
    code, output = sync(capsys, "--org", "acme")
    assert code == 2 and "KUSTOMER_API_URL" in output, output
    assert network.lookups == [] and network.connects == []


@pytest.mark.parametrize(
    "url, host",
    [
        ("https://acme.api.kustomerapp.com", "acme.api.kustomerapp.com"),
        ("http://127.0.0.1:9", "127.0.0.1"),
        ("http://127.3.4.5:9", "127.3.4.5"),
        ("http://[::1]:9", "::1"),
    ],
)
def test_https_anywhere_and_http_on_a_loopback_literal_are_used(environment, network, capsys, monkeypatch, url, host):
    monkeypatch.setenv("KUSTOMER_API_URL", url)
    code, output = sync(capsys, "--org", "acme")
    assert code == 1 and "cannot reach the Kustomer API" in output, output
    assert [lookup[0] for lookup in network.lookups] == [host]


class Recording:
    """An HTTP server on 127.0.0.1 that records every request and answers `reply(path)`."""

    def __init__(self, reply) -> None:
        self.requests: list[tuple[str, str, str]] = []
        recording = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                recording.requests.append((self.command, self.path, self.headers.get("Authorization", "")))
                status, headers = reply(self.path)
                self.send_response(status)
                for name, value in {"Content-Length": "2", "Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(b"{}")

            do_CONNECT = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_port}"
        self.url = f"http://{self.address}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def servers() -> Iterator[list[Recording]]:
    started: list[Recording] = []
    yield started
    for server in started:
        server.close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_the_second_server_receives_nothing(
    environment, capsys, monkeypatch, servers, status
):
    elsewhere = Recording(lambda path: (200, {}))
    servers.append(elsewhere)
    redirecting = Recording(lambda path: (status, {"Location": f"{elsewhere.url}{SETTINGS_PATH}"}))
    servers.append(redirecting)
    monkeypatch.setenv("KUSTOMER_API_URL", redirecting.url)
    code, output = sync(capsys, "--org", "acme")
    assert code == 1 and f"HTTP {status}" in output and "redirect" in output, output
    assert redirecting.requests == [("GET", SETTINGS_PATH, f"Bearer {API_KEY}")]
    assert elsewhere.requests == []
    assert elsewhere.address not in output and API_KEY not in output


def test_a_plaintext_loopback_request_goes_to_no_environment_proxy_and_netrc_never_replaces_the_key(
    environment, capsys, monkeypatch, servers, tmp_path
):
    proxy = Recording(lambda path: (200, {}))
    servers.append(proxy)
    kustomer = Recording(lambda path: (401, {}))
    servers.append(kustomer)
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    netrc = tmp_path / ".netrc"
    netrc.write_text("machine 127.0.0.1 login netrc-user password netrc-password\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("KUSTOMER_API_URL", kustomer.url)
    code, output = sync(capsys, "--org", "acme")
    assert code == 1 and "HTTP 401" in output, output
    assert proxy.requests == []
    assert kustomer.requests == [("GET", SETTINGS_PATH, f"Bearer {API_KEY}")]
