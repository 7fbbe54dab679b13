"""The config.toml files the Kustomize base and overlays ship: the service accepts
them, and every org's secret lies where the Vault policy lets the service read."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import pytest

from service.config import load_config

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
            f"{config_file}: org {name}'s secret {data_path} is outside the Vault policy")


@pytest.mark.parametrize("config_file", CONFIGS, ids=lambda path: str(path.relative_to(DEPLOY)))
def test_the_service_accepts_the_config(config_file):
    config = load_config(config_file, {})
    assert config.vault.auth == "kubernetes"
    assert config.grpc_addr.endswith(":50051") and config.metrics_addr.endswith(":9090")
