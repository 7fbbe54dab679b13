"""The config.toml files the Kustomize base and overlays ship: the service accepts
them (with the Secret-mounted files made locally, tests/deploy/shipped.py), caller
authentication is on, and every org's secret and the API key hashes lie where the
Vault policy lets the service read."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from service.config import load_config
from tests.deploy.shipped import example_callers, with_local_files

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIGS = sorted(DEPLOY.glob("base/config.toml")) + sorted(DEPLOY.glob("overlays/*/config.toml"))
POLICY = DEPLOY / "vault" / "tokenservice-policy.hcl"


def readable_globs() -> list[str]:
    """The paths the policy grants read on (with the KV mount prefix)."""
    text = POLICY.read_text()
    globs = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', text)
    assert globs, "the policy has path blocks"
    for _, capabilities in globs:
        assert [c.strip().strip('"') for c in capabilities.split(",")] == ["read"], "read only"
    return [glob for glob, _ in globs]


def test_there_is_a_config_for_base_and_every_overlay():
    overlays = {path.name for path in (DEPLOY / "overlays").iterdir() if path.is_dir()}
    assert {path.parent.name for path in CONFIGS} == overlays | {"base"}


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_every_org_secret_is_readable_under_the_policy(config_file):
    config = tomllib.loads(config_file.read_text())
    mount = config.get("vault", {}).get("kv_mount", "secret")
    orgs = config["orgs"]
    assert config["default_org"] in orgs
    for name, org in orgs.items():
        data_path = f"{mount}/data/{org['path'].strip('/')}"
        assert any(fnmatch.fnmatchcase(data_path, glob) for glob in readable_globs()), (
            f"{config_file}: org {name}'s secret {data_path} is outside the Vault policy"
        )


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_the_api_key_hashes_are_readable_under_the_policy(config_file):
    config = tomllib.loads(config_file.read_text())
    mount = config.get("vault", {}).get("kv_mount", "secret")
    data_path = f"{mount}/data/{config['auth']['api_keys_path'].strip('/')}"
    assert any(fnmatch.fnmatchcase(data_path, glob) for glob in readable_globs()), (
        f"{config_file}: the API key hashes at {data_path} are outside the Vault policy"
    )


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_the_service_accepts_the_config(config_file, tmp_path):
    text, files = with_local_files(config_file.read_text(), tmp_path, "tokenservice")
    local = tmp_path / "config.toml"
    local.write_text(text)
    config = load_config(local, {})
    assert config.vault.auth == "kubernetes"
    assert config.grpc_addr.endswith(":50051") and config.metrics_addr.endswith(":9090")
    tls = config.tls
    assert tls is not None and config.health_addr is not None and tls.api_key_addr is not None
    assert config.health_addr.endswith(":50052") and tls.api_key_addr.endswith(":50053")
    # Caller authentication on, mTLS on grpc_addr, API keys from Vault, an audit trail keyed by a file.
    assert config.auth.enabled and not config.auth.insecure_no_caller_auth
    assert tls.client_ca_file and config.auth.api_keys_path
    assert config.audit.output == "stdout" and config.audit.fingerprint_key_file == str(files.fingerprint_key_file)
    certificate_caller, api_key_caller = example_callers(tomllib.loads(text))
    for caller in (config.auth.callers[certificate_caller.name], config.auth.callers[api_key_caller.name]):
        # Narrow examples: named orgs (no "*"), minting only, a limited rate.
        assert "*" not in caller.orgs and caller.orgs <= set(config.orgs)
        assert "MintTokens" not in caller.rpcs and caller.rate_per_second <= 100


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_the_secret_files_are_where_the_pod_mounts_them(config_file):
    """The paths the Deployment mounts its Secrets at (deploy/check_rendered.py checks the mounts)."""
    config = tomllib.loads(config_file.read_text())
    assert config["tls"] == {
        **config["tls"],
        "cert_file": "/etc/tokenservice/tls/tls.crt",
        "key_file": "/etc/tokenservice/tls/tls.key",
        "client_ca_file": "/etc/tokenservice/caller-ca/ca.crt",
    }
    assert config["audit"]["fingerprint_key_file"] == "/etc/tokenservice/audit/fingerprint-key"
