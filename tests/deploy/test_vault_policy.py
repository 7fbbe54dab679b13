"""deploy/vault/tokenservice-policy.hcl on a real OpenBao dev server: read the
org secrets and the API key hashes, and nothing else.

A token holding only that policy (no "default" policy) must read a secret
under kustomer/ and the entry tokenservice/api-keys, and be denied every other
path (its neighbours under tokenservice/ included) and every write, as
answered by the server both for real requests and by sys/capabilities.

deploy/vault/setup.sh with TRANSIT=1 enables a Transit mount and writes the
transit policies and role: the policy "tokenservice-transit", as OpenBao holds
it, grants update on <mount>/hmac/<key> and <mount>/verify/<key> (and their
/<algorithm>), read on <mount>/keys/<key>, nothing else (no KV at all), and
the role's token signs and reads the API key hashes but no org secret.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import subprocess
import uuid
from pathlib import Path

import hvac
import pytest
import requests

from service.api_keys import hash_api_key, new_api_key
from service.config import OrgConfig, VaultConfig
from service.dev import find_bao
from service.errors import SecretDeletedError, SecretSourceError
from service.secrets import VaultSecretSource
from service.vault_auth import TokenAuth, VaultSession
from tests.support import new_secret

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


def parse_policy(text: str) -> dict[str, list[str]]:
    """The path blocks of a policy file: path -> capabilities."""
    blocks = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', text)
    assert len(blocks) == len(re.findall(r"^path ", text, re.MULTILINE)), "every path block has capabilities only"
    return {path: sorted(c.strip().strip('"') for c in capabilities.split(",")) for path, capabilities in blocks}


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
    assert client.secrets.kv.v2.read_secret_version(path=nested, mount_point="secret", raise_on_deleted_version=True)[
        "data"
    ]["data"]["secret"]


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
    for neighbour in (
        "tokenservice/api-keys-old",
        "tokenservice/api-keys/nested",
        "tokenservice/other",
        "dev-only/api-key-helpdesk",
    ):
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
    problems = [
        f"{method} {where}: {status}"
        for method, where, body in denied
        if (status := status_of(client, method, where, body)) != 403
    ]
    assert problems == [], "expected 403 permission denied"
    # Nothing was changed by the attempts.
    assert (
        openbao.client().secrets.kv.v2.read_secret_version(
            path=path, mount_point="secret", raise_on_deleted_version=True
        )["data"]["metadata"]["version"]
        == 1
    )
    assert (
        openbao.client().secrets.kv.v2.read_secret_version(
            path=API_KEYS, mount_point="secret", raise_on_deleted_version=True
        )["data"]["data"]
        == keys
    )


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
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=API_KEYS, secret={"helpdesk": hash_api_key(new_api_key())}
    )
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


# ------------------------------------------------------------------------------------------ Transit

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
TRANSIT_POLICY = DEPLOY / "vault" / "tokenservice-transit-policy.hcl"


@dataclasses.dataclass
class TransitSetup:
    """What setup.sh's Transit part (TRANSIT=1) made, on a mount and under names of this test's own."""

    mount: str
    policy: str
    operator_policy: str
    api_keys_policy: str
    role: str
    output: str


def run_setup(openbao, tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        (bin_dir / "bao").symlink_to(find_bao())
    return subprocess.run(
        ["sh", str(DEPLOY / "vault" / "setup.sh")],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(tmp_path),
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            **env,
        },
    )


@pytest.fixture
def transit_setup(openbao, vault_kubernetes_auth, tmp_path) -> TransitSetup:
    """setup.sh with TRANSIT=1 on the Kubernetes auth mount of `vault_kubernetes_auth` (its config left alone),
    run twice: the second run must change nothing and say so."""
    suffix = uuid.uuid4().hex[:8]
    made = TransitSetup(
        f"transit-{suffix}",
        f"tokenservice-transit-{suffix}",
        f"tokenservice-transit-operator-{suffix}",
        f"tokenservice-api-keys-{suffix}",
        f"tokenservice-transit-{suffix}",
        "",
    )
    env = {
        "TRANSIT": "1",
        "SKIP_AUTH_CONFIG": "1",
        "K8S_AUTH_MOUNT": vault_kubernetes_auth.mount,
        "SA_NAMESPACE": vault_kubernetes_auth.account.namespace,
        "TRANSIT_MOUNT": made.mount,
        "TRANSIT_POLICY_NAME": made.policy,
        "TRANSIT_OPERATOR_POLICY_NAME": made.operator_policy,
        "API_KEYS_POLICY_NAME": made.api_keys_policy,
        "TRANSIT_ROLE_NAME": made.role,
    }
    first = run_setup(openbao, tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    again = run_setup(openbao, tmp_path, env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"Transit already enabled at {made.mount}/" in again.stdout
    return dataclasses.replace(made, output=first.stdout + again.stdout)


def granted(openbao, policy: str) -> dict[str, list[str]]:
    """The path blocks of a policy as Vault holds it: path -> capabilities."""
    return parse_policy(openbao.client().sys.read_acl_policy(policy)["data"]["policy"])


def transit_key(openbao, mount: str) -> str:
    """A new HMAC key on the mount, named as transit orgs' keys are (kustomer-<org>)."""
    name = f"kustomer-org-{uuid.uuid4().hex[:6]}"
    openbao.client().adapter.post(f"/v1/{mount}/keys/{name}", json={"type": "hmac", "key_size": 32})
    return name


