#!/usr/bin/env python3
"""Checks on rendered manifests that kubernetes-validate and checkov do not make.

Run by deploy/validate with the tools virtualenv's Python (PyYAML, jsonschema):

    check_rendered.py RULES_OUT_DIR --cluster CLUSTER.yaml OVERLAY.yaml...

CLUSTER.yaml is the cluster-wide objects (deploy/trust, rendered) that each
overlay is checked together with, as the cluster it is applied to holds them.
The rules, one function each:

- kinds: every object is a built-in kind (schema-checked by
  kubernetes-validate) or one of the custom kinds of SCHEMAS, checked here
  against strict schemas of the fields this repository uses: the Prometheus
  Operator's ServiceMonitor and PrometheusRule (whose spec is also written to
  RULES_OUT_DIR for `promtool check rules`), cert-manager's Certificate,
  Issuer and ClusterIssuer, approver-policy's CertificateRequestPolicy and
  trust-manager's Bundle;
- checkov skips: every checkov.io/skipN annotation reads CKV_ID=<reason>;
- command lines: no container's command or args (readable by anyone on the
  node, in /proc) carries a secret: no $(VAR) expansion of a Secret-backed
  variable, no rendered Secret's value, nothing shaped like a Vault token,
  JWT, API key or private key, no NAME=value or --name value argument for a
  credential unless the value is "-" (stdin) or "@file", and in shell scripts
  no program handed a Secret-backed variable;
- TokenService's pod, against the config.toml of its own ConfigMap (a
  setting missing there has the service's default, read from service/):
  - ports: the container ports grpc, grpc-api-key, health and metrics on the
    configured addresses; the Service's grpc, grpc-api-key (appProtocol grpc)
    and metrics, never health;
  - probes: startup, liveness and readiness are native gRPC probes on the
    plaintext health port;
  - caller authentication: callers configured, mTLS on grpc_addr, API keys at
    a path, audit to stdout with a fingerprint key file;
  - mounts: each volume in its own directory, none inside another, no subPath
    (which never sees an update);
  - secret files: the server certificate and key, the caller CA and the audit
    key read from read-only, not world-readable, non-optional volumes;
  - server certificate: issued by a rendered Certificate for the Service's
    names, from an issuer that exists;
  - caller trust root: tls.client_ca_file is the caller CA's certificate and
    nothing else (not the server's CA), from a namespaced CA Issuer's Secret
    or a trust-manager Bundle of ClusterIssuer CAs; a caller Certificate
    carries SPIFFE IDs of its own namespace only; a ClusterIssuer is selected
    only by approver-policy policies that bind the SPIFFE ID to the requesting
    namespace, and grant nothing else;
  - lifecycle: termination grace > preStop sleep + shutdown grace;
  - hardening: non-root, read-only root, no privilege escalation or
    capabilities, seccomp, no API token, resources, an image tag;
  - Vault token: a projected token for audience "vault" where the config
    reads it;
  - network policies: caller ports and metrics admitted, never health;
  - egress: where a NetworkPolicy restricts it, DNS and Vault's port (of
    vault.addr) are allowed;
  - tracing: with [tracing] enabled, the OTLP endpoint (OTEL_* variables or
    the config) is set with its port, and egress allows that port in the
    collector's namespace; OTEL_* variables with tracing off are refused (a
    component that replaced config.toml after components/tracing);
  - Transit: every org signs with "kv" or "transit"; a Transit org's key is
    one deploy/vault/tokenservice-transit-policy.hcl lets the pod HMAC, verify
    and read on its mount; the Vault role fits the orgs (setup.sh's Transit
    role reads no KV org secret, its KV role has no Transit grant).
"""

from __future__ import annotations

import argparse
import ast
import base64
import binascii
import contextlib
import dataclasses
import re
import shlex
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
APP = "tokenservice"
# A Kubernetes object (or part of one) as parsed from YAML: its shape is checked at run time.
Manifest = dict[str, Any]


def _constants(tree: ast.Module, class_name: str | None = None) -> dict[str, Any]:
    """The literal values assigned at module level, or to a class's fields (names of module constants
    resolved); other expressions are left out."""
    module = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            with contextlib.suppress(ValueError):
                module[node.targets[0].id] = ast.literal_eval(node.value)
    if class_name is None:
        return module
    body = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    fields = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if isinstance(node.value, ast.Name) and node.value.id in module:
                fields[node.target.id] = module[node.value.id]
                continue
            with contextlib.suppress(ValueError):
                fields[node.target.id] = ast.literal_eval(node.value)
    return fields


def _service_defaults() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any], str, str]:
    """The service's defaults, read from its source: its modules import grpc, which this virtualenv lacks.
    (Config's defaults, AuditConfig's, VaultConfig's, OrgConfig's, the liveness health service, the
    TokenService gRPC service name.)"""
    config = ast.parse((REPO / "service" / "config.py").read_text())
    server = _constants(ast.parse((REPO / "service" / "server.py").read_text()))
    proto_path = REPO / "protos" / "tokenservice" / "v1" / "token_service.proto"
    package = re.search(r"^package\s+([\w.]+);", proto_path.read_text(), re.MULTILINE)
    if package is None:
        raise SystemExit(f"check_rendered.py: no 'package <name>;' line in {proto_path.relative_to(REPO)}")
    return (
        _constants(config, "Config"),
        _constants(config, "AuditConfig"),
        _constants(config, "VaultConfig"),
        _constants(config, "OrgConfig"),
        server["LIVENESS_SERVICE"],
        f"{package[1]}.TokenService",
    )


CONFIG_DEFAULTS, AUDIT_DEFAULTS, VAULT_DEFAULTS, ORG_DEFAULTS, LIVENESS_SERVICE, READINESS_SERVICE = _service_defaults()
# An org's signing modes ([orgs.<name>] signing), and the defaults while service/config.py has none.
KV_SIGNING, TRANSIT_SIGNING = "kv", "transit"
DEFAULT_SIGNING = ORG_DEFAULTS.get("signing", KV_SIGNING)
DEFAULT_TRANSIT_MOUNT = ORG_DEFAULTS.get("transit_mount", "transit")


def _setup_default(variable: str) -> str:
    """A default of deploy/vault/setup.sh (VARIABLE=${VARIABLE:-default})."""
    script_path = REPO / "deploy" / "vault" / "setup.sh"
    default = re.search(rf"^{variable}=\$\{{{variable}:-([^}}$]+)\}}$", script_path.read_text(), re.MULTILINE)
    if default is None:
        raise SystemExit(
            f"check_rendered.py: no {variable}=${{{variable}:-<default>}} line in {script_path.relative_to(REPO)}"
        )
    return default[1]


# The Vault roles setup.sh makes: for KV orgs, and (TRANSIT=1) for Transit orgs; the Transit policy's file.
KV_ROLE, TRANSIT_ROLE = _setup_default("ROLE_NAME"), _setup_default("TRANSIT_ROLE_NAME")
TRANSIT_POLICY_FILE = REPO / "deploy" / "vault" / "tokenservice-transit-policy.hcl"
# What signing and verifying for a Transit org needs: (path under the mount, capability).
TRANSIT_NEEDS = (
    ("hmac/{key}", "update"),
    ("hmac/{key}/sha2-256", "update"),
    ("verify/{key}", "update"),
    ("verify/{key}/sha2-256", "update"),
    ("keys/{key}", "read"),
)
DNS_PORT = 53

# The named ports of the pod, and which of them callers reach through the Service.
CALLER_PORTS = ("grpc", "grpc-api-key")
SERVICE_PORTS = (*CALLER_PORTS, "metrics")
# The keys cert-manager writes to a certificate's Secret, and the one CA file the caller CA provides.
TLS_SECRET_KEYS = {"tls.cert_file": "tls.crt", "tls.key_file": "tls.key"}
CA_KEY = "ca.crt"
# Where cert-manager looks for the Secrets of ClusterIssuers (its --cluster-resource-namespace).
CLUSTER_RESOURCE_NAMESPACE = "cert-manager"
# What a certificate that identifies a caller (and nothing else) may be used for.
CALLER_USAGES = {"digital signature", "key encipherment", "client auth"}

