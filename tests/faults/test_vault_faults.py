"""Vault faults under steady traffic, against a real OpenBao server with file
storage that the tests stop, restart, seal and unseal."""

from __future__ import annotations

import dataclasses
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.support import (
    OpenBaoFileServer,
    ServiceProcess,
    hs256_open,
    metric_value,
    new_secret,
    wait_for_health,
    wait_until,
)

pytestmark = pytest.mark.integration

REFRESH_SECONDS = 0.5
SECRET_PATH = "kustomer/chat"


@pytest.fixture
def vault(tmp_path: Path):
    server = OpenBaoFileServer(tmp_path)
    server.start()
    try:
        server.write_secret(SECRET_PATH, new_secret())
        yield server
    finally:
        server.stop()


@dataclasses.dataclass
class Mint:
    at: float
    code: grpc.StatusCode
    version: int = 0
    token: str = ""


class SteadyTraffic:
    """Mints a token every few milliseconds in a thread and records every outcome."""

    def __init__(self, target: str, interval: float = 0.01) -> None:
        self.outcomes: list[Mint] = []
        self._target = target
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SteadyTraffic:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with grpc.insecure_channel(self._target) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            while not self._stop.is_set():
                try:
                    response = stub.MintToken(pb.MintTokenRequest(email="steady@example.com"), timeout=5)
                    self.outcomes.append(
                        Mint(time.monotonic(), grpc.StatusCode.OK, response.secret_version, response.token)
                    )
                except grpc.RpcError as error:
                    self.outcomes.append(Mint(time.monotonic(), error.code()))
                self._stop.wait(self._interval)

    def failures(self) -> list[Mint]:
        return [outcome for outcome in self.outcomes if outcome.code != grpc.StatusCode.OK]


def start_service(vault: OpenBaoFileServer, env: dict[str, str] | None = None, wait_serving: bool = True):
    return ServiceProcess.start(
        {
            "VAULT_ADDR": vault.addr,
            "VAULT_TOKEN": vault.root_token,
            "TOKENSERVICE_SECRET_PATH": SECRET_PATH,
            "TOKENSERVICE_REFRESH_INTERVAL": str(REFRESH_SECONDS),
            **(env or {}),
        },
        wait_serving=wait_serving,
    )


def scrape(service: ServiceProcess, name: str, **labels: str) -> float:
    return metric_value(urllib.request.urlopen(service.metrics_url, timeout=5).read().decode(), name, **labels)


def refresh_errors(service: ServiceProcess) -> float:
    return scrape(service, "tokenservice_vault_refresh_total", org="default", result="error")


def deleted_refreshes(service: ServiceProcess) -> float:
    return scrape(service, "tokenservice_vault_refresh_total", org="default", result="deleted")


def test_vault_down_at_start_then_started(vault):
    vault.stop()
    service = start_service(vault, wait_serving=False)
    try:
        wait_until(lambda: refresh_errors(service) >= 2, timeout=15, message="two failed refreshes")
        wait_for_health(service.grpc_target, health_pb2.HealthCheckResponse.NOT_SERVING)
        vault.start()
        wait_for_health(service.grpc_target, health_pb2.HealthCheckResponse.SERVING)  # the same process
        assert service.process.poll() is None
    finally:
        assert service.terminate() == 0


@pytest.mark.parametrize("fault", ["stopped", "sealed"])
def test_vault_outage_under_steady_traffic_loses_no_mint(vault, fault):
    service = start_service(vault)
    try:
        with SteadyTraffic(service.grpc_target) as traffic:
            time.sleep(0.5)
            vault.stop() if fault == "stopped" else vault.seal()
            wait_until(
                lambda: refresh_errors(service) >= 4,
                timeout=15,  # several refresh intervals
                message="four failed refreshes",
            )
            during = len(traffic.outcomes)
            vault.start() if fault == "stopped" else vault.unseal()
            wait_until(
                lambda: "secret refresh recovered" in service.logs(),
                timeout=15,
                message="the refresh logged as recovered",
            )
            time.sleep(0.3)
        assert traffic.failures() == []
        assert during > 50 and len(traffic.outcomes) > during
        assert scrape(service, "tokenservice_secret_loaded", org="default") == 1
    finally:
        assert service.terminate() == 0


