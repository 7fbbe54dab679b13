"""A real Prometheus scrapes a real `tokenservice serve` and evaluates the alert rules.

Prometheus is the Debian package's binary, on 127.0.0.1 with a temporary
config and data directory, stopped at the end of each test. Nothing is mocked:
tokens are minted over gRPC with the generated stubs, and the counters are read
back through Prometheus' HTTP query API.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from tokenservice.v1 import token_service_pb2, token_service_pb2_grpc

from tests.deploy.test_monitoring import CONTRACT, dashboard_expressions, rule_expressions
from tests.support import metric_value

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
        before = {identity: metric_value(before_text, "tokenservice_tokens_issued_total",
                                         org=live_service.org, identity=identity)
                  for identity in ("email", "external_id")}

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
            expr = (f'tokenservice_tokens_issued_total{{job="tokenservice", org="{live_service.org}", '
                    f'identity="{identity}", namespace="tokenservice-test"}}')
            result = prometheus.wait_for(expr, lambda r, want=before[identity] + minted: r and issued(r) == want)
            assert len(result) == 1
            assert result[0]["metric"]["pod"] == "tokenservice-0"

        # The refused call is counted with its reason and its gRPC status code.
        prometheus.wait_for(
            f'tokenservice_mint_errors_total{{org="{live_service.org}", reason="IDENTITY_MISSING"}}',
            lambda r: r and issued(r) >= 1)
        prometheus.wait_for(
            'grpc_server_handled_total{grpc_service="tokenservice.v1.TokenService", grpc_method="MintToken", '
            'grpc_code="INVALID_ARGUMENT"}', lambda r: r and issued(r) >= 1)

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

        def evaluated(groups: dict) -> bool:
            rules = [rule for group in groups["groups"] for rule in group["rules"]]
            # A rule not evaluated yet has lastEvaluation 0001-01-01T00:00:00Z.
            return bool(rules) and all(rule.get("lastEvaluation", "0001").startswith("2") for rule in rules)

        deadline = time.monotonic() + 30
        while not evaluated(groups := prometheus.api("rules")) and time.monotonic() < deadline:
            time.sleep(0.5)
        rules = {rule["name"]: rule for group in groups["groups"] for rule in group["rules"]}
        assert set(rules) == set(rule_expressions())
        for name, rule in rules.items():
            assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
            assert rule["state"] == "inactive", f"{name} is {rule['state']} against a healthy service"

        for where, expr in dashboard_expressions().items():
            expr = (expr.replace("$__rate_interval", "1m").replace('"$namespace"', '".*"')
                    .replace('"$org"', '".*"'))
            prometheus.query(expr)  # raises unless Prometheus accepts the query