# ---------------------------------------------------------------------------------------------- schemas

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_METADATA_FIELDS = {"name": _STR, "labels": _LABELS, "annotations": _LABELS}
_NAMESPACED = {
    "type": "object",
    "required": ["name", "namespace"],
    "additionalProperties": False,
    "properties": {**_METADATA_FIELDS, "namespace": _STR},
}
_CLUSTER_SCOPED = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": _METADATA_FIELDS,
}


def _custom_resource(
    api_version: str, kind: str, spec: dict[str, Any], metadata: dict[str, Any] = _NAMESPACED
) -> dict[str, Any]:
    """The schema of one custom resource: the envelope every kind shares, around its spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {
            "apiVersion": {"const": api_version},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
    }


def _strict(properties: dict[str, Any], required: tuple[str, ...] = (), **more: object) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(required),
        **more,
    }


_DURATION = {"type": "string", "pattern": r"^(\d+(h|m|s))+$"}
_ISSUER_REF = _strict(
    {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"const": "cert-manager.io"}},
    ("name", "kind", "group"),
)
# cert-manager's key usages (the ones a TLS server, client or CA certificate may need).
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"]
_USAGE_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": _USAGES}}
_ISSUER_SPEC = _strict(
    {
        "selfSigned": _strict({}),
        "ca": _strict({"secretName": _STR}, ("secretName",)),
    },
    minProperties=1,
    maxProperties=1,
)
_POLICY_VALIDATIONS = {"type": "array", "minItems": 1, "items": _strict({"rule": _STR, "message": _STR}, ("rule",))}
_POLICY_STRINGS = _strict(
    {"required": {"type": "boolean"}, "values": {"type": "array", "items": _STR}, "validations": _POLICY_VALIDATIONS}
)
_POLICY_STRING = _strict({"required": {"type": "boolean"}, "value": _STR, "validations": _POLICY_VALIDATIONS})
_SELECTOR_LABELS = _strict({"matchLabels": _LABELS})

SCHEMAS = {
    "ServiceMonitor": _custom_resource(
        "monitoring.coreos.com/v1",
        "ServiceMonitor",
        _strict(
            {
                "selector": _SELECTOR_LABELS,
                "namespaceSelector": {"type": "object"},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "port": _STR,
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                            "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
                        },
                        ("port",),
                    ),
                },
            },
            ("selector", "endpoints"),
        ),
    ),
    "PrometheusRule": _custom_resource(
        "monitoring.coreos.com/v1", "PrometheusRule", _strict({"groups": {"type": "array", "minItems": 1}}, ("groups",))
    ),
    "Certificate": _custom_resource(
        "cert-manager.io/v1",
        "Certificate",
        _strict(
            {
                "secretName": _STR,
                "secretTemplate": _strict({"labels": _LABELS, "annotations": _LABELS}),
                "isCA": {"type": "boolean"},
                "commonName": {"type": "string", "maxLength": 64},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[a-z0-9.-]+$"}},
                "uris": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^spiffe://\S+$"}},
                "duration": _DURATION,
                "renewBefore": _DURATION,
                "usages": _USAGE_LIST,
                "privateKey": _strict(
                    {
                        "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                        "size": {"type": "integer"},
                        "encoding": {"enum": ["PKCS1", "PKCS8"]},
                        "rotationPolicy": {"enum": ["Never", "Always"]},
                    },
                    ("algorithm", "rotationPolicy"),
                ),
                "issuerRef": _ISSUER_REF,
            },
            ("secretName", "issuerRef", "privateKey"),
            anyOf=[{"required": ["dnsNames"]}, {"required": ["uris"]}, {"required": ["commonName"]}],
        ),
    ),
    "Issuer": _custom_resource("cert-manager.io/v1", "Issuer", _ISSUER_SPEC),
    "ClusterIssuer": _custom_resource("cert-manager.io/v1", "ClusterIssuer", _ISSUER_SPEC, _CLUSTER_SCOPED),
    "CertificateRequestPolicy": _custom_resource(
        "policy.cert-manager.io/v1alpha1",
        "CertificateRequestPolicy",
        _strict(
            {
                "selector": _strict(
                    {
                        "issuerRef": _strict({"name": _STR, "kind": _STR, "group": _STR}),
                        "namespace": _strict(
                            {"matchNames": {"type": "array", "minItems": 1, "items": _STR}, "matchLabels": _LABELS},
                            minProperties=1,
                        ),
                    },
                    ("issuerRef",),
                ),
                "allowed": _strict(
                    {
                        "commonName": _POLICY_STRING,
                        "dnsNames": _POLICY_STRINGS,
                        "ipAddresses": _POLICY_STRINGS,
                        "uris": _POLICY_STRINGS,
                        "emailAddresses": _POLICY_STRINGS,
                        "isCA": {"type": "boolean"},
                        "usages": _USAGE_LIST,
                    }
                ),
                "constraints": _strict(
                    {
                        "minDuration": _DURATION,
                        "maxDuration": _DURATION,
                        "privateKey": _strict(
                            {
                                "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                                "minSize": {"type": "integer"},
                                "maxSize": {"type": "integer"},
                            }
                        ),
                    }
                ),
            },
            ("selector", "allowed"),
        ),
        _CLUSTER_SCOPED,
    ),
    "Bundle": _custom_resource(
        "trust.cert-manager.io/v1alpha1",
        "Bundle",
        _strict(
            {
                "sources": {
                    "type": "array",
                    "minItems": 1,
                    "items": _strict(
                        {
                            "secret": _strict({"name": _STR, "key": _STR}, ("name", "key")),
                            "configMap": _strict({"name": _STR, "key": _STR}, ("name", "key")),
                            "inLine": _STR,
                            "useDefaultCAs": {"type": "boolean"},
                        },
                        minProperties=1,
                        maxProperties=1,
                    ),
                },
                "target": _strict(
                    {"configMap": _strict({"key": _STR}, ("key",)), "namespaceSelector": _SELECTOR_LABELS},
                    ("configMap", "namespaceSelector"),
                ),
            },
            ("sources", "target"),
        ),
        _CLUSTER_SCOPED,
    ),
}
# The custom kinds the manifests may use: the ones there is a schema for.
CUSTOM_KINDS = {(schema["properties"]["apiVersion"]["const"], kind) for kind, schema in SCHEMAS.items()}

CHECKOV_SKIP = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=\S.{19,}$")


class Problems(list[str]):
    def need(self, condition: bool, message: str) -> None:
        if not condition and message not in self:
            self.append(message)


# ---------------------------------------------------------------------------------------------- objects


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def wildcard(pattern: str, value: str) -> bool:
    """approver-policy's and cert-manager's matching: '*' stands for any run of characters."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), value, re.DOTALL) is not None


@dataclasses.dataclass(frozen=True)
class MountedFile:
    """Where a configured file comes from, when it lies directly in a mounted volume's directory."""

    mount: Manifest
    volume: Manifest
    kind: str | None  # "secret", "configMap", or None for another volume type
    name: str | None  # the Secret's or ConfigMap's name
    key: str | None  # the key the file holds, None when no key maps to it

    @property
    def source(self) -> Manifest:
        source: Manifest = self.volume.get(self.kind, {}) if self.kind else {}
        return source


def mounted_file(path: str | None, mounts: dict[str, Manifest], volumes: dict[str, Manifest]) -> MountedFile | None:
    if not path:
        return None
    directory, _, file_name = path.rpartition("/")
    mount = next((m for m in mounts.values() if m["mountPath"].rstrip("/") == directory), None)
    if mount is None:
        return None
    volume = volumes.get(mount["name"], {})
    kind = next((k for k in ("secret", "configMap") if k in volume), None)
    if kind is None:
        return MountedFile(mount, volume, None, None, None)
    source = volume[kind]
    items = source.get("items")
    key = file_name if items is None else next((i["key"] for i in items if i["path"] == file_name), None)
    return MountedFile(mount, volume, kind, source.get("secretName") or source.get("name"), key)


