#!/usr/bin/env python3
"""Checks on rendered overlays that kubernetes-validate and checkov do not make.

Run by deploy/validate with the tools virtualenv's Python (PyYAML, jsonschema):

    check_rendered.py RULES_OUT_DIR RENDERED.yaml...

1. Kinds: every object is either a built-in kind (schema-checked by
   kubernetes-validate) or one of the Prometheus Operator kinds below, which
   kubernetes-validate has no schema for. Those are checked here instead:
   ServiceMonitor against a strict schema of the fields this repo uses, and
   each PrometheusRule's spec is written to RULES_OUT_DIR for
   `promtool check rules`.
2. checkov skips: every checkov.io/skipN annotation reads CKV_ID=<reason>.
3. TokenService's pod, against the config.toml in its own ConfigMap:
   probes on the configured gRPC port (readiness for tokenservice.v1.TokenService),
   named Service ports grpc (appProtocol grpc) and metrics on the configured
   ports, terminationGracePeriodSeconds > preStop sleep + shutdown grace,
   the projected Vault token (audience "vault") mounted where the config reads it,
   and the hardening the deployment issue asks for.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("monitoring.coreos.com/v1", "PrometheusRule")}

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object", "required": ["name", "namespace"], "additionalProperties": False,
            "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS},
        },
        "spec": {
            "type": "object", "required": ["selector", "endpoints"], "additionalProperties": False,
            "properties": {
                "selector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"matchLabels": _LABELS},
                },
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "required": ["port"], "additionalProperties": False,
                        "properties": {
                            "port": _STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        },
                    },
                },
            },
        },
    },
}
PROMETHEUS_RULE_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PrometheusRule"},
        "metadata": SERVICE_MONITOR_SCHEMA["properties"]["metadata"],
        "spec": {
            "type": "object", "required": ["groups"], "additionalProperties": False,
            "properties": {"groups": {"type": "array", "minItems": 1}},
        },
    },
}

CHECKOV_SKIP = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=\S.{19,}$")


class Problems(list):
    def need(self, condition: bool, message: str) -> None:
        if not condition:
            self.append(message)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def check_tokenservice(objects: list[dict], where: str, problems: Problems) -> None:
    deployments = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "tokenservice"]
    problems.need(len(deployments) == 1, f"{where}: exactly one Deployment tokenservice")
    if len(deployments) != 1:
        return
    deployment = deployments[0]
    pod = deployment["spec"]["template"]["spec"]
    containers = [c for c in pod["containers"] if c["name"] == "tokenservice"]
    problems.need(len(containers) == 1, f"{where}: container tokenservice")
    if not containers:
        return
    container = containers[0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}

    config_volume = volumes.get("config", {}).get("configMap", {}).get("name")
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    problems.need(config_volume in config_maps, f"{where}: the config volume names a rendered ConfigMap")
    if config_volume not in config_maps:
        return
    config = tomllib.loads(config_maps[config_volume]["data"]["config.toml"])
    config_dir = mounts["config"]["mountPath"]
    problems.need(container.get("args", [])[-2:] == ["--config", f"{config_dir}/config.toml"],
                  f"{where}: container args are --config {config_dir}/config.toml")
    grpc_port = port_of(config.get("grpc_addr", "0.0.0.0:50051"))
    metrics_port = port_of(config.get("metrics_addr", "0.0.0.0:9090"))

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    problems.need(ports == {"grpc": grpc_port, "metrics": metrics_port},
                  f"{where}: container ports grpc={grpc_port}, metrics={metrics_port} (from config.toml); got {ports}")
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "tokenservice"]
    problems.need(len(services) == 1, f"{where}: one Service tokenservice")
    for service in services:
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        problems.need(set(by_name) == {"grpc", "metrics"}, f"{where}: Service ports are named grpc and metrics")
        problems.need(by_name.get("grpc", {}).get("appProtocol") == "grpc", f"{where}: Service port grpc has appProtocol grpc")
        selector = service["spec"].get("selector", {})
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        problems.need(selector and all(labels.get(k) == v for k, v in selector.items()),
                      f"{where}: the Service selects the tokenservice pods")

    liveness, readiness = container.get("livenessProbe", {}), container.get("readinessProbe", {})
    problems.need(liveness.get("grpc") == {"port": grpc_port, "service": "liveness"},
                  f"{where}: liveness is a native gRPC probe on port {grpc_port}, service \"liveness\" "
                  "(SERVING while the process runs, whatever Vault does)")
    problems.need(readiness.get("grpc") == {"port": grpc_port, "service": "tokenservice.v1.TokenService"},
                  f"{where}: readiness is a native gRPC probe on {grpc_port} for tokenservice.v1.TokenService")

    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = float(config.get("shutdown_grace_seconds", 10))
    termination = pod.get("terminationGracePeriodSeconds", 30)
    problems.need(pre_stop > 0, f"{where}: a preStop sleep lets endpoints drop the pod before SIGTERM")
    problems.need(termination > pre_stop + grace,
                  f"{where}: terminationGracePeriodSeconds {termination} > preStop {pre_stop} + shutdown grace {grace}")

    security = container.get("securityContext", {})
    pod_security = pod.get("securityContext", {})
    problems.need(pod_security.get("runAsNonRoot") is True and security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot")
    problems.need(security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    problems.need(security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    problems.need(security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities drop ALL")
    problems.need(pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault")
    problems.need(pod.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken false")
    resources = container.get("resources", {})
    problems.need(all(resources.get(kind, {}).get(r) for kind in ("requests", "limits") for r in ("cpu", "memory")),
                  f"{where}: cpu and memory requests and limits")
    image = container["image"]
    problems.need("OVERLAY-MUST-SET-TAG" not in image and ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image,
                  f"{where}: the overlay sets the image tag (got {image})")

    vault = config.get("vault", {})
    token_sources = [s.get("serviceAccountToken") for s in volumes.get("vault-token", {}).get("projected", {}).get("sources", [])]
    token_sources = [s for s in token_sources if s]
    problems.need(len(token_sources) == 1 and token_sources[0].get("audience") == "vault"
                  and token_sources[0].get("expirationSeconds", 3600) <= 3600,
                  f"{where}: a projected serviceAccountToken for audience vault, expiring within an hour")
    if vault.get("auth") == "kubernetes" and token_sources:
        expected = f"{mounts['vault-token']['mountPath']}/{token_sources[0]['path']}"
        configured = next((v for k, v in vault.items() if k.endswith("token_file") or k.endswith("jwt_file")), None)
        problems.need(configured == expected, f"{where}: config.toml reads the Vault token at {expected} (got {configured})")


def main(argv: list[str]) -> int:
    rules_dir, rendered = Path(argv[0]), [Path(p) for p in argv[1:]]
    rules_dir.mkdir(parents=True, exist_ok=True)
    problems = Problems()
    for path in rendered:
        objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
        for obj in objects:
            name = f"{path.stem}: {obj['kind']}/{obj['metadata']['name']}"
            group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
            if "." in group and not group.endswith(".k8s.io") and (obj["apiVersion"], obj["kind"]) not in OPERATOR_KINDS:
                problems.append(f"{name}: custom resource kind with no check; add a schema in deploy/check_rendered.py")
            if obj["kind"] == "ServiceMonitor":
                for error in jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA).iter_errors(obj):
                    problems.append(f"{name}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            if obj["kind"] == "PrometheusRule":
                for error in jsonschema.Draft202012Validator(PROMETHEUS_RULE_SCHEMA).iter_errors(obj):
                    problems.append(f"{name}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
                out = rules_dir / f"{path.stem}-{obj['metadata']['name']}.rules.yaml"
                out.write_text(yaml.safe_dump(obj["spec"], sort_keys=False))
            for key, value in (obj["metadata"].get("annotations") or {}).items():
                if key.startswith("checkov.io/skip"):
                    problems.need(bool(CHECKOV_SKIP.match(value)),
                                  f"{name}: annotation {key} must read CKV_ID=<reason of 20+ characters>; got {value!r}")
        check_tokenservice(objects, path.stem, problems)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"check_rendered: {len(rendered)} overlay(s), {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
