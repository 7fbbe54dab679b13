"""Fixtures for the deployment tests: a real Prometheus (tests/deploy/prometheus.py),
and a local Kubernetes TokenReview endpoint for Vault's Kubernetes auth method
(tests/deploy/kubernetes.py).

Every server here listens on 127.0.0.1 only and is stopped by its fixture.

- `start_prometheus(targets, rule_files)`: a Prometheus scraping the given
  host:port targets every second; use it as a context manager.
- `kubernetes_api`: the TokenReview endpoint, for the whole session.
- `vault_kubernetes_auth`: OpenBao's Kubernetes auth method configured against it.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from service.dev import find_bao
from tests.deploy.kubernetes import KubernetesAuth, KubernetesTokenReviewAPI, ServiceAccount
from tests.deploy.prometheus import Prometheus


@pytest.fixture
def start_prometheus(tmp_path):
    """A factory: start_prometheus(targets, rule_files=(), labels=None) -> Prometheus (a context manager)."""

    def start(targets: list[str], rule_files: Sequence[Path] = (), labels: dict[str, str] | None = None) -> Prometheus:
        return Prometheus(targets, rule_files, labels, workdir=tmp_path / f"prometheus-{uuid.uuid4().hex[:6]}")

    return start


@pytest.fixture(scope="session")
def kubernetes_api(tmp_path_factory) -> Iterator[KubernetesTokenReviewAPI]:
    """A local HTTPS Kubernetes TokenReview endpoint (see tests/deploy/kubernetes.py)."""
    api = KubernetesTokenReviewAPI(tmp_path_factory.mktemp("kubernetes-api"))
    api.start()
    try:
        yield api
    finally:
        api.stop()


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
    (bin_dir / "bao").symlink_to(find_bao())
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAULT_ADDR": openbao.addr,
        "VAULT_TOKEN": openbao.root_token,
        "K8S_AUTH_MOUNT": mount,
        "SA_NAMESPACE": "tokenservice-test",
        "SA_NAME": "tokenservice",
        "ROLE_NAME": "tokenservice",
        "POLICY_NAME": "tokenservice",
        "KUBERNETES_HOST": kubernetes_api.host,
        "KUBERNETES_CA_CERT_FILE": str(kubernetes_api.ca_file),
        "TOKEN_REVIEWER_JWT_FILE": str(reviewer_file),
    }
    setup = Path(__file__).resolve().parents[2] / "deploy" / "vault" / "setup.sh"
    completed = subprocess.run(["sh", str(setup)], env=env, capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    account = ServiceAccount("tokenservice-test", "tokenservice", str(uuid.uuid4()))
    token_file = tmp_path / "vault-token"
    kubernetes_api.issue_token(account, audiences=["vault"], path=token_file)
    return KubernetesAuth(mount, "tokenservice", "tokenservice", account, "vault", token_file)