@dataclasses.dataclass
class Pod:
    """TokenService's Deployment as rendered, with its config and the objects of the overlay and cluster."""

    where: str
    objects: list[Manifest]
    deployment: Manifest
    container: Manifest
    config: dict[str, Any]  # config.toml, parsed
    volumes: dict[str, Manifest]  # by name
    mounts: dict[str, Manifest]  # the container's volumeMounts, by name
    services: list[Manifest]

    @property
    def spec(self) -> Manifest:
        spec: Manifest = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def namespace(self) -> str | None:
        namespace: str | None = self.deployment["metadata"].get("namespace")
        return namespace

    @property
    def labels(self) -> dict[str, str]:
        labels: dict[str, str] = self.deployment["spec"]["template"]["metadata"]["labels"]
        return labels

    def setting(self, name: str, default: Any = None) -> Any:
        """A config.toml value (dotted name: table.key), or `default`; any TOML type, checked where used."""
        section, _, key = name.rpartition(".")
        table = self.config.get(section, {}) if section else self.config
        return table.get(key, default)

    def port(self, setting: str) -> int | None:
        address = self.setting(setting, CONFIG_DEFAULTS.get(setting))
        return port_of(address) if address else None

    def of_kind(self, kind: str) -> list[Manifest]:
        return [o for o in self.objects if o["kind"] == kind]

    def file(self, setting: str) -> MountedFile | None:
        return mounted_file(self.setting(setting), self.mounts, self.volumes)

    @property
    def expected_ports(self) -> dict[str, int | None]:
        return {
            "grpc": self.port("grpc_addr"),
            "grpc-api-key": self.port("tls.api_key_addr"),
            "health": self.port("health_addr"),
            "metrics": self.port("metrics_addr"),
        }


def find_pod(objects: list[Manifest], where: str, problems: Problems) -> Pod | None:
    """TokenService's Deployment, container and config, or None (with the problem) when one is missing."""
    deployments = [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == APP]
    problems.need(len(deployments) == 1, f"{where}: exactly one Deployment {APP}")
    if len(deployments) != 1:
        return None
    spec = deployments[0]["spec"]["template"]["spec"]
    containers = [c for c in spec["containers"] if c["name"] == APP]
    problems.need(len(containers) == 1, f"{where}: container {APP}")
    if not containers:
        return None
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["name"]: m for m in containers[0].get("volumeMounts", [])}
    config_volume = volumes.get("config", {}).get("configMap", {}).get("name")
    config_maps = {o["metadata"]["name"]: o for o in objects if o["kind"] == "ConfigMap"}
    problems.need(config_volume in config_maps, f"{where}: the config volume names a rendered ConfigMap")
    if config_volume not in config_maps:
        return None
    config = tomllib.loads(config_maps[config_volume]["data"]["config.toml"])
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == APP]
    return Pod(where, objects, deployments[0], containers[0], config, volumes, mounts, services)


# ---------------------------------------------------------------------------------------------- rules


def check_config_argument(pod: Pod, problems: Problems) -> None:
    """The container runs the config.toml of the mounted ConfigMap."""
    config_dir = pod.mounts["config"]["mountPath"]
    problems.need(
        pod.container.get("args", [])[-2:] == ["--config", f"{config_dir}/config.toml"],
        f"{pod.where}: container args are --config {config_dir}/config.toml",
    )


def check_ports(pod: Pod, problems: Problems) -> None:
    """Container ports on the configured addresses; the Service exposes the caller ports and metrics only."""
    expected = pod.expected_ports
    ports = {p["name"]: p["containerPort"] for p in pod.container["ports"]}
    problems.need(
        ports == expected,
        f"{pod.where}: container ports {expected} (from config.toml: grpc_addr, tls.api_key_addr, "
        f"health_addr, metrics_addr); got {ports}",
    )
    problems.need(len(pod.services) == 1, f"{pod.where}: one Service {APP}")
    for service in pod.services:
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        problems.need(
            set(by_name) == set(SERVICE_PORTS),
            f"{pod.where}: Service ports are {', '.join(SERVICE_PORTS)} (not the plaintext health port); "
            f"got {sorted(by_name)}",
        )
        for name in CALLER_PORTS:
            problems.need(
                by_name.get(name, {}).get("appProtocol") == "grpc",
                f"{pod.where}: Service port {name} has appProtocol grpc",
            )
        for name, port in by_name.items():
            problems.need(
                port.get("targetPort") == name and port.get("port") == expected.get(name),
                f"{pod.where}: Service port {name} is {expected.get(name)}, targetPort {name}",
            )
        selector = service["spec"].get("selector", {})
        problems.need(
            selector and all(pod.labels.get(k) == v for k, v in selector.items()),
            f"{pod.where}: the Service selects the {APP} pods",
        )


def check_probes(pod: Pod, problems: Problems) -> None:
    """Native gRPC probes on the plaintext health port: the kubelet speaks neither TLS nor API keys."""
    health_port = pod.port("health_addr")
    problems.need(health_port is not None, f"{pod.where}: config.toml sets health_addr (the probes' plaintext port)")
    for probe, service_name in (
        ("startupProbe", LIVENESS_SERVICE),
        ("livenessProbe", LIVENESS_SERVICE),
        ("readinessProbe", READINESS_SERVICE),
    ):
        problems.need(
            pod.container.get(probe, {}).get("grpc") == {"port": health_port, "service": service_name},
            f"{pod.where}: {probe} is a native gRPC probe on the health port {health_port}, service {service_name!r}",
        )


def check_caller_authentication(pod: Pod, problems: Problems) -> None:
    """Callers configured, mTLS on grpc_addr, API keys from Vault, the audit trail on stdout."""
    callers = pod.setting("callers", {})
    problems.need(bool(callers), f"{pod.where}: config.toml configures [callers.<name>] (caller authentication on)")
    problems.need(
        not pod.setting("auth.insecure_no_caller_auth", False), f"{pod.where}: auth.insecure_no_caller_auth is not set"
    )
    problems.need(
        bool(pod.setting("tls.client_ca_file")),
        f"{pod.where}: tls.client_ca_file set: grpc_addr requires client certificates",
    )
    problems.need(
        bool(pod.setting("auth.api_keys_path")) and pod.port("tls.api_key_addr") is not None,
        f"{pod.where}: auth.api_keys_path and tls.api_key_addr set for the API-key callers",
    )
    problems.need(
        pod.setting("audit.output", AUDIT_DEFAULTS["output"]) == "stdout",
        f"{pod.where}: audit.output is stdout (the pod's log, collected with it)",
    )
    by_certificate = [c for c in callers.values() if c.get("spiffe_id") or c.get("dns_name")]
    problems.need(
        bool(by_certificate) and len(by_certificate) < len(callers),
        f"{pod.where}: an example certificate caller and an example API-key caller",
    )


def check_mounts(pod: Pod, problems: Problems) -> None:
    """Separate directories, none inside another, no subPath anywhere."""
    paths = sorted(m["mountPath"].rstrip("/") for m in pod.mounts.values())
    for index, path in enumerate(paths):
        for other in paths[index + 1 :]:
            problems.need(
                not (other == path or other.startswith(path + "/")),
                f"{pod.where}: volume mount {other} lies inside (or on) {path}; give each its own directory",
            )
    for mount in pod.mounts.values():
        problems.need(
            "subPath" not in mount and "subPathExpr" not in mount,
            f"{pod.where}: volume {mount['name']} is mounted with a subPath, which never receives updates",
        )


def tls_secrets(pod: Pod) -> set[str | None]:
    """The Secrets the server certificate and key come from (None for a Secret volume that names none)."""
    return {found.name for found in map(pod.file, TLS_SECRET_KEYS) if found and found.kind == "secret"}


