"""A real Prometheus scrapes a real `tokenservice serve` and evaluates the alert rules.

Prometheus is the Debian package's binary, on 127.0.0.1 with a temporary
config and data directory, stopped at the end of each test. Nothing is mocked:
tokens are minted over gRPC with the generated stubs, and the counters are read
back through Prometheus' HTTP query API. The caller-authentication metrics come
from the prod overlay's config.toml run as shipped (tests/deploy/shipped.py):
callers with certificates and API keys, refusals, rate limiting, a renewed
server certificate.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2, token_service_pb2_grpc

from tests.deploy.prometheus import Prometheus
from tests.deploy.shipped import api_key_channel, identity_for, mint, mtls_channel, prepare, start
from tests.deploy.test_monitoring import CALLER_AUTH_CONTRACT, CONTRACT, dashboard_expressions, rule_expressions
from tests.support import metric_value, wait_until

pytestmark = pytest.mark.integration

RULES = Path(__file__).resolve().parents[2] / "deploy" / "monitoring" / "tokenservice.rules.yaml"
# What a ServiceMonitor's relabelling attaches in a cluster; the rules aggregate by them.
TARGET_LABELS = {"namespace": "tokenservice-test", "pod": "tokenservice-0"}


def scraped_target(live_service) -> str:
    return live_service.metrics_url.removeprefix("http://").removesuffix("/metrics")


def issued(result: list[dict]) -> float:
    return sum(float(sample["value"][1]) for sample in result)


def test_prometheus_reads_tokens_issued_back(live_service, start_prometheus):
    with start_prometheus([scraped_target(live_service)], labels=TARGET_LABELS) as prometheus:
        prometheus.wait_for('up{job="tokenservice"}', lambda r: r and r[0]["value"][1] == "1")
        with urllib.request.urlopen(live_service.metrics_url, timeout=5) as response:
            before_text = response.read().decode()
        before = {
            identity: metric_value(
                before_text, "tokenservice_tokens_issued_total", org=live_service.org, identity=identity
            )
            for identity in ("email", "external_id")
        }

        with grpc.insecure_channel(live_service.grpc_target) as channel:
            stub = token_service_pb2_grpc.TokenServiceStub(channel)
            for index in range(3):
                stub.MintToken(token_service_pb2.MintTokenRequest(email=f"user{index}@example.com"), timeout=5)
            for index in range(2):
                stub.MintToken(token_service_pb2.MintTokenRequest(external_id=f"customer-{index}"), timeout=5)
            with pytest.raises(grpc.RpcError) as refused:
                stub.MintToken(token_service_pb2.MintTokenRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        for identity, minted in (("email", 3), ("external_id", 2)):
            expr = (
                f'tokenservice_tokens_issued_total{{job="tokenservice", org="{live_service.org}", '
                f'identity="{identity}", namespace="tokenservice-test"}}'
            )
            result = prometheus.wait_for(expr, lambda r, want=before[identity] + minted: r and issued(r) == want)
            assert len(result) == 1
            assert result[0]["metric"]["pod"] == "tokenservice-0"

        # The refused call is counted with its reason and its gRPC status code.
        prometheus.wait_for(
            f'tokenservice_mint_errors_total{{org="{live_service.org}", reason="IDENTITY_MISSING"}}',
            lambda r: r and issued(r) >= 1,
        )
        prometheus.wait_for(
            'grpc_server_handled_total{grpc_service="tokenservice.v1.TokenService", grpc_method="MintToken", '
            'grpc_code="INVALID_ARGUMENT"}',
            lambda r: r and issued(r) >= 1,
        )

        # Every series the rules and the dashboard use (but kube-state-metrics') is really scraped.
        for name in CONTRACT:
            prometheus.wait_for(f'count({name}{{job="tokenservice"}})', lambda r: bool(r))
        secret_loaded = prometheus.query(f'tokenservice_secret_loaded{{org="{live_service.org}"}}')
        assert [sample["value"][1] for sample in secret_loaded] == ["1"]


def test_prometheus_evaluates_every_rule_and_dashboard_query(live_service, start_prometheus):
    """The rules load into a real Prometheus and evaluate without error against the live service;
    with a valid secret loaded none of them fires. Every dashboard query is valid PromQL there."""
    with start_prometheus([scraped_target(live_service)], rule_files=[RULES], labels=TARGET_LABELS) as prometheus:
        prometheus.wait_for('up{job="tokenservice"}', lambda r: r and r[0]["value"][1] == "1")
        prometheus.wait_for("tokenservice_secret_loaded", lambda r: bool(r))
        rules = wait_for_rules(prometheus)
        assert set(rules) == set(rule_expressions())
        for name, rule in rules.items():
            assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
            assert rule["state"] == "inactive", f"{name} is {rule['state']} against a healthy service"

        for expr in dashboard_expressions().values():
            expr = (
                expr.replace("$__rate_interval", "1m")
                .replace('"$namespace"', '".*"')
                .replace('"$org"', '".*"')
                .replace('"$caller"', '".*"')
            )
            prometheus.query(expr)  # raises unless Prometheus accepts the query


def wait_for_rules(prometheus: Prometheus) -> dict[str, dict]:
    """Every rule by name, once each has been evaluated at least once."""

    def evaluated() -> dict[str, dict] | None:
        groups = prometheus.api("rules")
        rules = {rule["name"]: rule for group in groups["groups"] for rule in group["rules"]}
        # A rule not evaluated yet has lastEvaluation 0001-01-01T00:00:00Z.
        done = rules and all(rule.get("lastEvaluation", "0001").startswith("2") for rule in rules.values())
        return rules if done else None

    return wait_until(evaluated, timeout=30, interval=0.5, message="every rule evaluated at least once")


def test_prometheus_reads_the_caller_metrics_of_the_shipped_prod_config(
    openbao, vault_kubernetes_auth, tmp_path, start_prometheus
):
    deployment = prepare("prod", openbao, vault_kubernetes_auth, tmp_path)
    certificate_caller, api_key_caller = deployment.certificate_caller, deployment.api_key_caller
    service = start(deployment)
    try:
        target = service.metrics_url.removeprefix("http://").removesuffix("/metrics")
        with start_prometheus([target], rule_files=[RULES], labels=TARGET_LABELS) as prometheus:
            prometheus.wait_for('up{job="tokenservice"}', lambda r: r and r[0]["value"][1] == "1")
            with mtls_channel(service, deployment, deployment.client) as channel:
                for index in range(2):
                    mint(channel, f"scrape-mtls-{index}", **identity_for(certificate_caller.policy))
            with api_key_channel(service, deployment, None) as channel, pytest.raises(grpc.RpcError) as missing:
                mint(channel, "scrape-no-key", **identity_for(api_key_caller.policy))
            assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
            # More calls at once than the API-key caller's burst: the last ones are held back.
            burst = api_key_caller.policy["burst"]
            limited = 0
            with api_key_channel(service, deployment, deployment.api_key) as channel:
                for index in range(2 * burst):
                    try:
                        mint(channel, f"scrape-key-{index}", **identity_for(api_key_caller.policy))
                    except grpc.RpcError as error:
                        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                        limited += 1
            assert limited >= 1
            # cert-manager renews the server certificate: the files change, the next handshake loads them.
            deployment.files.ca.issue("tokenservice-tls", dns=(deployment.files.server_name,))
            time.sleep(1.5)  # past the service's check interval for changed files (1 s)
            with mtls_channel(service, deployment, deployment.client) as channel:
                mint(channel, "scrape-after-renewal", **identity_for(certificate_caller.policy))

            def total(expr: str, want):
                return prometheus.wait_for(expr, lambda r: r and want(sum(float(s["value"][1]) for s in r)))

            total(
                f'tokenservice_tokens_issued_total{{caller="{certificate_caller.name}", org="{deployment.org}"}}',
                lambda v: v == 3,
            )
            total(
                f'tokenservice_tokens_issued_total{{caller="{api_key_caller.name}"}}',
                lambda v: v == 2 * burst - limited,
            )
            total(f'tokenservice_rate_limited_total{{caller="{api_key_caller.name}"}}', lambda v: v == limited)
            total('tokenservice_auth_failures_total{reason="CREDENTIALS_MISSING"}', lambda v: v == 1)
            total('tokenservice_api_key_refresh_total{result="ok"}', lambda v: v >= 1)
            total("tokenservice_api_keys_loaded", lambda v: v == 1)
            total('tokenservice_tls_reload_total{result="ok"}', lambda v: v == 1)
            for name in CALLER_AUTH_CONTRACT:
                prometheus.wait_for(f'count({name}{{job="tokenservice"}})', lambda r: bool(r))
            assert not prometheus.query('tokenservice_tls_reload_total{result="error"}')

            # Every rule evaluates against the secured service; none fires (a held-back caller is
            # pending at most: TokenServiceCallerRateLimited waits 15 minutes).
            rules = wait_for_rules(prometheus)
            assert set(rules) == set(rule_expressions())
            for name, rule in rules.items():
                assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
                assert rule["state"] != "firing", f"{name} fires against a healthy service"
    finally:
        assert service.terminate() == 0
