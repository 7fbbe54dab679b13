"""The dev overlay's seed Job script, run with a POSIX sh against a real OpenBao dev server.

The script is taken from deploy/overlays/dev/seed-job.yaml as written; only
the two in-pod paths (the root token file and the mounted setup.sh) are mapped
to local ones. Kubernetes auth config is skipped (there is no pod CA/token
here; tests/deploy/test_vault_kubernetes_auth.py covers it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from service.dev import find_bao

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
JOB = DEPLOY / "overlays" / "dev" / "seed-job.yaml"


def job_script() -> str:
    """The `sh -ec` script of the Job's container: the `- |` block after `command:`."""
    lines = JOB.read_text().splitlines()
    start = next(index for index, line in enumerate(lines) if re.match(r"^\s*- \|\s*$", line))
    indent = len(lines[start]) - len(lines[start].lstrip()) + 2
    body = []
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    assert "command:" in "\n".join(lines[:start]) and body
    return "\n".join(body) + "\n"


def test_seed_job_configures_openbao_and_seeds_once(openbao, tmp_path):
    (tmp_path / "token").write_text(openbao.root_token)
    script = (job_script()
              .replace("/var/run/secrets/openbao-dev-root/token", str(tmp_path / "token"))
              .replace("/opt/vault-setup/setup.sh", str(DEPLOY / "vault" / "setup.sh")))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bao").symlink_to(find_bao())
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "VAULT_ADDR": openbao.addr,
           "BAO_ADDR": openbao.addr, "SA_NAMESPACE": "tokenservice-dev",
           "POLICY_FILE": str(DEPLOY / "vault" / "tokenservice-policy.hcl"),
           "K8S_AUTH_MOUNT": "kubernetes-dev-seed", "SKIP_AUTH_CONFIG": "1"}
    shell = shutil.which("dash") or "/bin/sh"
    first = subprocess.run([shell, "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "wrote a random dev secret" in first.stdout
    secret = openbao.read_secret("kustomer/example")
    assert re.fullmatch(r"[0-9a-f]{64}", secret), "32 random bytes, hex"

    again = subprocess.run([shell, "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "already set" in again.stdout
    assert openbao.read_secret("kustomer/example") == secret

    role = openbao.client().read("auth/kubernetes-dev-seed/role/tokenservice")["data"]
    assert role["bound_service_account_names"] == ["tokenservice"]
    assert role["bound_service_account_namespaces"] == ["tokenservice-dev"]
    assert role["audience"] == "vault"
    assert role["token_policies"] == ["tokenservice"]