def check_secret_files(pod: Pod, problems: Problems) -> None:
    """The server certificate and key, the caller CA and the audit key: read-only, private, required volumes."""
    expected_keys = {**TLS_SECRET_KEYS, "tls.client_ca_file": CA_KEY, "audit.fingerprint_key_file": None}
    for setting, expected_key in expected_keys.items():
        found = pod.file(setting)
        public = setting == "tls.client_ca_file" and found is not None and found.kind == "configMap"
        problems.need(
            found is not None and found.key is not None and (found.kind == "secret" or public),
            f"{pod.where}: {setting} ({pod.setting(setting)}) is a key of a Secret volume (or, for the "
            "caller CA, a ConfigMap volume), mounted as a directory",
        )
        if found is None or found.kind is None:
            continue
        problems.need(
            found.mount.get("readOnly") is True, f"{pod.where}: volume {found.mount['name']} is mounted read-only"
        )
        problems.need(
            not found.source.get("optional", False), f"{pod.where}: volume {found.mount['name']} is not optional"
        )
        if found.kind == "secret":
            problems.need(
                found.source.get("defaultMode", 0o644) & 0o007 == 0,
                f"{pod.where}: Secret volume {found.mount['name']} is not world-readable (defaultMode)",
            )
        if expected_key is not None:
            problems.need(
                found.key == expected_key, f"{pod.where}: {setting} is the key {expected_key} of its {found.kind}"
            )
    secrets = tls_secrets(pod)
    problems.need(
        len(secrets) <= 1,
        f"{pod.where}: the server certificate and key come from one Secret; got {sorted(secrets, key=str)}",
    )


def check_server_certificate(pod: Pod, problems: Problems) -> None:
    """cert-manager objects: every Issuer referred to is rendered (a ClusterIssuer may be the cluster's); a CA
    issuer's CA is a rendered CA Certificate; the server Certificate names the Service in its namespace."""
    certificates = pod.of_kind("Certificate")
    issuers = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in pod.of_kind("Issuer")}
    for certificate in certificates:
        ref, namespace = certificate["spec"]["issuerRef"], certificate["metadata"].get("namespace")
        if ref["kind"] == "Issuer":
            problems.need(
                (namespace, ref["name"]) in issuers,
                f"{pod.where}: Certificate/{certificate['metadata']['name']}: its Issuer {ref['name']} "
                "is rendered in its namespace",
            )
    # A rendered ClusterIssuer reads its Secret in cert-manager's cluster resource namespace.
    rendered_issuers = [
        *((namespace, issuer) for (namespace, _), issuer in issuers.items()),
        *((CLUSTER_RESOURCE_NAMESPACE, issuer) for issuer in pod.of_kind("ClusterIssuer")),
    ]
    for namespace, issuer in rendered_issuers:
        ca_secret = issuer["spec"].get("ca", {}).get("secretName")
        if ca_secret:
            problems.need(
                any(
                    c["spec"]["secretName"] == ca_secret
                    and c["spec"].get("isCA")
                    and c["metadata"].get("namespace") == namespace
                    for c in certificates
                ),
                f"{pod.where}: {issuer['kind']}/{issuer['metadata']['name']}: its CA Secret {ca_secret} "
                f"is issued by a rendered CA Certificate (isCA) in namespace {namespace}",
            )
    if not certificates:
        return  # the TLS Secret is made outside Kustomize
    secrets = tls_secrets(pod)
    servers = server_certificates(pod)
    problems.need(
        len(servers) == 1, f"{pod.where}: one cert-manager Certificate issues the TLS Secret {sorted(secrets, key=str)}"
    )
    for server in servers:
        spec = server["spec"]
        problems.need(
            "server auth" in spec.get("usages", []), f"{pod.where}: the server Certificate has usage server auth"
        )
        problems.need(not spec.get("isCA"), f"{pod.where}: the server Certificate is not a CA")
        problems.need(
            spec["privateKey"].get("rotationPolicy") == "Always",
            f"{pod.where}: the server Certificate gets a new private key at each renewal (rotationPolicy Always)",
        )
        for service in pod.services:
            namespace = service["metadata"].get("namespace")
            wanted = {APP, f"{APP}.{namespace}", f"{APP}.{namespace}.svc"}
            missing = wanted - set(spec.get("dnsNames", []))
            problems.need(
                not missing, f"{pod.where}: the server Certificate names the Service; missing {sorted(missing)}"
            )
            problems.need(
                server["metadata"].get("namespace") == namespace,
                f"{pod.where}: the server Certificate is in the Service's namespace",
            )


def server_certificates(pod: Pod) -> list[Manifest]:
    secrets = tls_secrets(pod)
    return [
        c
        for c in pod.of_kind("Certificate")
        if c["spec"]["secretName"] in secrets and c["metadata"].get("namespace") == pod.namespace
    ]


IssuerKey = tuple[str, str | None, str]


def issuer_of(certificate: Manifest) -> IssuerKey:
    """(kind, namespace or None for a ClusterIssuer, name) of the issuer a Certificate names."""
    ref = certificate["spec"]["issuerRef"]
    namespace = certificate["metadata"].get("namespace") if ref["kind"] == "Issuer" else None
    return ref["kind"], namespace, ref["name"]


def key_of(issuer: Manifest) -> IssuerKey:
    """The same triple for an Issuer or ClusterIssuer object."""
    namespace = issuer["metadata"].get("namespace") if issuer["kind"] == "Issuer" else None
    return issuer["kind"], namespace, issuer["metadata"]["name"]


def caller_issuers(pod: Pod, problems: Problems) -> list[Manifest]:
    """The issuers whose CA tls.client_ca_file holds, by where the file comes from: a namespaced CA Issuer's
    Secret (its ca.crt alone), or a trust-manager Bundle of ClusterIssuer CA Secrets and nothing else."""
    found = pod.file("tls.client_ca_file")
    if found is None or found.kind is None:
        return []
    where = f"{pod.where}: tls.client_ca_file"
    if found.kind == "secret" and found.name in tls_secrets(pod):
        problems.append(
            f"{where} comes from the server's TLS Secret {found.name}: the server certificate's CA "
            "would vouch for callers; mount the caller CA instead"
        )
        return []
    if found.kind == "secret":
        problems.need(
            [item["key"] for item in found.source.get("items", [])] == [CA_KEY],
            f"{where}: the Secret volume {found.mount['name']} maps the key {CA_KEY} alone (items), so "
            "the CA's private key never reaches the pod",
        )
        issuers = [
            i
            for i in pod.of_kind("Issuer")
            if i["spec"].get("ca", {}).get("secretName") == found.name
            and i["metadata"].get("namespace") == pod.namespace
        ]
        problems.need(
            bool(issuers),
            f"{where}: the Secret {found.name} is the CA of a rendered CA Issuer in "
            f"namespace {pod.namespace} (the caller CA)",
        )
        return issuers
    bundles = [b for b in pod.of_kind("Bundle") if b["metadata"]["name"] == found.name]
    problems.need(
        len(bundles) == 1,
        f"{where}: the ConfigMap {found.name} is the target of a rendered trust-manager Bundle of the same name",
    )
    if len(bundles) != 1:
        return []
    spec = bundles[0]["spec"]
    problems.need(
        spec["target"]["configMap"]["key"] == found.key, f"{where}: Bundle/{found.name} writes the key {found.key}"
    )
    namespace_labels = {
        "kubernetes.io/metadata.name": pod.namespace,
        **next(
            (
                n["metadata"].get("labels", {})
                for n in pod.of_kind("Namespace")
                if n["metadata"]["name"] == pod.namespace
            ),
            {},
        ),
    }
    wanted = spec["target"]["namespaceSelector"].get("matchLabels", {})
    problems.need(
        bool(wanted) and all(namespace_labels.get(k) == v for k, v in wanted.items()),
        f"{where}: Bundle/{found.name} selects namespace {pod.namespace} by its labels",
    )
    cluster_issuers = {i["spec"].get("ca", {}).get("secretName"): i for i in pod.of_kind("ClusterIssuer")}
    issuers = []
    for source in spec["sources"]:
        secret = source.get("secret", {})
        problems.need(
            secret.get("name") in cluster_issuers and secret.get("key") == CA_KEY,
            f"{where}: every source of Bundle/{found.name} is the {CA_KEY} of a rendered ClusterIssuer's "
            f"CA Secret (no default CAs, inline or other certificates); got {source}",
        )
        if secret.get("name") in cluster_issuers:
            issuers.append(cluster_issuers[secret["name"]])
    return issuers


