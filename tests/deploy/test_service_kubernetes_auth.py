"""The service logs in to a real OpenBao with Kubernetes auth: its service-account
token file, a local TokenReview endpoint in place of the API server, logins
again after the file rotates and after its Vault token expires."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from tokenservice.v1 import token_service_pb2 as pb

from service.config import load_config
from tests.servers import start_server, stop_server
from tests.support import hs256_open, new_secret, wait_until_async

pytestmark = pytest.mark.integration


async def test_service_logs_in_with_its_token_file_and_again_after_rotation_and_expiry(
    openbao, kubernetes_api, vault_kubernetes_auth, caplog
):
    auth = vault_kubernetes_auth
    # Short Vault tokens, so that the test sees them expire and the service log in again.
    openbao.client().adapter.post(
        f"/v1/auth/{auth.mount}/role/{auth.role}", json={"token_ttl": "2s", "token_max_ttl": "3s"}
    )
    path = f"kustomer/k8s-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, secret := new_secret())
    config = load_config(
        None,
        {},
        {
            "vault.addr": openbao.addr,
            "vault.auth": "kubernetes",
            "vault.kubernetes_mount": auth.mount,
            "vault.kubernetes_role": auth.role,
            "vault.kubernetes_token_file": str(auth.token_file),
            "secret_path": path,
            "grpc_addr": "127.0.0.1:0",
            "metrics_addr": "127.0.0.1:0",
            "refresh_interval_seconds": 0.5,
        },
    )
    caplog.set_level(logging.INFO, logger="service.vault_auth")
    running = await start_server(config)
    try:
        await running.server.store.load_once()
        hs256_open((await running.stub.MintToken(pb.MintTokenRequest(email="k8s@example.com"))).token, secret)

        first_token = auth.token_file.read_text()
        rotated = kubernetes_api.issue_token(auth.account, audiences=["vault"], path=auth.token_file)
        kubernetes_api.revoke(first_token)
        reviews_before = len(kubernetes_api.reviews)
        logins_before = sum(record.getMessage() == "logged in to Vault" for record in caplog.records)

        await wait_until_async(
            lambda: any(
                review["request"]["spec"]["token"] == rotated for review in kubernetes_api.reviews[reviews_before:]
            ),
            timeout=20,
            interval=0.1,
            message="a login with the rotated token file",
        )
        await asyncio.sleep(3.5)  # past another token lifetime: it logs in yet again
        logins = sum(record.getMessage() == "logged in to Vault" for record in caplog.records) - logins_before
        assert logins >= 2
        rotated_secret = new_secret()
        version = openbao.write_secret(path, rotated_secret)

        async def minted_with_the_new_version() -> pb.MintTokenResponse | None:
            response = await running.stub.MintToken(pb.MintTokenRequest(email="k8s@example.com"))
            return response if response.secret_version == version else None

        response = await wait_until_async(
            minted_with_the_new_version,
            timeout=10,
            interval=0.1,
            message=f"a token signed with the rotated secret (version {version})",
        )
        hs256_open(response.token, rotated_secret)
        assert running.server.store.is_ready()
    finally:
        await stop_server(running)
