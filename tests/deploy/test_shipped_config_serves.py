"""`tokenservice serve --config` runs with the config.toml the overlays ship, caller authentication on.

Each overlay's config.toml is used as written, except for what only a cluster
has (tests/deploy/shipped.py): Vault's address becomes a real local OpenBao
with Kubernetes auth as deploy/vault/setup.sh configures it (so the service
reads the org secret and the API key hashes with the "tokenservice" policy
alone), the Secret-mounted files become a test CA's certificates and a random
fingerprint key, and the listen addresses become loopback ports. The process
runs without --insecure-no-caller-auth and with the audit trail on stdout, as
in the pod. Then, for real: the plaintext health port answers the probes'
services; the example certificate caller mints over mTLS with a client
certificate carrying its SPIFFE ID (or DNS name) from the caller CA, and the
same identity from the server certificate's CA is refused; the example API-key caller
mints on the API-key port with a key whose hash is in Vault; each mint is
audited with its caller and the identity's keyed fingerprint, never the identity.
"""

from __future__ import annotations

import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2

from tests.deploy.shipped import api_key_channel, claimed, identity_for, mint, mtls_channel, prepare, start
from tests.support import health_stub, hs256_open, metric_value

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_overlay_config_serves_tokens_to_its_callers(overlay, openbao, vault_kubernetes_auth, tmp_path):
    deployment = prepare(overlay, openbao, vault_kubernetes_auth, tmp_path)
    service = start(deployment)
    try:
        listening = service.listening
        assert listening["tls"] == "mtls" and listening["api_key_port"] and listening["health_port"]
        assert sorted(listening["callers"]) == sorted(deployment.config["callers"])

        # The kubelet's probes: plaintext gRPC health on health_addr, the services the Deployment asks for.
        with grpc.insecure_channel(service.health_target) as channel:
            health = health_stub(channel)
            for name in ("", "tokenservice.v1.TokenService", "liveness"):
                status = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                assert status == health_pb2.HealthCheckResponse.SERVING, name
            # ... and nothing else there: no minting on the plaintext port.
            with pytest.raises(grpc.RpcError) as on_health_port:
                mint(channel, "on-health-port", email="jane@example.com")
            assert on_health_port.value.code() == grpc.StatusCode.UNIMPLEMENTED

        # The certificate caller, over mTLS on grpc_addr.
        certificate_caller = deployment.certificate_caller
        identity = identity_for(certificate_caller.policy)
        with mtls_channel(service, deployment, deployment.client) as channel:
            response = mint(channel, "shipped-mtls", **identity)
        _, claims = hs256_open(response.token, deployment.secret)
        assert claimed(claims, identity) == identity
        assert response.secret_version == 1

        # Only the caller CA vouches for callers: the same SPIFFE ID (or DNS name) from the server
        # certificate's CA, which other workloads may obtain certificates from, completes no handshake.
        policy = certificate_caller.policy
        impostor = deployment.files.ca.issue(
            f"{certificate_caller.name}-impostor",
            uris=(policy["spiffe_id"],) if policy.get("spiffe_id") else (),
            dns=(policy["dns_name"],) if not policy.get("spiffe_id") else (),
        )
        with mtls_channel(service, deployment, impostor) as channel, pytest.raises(grpc.RpcError) as impostor_call:
            mint(channel, "shipped-impostor", **identity)
        assert impostor_call.value.code() == grpc.StatusCode.UNAVAILABLE

        # grpc_addr requires a client certificate: without one, no handshake.
        with mtls_channel(service, deployment) as channel, pytest.raises(grpc.RpcError) as no_certificate:
            mint(channel, "shipped-no-certificate", **identity)
        assert no_certificate.value.code() == grpc.StatusCode.UNAVAILABLE

        # The API-key caller, on tls.api_key_addr, with the key whose hash is in Vault.
        api_key_caller = deployment.api_key_caller
        key_identity = identity_for(api_key_caller.policy)
        with api_key_channel(service, deployment, deployment.api_key) as channel:
            response = mint(channel, "shipped-api-key", **key_identity)
        _, claims = hs256_open(response.token, deployment.secret)
        assert claimed(claims, key_identity) == key_identity
        # ... and only within its policy: it may not assert an email.
        if "email" not in api_key_caller.policy.get("identities", ["email", "external_id"]):
            with (
                api_key_channel(service, deployment, deployment.api_key) as channel,
                pytest.raises(grpc.RpcError) as denied,
            ):
                mint(channel, "shipped-denied", email="jane@example.com")
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # A key Vault does not know is refused.
        with (
            api_key_channel(service, deployment, "tks_not-a-key") as channel,
            pytest.raises(grpc.RpcError) as unknown_key,
        ):
            mint(channel, "shipped-bad-key", **key_identity)
        assert unknown_key.value.code() == grpc.StatusCode.UNAUTHENTICATED

        # The audit trail, on stdout as in the pod: one record per attempt, with the caller and the
        # identity's keyed fingerprint, never the identity itself.
        records = {record["request_id"]: record for record in deployment.audit_records(service.logs())}
        mtls_record = records["shipped-mtls"]
        assert (
            mtls_record["caller"],
            mtls_record["rpc"],
            mtls_record["org"],
            mtls_record["status"],
            mtls_record["secret_version"],
        ) == (certificate_caller.name, "MintToken", deployment.org, "OK", 1)
        kind, value = next(iter(identity.items()))
        assert mtls_record[f"{kind}_fingerprint"] == deployment.files.fingerprint(kind, value)
        key_record = records["shipped-api-key"]
        assert (key_record["caller"], key_record["status"]) == (api_key_caller.name, "OK")
        kind, value = next(iter(key_identity.items()))
        assert key_record[f"{kind}_fingerprint"] == deployment.files.fingerprint(kind, value)
        assert (records["shipped-bad-key"]["caller"], records["shipped-bad-key"]["reason"]) == (
            "unknown",
            "CREDENTIALS_INVALID",
        )
        assert "shipped-no-certificate" not in records and "shipped-impostor" not in records  # at the handshake
        logs = service.logs()
        for secret_text in ("jane@example.com", "customer-4711", deployment.api_key, deployment.secret):
            assert secret_text not in logs

        # Issuance is counted per caller.
        with urllib.request.urlopen(service.metrics_url, timeout=5) as metrics:
            text = metrics.read().decode()
        for caller, kind in (
            (certificate_caller.name, next(iter(identity))),
            (api_key_caller.name, next(iter(key_identity))),
        ):
            assert (
                metric_value(text, "tokenservice_tokens_issued_total", org=deployment.org, identity=kind, caller=caller)
                == 1
            )
        assert metric_value(text, "tokenservice_api_keys_loaded") == 1

        logins = [record for record in service.log_records() if record.get("message") == "logged in to Vault"]
        assert logins and logins[0].get("auth") == "kubernetes"
    finally:
        assert service.terminate() == 0