def check_caller_trust_root(pod: Pod, problems: Problems) -> None:
    """The caller CA, and only it, vouches for callers; it issues caller certificates and nothing else, each
    with SPIFFE IDs of its own namespace; a ClusterIssuer's requests are approved only by policies that bind
    the SPIFFE ID to the requesting namespace."""
    issuers = caller_issuers(pod, problems)
    server_issuers = {issuer_of(c) for c in server_certificates(pod)}
    for issuer in issuers:
        key = key_of(issuer)
        name = f"{pod.where}: {issuer['kind']}/{issuer['metadata']['name']} (the caller CA)"
        problems.need(
            key not in server_issuers,
            f"{name}: does not issue the server certificate; the server's CA and the caller CA are separate",
        )
        for certificate in (c for c in pod.of_kind("Certificate") if issuer_of(c) == key):
            check_caller_certificate(pod, certificate, problems)
        if issuer["kind"] == "ClusterIssuer":
            check_caller_policies(pod, issuer, problems)


def spiffe_namespace(uri: str) -> str | None:
    """The namespace of a Kubernetes SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""
    match = re.fullmatch(r"spiffe://[a-z0-9.-]+/ns/([a-z0-9-]+)/sa/[a-z0-9.-]+", uri)
    return match.group(1) if match else None


def check_caller_certificate(pod: Pod, certificate: Manifest, problems: Problems) -> None:
    """A caller certificate identifies a caller of its own namespace and is good for nothing else."""
    spec, namespace = certificate["spec"], certificate["metadata"].get("namespace")
    name = f"{pod.where}: Certificate/{certificate['metadata']['name']} (from the caller CA)"
    identities = {c.get("spiffe_id") for c in pod.setting("callers", {}).values()} - {None}
    problems.need(
        not spec.get("isCA")
        and "client auth" in spec.get("usages", [])
        and set(spec.get("usages", [])) <= CALLER_USAGES,
        f"{name}: is no CA and has the usages of a client certificate only ({sorted(CALLER_USAGES)})",
    )
    problems.need(
        not spec.get("dnsNames") and not spec.get("commonName") and spec.get("uris"),
        f"{name}: carries SPIFFE IDs (uris) and no DNS name or common name",
    )
    for uri in spec.get("uris", []):
        problems.need(
            spiffe_namespace(uri) == namespace, f"{name}: {uri} is a SPIFFE ID of its own namespace {namespace}"
        )
        problems.need(uri in identities, f"{name}: {uri} is a configured caller's spiffe_id")


def selects(policy: Manifest, issuer: Manifest) -> bool:
    """Whether an approver-policy policy's issuerRef selector can match requests to `issuer`."""
    selector = policy["spec"]["selector"].get("issuerRef") or {}
    wanted = {"name": issuer["metadata"]["name"], "kind": issuer["kind"], "group": "cert-manager.io"}
    return all(wildcard(selector[field], value) for field, value in wanted.items() if field in selector)


NAMESPACE_BOUND_RULE = re.compile(r"self\.matches\('(?P<head>[^']*)' \+ cr\.namespace \+ '(?P<tail>[^']*)'\)")


def namespace_bound(rule: str) -> Callable[[str, str], bool] | None:
    """For a CEL rule self.matches('<head>' + cr.namespace + '<tail>'), the test it makes of a URI requested
    from a namespace (namespace names need no escaping: lower-case letters, digits and '-'); else None."""
    match = NAMESPACE_BOUND_RULE.fullmatch(rule.strip())
    if match is None:
        return None
    return lambda namespace, uri: re.search(match["head"] + namespace + match["tail"], uri) is not None


def check_caller_policies(pod: Pod, issuer: Manifest, problems: Problems) -> None:
    """Every policy that can select the caller ClusterIssuer selects namespaces, allows only SPIFFE IDs bound
    to the requesting namespace (each configured caller's from its namespace, none from another), and no CA."""
    name = f"{pod.where}: ClusterIssuer/{issuer['metadata']['name']} (the caller CA)"
    policies = [p for p in pod.of_kind("CertificateRequestPolicy") if selects(p, issuer)]
    problems.need(
        bool(policies),
        f"{name}: a rendered CertificateRequestPolicy selects it (with cert-manager's "
        "default approver off, nothing else approves its requests)",
    )
    callers = [c["spiffe_id"] for c in pod.setting("callers", {}).values() if c.get("spiffe_id")]
    for policy in policies:
        where = f"{pod.where}: CertificateRequestPolicy/{policy['metadata']['name']} (selects the caller CA)"
        allowed = policy["spec"]["allowed"]
        problems.need(
            set(allowed) <= {"uris", "usages"} and not allowed.get("isCA"),
            f"{where}: allows SPIFFE IDs (uris) and usages only: no names, addresses, common name or CA",
        )
        problems.need(
            set(allowed.get("usages", [])) <= CALLER_USAGES,
            f"{where}: allows the usages of a client certificate only ({sorted(CALLER_USAGES)})",
        )
        uris = allowed.get("uris", {})
        bindings = [namespace_bound(v["rule"]) for v in uris.get("validations", [])]
        tests = [test for test in bindings if test is not None]
        problems.need(
            uris.get("required") is True and bool(tests),
            f"{where}: requires a URI and binds it to the requesting namespace with a validation "
            "self.matches('^spiffe://<trust domain>/ns/' + cr.namespace + '/sa/<service account>$')",
        )
        problems.need(
            bool(policy["spec"]["selector"].get("namespace")),
            f"{where}: selects the namespaces that may request caller certificates",
        )
        for uri in callers:
            own = spiffe_namespace(uri) or ""
            problems.need(
                all(test(own, uri) for test in tests) and any(wildcard(v, uri) for v in uris.get("values", ["*"])),
                f"{where}: permits {uri} requested from its namespace {own}",
            )
            for other, claimed in (
                ("another-namespace", uri),
                (own, f"{uri}/x"),
                (own, uri.replace(f"/ns/{own}/", "/ns/another-namespace/")),
            ):
                problems.need(
                    not all(test(other, claimed) for test in tests),
                    f"{where}: refuses {claimed} requested from namespace {other}",
                )


def check_policy_bindings(objects: list[Manifest], where: str, problems: Problems) -> None:
    """RBAC lets requesters use named CertificateRequestPolicies only (never every policy there is)."""
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role.get("rules", []):
            uses = {"use", "*"} & set(rule.get("verbs", []))
            on_policies = {"certificaterequestpolicies", "*"} & set(rule.get("resources", [])) and {
                "policy.cert-manager.io",
                "*",
            } & set(rule.get("apiGroups", []))
            problems.need(
                not (uses and on_policies) or bool(rule.get("resourceNames")),
                f"{where}: {role['kind']}/{role['metadata']['name']}: grants use of "
                "CertificateRequestPolicies by name (resourceNames) only",
            )


def check_lifecycle(pod: Pod, problems: Problems) -> None:
    """A preStop sleep lets endpoints drop the pod before SIGTERM; the grace period covers it and the drain."""
    pre_stop = pod.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = float(pod.setting("shutdown_grace_seconds", CONFIG_DEFAULTS["shutdown_grace_seconds"]))
    termination = pod.spec.get("terminationGracePeriodSeconds", 30)
    problems.need(pre_stop > 0, f"{pod.where}: a preStop sleep lets endpoints drop the pod before SIGTERM")
    problems.need(
        termination > pre_stop + grace,
        f"{pod.where}: terminationGracePeriodSeconds {termination} > preStop {pre_stop} + shutdown grace {grace}",
    )


