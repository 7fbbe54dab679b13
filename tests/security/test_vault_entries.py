"""What Vault holds is what the service uses: threats around the KV entries
and the Vault token, against a real OpenBao (on-disk, so it can be stopped)
and a real `tokenservice serve` whose Vault token holds only the shipped
policy deploy/vault/tokenservice-policy.hcl (not even "default").

- a secret re-created after `kv metadata delete` restarts at version 1 and
  must still replace the one held;
- an API key dropped from a re-created key set (version 1 again) must stop
  working;
- a deleted or destroyed latest version must be recognised from the data read
  alone (the policy grants no metadata read): counted as result="deleted",
  the last good secret kept, no new login;
- a 403 must not make the service log in again at every refresh;
- a key set that cannot be refreshed for too long must stop admitting API
  keys (UNAVAILABLE API_KEYS_STALE, health NOT_SERVING) while certificate
  callers go on, and recover without a restart.
"""

from __future__ import annotations

import dataclasses
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.api_keys import hash_api_key, new_api_key
from tests.secured import CERTIFICATE_CALLER_SPIFFE_ID, Caller, start_secured_service
from tests.support import (
    OpenBaoFileServer,
    ServiceProcess,
    hs256_open,
    metric_value,
    new_secret,
    refusal_of,
    wait_for_health,
    wait_until,
)

pytestmark = pytest.mark.integration

POLICY_FILE = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "tokenservice-policy.hcl"
POLICY = "tokenservice"
API_KEYS = "tokenservice/api-keys"  # the one key-set path the shipped policy grants
REFRESH_SECONDS = 0.3
KEYS_MAX_STALENESS_SECONDS = 2
ORG_PATHS = {"acme": "kustomer/acme", "recreated": "kustomer/recreated", "deleted": "kustomer/deleted"}
LOGGED_IN = '"logged in to Vault"'
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def shipped_policy_token(vault: OpenBaoFileServer) -> str:
    """A token whose only grant is the shipped policy: no "default" policy, so not even lookup-self."""
    root = vault.client()
    root.sys.create_or_update_policy(POLICY, POLICY_FILE.read_text())
    return root.auth.token.create(policies=[POLICY], no_default_policy=True, ttl="2h")["auth"]["client_token"]


def failure_of(call: Callable[[], object]) -> tuple[grpc.StatusCode, str, str] | None:
    """None when `call` succeeds, else its status code, ErrorInfo reason and message."""
    try:
        call()
    except grpc.RpcError as error:
        code, reason, _ = refusal_of(error)
        return code, reason, error.details() or ""
    return None


@dataclasses.dataclass
class Deployment:
    """The module's OpenBao, the service reading it, and what the callers hold."""

    vault: OpenBaoFileServer
    service: ServiceProcess
    secrets: dict[str, str]
    keys: dict[str, str]
    by_key: pb_grpc.TokenServiceStub
    by_certificate: pb_grpc.TokenServiceStub

    @property
    def kv(self):
        return self.vault.client().secrets.kv.v2

    def mint_by_certificate(self, org: str) -> str:
        return self.by_certificate.MintToken(pb.MintTokenRequest(email="c@example.com", org=org), timeout=5).token

    def mint_by_key(self, key: str, org: str = "acme") -> str:
        return self.by_key.MintToken(
            pb.MintTokenRequest(email="k@example.com", org=org),
            timeout=5,
            metadata=(("authorization", f"Bearer {key}"),),
        ).token

    def signs_with(self, org: str, secret: str) -> bool:
        try:
            hs256_open(self.mint_by_certificate(org), secret)
        except AssertionError:
            return False
        return True

    def scrape(self, name: str, **labels: str) -> float:
        return metric_value(urllib.request.urlopen(self.service.metrics_url, timeout=5).read().decode(), name, **labels)

    def assert_nothing_secret_logged(self) -> None:
        logs = self.service.logs()
        for value in [*self.secrets.values(), *self.keys.values(), self.vault.root_token]:
            assert value not in logs
        for key in self.keys.values():
            assert hash_api_key(key) not in logs


