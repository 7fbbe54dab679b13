"""Monitoring as code: the alert rules and the Grafana dashboard use only metrics the service exports.

The exported metrics are read from service/metrics.py (a fresh `Metrics()`)
and service/transit.py (`TransitMetrics`, registered with a Transit org),
so renaming a metric or a label there without updating deploy/monitoring
fails here. kube-state-metrics' kube_deployment_* series are the only others
allowed. promtool's own checks and unit tests of the rules run here too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from service.metrics import Metrics
from service.transit import TransitMetrics

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "deploy" / "monitoring"
RULES = MONITORING / "tokenservice.rules.yaml"
RULE_TESTS = MONITORING / "tokenservice.rules.test.yaml"
DASHBOARD = MONITORING / "grafana-dashboard.json"

# The metrics operators rely on (documented in the README); service/metrics.py must export all of them.
CONTRACT = {
    "tokenservice_tokens_issued_total": {"org", "identity", "caller"},
    "tokenservice_mint_errors_total": {"org", "reason", "caller"},
    "tokenservice_mint_duration_seconds_bucket": {"le"},
    "tokenservice_secret_version": {"org"},
    "tokenservice_secret_last_refresh_timestamp_seconds": {"org"},
    "tokenservice_vault_refresh_total": {"org", "result"},
    "tokenservice_secret_loaded": {"org"},
    "grpc_server_started_total": set(),
    "grpc_server_handled_total": {"grpc_service", "grpc_method", "grpc_code"},
    "grpc_server_handling_seconds_bucket": {"grpc_service", "grpc_method", "le"},
}
# The caller-authentication metrics the alerts and the dashboard use. Labelled counters
# appear once counted, so test_prometheus_scrape.py reads these from a service with callers.
CALLER_AUTH_CONTRACT = {
    "tokenservice_auth_failures_total": {"reason"},
    "tokenservice_rate_limited_total": {"caller"},
    "tokenservice_api_key_refresh_total": {"result"},
    "tokenservice_api_keys_loaded": set(),
    "tokenservice_tls_reload_total": {"result"},
}
# kube-state-metrics series the replica alerts use.
KUBE_STATE_METRICS = {
    "kube_deployment_spec_replicas": {"namespace", "deployment"},
    "kube_deployment_status_replicas_available": {"namespace", "deployment"},
}
# Labels Prometheus (or the Prometheus Operator's ServiceMonitor) attaches to every scraped series.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "service", "endpoint", "container"}

PROMQL_WORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "inf",
    "nan",
    "atan2",
}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?(\s*\()?")
MATCHER = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"')


def exported_series() -> dict[str, set[str]]:
    """Every series name the service can expose, with its label names."""
    families = [*vars(Metrics()).values(), *vars(TransitMetrics(CollectorRegistry())).values()]
    series: dict[str, set[str]] = {}
    for value in families:
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind, labels = value._name, value._type, set(value._labelnames)
        if kind == "counter":
            series[f"{name}_total"] = labels
            series[f"{name}_created"] = labels
        elif kind == "histogram":
            series[f"{name}_bucket"] = labels | {"le"}
            for suffix in ("_sum", "_count", "_created"):
                series[f"{name}{suffix}"] = labels
        else:
            series[name] = labels
    assert series, "service.metrics.Metrics registers no metric"
    return series


def selectors(expr: str) -> tuple[list[tuple[str, set[str]]], set[str]]:
    """(metric name, label names it is matched on) for each selector in a PromQL
    expression, and the label names of its by/without/on/ignoring clauses."""
    grouping = {label.strip() for _, labels in GROUPING.findall(expr) for label in labels.split(",") if label.strip()}
    stripped = GROUPING.sub(" ", expr)
    stripped = re.sub(r"\[[^\]]*\]", " ", stripped)  # range selectors, e.g. [5m] or [$__rate_interval]
    found = []
    for name, matchers, call in SELECTOR.findall(stripped):
        if call or name.lower() in PROMQL_WORDS:
            continue  # a function or aggregation, or a keyword
        found.append((name, {label for label, _ in MATCHER.findall(matchers)}))
    return found, grouping


def rule_expressions() -> dict[str, str]:
    """alert/record name -> expr, from the rules file (block or one-line `expr:`).

    Standard library only: the rules file keeps `expr:` either on one line or
    as a `|` block, which is all this reader understands; the counts are
    checked so a rule it cannot read fails the test instead of passing it.
    """
    lines = RULES.read_text().splitlines()
    exprs: dict[str, str] = {}
    current = ""  # no rule named yet
    index = 0
    while index < len(lines):
        line = lines[index]
        named = re.match(r"^\s*- (alert|record): (\S+)\s*$", line)
        if named:
            current = named.group(2)
        expr = re.match(r"^(\s*)expr: (.*)$", line)
        if expr:
            indent, value = len(expr.group(1)), expr.group(2).strip()
            if value in ("|", "|-", ">", ">-"):
                block = []
                index += 1
                while index < len(lines) and (
                    not lines[index].strip() or len(lines[index]) - len(lines[index].lstrip()) > indent
                ):
                    block.append(lines[index].strip())
                    index += 1
                value = " ".join(block)
                index -= 1
            exprs[current] = value
        index += 1
    count = len(re.findall(r"^\s*- (alert|record): ", RULES.read_text(), re.MULTILINE))
    assert count == len(exprs) and all(exprs.values()), "every rule's expr was read"
    return exprs


def dashboard_expressions() -> dict[str, str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {}
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            exprs[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", query)
            assert inner, f"variable {variable['name']}: label_values(<selector>, <label>) expected"
            exprs[f"variable {variable['name']}"] = f"{inner.group(1)}"
    return exprs


def check_expressions(exprs: dict[str, str]) -> list[str]:
    known = {**exported_series(), **KUBE_STATE_METRICS}
    problems = []
    for where, expr in exprs.items():
        found, grouping = selectors(expr)
        if not found:
            problems.append(f"{where}: no metric found in {expr!r}")
        labels_in_scope = set(TARGET_LABELS)
        for name, matched in found:
            if name not in known:
                problems.append(f"{where}: {name} is not exported by service/metrics.py (nor kube-state-metrics)")
                continue
            labels_in_scope |= known[name]
            unknown = matched - known[name] - TARGET_LABELS
            if unknown:
                problems.append(f"{where}: {name} has no label(s) {sorted(unknown)}")
        stray = grouping - labels_in_scope
        if stray:
            problems.append(f"{where}: groups by label(s) {sorted(stray)} that none of its metrics has")
    return problems


def test_the_service_exports_every_promised_metric():
    exported = exported_series()
    for name, labels in {**CONTRACT, **CALLER_AUTH_CONTRACT}.items():
        assert name in exported, f"service/metrics.py does not export {name}"
        assert labels <= exported[name], f"{name}: labels {sorted(labels - exported[name])} missing"


def test_alert_rules_use_only_exported_metrics_and_labels():
    exprs = rule_expressions()
    assert len(exprs) >= 5
    assert check_expressions(exprs) == []


def test_dashboard_uses_only_exported_metrics_and_labels():
    exprs = dashboard_expressions()
    assert check_expressions(exprs) == []
    used = {name for expr in exprs.values() for name, _ in selectors(expr)[0]}
    for wanted in (
        "tokenservice_tokens_issued_total",
        "tokenservice_mint_errors_total",
        "tokenservice_mint_duration_seconds_bucket",
        "tokenservice_secret_version",
        "tokenservice_secret_last_refresh_timestamp_seconds",
        "tokenservice_vault_refresh_total",
        *CALLER_AUTH_CONTRACT,
    ):
        assert wanted in used, f"the dashboard shows {wanted}"
    by_caller = [
        expr for expr in exprs.values() if "tokenservice_tokens_issued_total" in expr and "caller" in selectors(expr)[1]
    ]
    assert by_caller, "the dashboard shows issuance by caller"


def test_every_caller_auth_metric_is_alerted_on_or_shown():
    """Each alert on the caller-auth metrics is there; the gauge of loaded keys is shown only."""
    used = {name for expr in rule_expressions().values() for name, _ in selectors(expr)[0]}
    assert set(CALLER_AUTH_CONTRACT) - {"tokenservice_api_keys_loaded"} <= used


def test_the_check_catches_a_wrong_name_and_a_wrong_label():
    problems = check_expressions(
        {
            "typo": "sum(rate(tokenservice_token_issued_total[5m]))",
            "label": 'sum by (reason) (rate(tokenservice_tokens_issued_total{orgg="x"}[5m]))',
        }
    )
    assert len(problems) == 3, problems


def test_every_alert_has_a_promtool_unit_test():
    alerts = set(re.findall(r"^\s*- alert: (\S+)", RULES.read_text(), re.MULTILINE))
    tested = set(re.findall(r"^\s*alertname: (\S+)", RULE_TESTS.read_text(), re.MULTILINE))
    assert alerts and alerts == tested


def test_prometheus_rule_component_is_generated_from_the_rules_file():
    completed = subprocess.run(
        [sys.executable, str(MONITORING / "render_prometheusrule.py"), "--check"], capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: apt-get install prometheus (deploy/validate installs it)"
    return found


def test_promtool_check_rules():
    completed = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_promtool_unit_tests_of_every_alert():
    completed = subprocess.run(
        [promtool(), "test", "rules", RULE_TESTS.name], cwd=MONITORING, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