def test_setup_enables_transit_and_a_role_without_kv_org_access(transit_setup, openbao, vault_kubernetes_auth):
    mount = transit_setup.mount
    assert openbao.client().adapter.get(f"/v1/sys/mounts/{mount}")["data"]["type"] == "transit"
    role = openbao.client().read(f"auth/{vault_kubernetes_auth.mount}/role/{transit_setup.role}")["data"]
    assert role["bound_service_account_names"] == ["tokenservice"]
    assert role["bound_service_account_namespaces"] == [vault_kubernetes_auth.account.namespace]
    assert role["audience"] == "vault"
    assert sorted(role["token_policies"]) == sorted([transit_setup.policy, transit_setup.api_keys_policy])
    # The shipped files, their mount prefixes adapted to the mount.
    assert granted(openbao, transit_setup.api_keys_policy) == {"secret/data/tokenservice/api-keys": ["read"]}
    operator = granted(openbao, transit_setup.operator_policy)
    assert operator[f"{mount}/wrapping_key"] == ["read"] and operator[f"{mount}/keys/+/import"] == ["update"]
    assert all(path.startswith(f"{mount}/") for path in operator)


def test_the_transit_policy_grants_exactly_hmac_verify_and_key_metadata(transit_setup, openbao):
    """Update on <mount>/hmac/<key> and <mount>/verify/<key> (and their /<algorithm>), read on
    <mount>/keys/<key>: nothing that reads, exports, backs up, rotates or reconfigures a key, and no KV."""
    mount = transit_setup.mount
    assert granted(openbao, transit_setup.policy) == {
        f"{mount}/hmac/kustomer-*": ["update"],
        f"{mount}/verify/kustomer-*": ["update"],
        f"{mount}/keys/kustomer-*": ["read"],
    }
    assert granted(openbao, transit_setup.policy) == {
        path.replace("transit/", f"{mount}/", 1): capabilities
        for path, capabilities in parse_policy(TRANSIT_POLICY.read_text()).items()
    }, "as shipped"
    key, other = transit_key(openbao, mount), f"other-{uuid.uuid4().hex[:6]}"
    openbao.client().adapter.post(f"/v1/{mount}/keys/{other}", json={"type": "hmac", "key_size": 32})
    org_path = f"kustomer/transit-{uuid.uuid4().hex[:6]}"
    openbao.write_secret(org_path, new_secret())
    root = openbao.client()
    token = root.auth.token.create(policies=[transit_setup.policy], no_default_policy=True, ttl="10m")["auth"][
        "client_token"
    ]
    client = hvac.Client(url=openbao.addr, token=token)

    data = base64.b64encode(b"header.claims").decode()
    signed = client.adapter.post(f"/v1/{mount}/hmac/{key}", json={"input": data})["data"]["hmac"]
    assert signed.startswith("vault:v1:")
    batch = client.adapter.post(
        f"/v1/{mount}/hmac/{key}/sha2-256", json={"batch_input": [{"input": data}, {"input": data}]}
    )["data"]["batch_results"]
    assert [result["hmac"] for result in batch] == [signed, signed]
    for path in (f"{mount}/verify/{key}", f"{mount}/verify/{key}/sha2-256"):
        assert client.adapter.post(f"/v1/{path}", json={"input": data, "hmac": signed})["data"]["valid"] is True
    metadata = client.adapter.get(f"/v1/{mount}/keys/{key}")["data"]
    assert metadata["latest_version"] == 1 and metadata["type"] == "hmac" and not metadata["exportable"]

    denied = [
        ("GET", f"{mount}/export/hmac-key/{key}", None),
        ("GET", f"{mount}/backup/{key}", None),
        ("POST", f"{mount}/restore/{key}", {"backup": "x"}),
        ("POST", f"{mount}/keys/{key}/rotate", None),
        ("POST", f"{mount}/keys/{key}/config", {"exportable": True}),
        ("DELETE", f"{mount}/keys/{key}", None),
        ("POST", f"{mount}/keys/{key}/import_version", {"ciphertext": "x"}),
        ("POST", f"{mount}/keys/{key}/trim", {"min_available_version": 1}),
        ("GET", f"{mount}/wrapping_key", None),
        ("LIST", f"{mount}/keys", None),
        ("POST", f"{mount}/keys/kustomer-new-{uuid.uuid4().hex[:6]}", {"type": "hmac"}),
        ("POST", f"{mount}/hmac/{other}", {"input": data}),
        ("POST", f"{mount}/verify/{other}", {"input": data, "hmac": signed}),
        ("GET", f"{mount}/keys/{other}", None),
        ("POST", f"{mount}/encrypt/{key}", {"plaintext": data}),
        ("POST", f"{mount}/datakey/plaintext/{key}", None),
        ("POST", f"{mount}/random", None),
        ("GET", f"{mount}/config/keys", None),
        ("GET", f"secret/data/{org_path}", None),
        ("GET", f"secret/data/{API_KEYS}", None),
        ("LIST", "secret/metadata/kustomer", None),
        ("GET", "sys/mounts", None),
        ("POST", "auth/token/create", {"policies": ["default"]}),
    ]
    problems = [
        f"{method} {where}: {status}"
        for method, where, body in denied
        if (status := status_of(client, method, where, body)) != 403
    ]
    assert problems == [], "expected 403 permission denied"
    capabilities = {
        f"{mount}/hmac/{key}": ["update"],
        f"{mount}/hmac/{key}/sha2-256": ["update"],
        f"{mount}/verify/{key}": ["update"],
        f"{mount}/verify/{key}/sha2-256": ["update"],
        f"{mount}/keys/{key}": ["read"],
        f"{mount}/export/hmac-key/{key}": ["deny"],
        f"{mount}/backup/{key}": ["deny"],
        f"{mount}/wrapping_key": ["deny"],
        f"{mount}/hmac/{other}": ["deny"],
        f"secret/data/{org_path}": ["deny"],
        f"secret/data/{API_KEYS}": ["deny"],
        "secret/data/kustomer/any-org": ["deny"],
    }
    response = root.adapter.post("/v1/sys/capabilities", json={"token": token, "paths": list(capabilities)})
    assert {path: sorted(response["data"][path]) for path in capabilities} == capabilities