@pytest.fixture(scope="module")
def vault(tmp_path_factory) -> Iterator[OpenBaoFileServer]:
    server = OpenBaoFileServer(tmp_path_factory.mktemp("vault-entries-bao"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def deployment(vault, tmp_path_factory) -> Iterator[Deployment]:
    """The secured set-up (tests/secured.py) on the shipped policy's paths, with a key set of two keys."""
    keys = {"dropped": new_api_key(), "kept": new_api_key()}
    service, files = start_secured_service(
        vault,
        tmp_path_factory.mktemp("vault-entries"),
        env={"VAULT_TOKEN": shipped_policy_token(vault)},
        orgs=ORG_PATHS,
        keys_path=API_KEYS,
        api_keys={"reports": [keys["dropped"], keys["kept"]]},
        callers={
            "checkout": Caller(spiffe_id=CERTIFICATE_CALLER_SPIFFE_ID, orgs=("*",)),
            "reports": Caller(orgs=("*",)),
        },
        settings={
            "refresh_interval_seconds": REFRESH_SECONDS,
            "auth": {"api_keys_max_staleness_seconds": KEYS_MAX_STALENESS_SECONDS},
        },
    )
    ca, checkout = files.ca, files.client
    key_channel = grpc.secure_channel(
        f"127.0.0.1:{service.listening['api_key_port']}", grpc.ssl_channel_credentials(root_certificates=ca.cert_pem)
    )
    certificate_channel = grpc.secure_channel(
        service.grpc_target,
        grpc.ssl_channel_credentials(
            root_certificates=ca.cert_pem, private_key=checkout.key_pem, certificate_chain=checkout.cert_pem
        ),
    )
    try:
        yield Deployment(
            vault,
            service,
            files.secrets,
            keys,
            pb_grpc.TokenServiceStub(key_channel),
            pb_grpc.TokenServiceStub(certificate_channel),
        )
    finally:
        key_channel.close()
        certificate_channel.close()
        service.terminate()


def test_a_recreated_secret_replaces_the_one_held_though_its_version_is_1_again(deployment):
    path = ORG_PATHS["recreated"]
    assert deployment.signs_with("recreated", deployment.secrets["recreated"])
    deployment.kv.delete_metadata_and_all_versions(path=path)
    deployment.secrets["recreated"] = new_secret()
    assert deployment.vault.write_secret(path, deployment.secrets["recreated"]) == 1
    wait_until(
        lambda: deployment.signs_with("recreated", deployment.secrets["recreated"]),
        timeout=20 * REFRESH_SECONDS,
        message="signing with the re-created secret",
    )
    deployment.assert_nothing_secret_logged()


def test_a_key_dropped_from_a_recreated_key_set_stops_working(deployment):
    dropped, kept = deployment.keys["dropped"], deployment.keys["kept"]
    hs256_open(deployment.mint_by_key(dropped), deployment.secrets["acme"])
    deployment.kv.delete_metadata_and_all_versions(path=API_KEYS)
    written = deployment.kv.create_or_update_secret(path=API_KEYS, secret={"reports": hash_api_key(kept)})
    assert written["data"]["version"] == 1
    code, reason, _ = wait_until(
        lambda: failure_of(lambda: deployment.mint_by_key(dropped)),
        timeout=20 * REFRESH_SECONDS,
        message="refusing the dropped key",
    )
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "CREDENTIALS_INVALID")
    hs256_open(deployment.mint_by_key(kept), deployment.secrets["acme"])
    deployment.assert_nothing_secret_logged()


def test_a_deleted_or_destroyed_latest_version_is_told_from_the_data_read_alone(deployment):
    path, original = ORG_PATHS["deleted"], deployment.secrets["deleted"]

    def deleted_refreshes() -> float:
        return deployment.scrape("tokenservice_vault_refresh_total", org="deleted", result="deleted")

    logins = deployment.service.logs().count(LOGGED_IN)
    deployment.kv.delete_latest_version_of_secret(path=path)
    wait_until(lambda: deleted_refreshes() >= 3, timeout=20 * REFRESH_SECONDS, message='three result="deleted"')
    deployment.kv.destroy_secret_versions(path=path, versions=[1])
    after_delete = deleted_refreshes()
    wait_until(
        lambda: deleted_refreshes() >= after_delete + 3,
        timeout=20 * REFRESH_SECONDS,
        message='three more result="deleted" once destroyed',
    )
    assert deployment.signs_with("deleted", original)
    logs = deployment.service.logs()
    assert "Vault denied reading" not in logs
    assert logs.count(LOGGED_IN) == logins, "a deleted version made the service log in again"
    unusable = [
        record
        for record in deployment.service.log_records()
        if record["message"] == "latest secret version unusable, keeping the last good one"
    ]
    assert unusable and all(record["org"] == "deleted" and record["kept_version"] == 1 for record in unusable)
    assert any("is deleted; undelete it" in record["error"] for record in unusable)
    assert "is destroyed; write a new version" in unusable[-1]["error"]
    assert deployment.scrape("tokenservice_vault_refresh_total", org="deleted", result="error") == 0
    wait_for_health(deployment.service.health_target, SERVING)
    deployment.assert_nothing_secret_logged()


def raw_status(vault: OpenBaoFileServer, path: str, token: str) -> tuple[int, list]:
    response = requests.get(f"{vault.addr}/v1/{path}", headers={"X-Vault-Token": token}, timeout=5)
    return response.status_code, response.json().get("errors")


def test_openbao_answers_403_alike_for_a_dead_token_and_a_denied_path(vault):
    """Why the service asks lookup-self before it logs in again: the status of a refused read tells nothing."""
    root = vault.client()
    root.sys.create_or_update_policy(POLICY, POLICY_FILE.read_text())
    vault.write_secret("kustomer/probe", new_secret())
    with_default = root.auth.token.create(policies=[POLICY], ttl="10m")["auth"]["client_token"]
    alone = root.auth.token.create(policies=[POLICY], no_default_policy=True, ttl="10m")["auth"]["client_token"]
    dead = root.auth.token.create(policies=[POLICY], ttl="10m")["auth"]["client_token"]
    root.auth.token.revoke(dead)
    assert raw_status(vault, "secret/data/kustomer/probe", with_default)[0] == 200
    assert raw_status(vault, "secret/data/elsewhere/chat", with_default)[0] == 403
    assert raw_status(vault, "secret/data/kustomer/probe", dead)[0] == 403
    # lookup-self tells them apart for a token with the default policy, not for one without it.
    assert raw_status(vault, "auth/token/lookup-self", with_default)[0] == 200
    assert raw_status(vault, "auth/token/lookup-self", dead)[0] == 403
    assert raw_status(vault, "auth/token/lookup-self", alone)[0] == 403
    # And a deleted latest version answers 404 with its metadata, to a token that may not read metadata.
    root.secrets.kv.v2.delete_latest_version_of_secret(path="kustomer/probe")
    response = requests.get(f"{vault.addr}/v1/secret/data/kustomer/probe", headers={"X-Vault-Token": alone}, timeout=5)
    assert response.status_code == 404
    assert response.json()["data"]["metadata"]["version"] == 1 and response.json()["data"]["metadata"]["deletion_time"]


def approle_logins(vault: OpenBaoFileServer, role: str) -> int:
    """Tokens the AppRole `role` has issued (each login makes one), as Vault counts them."""
    root = vault.client()
    accessors = root.auth.token.list_accessors()["data"]["keys"]
    return sum(
        root.auth.token.lookup_accessor(accessor)["data"]["meta"] == {"role_name": role} for accessor in accessors
    )


@pytest.mark.parametrize("default_policy", [False, True], ids=["shipped-policy-only", "with-default-policy"])
def test_a_denied_read_does_not_make_the_service_log_in_at_every_refresh(vault, tmp_path, default_policy):
    root = vault.client()
    root.sys.create_or_update_policy(POLICY, POLICY_FILE.read_text())
    if "approle/" not in root.sys.list_auth_methods():
        root.sys.enable_auth_method("approle")
    role = f"denied-{'default' if default_policy else 'alone'}"
    root.auth.approle.create_or_update_approle(
        role, token_policies=[POLICY], token_ttl="10m", token_no_default_policy=not default_policy
    )
    (tmp_path / "role_id").write_text(root.auth.approle.read_role_id(role)["data"]["role_id"])
    (tmp_path / "secret_id").write_text(root.auth.approle.generate_secret_id(role)["data"]["secret_id"])
    vault.write_secret("elsewhere/chat", new_secret())  # outside the policy
    config = tmp_path / "config.toml"
    config.write_text(
        f'refresh_interval_seconds = 0.2\nworkers = 1\n[vault]\naddr = "{vault.addr}"\n'
        f'auth = "approle"\nrole_id_file = "{tmp_path / "role_id"}"\n'
        f'secret_id_file = "{tmp_path / "secret_id"}"\n[orgs.default]\npath = "elsewhere/chat"\n'
    )
    service = ServiceProcess.start({}, ["--config", str(config)], wait_serving=False)
    try:
        time.sleep(4)
        refreshes = metric_value(
            urllib.request.urlopen(service.metrics_url, timeout=5).read().decode(),
            "tokenservice_vault_refresh_total",
            org="default",
            result="error",
        )
        logs = service.logs()
    finally:
        assert service.terminate() == 0
    assert refreshes >= 8
    assert "Vault denied reading secret/elsewhere/chat" in logs
    # The first login, then logins again that did not help at 0, ~1 and ~3 s (the next at ~7 s, if the
    # shutdown is slow); with lookup-self to vouch for the token, none. Before the fix: 2 per refresh.
    assert approle_logins(vault, role) <= (1 if default_policy else 5)


def test_a_key_set_too_stale_stops_api_keys_not_certificates_and_recovers(deployment):
    key = deployment.keys["kept"]
    hs256_open(deployment.mint_by_key(key), deployment.secrets["acme"])
    stopping = time.monotonic()  # the last good read was at most one interval before this
    deployment.vault.stop()
    try:
        code, reason, message = wait_until(
            lambda: failure_of(lambda: deployment.mint_by_key(key)),
            timeout=KEYS_MAX_STALENESS_SECONDS + 10 * REFRESH_SECONDS,
            message="refusing API keys",
        )
        assert time.monotonic() - stopping >= KEYS_MAX_STALENESS_SECONDS - 1.2 * REFRESH_SECONDS
        assert (code, reason) == (grpc.StatusCode.UNAVAILABLE, "API_KEYS_STALE")
        assert "retry" in message and "client certificate" in message
        hs256_open(deployment.mint_by_certificate("acme"), deployment.secrets["acme"])
        wait_for_health(deployment.service.health_target, NOT_SERVING, timeout=5)
        assert deployment.scrape("tokenservice_api_keys_fresh") == 0
        stale = [
            record
            for record in deployment.service.log_records()
            if record["message"].startswith("API key set is stale")
        ]
        assert stale and stale[-1]["max_staleness_seconds"] == KEYS_MAX_STALENESS_SECONDS
    finally:
        deployment.vault.start()
    wait_until(
        lambda: failure_of(lambda: deployment.mint_by_key(key)) is None, timeout=10, message="admitting API keys again"
    )
    wait_for_health(deployment.service.health_target, SERVING, timeout=5)
    assert deployment.scrape("tokenservice_api_keys_fresh") == 1
    assert deployment.service.process.poll() is None
    deployment.assert_nothing_secret_logged()
