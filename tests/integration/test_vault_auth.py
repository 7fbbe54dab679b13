"""AppRole login and several orgs, against a real OpenBao dev server."""

from __future__ import annotations

import uuid

import grpc
import pytest
from tokenservice.v1 import token_service_pb2 as pb

from service.config import load_config
from tests.servers import start_server, stop_server
from tests.support import hs256_open, new_secret

pytestmark = pytest.mark.integration


@pytest.fixture
def approle_files(openbao, tmp_path):
    """An AppRole whose policy may read only kustomer/* secrets; its role id and secret id in files."""
    client = openbao.client()
    if "approle/" not in client.sys.list_auth_methods():
        client.sys.enable_auth_method("approle")
    client.sys.create_or_update_policy("tokenservice-test", 'path "secret/data/kustomer/*" { capabilities = ["read"] }')
    role = f"tokenservice-{uuid.uuid4().hex[:8]}"
    client.auth.approle.create_or_update_approle(role, token_policies=["tokenservice-test"], token_ttl="1h")
    role_id = client.auth.approle.read_role_id(role)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(role)["data"]["secret_id"]
    (tmp_path / "role_id").write_text(role_id + "\n")
    (tmp_path / "secret_id").write_text(secret_id + "\n")
    return tmp_path / "role_id", tmp_path / "secret_id"


async def test_approle_login_and_several_orgs(openbao, approle_files, tmp_path):
    acme, globex = f"kustomer/acme-{uuid.uuid4().hex[:8]}", f"kustomer/globex-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(acme, acme_secret := new_secret())
    openbao.write_secret(globex, globex_secret := new_secret(), field="jwt_secret")
    config_file = tmp_path / "tokenservice.toml"
    config_file.write_text(f'''
default_org = "acme"
grpc_addr = "127.0.0.1:0"
metrics_addr = "127.0.0.1:0"
[vault]
addr = "{openbao.addr}"
auth = "approle"
role_id_file = "{approle_files[0]}"
secret_id_file = "{approle_files[1]}"
[orgs.acme]
path = "{acme}"
[orgs.globex]
path = "{globex}"
field = "jwt_secret"
''')
    running = await start_server(load_config(config_file, {}))
    try:
        await running.server.store.load_once()
        default = await running.stub.MintToken(pb.MintTokenRequest(email="a@example.com"))
        other = await running.stub.MintToken(pb.MintTokenRequest(email="g@example.com", org="globex"))
        hs256_open(default.token, acme_secret)
        hs256_open(other.token, globex_secret)
        verdict = await running.stub.VerifyToken(pb.VerifyTokenRequest(token=other.token, org="acme"))
        assert verdict.reason == "TOKEN_SIGNATURE_INVALID"
        assert (await running.stub.VerifyToken(pb.VerifyTokenRequest(token=other.token, org="globex"))).valid
    finally:
        await stop_server(running)


async def test_a_path_outside_the_policy_is_never_served(openbao, approle_files, tmp_path):
    openbao.write_secret("elsewhere/chat", new_secret())
    config = load_config(
        None,
        {},
        {
            "vault.addr": openbao.addr,
            "vault.auth": "approle",
            "vault.role_id_file": str(approle_files[0]),
            "vault.secret_id_file": str(approle_files[1]),
            "secret_path": "elsewhere/chat",
            "grpc_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
        },
    )
    running = await start_server(config)
    try:
        await running.server.store.load_once()
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await running.stub.MintToken(pb.MintTokenRequest(email="a@example.com"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await stop_server(running)