def test_the_transit_role_signs_and_reads_the_api_keys_but_no_org_secret(transit_setup, openbao, vault_kubernetes_auth):
    """Logged in as the pod would (its projected token, the transit role): HMAC with a transit org's key,
    the API key hashes, and 403 on the KV org secrets."""
    mount, auth = transit_setup.mount, vault_kubernetes_auth
    key = transit_key(openbao, mount)
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=API_KEYS, secret={"helpdesk": hash_api_key(new_api_key())}
    )
    org_path = f"kustomer/transit-{uuid.uuid4().hex[:6]}"
    openbao.write_secret(org_path, new_secret())
    login = hvac.Client(url=openbao.addr).auth.kubernetes.login(
        role=transit_setup.role, jwt=auth.token_file.read_text(), mount_point=auth.mount, use_token=False
    )["auth"]
    # "default" (lookup-self, renew-self) as with the KV role; nothing else.
    assert set(login["token_policies"]) == {"default", transit_setup.policy, transit_setup.api_keys_policy}
    client = hvac.Client(url=openbao.addr, token=login["client_token"])
    data = base64.b64encode(b"header.claims").decode()
    assert client.adapter.post(f"/v1/{mount}/hmac/{key}", json={"input": data})["data"]["hmac"]
    assert (
        "helpdesk"
        in client.secrets.kv.v2.read_secret_version(path=API_KEYS, mount_point="secret", raise_on_deleted_version=True)[
            "data"
        ]["data"]
    )
    assert status_of(client, "GET", f"secret/data/{org_path}") == 403
    assert status_of(client, "GET", f"secret/data/kustomer/{key.removeprefix('kustomer-')}") == 403