def test_secret_rotated_under_load_switches_within_one_refresh(vault):
    service = start_service(vault)
    try:
        with SteadyTraffic(service.grpc_target) as traffic:
            time.sleep(0.3)
            rotated = new_secret()
            written_at = time.monotonic()
            version = vault.write_secret(SECRET_PATH, rotated)
            wait_until(
                lambda: any(outcome.version == version for outcome in traffic.outcomes),
                timeout=15,
                message=f"a token signed with version {version}",
            )
            time.sleep(0.3)
        assert traffic.failures() == []
        # Each worker refreshes on its own schedule: all have switched within one interval (+ jitter, + slack).
        switched_by = written_at + REFRESH_SECONDS * 1.1 + 0.3
        assert all(outcome.version == version for outcome in traffic.outcomes if outcome.at > switched_by)
        hs256_open(traffic.outcomes[-1].token, rotated)
    finally:
        assert service.terminate() == 0


def test_deleted_then_destroyed_latest_version_keeps_the_last_good_secret(vault):
    service = start_service(vault)
    kv = vault.client().secrets.kv.v2
    try:
        with SteadyTraffic(service.grpc_target) as traffic:
            kv.delete_latest_version_of_secret(path=SECRET_PATH)
            wait_until(lambda: deleted_refreshes(service) >= 2, timeout=15, message='two result="deleted"')
            kv.destroy_secret_versions(path=SECRET_PATH, versions=[1])
            before = deleted_refreshes(service)
            wait_until(
                lambda: deleted_refreshes(service) >= before + 2,
                timeout=15,
                message='two more result="deleted" once destroyed',
            )
        assert traffic.failures() == [] and {outcome.version for outcome in traffic.outcomes} == {1}
        assert '"latest secret version unusable, keeping the last good one"' in service.logs()
    finally:
        assert service.terminate() == 0


@pytest.fixture
def approle(vault, tmp_path):
    """An AppRole whose tokens live 10 s (at most 20 s), its ids in files."""
    client = vault.client()
    client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy(
        "tokenservice", f'path "secret/data/{SECRET_PATH}" {{ capabilities = ["read"] }}'
    )
    client.auth.approle.create_or_update_approle(
        "tokenservice", token_policies=["tokenservice"], token_ttl="10s", token_max_ttl="20s"
    )
    (tmp_path / "role_id").write_text(client.auth.approle.read_role_id("tokenservice")["data"]["role_id"])
    (tmp_path / "secret_id").write_text(client.auth.approle.generate_secret_id("tokenservice")["data"]["secret_id"])
    config = tmp_path / "tokenservice.toml"
    config.write_text(
        f'[vault]\naddr = "{vault.addr}"\nauth = "approle"\n'
        f'role_id_file = "{tmp_path / "role_id"}"\nsecret_id_file = "{tmp_path / "secret_id"}"\n'
        f'[orgs.default]\npath = "{SECRET_PATH}"\n'
    )
    return config


def test_short_lived_approle_tokens_keep_refresh_working_for_a_minute(vault, approle):
    service = ServiceProcess.start({"TOKENSERVICE_REFRESH_INTERVAL": "1"}, args=["--config", str(approle)])
    try:
        with SteadyTraffic(service.grpc_target, interval=0.05) as traffic:
            started = scrape(service, "tokenservice_vault_refresh_total", org="default", result="ok")
            time.sleep(60)
            rotated = new_secret()
            version = vault.write_secret(SECRET_PATH, rotated)
            wait_until(
                lambda: traffic.outcomes[-1].version == version,
                timeout=5,
                message=f"the latest token signed with version {version}",
            )
        assert traffic.failures() == []
        assert refresh_errors(service) == 0
        assert scrape(service, "tokenservice_vault_refresh_total", org="default", result="ok") - started >= 50
        assert service.logs().count('"logged in to Vault"') >= 3  # max TTL 20 s forces new logins
    finally:
        assert service.terminate() == 0


def test_revoked_token_is_replaced_by_a_new_login(vault, approle):
    service = ServiceProcess.start(
        {"TOKENSERVICE_REFRESH_INTERVAL": str(REFRESH_SECONDS)}, args=["--config", str(approle)]
    )
    try:
        with SteadyTraffic(service.grpc_target) as traffic:
            vault.client().sys.revoke_prefix("auth/approle/login")
            wait_until(
                lambda: "Vault refused the token; logging in again" in service.logs(),
                timeout=15,
                message="a new login once the token was refused",
            )
            ok_before = scrape(service, "tokenservice_vault_refresh_total", org="default", result="ok")
            wait_until(
                lambda: (
                    scrape(service, "tokenservice_vault_refresh_total", org="default", result="ok") >= ok_before + 2
                ),
                timeout=15,
                message="two good refreshes",
            )
        assert traffic.failures() == [] and refresh_errors(service) == 0
    finally:
        assert service.terminate() == 0
