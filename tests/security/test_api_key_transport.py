"""API keys never cross the network in clear text unless a developer says so.

Threat: with `auth.api_keys_path` and no TLS, `tokenservice serve` only
warned, and callers then sent their keys (bearer credentials that mint
tokens for any customer) in plaintext HTTP/2. Now the configuration is
refused at load unless `auth.insecure_api_keys_over_plaintext = true`, which
is for development and makes `serve` log a warning.
"""

from __future__ import annotations

import os
import subprocess

import grpc
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from tests.secured import Caller, start_secured_service, write_secured_config
from tests.support import TOKENSERVICE, hs256_open

# The secured set-up's API-key caller alone: without TLS no port could take a certificate caller.
API_KEY_CALLER = {"reports": Caller(orgs=("*",))}


def test_serve_refuses_api_keys_without_tls(openbao, tmp_path):
    files = write_secured_config(openbao, tmp_path, tls="off", callers=API_KEY_CALLER)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOKENSERVICE_", "VAULT_"))},
        "VAULT_ADDR": "http://127.0.0.1:9",
        "VAULT_TOKEN": "unused",
    }
    process = subprocess.Popen(
        [TOKENSERVICE, "serve", "--config", str(files.config_file)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        _, stderr = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise AssertionError(
            "serve started with API keys over plaintext instead of refusing the configuration"
        ) from None
    assert process.returncode == 2
    assert "auth.insecure_api_keys_over_plaintext" in stderr and "tls.cert_file" in stderr


def test_with_the_development_flag_serve_takes_keys_over_plaintext_and_warns(openbao, tmp_path):
    service, files = start_secured_service(
        openbao,
        tmp_path,
        tls="off",
        callers=API_KEY_CALLER,
        settings={"auth": {"insecure_api_keys_over_plaintext": True}},
    )
    try:
        with grpc.insecure_channel(service.grpc_target) as channel:
            minted = pb_grpc.TokenServiceStub(channel).MintToken(
                pb.MintTokenRequest(external_id="c-1"),
                metadata=(("authorization", f"Bearer {files.api_key}"),),
                timeout=5,
            )
        warnings = [r["message"] for r in service.log_records() if r.get("level") == "warning"]
    finally:
        assert service.terminate() == 0
    assert hs256_open(minted.token, openbao.read_secret(files.secret_path))[1]["externalId"] == "c-1"
    assert any("auth.insecure_api_keys_over_plaintext" in message and "clear text" in message for message in warnings)
    assert files.api_key not in service.logs()
