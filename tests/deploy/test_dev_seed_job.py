"""The dev overlay's seed Job script, run with a POSIX sh against a real OpenBao dev server.

The script is taken from deploy/overlays/dev/seed-job.yaml as written; only
the two in-pod paths (the root token file and the mounted setup.sh) are mapped
to local ones. Kubernetes auth config is skipped (there is no pod CA/token
here; tests/deploy/test_vault_kubernetes_auth.py covers it).

Every program the script runs is reached through a wrapper that records its
argv, as /proc/<pid>/cmdline shows it to anyone on the node: the secret and the
API key it writes must appear in none (they go to `bao kv put` on stdin).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import hvac
import pytest

from service.api_keys import parse_key_hashes
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
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) < indent:
            break
        body.append(line[indent:])
    assert "command:" in "\n".join(lines[:start]) and body
    return "\n".join(body) + "\n"


# The programs the Job's script and setup.sh run; PATH holds only their wrappers, so that one more
# program fails the script instead of escaping the record.
PROGRAMS = ("bao", "cat", "cut", "dirname", "od", "sed", "sh", "sha256sum", "sleep", "tr")


def recording_path(bin_dir: Path, log: Path) -> str:
    """A PATH of wrappers that append their argv (one argument per line, then a blank line) to `log` and
    run the real program."""
    bin_dir.mkdir()
    for name in PROGRAMS:
        real = find_bao() if name == "bao" else shutil.which(name, path="/usr/bin:/bin")
        assert real, f"{name} is missing on this machine"
        wrapper = bin_dir / name
        wrapper.write_text(
            f'#!/bin/sh\nprintf \'%s\\n\' "$0" "$@" "" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n'
        )
        wrapper.chmod(0o755)
    return str(bin_dir)


def forget(openbao, path: str) -> None:
    """Delete every version of an entry, so the Job finds it missing (the shared server may hold it)."""
    with contextlib.suppress(hvac.exceptions.InvalidPath):
        openbao.client().secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")


def test_seed_job_configures_openbao_and_seeds_once(openbao, tmp_path):
    for path in ("kustomer/example", "tokenservice/api-keys", "dev-only/api-key-helpdesk"):
        forget(openbao, path)
    (tmp_path / "token").write_text(openbao.root_token)
    script = (
        job_script()
        .replace("/var/run/secrets/openbao-dev-root/token", str(tmp_path / "token"))
        .replace("/opt/vault-setup/setup.sh", str(DEPLOY / "vault" / "setup.sh"))
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "bao").symlink_to(find_bao())
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "VAULT_ADDR": openbao.addr,
        "BAO_ADDR": openbao.addr,
        "SA_NAMESPACE": "tokenservice-dev",
        "POLICY_FILE": str(DEPLOY / "vault" / "tokenservice-policy.hcl"),
        "K8S_AUTH_MOUNT": "kubernetes-dev-seed",
        "SKIP_AUTH_CONFIG": "1",
    }
    shell = shutil.which("dash") or "/bin/sh"
    first = subprocess.run([shell, "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "wrote a random dev secret" in first.stdout
    secret = openbao.read_secret("kustomer/example")
    assert re.fullmatch(r"[0-9a-f]{64}", secret), "32 random bytes, hex"
    # The API key of the dev overlay's caller "helpdesk": its hash where the service reads the hashes,
    # the key itself at a path for the developer (which the tokenservice policy cannot read).
    assert "wrote a random dev API key for caller helpdesk" in first.stdout
    key = openbao.read_secret("dev-only/api-key-helpdesk", field="key")
    assert re.fullmatch(r"tks_[0-9a-f]{64}", key)
    hashes = openbao.client().secrets.kv.v2.read_secret_version(
        path="tokenservice/api-keys", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert hashes == {"helpdesk": "sha256:" + hashlib.sha256(key.encode()).hexdigest()}
    dev_callers = tomllib.loads((DEPLOY / "overlays" / "dev" / "config.toml").read_text())["callers"]
    assert parse_key_hashes(hashes, set(dev_callers)) == ({hashes["helpdesk"]: "helpdesk"}, [])
    assert not {"spiffe_id", "dns_name"} & set(dev_callers["helpdesk"]), "helpdesk is an API-key caller"
    assert key not in first.stdout + first.stderr

    again = subprocess.run([shell, "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "secret/kustomer/example already set" in again.stdout
    assert "secret/tokenservice/api-keys already set" in again.stdout
    assert openbao.read_secret("kustomer/example") == secret
    assert openbao.read_secret("dev-only/api-key-helpdesk", field="key") == key

    role = openbao.client().read("auth/kubernetes-dev-seed/role/tokenservice")["data"]
    assert role["bound_service_account_names"] == ["tokenservice"]
    assert role["bound_service_account_namespaces"] == ["tokenservice-dev"]
    assert role["audience"] == "vault"
    assert role["token_policies"] == ["tokenservice"]


def test_seed_job_puts_no_secret_in_any_command_line(openbao, tmp_path):
    for path in ("kustomer/example", "tokenservice/api-keys", "dev-only/api-key-helpdesk"):
        forget(openbao, path)
    token_file = tmp_path / "token"
    token_file.write_text(openbao.root_token)
    script = (
        job_script()
        .replace("/var/run/secrets/openbao-dev-root/token", str(token_file))
        .replace("/opt/vault-setup/setup.sh", str(DEPLOY / "vault" / "setup.sh"))
    )
    log = tmp_path / "argv.log"
    env = {
        "PATH": recording_path(tmp_path / "bin", log),
        "HOME": str(tmp_path),
        "VAULT_ADDR": openbao.addr,
        "BAO_ADDR": openbao.addr,
        "SA_NAMESPACE": "tokenservice-dev",
        "POLICY_FILE": str(DEPLOY / "vault" / "tokenservice-policy.hcl"),
        "K8S_AUTH_MOUNT": "kubernetes-dev-argv",
        "SKIP_AUTH_CONFIG": "1",
    }
    shell = shutil.which("dash") or "/bin/sh"
    completed = subprocess.run([shell, "-ec", script], env=env, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    secret = openbao.read_secret("kustomer/example")
    key = openbao.read_secret("dev-only/api-key-helpdesk", field="key")
    assert re.fullmatch(r"[0-9a-f]{64}", secret) and re.fullmatch(r"tks_[0-9a-f]{64}", key), "written whole"
    command_lines = [c for c in log.read_text().split("\n\n") if c.strip()]
    assert any("\nkv\nput\n" in c and "\nkustomer/example\n" in c for c in command_lines), "the record works"
    leaked = [c.replace("\n", " ") for c in command_lines if secret in c or key in c or openbao.root_token in c]
    assert leaked == [], "a secret in a command line"
