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
import uuid
from pathlib import Path

import grpc
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.api_keys import hash_api_key, new_api_key
from tests.support import TOKENSERVICE, ServiceProcess, hs256_open, new_secret


def plaintext_config(directory: Path, keys_path: str, secret_path: str, flag: str = "") -> Path:
    (directory / "fingerprint.key").write_bytes(os.urandom(32).hex().encode())
    config_file = directory / "config.toml"
    config_file.write_text(f"""
secret_path = "{secret_path}"

[auth]
api_keys_path = "{keys_path}"
{flag}

[audit]
fingerprint_key_file = "{directory / "fingerprint.key"}"

[callers.reports]
orgs = ["*"]
""")
    return config_file


def test_serve_refuses_api_keys_without_tls(tmp_path):
    config_file = plaintext_config(tmp_path, "tokenservice/api-keys", "kustomer/chat")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TOKENSERVICE_", "VAULT_"))},
        "VAULT_ADDR": "http://127.0.0.1:9",
        "VAULT_TOKEN": "unused",
        "TOKENSERVICE_GRPC_ADDR": "127.0.0.1:0",
        "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:0",
    }
    process = subprocess.Popen(
        [TOKENSERVICE, "serve", "--config", str(config_file)],
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
    suffix = uuid.uuid4().hex[:8]
    secret_path, keys_path = f"kustomer/plaintext-{suffix}", f"tokenservice/api-keys-{suffix}"
    openbao.write_secret(secret_path, new_secret())
    key = new_api_key()
    openbao.client().secrets.kv.v2.create_or_update_secret(path=keys_path, secret={"reports": hash_api_key(key)})
    config_file = plaintext_config(tmp_path, keys_path, secret_path, "insecure_api_keys_over_plaintext = true")
    service = ServiceProcess.start(
        {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": ""},
        ["--config", str(config_file)],
    )
    try:
        with grpc.insecure_channel(service.grpc_target) as channel:
            minted = pb_grpc.TokenServiceStub(channel).MintToken(
                pb.MintTokenRequest(external_id="c-1"), metadata=(("authorization", f"Bearer {key}"),), timeout=5
            )
        warnings = [r["message"] for r in service.log_records() if r.get("level") == "warning"]
    finally:
        assert service.terminate() == 0
    assert hs256_open(minted.token, openbao.read_secret(secret_path))[1]["externalId"] == "c-1"
    assert any("auth.insecure_api_keys_over_plaintext" in message and "clear text" in message for message in warnings)
    assert key not in service.logs()
