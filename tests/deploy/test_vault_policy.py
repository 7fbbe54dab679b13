"""deploy/vault/tokenservice-policy.hcl on a real OpenBao dev server: read the
org secrets and the API key hashes, and nothing else.

A token holding only that policy (no "default" policy) must read a secret
under kustomer/ and the entry tokenservice/api-keys, and be denied every other
path (its neighbours under tokenservice/ included) and every write, as
answered by the server both for real requests and by sys/capabilities.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import hvac
import pytest
import requests

from service.api_keys import hash_api_key, new_api_key
from service.config import OrgConfig, VaultConfig
from service.errors import SecretDeletedError, SecretSourceError
from service.secrets import VaultSecretSource
from service.vault_auth import TokenAuth, VaultSession
from tests.conftest import new_secret

pytestmark = pytest.mark.integration

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "tokenservice-policy.hcl"
API_KEYS = "tokenservice/api-keys"  # auth.api_keys_path of every shipped config.toml (test_deploy_config.py)


@pytest.fixture
def policy_token(openbao) -> tuple[hvac.Client, str]:
    """A client whose token holds only the tokenservice policy, and a fresh org secret path it may read."""
    root = openbao.client()
    name = f"tokenservice-{uuid.uuid4().hex[:8]}"
    root.sys.create_or_update_policy(name, POLICY.read_text())
    token = root.auth.token.create(policies=[name], no_default_policy=True, ttl="10m")["auth"]["client_token"]
    path = f"kustomer/org-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, new_secret())
    openbao.write_secret(f"elsewhere-{uuid.uuid4().hex[:8]}/chat", new_secret())
    return hvac.Client(url=openbao.addr, token=token), path


def status_of(client: hvac.Client, method: str, path: str, json: dict | None = None) -> int:
    """The HTTP status of one raw request with the client's token (LIST is a real HTTP method to Vault)."""
    headers = {"X-Vault-Token": client.token}
    if method == "PATCH":
        headers["Content-Type"] = "application/merge-patch+json"
    return requests.request(method, f"{client.url}/v1/{path}", json=json, headers=headers, timeout=10).status_code


def test_reads_the_org_secret(policy_token, openbao):
    client, path = policy_token
    read = client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"]["secret"] == openbao.read_secret(path)
    assert read["data"]["metadata"]["version"] == 1
    nested = f"{path}/nested"
    openbao.write_secret(nested, new_secret())
    assert client.secrets.kv.v2.read_secret_version(path=nested, mount_point="secret",
                                                    raise_on_deleted_version=True)["data"]["data"]["secret"]