def check_hardening(pod: Pod, problems: Problems) -> None:
    """Non-root, read-only root filesystem, nothing to escalate with, no API token, bounded, a pinned image."""
    security, pod_security, where = (
        pod.container.get("securityContext", {}),
        pod.spec.get("securityContext", {}),
        pod.where,
    )
    problems.need(
        pod_security.get("runAsNonRoot") is True and security.get("runAsNonRoot") is True, f"{where}: runAsNonRoot"
    )
    problems.need(security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    problems.need(security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    problems.need(security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities drop ALL")
    problems.need(
        pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccomp RuntimeDefault"
    )
    problems.need(pod.spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken false")
    resources = pod.container.get("resources", {})
    problems.need(
        all(resources.get(kind, {}).get(r) for kind in ("requests", "limits") for r in ("cpu", "memory")),
        f"{where}: cpu and memory requests and limits",
    )
    image = pod.container["image"]
    problems.need(
        ("OVERLAY-MUST-SET-TAG" not in image and ":" in image.rsplit("/", 1)[-1]) or "@sha256:" in image,
        f"{where}: the overlay sets the image tag (got {image})",
    )


def check_vault_token(pod: Pod, problems: Problems) -> None:
    """The only token in the pod is a projected one for Vault, short-lived, where the config reads it."""
    projected = pod.volumes.get("vault-token", {}).get("projected", {}).get("sources", [])
    sources = [s["serviceAccountToken"] for s in projected if s.get("serviceAccountToken")]
    problems.need(
        len(sources) == 1
        and sources[0].get("audience") == "vault"
        and sources[0].get("expirationSeconds", 3600) <= 3600,
        f"{pod.where}: a projected serviceAccountToken for audience vault, expiring within an hour",
    )
    vault = pod.setting("vault", {})
    if vault.get("auth") == "kubernetes" and sources:
        expected = f"{pod.mounts['vault-token']['mountPath']}/{sources[0]['path']}"
        configured = next((v for k, v in vault.items() if k.endswith("token_file") or k.endswith("jwt_file")), None)
        problems.need(
            configured == expected, f"{pod.where}: config.toml reads the Vault token at {expected} (got {configured})"
        )


def check_network_policies(pod: Pod, problems: Problems) -> None:
    """A NetworkPolicy that selects the pods admits the caller ports and metrics, never health."""
    health = {"health", pod.port("health_addr")}
    for policy in pod.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector or not all(pod.labels.get(k) == v for k, v in selector.items()):
            continue
        name = f"{pod.where}: NetworkPolicy/{policy['metadata']['name']}"
        rules = policy["spec"].get("ingress", [])
        admitted = {port.get("port") for rule in rules for port in rule.get("ports", [])}
        problems.need(
            set(SERVICE_PORTS) <= admitted,
            f"{name}: admits the named ports {', '.join(SERVICE_PORTS)}; got {sorted(map(str, admitted))}",
        )
        problems.need(
            all(rule.get("ports") for rule in rules) and not health & admitted,
            f"{name}: admits no pod to the plaintext health port (every rule names its ports)",
        )


def restricts_egress(policy: Manifest) -> bool:
    """Whether a NetworkPolicy limits egress (policyTypes Egress, or egress rules when it names no types)."""
    types = policy["spec"].get("policyTypes")
    return "Egress" in types if types else "egress" in policy["spec"]


def selects_pod(policy: Manifest, pod: Pod) -> bool:
    """Whether a NetworkPolicy applies to TokenService's pods (an empty podSelector selects every pod)."""
    selector = policy["spec"]["podSelector"].get("matchLabels", {})
    return policy["metadata"].get("namespace") == pod.namespace and all(
        pod.labels.get(k) == v for k, v in selector.items()
    )


def egress_policies(pod: Pod) -> list[Manifest]:
    """The NetworkPolicies that restrict the pods' egress (none: egress is open)."""
    return [p for p in pod.of_kind("NetworkPolicy") if selects_pod(p, pod) and restricts_egress(p)]


def namespace_labels(pod: Pod, namespace: str) -> dict[str, str]:
    """A namespace's labels as far as known here: its name label, and those of a rendered Namespace."""
    rendered: dict[str, str] = next(
        (n["metadata"].get("labels", {}) for n in pod.of_kind("Namespace") if n["metadata"]["name"] == namespace), {}
    )
    return {"kubernetes.io/metadata.name": namespace, **rendered}


def peer_admits(peer: Manifest, pod: Pod, namespace: str | None) -> bool:
    """Whether an egress peer can be the destination: pods of `namespace`, or (None) an address outside."""
    if namespace is None:
        return True
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" not in peer:
        return namespace == pod.namespace
    wanted = peer["namespaceSelector"].get("matchLabels", {})
    labels = namespace_labels(pod, namespace)
    return all(labels.get(k) == v for k, v in wanted.items())


def port_matches(spec: Manifest, port: int, protocol: str) -> bool:
    """Whether a NetworkPolicy port entry covers `port`/`protocol` (a named port of the destination pod is not
    known here, so it covers nothing)."""
    start = spec.get("port")
    if spec.get("protocol", "TCP") != protocol or not isinstance(start, (int, type(None))):
        return False
    return start is None or start <= port <= spec.get("endPort", start)


def egress_allowed(pod: Pod, port: int, protocol: str = "TCP", namespace: str | None = None) -> bool:
    """Whether the pods may connect to `port` in `namespace` (None: wherever it is): open egress, or a rule
    of a restricting policy for that port (or all ports) and destination."""
    policies = egress_policies(pod)
    for rule in (r for p in policies for r in p["spec"].get("egress", [])):
        ports = rule.get("ports", [])
        if ports and not any(port_matches(spec, port, protocol) for spec in ports):
            continue
        if not rule.get("to") or any(peer_admits(peer, pod, namespace) for peer in rule["to"]):
            return True
    return not policies


def url_port(url: str) -> int | None:
    """A URL's port, or its scheme's."""
    parts = urlsplit(url)
    return parts.port or {"https": 443, "http": 80}.get(parts.scheme)


def check_egress(pod: Pod, problems: Problems) -> None:
    """Where NetworkPolicies restrict the pods' egress, they allow DNS and Vault's port (of vault.addr)."""
    if not egress_policies(pod):
        return
    for protocol in ("UDP", "TCP"):
        problems.need(
            egress_allowed(pod, DNS_PORT, protocol),
            f"{pod.where}: egress is restricted and allows DNS ({DNS_PORT}/{protocol})",
        )
    addr = str(pod.setting("vault.addr", VAULT_DEFAULTS["addr"]))
    if urlsplit(addr).hostname not in ("127.0.0.1", "localhost", "::1"):
        port = url_port(addr)
        problems.need(
            port is not None,
            f"{pod.where}: vault.addr {addr} is an http:// or https:// URL (the service refuses anything else)",
        )
        problems.need(
            port is None or egress_allowed(pod, port),
            f"{pod.where}: egress is restricted and allows Vault's port {port} "
            f"(vault.addr {addr}); add it to the NetworkPolicy's egress",
        )


def service_namespace(host: str, pod: Pod) -> str | None:
    """The namespace of a cluster Service name (<service>, <service>.<namespace>[.svc[.cluster.local]]), or
    None for an address outside the cluster."""
    labels = host.split(".")
    if len(labels) == 1:
        return pod.namespace
    if len(labels) == 2 or labels[2:] in (["svc"], ["svc", "cluster", "local"]):
        return labels[1]
    return None


def check_tracing(pod: Pod, problems: Problems) -> None:
    """With [tracing] enabled, an OTLP endpoint is set (config or OTEL_* variables) and egress allows its port
    in its namespace; OTEL_* variables without tracing on mean the config line was lost (a component that
    replaces config.toml listed after components/tracing)."""
    environment = {e["name"]: e.get("value") for e in pod.container.get("env", [])}
    otel = sorted(name for name in environment if name.startswith("OTEL_"))
    if pod.setting("tracing.enabled", False) is not True:
        problems.need(
            not otel,
            f"{pod.where}: the container sets {', '.join(otel)} but config.toml does not turn "
            "tracing on ([tracing] enabled = true; list components/tracing after components "
            "that replace config.toml)",
        )
        return
    endpoint = (
        pod.setting("tracing.endpoint")
        or environment.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or environment.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )
    problems.need(
        bool(endpoint),
        f"{pod.where}: tracing is on and names its collector (OTEL_EXPORTER_OTLP_ENDPOINT "
        "or tracing.endpoint); the SDK's default, localhost, has none",
    )
    if not endpoint:
        return
    port = urlsplit(endpoint).port
    problems.need(
        port is not None,
        f"{pod.where}: the collector's endpoint {endpoint} names its port (OTLP: 4317 for gRPC, 4318 for HTTP)",
    )
    namespace = service_namespace(urlsplit(endpoint).hostname or "", pod)
    problems.need(
        port is None or egress_allowed(pod, port, "TCP", namespace),
        f"{pod.where}: egress allows the OpenTelemetry Collector at {endpoint} (port {port}"
        + (f", namespace {namespace}" if namespace else "")
        + "); add it to the NetworkPolicy's egress "
        "(components/tracing after components/network-policy)",
    )


def vault_glob(pattern: str, path: str) -> bool:
    """Vault's policy path matching: '+' stands for one whole segment, a '*' at the end for any rest."""
    parts = pattern.removesuffix("*").split("/")
    regex = "/".join("[^/]+" if part == "+" else re.escape(part) for part in parts)
    return re.fullmatch(regex + (".*" if pattern.endswith("*") else ""), path) is not None


def policy_grants(text: str, mount: str) -> list[tuple[str, set[str]]]:
    """A policy file's (path glob, capabilities), its "transit/" prefix on `mount` as setup.sh writes it."""
    blocks = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]', text)
    return [
        (
            glob.replace("transit/", f"{mount}/", 1) if glob.startswith("transit/") else glob,
            {c.strip().strip('"') for c in capabilities.split(",")},
        )
        for glob, capabilities in blocks
    ]


def check_transit(pod: Pod, problems: Problems) -> None:
    """Each org signs with kv or transit; a Transit org's key is one the shipped Transit policy lets the pod
    HMAC, verify and read on its mount; the Vault role fits the orgs: setup.sh's Transit role reads no KV
    org secret, and its KV role has no Transit grant."""
    orgs = pod.setting("orgs", {})
    modes = {name: org.get("signing", DEFAULT_SIGNING) for name, org in orgs.items()}
    for name, mode in modes.items():
        problems.need(
            mode in (KV_SIGNING, TRANSIT_SIGNING),
            f"{pod.where}: orgs.{name}.signing is {KV_SIGNING} or {TRANSIT_SIGNING}; got {mode!r}",
        )
    transit = sorted(name for name, mode in modes.items() if mode == TRANSIT_SIGNING)
    kv = sorted(name for name, mode in modes.items() if mode == KV_SIGNING)
    for name in transit:
        org = orgs[name]
        key, mount = org.get("transit_key"), org.get("transit_mount", DEFAULT_TRANSIT_MOUNT)
        problems.need(bool(key), f"{pod.where}: orgs.{name} signs through Transit and names its transit_key")
        if not key:
            continue
        grants = policy_grants(TRANSIT_POLICY_FILE.read_text(), mount)
        for path, capability in TRANSIT_NEEDS:
            wanted = f"{mount}/{path.format(key=key)}"
            problems.need(
                any(vault_glob(glob, wanted) and capability in capabilities for glob, capabilities in grants),
                f"{pod.where}: orgs.{name}: the policy {TRANSIT_POLICY_FILE.name} grants {capability} on "
                f"{wanted} (transit_key {key!r}, transit_mount {mount!r})",
            )
    if pod.setting("vault.auth", VAULT_DEFAULTS["auth"]) != "kubernetes":
        return
    role = pod.setting("vault.kubernetes_role")
    problems.need(
        role != TRANSIT_ROLE or not kv,
        f"{pod.where}: vault.kubernetes_role {role} reads no KV org secret "
        f"(setup.sh TRANSIT=1), but orgs {', '.join(kv)} sign with kv",
    )
    problems.need(
        role != KV_ROLE or not transit,
        f"{pod.where}: vault.kubernetes_role {role} has no Transit grant, "
        f"but orgs {', '.join(transit)} sign through Transit: use "
        f"{TRANSIT_ROLE} (setup.sh TRANSIT=1)",
    )


POD_RULES = (
    check_config_argument,
    check_ports,
    check_probes,
    check_caller_authentication,
    check_mounts,
    check_secret_files,
    check_server_certificate,
    check_caller_trust_root,
    check_lifecycle,
    check_hardening,
    check_vault_token,
    check_network_policies,
    check_egress,
    check_tracing,
    check_transit,
)


# ---------------------------------------------------------------------------------------------- command lines

# Where each workload kind keeps its pod spec.
POD_SPEC_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
SHELLS = {"sh", "ash", "dash", "bash", "zsh"}
SHELL_KEYWORDS = {
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "while",
    "until",
    "do",
    "done",
    "for",
    "case",
    "esac",
    "!",
    "{",
    "}",
}
# Builtins run inside the shell: their arguments are in no process's command line.
SHELL_BUILTINS = {
    "export",
    "local",
    "readonly",
    "declare",
    "typeset",
    "echo",
    "printf",
    "test",
    "[",
    "set",
    "read",
    "cd",
    "exit",
    "return",
    ":",
    "shift",
    "unset",
    "trap",
    "wait",
}
CONTROL_CHARACTERS = set(";&|()<>")
# An argument name (NAME=value, --name value) is a credential's when one of its words is one of these and its
# last word does not say that the value is something else (a file holding it, its type, a policy name...).
SECRET_WORDS = {"secret", "token", "password", "passwd", "jwt", "key", "apikey", "credential", "credentials", "private"}
NOT_SECRET_LAST_WORDS = {
    "file",
    "path",
    "dir",
    "mount",
    "policy",
    "policies",
    "ttl",
    "type",
    "name",
    "names",
    "field",
    "version",
    "addr",
    "address",
    "url",
    "size",
    "bits",
    "usage",
    "usages",
    "role",
    "period",
    "uses",
    "prefix",
    "format",
    "algorithm",
}
# How a program is handed a value without a command line: "-" (stdin) or "@<file>", as bao and vault read them.
VALUE_BY_REFERENCE = re.compile(r"^(-|@.+)$")
SECRET_FORMATS = {
    "a Vault token": re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}|\bs\.[A-Za-z0-9]{24}\b"),
    "a JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\."),
    "a TokenService API key": re.compile(r"\btks_[A-Za-z0-9_-]{20,}"),
    "a private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
}
# Kubernetes replaces $(NAME) in command and args with the variable's value ($$ escapes it).
KUBERNETES_EXPANSION = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
SHELL_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
ARGUMENT = re.compile(r"^-{0,2}([A-Za-z0-9][A-Za-z0-9_.-]*)=(.*)$", re.DOTALL)
FLAG = re.compile(r"^--?([A-Za-z0-9][A-Za-z0-9_.-]*)$")
# Shorter values of a Secret ("true", "1") are found in command lines without being leaked there.
MIN_SECRET_VALUE_CHARS = 8


def pod_spec(obj: Manifest) -> Manifest | None:
    """The pod spec of a workload; None for other kinds."""
    path = POD_SPEC_PATHS.get(obj["kind"])
    if path is None:
        return None
    spec = obj
    for key in path:
        spec = spec.get(key) or {}
    return spec


def secret_values(objects: list[Manifest]) -> dict[tuple[str, str], str]:
    """(Secret name, key) -> value, for the Secrets rendered here (dev's generated ones)."""
    values = {}
    for secret in (o for o in objects if o["kind"] == "Secret"):
        name = secret["metadata"]["name"]
        for key, encoded in (secret.get("data") or {}).items():
            try:
                values[name, key] = base64.b64decode(encoded).decode()
            except (binascii.Error, UnicodeDecodeError):
                continue
        values.update({(name, key): value for key, value in (secret.get("stringData") or {}).items()})
    return values


def secret_variables(container: Manifest, secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's environment variables that hold a Secret's value -> which ("the Secret S's K")."""
    found = {}
    for variable in container.get("env", []):
        ref = (variable.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            found[variable["name"]] = f"the Secret {ref.get('name')}'s {ref.get('key')}"
    for source in container.get("envFrom", []):
        ref = source.get("secretRef")
        if ref:
            for name, key in secrets:
                if name == ref.get("name"):
                    found[source.get("prefix", "") + key] = f"the Secret {name}'s {key}"
    return found


def shell_commands(script: str) -> Iterator[list[str]]:
    """The simple commands of a shell script, as words (one command per line, pipes and lists split):
    enough for the scripts of these manifests, which keep one command to a line."""
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        command: list[str] = []
        for word in lexer:
            if set(word) <= CONTROL_CHARACTERS:
                if command:
                    yield command
                command = []
            else:
                command.append(word)
        if command:
            yield command


def program_arguments(words: list[str]) -> list[str]:
    """The arguments a shell command passes to the program it runs (none for builtins and assignments)."""
    words = list(words)
    while words and (words[0] in SHELL_KEYWORDS or SHELL_ASSIGNMENT.match(words[0])):
        words.pop(0)
    if not words or words[0] in SHELL_BUILTINS:
        return []
    return words[1:]


def secret_name(name: str) -> bool:
    """Whether an argument's name (token, -dev-root-token-id, api_key) says it carries a credential."""
    parts = [part for part in re.split(r"[-_.]", name.lower()) if part]
    return bool(SECRET_WORDS & set(parts)) and parts[-1] not in NOT_SECRET_LAST_WORDS


def shown(value: str) -> str:
    """An argument's value as a problem may show it: an expansion's start, never a literal."""
    return (value[:12] + "…" if len(value) > 12 else value) if value.startswith("$") else "<a literal value>"


def secret_arguments(arguments: list[str]) -> Iterator[tuple[int, str]]:
    """NAME=value and --name value arguments that hand a credential over in the command line: (index, as
    a problem may show it)."""
    for index, word in enumerate(arguments):
        assigned, flag = ARGUMENT.match(word), FLAG.match(word)
        if assigned and assigned[2] and secret_name(assigned[1]) and not VALUE_BY_REFERENCE.match(assigned[2]):
            yield index, f"passes {word[: len(word) - len(assigned[2])]}{shown(assigned[2])}"
        elif flag and secret_name(flag[1]) and index + 1 < len(arguments) and not arguments[index + 1].startswith("-"):
            yield index, f"passes {word} {shown(arguments[index + 1])}"


def container_argv(container: Manifest) -> tuple[list[tuple[str, str]], int | None]:
    """The container's argv as (field, element) pairs, and the index of its shell script (sh -c SCRIPT)."""
    argv = [("command", e) for e in container.get("command", [])] + [("args", e) for e in container.get("args", [])]
    if argv and argv[0][1].rsplit("/", 1)[-1] in SHELLS:
        flag = next((i for i, (_, e) in enumerate(argv) if i and re.fullmatch(r"-[a-z]*c[a-z]*", e)), None)
        if flag is not None and flag + 1 < len(argv):
            return argv, flag + 1
    return argv, None


def script_problems(script: str, variables: dict[str, str]) -> Iterator[str]:
    """What a shell script hands to the programs it runs: credential arguments, Secret-backed variables."""
    for arguments in map(program_arguments, shell_commands(script)):
        yield from (passed for _, passed in secret_arguments(arguments))
        for word in arguments:
            for variable, source in variables.items():
                for written in re.findall(rf"\$\{{?{variable}\}}?(?![A-Za-z0-9_])", word):
                    yield f"passes {written}, {source}"


def command_line_problems(container: Manifest, secrets: dict[tuple[str, str], str]) -> Iterator[tuple[str, str]]:
    """(field, problem) for each way the container's command line carries a secret."""
    variables = secret_variables(container, secrets)
    argv, script = container_argv(container)
    for field, element in argv:
        for variable in KUBERNETES_EXPANSION.findall(element):
            if variable in variables:
                yield field, f"expands $({variable}), {variables[variable]}"
        for (secret, key), value in secrets.items():
            if len(value) >= MIN_SECRET_VALUE_CHARS and value in element:
                yield field, f"holds the value of the Secret {secret} (key {key})"
        for kind, pattern in SECRET_FORMATS.items():
            if pattern.search(element):
                yield field, f"holds {kind}"
    if script is None:
        for index, passed in secret_arguments([element for _, element in argv[1:]]):
            yield argv[index + 1][0], passed
        return
    field, text = argv[script]
    try:
        yield from ((field, passed) for passed in script_problems(text, variables))
    except ValueError as error:
        yield field, f"has a shell script this check cannot read ({error}); keep one command to a line"


def check_command_lines(objects: list[Manifest], where: str, problems: Problems) -> None:
    """No container's command line (which anyone on the node can read in /proc) carries a secret: no
    $(VAR) of a Secret-backed variable, no Secret's value, nothing shaped like a token or key, no
    NAME=value or --name value argument for a credential (bao's field=- and field=@file read stdin and
    files), and in shell scripts no program given a Secret-backed variable (builtins such as printf run
    in the shell and are no process)."""
    secrets = secret_values(objects)
    fix = "pass it in a file or on stdin (bao: field=@file, field=-), or let the program read its variable itself"
    for obj in objects:
        spec = pod_spec(obj)
        for container in [] if spec is None else spec.get("initContainers", []) + spec.get("containers", []):
            for field, problem in dict.fromkeys(command_line_problems(container, secrets)):
                problems.append(
                    f"{where}: {obj['kind']}/{obj['metadata']['name']} container {container['name']} "
                    f"{field}: {problem}: {fix}"
                )


def check_kinds(objects: list[Manifest], where: str, problems: Problems) -> None:
    """Built-in kinds, or custom kinds valid against their schema here."""
    for obj in objects:
        name = f"{where}: {obj['kind']}/{obj['metadata']['name']}"
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if "." not in group or group.endswith(".k8s.io"):
            continue
        if (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
            problems.append(f"{name}: custom resource kind with no check; add a schema in deploy/check_rendered.py")
            continue
        for error in jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]]).iter_errors(obj):
            problems.append(f"{name}: {'.'.join(map(str, error.absolute_path))}: {error.message}")


