"""`tokenservice serve --config` runs with the config.toml the overlays ship.

Each overlay's config.toml is used as written, except for what only a cluster
has: Vault's address becomes a real local OpenBao, the Kubernetes auth mount
and the projected token file become those of the `vault_kubernetes_auth`
fixture (set up by deploy/vault/setup.sh against a local TokenReview
endpoint), the org's secret path gets a fresh secret, and the listen
addresses become loopback ports (through the environment, as ServiceProcess does).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2, token_service_pb2_grpc

from tests.conftest import new_secret
from tests.support import ServiceProcess, hs256_open

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def substitute(text: str, pattern: str, replacement: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"expected exactly one match of {pattern!r} in the shipped config"
    return result


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_config_serves_tokens(overlay, openbao, vault_kubernetes_auth, tmp_path):
    auth = vault_kubernetes_auth
    path = f"kustomer/shipped-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, secret := new_secret())
    text = (DEPLOY / "overlays" / overlay / "config.toml").read_text()
    text = substitute(text, r'^addr = ".*"$', f'addr = "{openbao.addr}"')
    text = substitute(text, r'^kubernetes_mount = ".*"$', f'kubernetes_mount = "{auth.mount}"')
    text = substitute(text, r'^kubernetes_token_file = ".*"$', f'kubernetes_token_file = "{auth.token_file}"')
    text = substitute(text, r'^path = "kustomer/example"$', f'path = "{path}"')
    assert 'role = "tokenservice"' in text and auth.role == "tokenservice"
    config_file = tmp_path / "config.toml"
    config_file.write_text(text)

    service = ServiceProcess.start({}, ["--config", str(config_file)])
    try:
        with grpc.insecure_channel(service.grpc_target) as channel:
            response = token_service_pb2_grpc.TokenServiceStub(channel).MintToken(
                token_service_pb2.MintTokenRequest(email="jane@example.com"), timeout=5)
        _, claims = hs256_open(response.token, secret)
        assert claims["email"] == "jane@example.com"
        assert response.secret_version == 1
        logins = [record for record in service.log_records() if record.get("message") == "logged in to Vault"]
        assert logins and logins[0].get("auth") == "kubernetes"
    finally:
        assert service.terminate() == 0