def test_reads_the_api_key_hashes(policy_token, openbao):
    client, _ = policy_token
    hashes = {"helpdesk": f"{hash_api_key(new_api_key())} {hash_api_key(new_api_key())}"}
    written = openbao.client().secrets.kv.v2.create_or_update_secret(path=API_KEYS, secret=hashes)
    read = client.secrets.kv.v2.read_secret_version(path=API_KEYS, mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"] == hashes
    assert read["data"]["metadata"]["version"] == written["data"]["version"]


def test_every_write_and_every_other_path_is_denied(policy_token, openbao):
    client, path = policy_token
    keys = {"helpdesk": hash_api_key(new_api_key())}
    openbao.client().secrets.kv.v2.create_or_update_secret(path=API_KEYS, secret=keys)
    for neighbour in ("tokenservice/api-keys-old", "tokenservice/api-keys/nested", "tokenservice/other",
                      "dev-only/api-key-helpdesk"):
        openbao.client().secrets.kv.v2.create_or_update_secret(path=neighbour, secret={"key": new_api_key()})
    payload = {"data": {"secret": new_secret()}}
    denied = [
        # Writes to the org secret itself, in every KV v2 form.
        ("POST", f"secret/data/{path}", payload),
        ("PUT", f"secret/data/{path}", payload),
        ("PATCH", f"secret/data/{path}", payload),
        ("DELETE", f"secret/data/{path}", None),
        ("POST", f"secret/delete/{path}", {"versions": [1]}),
        ("POST", f"secret/undelete/{path}", {"versions": [1]}),
        ("POST", f"secret/destroy/{path}", {"versions": [1]}),
        ("GET", f"secret/metadata/{path}", None),
        ("POST", f"secret/metadata/{path}", {"max_versions": 1}),
        ("DELETE", f"secret/metadata/{path}", None),
        ("LIST", "secret/metadata/kustomer", None),
        ("LIST", "secret/metadata/", None),
        # A new secret under kustomer/.
        ("POST", f"secret/data/kustomer/new-{uuid.uuid4().hex[:6]}", payload),
        # The API key hashes: read only, and that one entry only.
        ("POST", f"secret/data/{API_KEYS}", {"data": {"helpdesk": hash_api_key(new_api_key())}}),
        ("PUT", f"secret/data/{API_KEYS}", {"data": {"helpdesk": hash_api_key(new_api_key())}}),
        ("PATCH", f"secret/data/{API_KEYS}", {"data": {"helpdesk": hash_api_key(new_api_key())}}),
        ("DELETE", f"secret/data/{API_KEYS}", None),
        ("POST", f"secret/delete/{API_KEYS}", {"versions": [1]}),
        ("POST", f"secret/destroy/{API_KEYS}", {"versions": [1]}),
        ("GET", f"secret/metadata/{API_KEYS}", None),
        ("DELETE", f"secret/metadata/{API_KEYS}", None),
        ("LIST", "secret/metadata/tokenservice", None),
        ("GET", "secret/data/tokenservice/api-keys-old", None),
        ("GET", "secret/data/tokenservice/api-keys/nested", None),
        ("GET", "secret/data/tokenservice/other", None),
        ("GET", "secret/data/tokenservice", None),
        ("GET", "secret/data/dev-only/api-key-helpdesk", None),
        # Other secrets and the engine's config.
        ("GET", "secret/data/elsewhere/chat", None),
        ("GET", "secret/data/kustomer", None),
        ("GET", "secret/config", None),
        ("POST", "secret/config", {"max_versions": 1}),
        ("GET", "cubbyhole/anything", None),
        ("POST", "cubbyhole/anything", {"value": "x"}),
        # The server itself.
        ("GET", "sys/mounts", None),
        ("POST", "sys/mounts/evil", {"type": "kv"}),
        ("GET", "sys/policies/acl/default", None),
        ("POST", "sys/policies/acl/evil", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
        ("GET", "sys/auth", None),
        ("POST", "sys/auth/evil", {"type": "userpass"}),
        ("POST", "auth/token/create", {"policies": ["default"]}),
        ("LIST", "auth/token/accessors", None),
        ("GET", "sys/audit", None),
        ("POST", "sys/seal", None),
    ]
    problems = [f"{method} {where}: {status}" for method, where, body in denied
                if (status := status_of(client, method, where, body)) != 403]
    assert problems == [], "expected 403 permission denied"
    # Nothing was changed by the attempts.
    assert openbao.client().secrets.kv.v2.read_secret_version(
        path=path, mount_point="secret", raise_on_deleted_version=True)["data"]["metadata"]["version"] == 1
    assert openbao.client().secrets.kv.v2.read_secret_version(
        path=API_KEYS, mount_point="secret", raise_on_deleted_version=True)["data"]["data"] == keys


def test_capabilities_are_exactly_read_on_org_secrets_and_api_keys(policy_token, openbao):
    client, path = policy_token
    paths = {
        f"secret/data/{path}": ["read"],
        "secret/data/kustomer/any-org": ["read"],
        f"secret/data/{API_KEYS}": ["read"],
        f"secret/metadata/{API_KEYS}": ["deny"],
        f"secret/delete/{API_KEYS}": ["deny"],
        "secret/data/tokenservice/api-keys-old": ["deny"],
        "secret/data/tokenservice/api-keys/nested": ["deny"],
        "secret/data/tokenservice/other": ["deny"],
        f"secret/metadata/{path}": ["deny"],
        f"secret/delete/{path}": ["deny"],
        f"secret/destroy/{path}": ["deny"],
        "secret/data/elsewhere/chat": ["deny"],
        "secret/data/kustomer": ["deny"],
        "sys/policies/acl/tokenservice": ["deny"],
        "auth/token/create": ["deny"],
        "auth/kubernetes/login": ["deny"],
    }
    # sys/capabilities-self itself needs the default policy, so ask as root about the token.
    response = openbao.client().adapter.post("/v1/sys/capabilities", json={"token": client.token, "paths": list(paths)})
    found = {where: sorted(response["data"][where]) for where in paths}
    assert found == paths


def test_the_service_needs_nothing_beyond_the_policy_even_for_a_deleted_version(policy_token, openbao):
    """The service's own reader, logged in with a token holding only this policy (no lookup-self, no
    metadata): it reads the secret and the key set, and tells a deleted or destroyed latest version."""
    client, path = policy_token
    openbao.client().secrets.kv.v2.create_or_update_secret(path=API_KEYS,
                                                            secret={"helpdesk": hash_api_key(new_api_key())})
    vault = VaultConfig(addr=openbao.addr, token=client.token)
    source = VaultSecretSource(vault, VaultSession(vault, TokenAuth(client.token)))
    assert source.read(OrgConfig("acme", path)).value == openbao.read_secret(path)
    assert "helpdesk" in source.read_entry(API_KEYS).data
    kv = openbao.client().secrets.kv.v2
    kv.delete_latest_version_of_secret(path=path)
    with pytest.raises(SecretDeletedError, match=r"latest version \(1\) of secret/.* is deleted"):
        source.read(OrgConfig("acme", path))
    kv.destroy_secret_versions(path=path, versions=[1])
    with pytest.raises(SecretDeletedError, match="is destroyed"):
        source.read(OrgConfig("acme", path))
    kv.delete_metadata_and_all_versions(path=path)
    with pytest.raises(SecretSourceError, match="no entry at") as raised:
        source.read(OrgConfig("acme", path))
    assert not isinstance(raised.value, SecretDeletedError)