def check_checkov_skips(objects: list[Manifest], where: str, problems: Problems) -> None:
    """Each skip gives its reason."""
    for obj in objects:
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                problems.need(
                    bool(CHECKOV_SKIP.match(value)),
                    f"{where}: {obj['kind']}/{obj['metadata']['name']}: annotation {key} must read "
                    f"CKV_ID=<reason of 20+ characters>; got {value!r}",
                )


def write_prometheus_rules(objects: list[Manifest], stem: str, rules_dir: Path) -> None:
    for obj in (o for o in objects if o["kind"] == "PrometheusRule"):
        out = rules_dir / f"{stem}-{obj['metadata']['name']}.rules.yaml"
        out.write_text(yaml.safe_dump(obj["spec"], sort_keys=False))


def load(path: Path) -> list[Manifest]:
    return [o for o in yaml.safe_load_all(path.read_text()) if o]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rules_dir", type=Path)
    parser.add_argument("--cluster", type=Path, required=True, help="the rendered cluster-wide objects")
    parser.add_argument("overlays", type=Path, nargs="+")
    args = parser.parse_args(argv)
    args.rules_dir.mkdir(parents=True, exist_ok=True)
    problems = Problems()
    cluster = load(args.cluster)
    for path, objects in ((args.cluster, cluster), *((p, load(p)) for p in args.overlays)):
        check_kinds(objects, path.stem, problems)
        check_checkov_skips(objects, path.stem, problems)
        check_policy_bindings(objects, path.stem, problems)
        check_command_lines(objects, path.stem, problems)
        write_prometheus_rules(objects, path.stem, args.rules_dir)
        if path != args.cluster and (pod := find_pod(objects + cluster, path.stem, problems)) is not None:
            for rule in POD_RULES:
                rule(pod, problems)
    for problem in problems:
        print(f"FAIL {problem}", file=sys.stderr)
    print(f"check_rendered: {len(args.overlays)} overlay(s) with {args.cluster.name}, {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
