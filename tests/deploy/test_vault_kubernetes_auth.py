"""Vault's Kubernetes auth method, as deploy/vault/setup.sh configures it, on a real OpenBao.

OpenBao sends TokenReview requests over HTTPS to a local stand-in for the
Kubernetes API server (the `kubernetes_api` fixture: real TLS with a CA made
at test time, real signed service-account JWTs). The login is made with hvac
directly, with the token read from a file as the pod's projected volume
(audience "vault") provides it. The service's own use of the method is the
lead's (service/vault_auth.py); these fixtures are there for its tests too.
"""

from __future__ import annotations

import uuid

import hvac
import pytest

from tests.deploy.kubernetes import ServiceAccount
from tests.support import new_secret

pytestmark = pytest.mark.integration


def login(openbao, auth, jwt: str) -> dict:
    client = hvac.Client(url=openbao.addr)
    return client.auth.kubernetes.login(role=auth.role, jwt=jwt, mount_point=auth.mount, use_token=False)["auth"]


def test_service_account_token_file_logs_in_and_reads_the_org_secret(openbao, kubernetes_api, vault_kubernetes_auth):
    auth = vault_kubernetes_auth
    reviews_before = len(kubernetes_api.reviews)
    result = login(openbao, auth, auth.token_file.read_text())
    assert "tokenservice" in result["policies"]
    assert result["metadata"]["service_account_name"] == "tokenservice"
    assert result["metadata"]["service_account_namespace"] == "tokenservice-test"
    assert result["lease_duration"] == 3600  # TOKEN_TTL=1h from setup.sh

    # OpenBao asked the API server, with the reviewer token, for audience "vault".
    review = kubernetes_api.reviews[reviews_before]
    assert review["caller_authenticated"]
    assert review["request"]["spec"]["audiences"] == ["vault"]

    # The token it got reads an org secret (the policy is tested on its own in test_vault_policy.py).
    path = f"kustomer/k8s-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, secret := new_secret())
    client = hvac.Client(url=openbao.addr, token=result["client_token"])
    read = client.secrets.kv.v2.read_secret_version(path=path, mount_point="secret", raise_on_deleted_version=True)
    assert read["data"]["data"]["secret"] == secret
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.kv.v2.create_or_update_secret(path=path, secret={"secret": new_secret()}, mount_point="secret")


def test_a_rotated_token_file_keeps_working(openbao, kubernetes_api, vault_kubernetes_auth):
    """The kubelet rewrites the projected token before it expires; a login reads the file anew."""
    auth = vault_kubernetes_auth
    first = auth.token_file.read_text()
    kubernetes_api.issue_token(auth.account, audiences=["vault"], path=auth.token_file)
    kubernetes_api.revoke(first)
    assert login(openbao, auth, auth.token_file.read_text())["client_token"]
    with pytest.raises(hvac.exceptions.VaultError):
        login(openbao, auth, first)


@pytest.mark.parametrize(
    "case",
    [
        "not issued by the API server",
        "audience is the API server, not vault",
        "another service account",
        "another namespace",
        "empty",
    ],
)
def test_wrong_tokens_are_refused(openbao, kubernetes_api, vault_kubernetes_auth, case):
    auth = vault_kubernetes_auth
    account = auth.account
    if case == "not issued by the API server":
        jwt = kubernetes_api.issue_token(account, audiences=["vault"])
        kubernetes_api.revoke(jwt)
    elif case == "audience is the API server, not vault":
        jwt = kubernetes_api.issue_token(account, audiences=["https://kubernetes.default.svc"])
    elif case == "another service account":
        jwt = kubernetes_api.issue_token(ServiceAccount(account.namespace, "default", str(uuid.uuid4())), ["vault"])
    elif case == "another namespace":
        jwt = kubernetes_api.issue_token(ServiceAccount("other", account.name, str(uuid.uuid4())), ["vault"])
    else:
        jwt = ""
    with pytest.raises((hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.Unauthorized)):
        login(openbao, auth, jwt)


def test_setup_script_is_idempotent(openbao, vault_kubernetes_auth, kubernetes_api, tmp_path):
    """Running setup.sh again on a configured server changes nothing and still succeeds."""
    import subprocess
    from pathlib import Path

    from service.dev import find_bao

    bin_dir = tmp_path / "again-bin"
    bin_dir.mkdir()
    (bin_dir / "bao").symlink_to(find_bao())
    reviewer = tmp_path / "again-reviewer.jwt"
    reviewer.write_text(kubernetes_api.reviewer_jwt)
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "K8S_AUTH_MOUNT": vault_kubernetes_auth.mount,
        "SA_NAMESPACE": "tokenservice-test",
        "KUBERNETES_HOST": kubernetes_api.host,
        "KUBERNETES_CA_CERT_FILE": str(kubernetes_api.ca_file),
        "TOKEN_REVIEWER_JWT_FILE": str(reviewer),
    }
    setup = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "setup.sh"
    completed = subprocess.run(["sh", str(setup)], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr
    assert "already enabled" in completed.stdout
    assert login(openbao, vault_kubernetes_auth, vault_kubernetes_auth.token_file.read_text())["client_token"]
