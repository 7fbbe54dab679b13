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
  - network policies: caller ports and metrics admitted, never health.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import re
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

REPO = Path(__file__).resolve().parents[1]
APP = "tokenservice"


def _constants(tree: ast.Module, class_name: str | None = None) -> dict[str, object]:
    """The literal values assigned at module level, or to a class's fields (names of module constants
    resolved); other expressions are left out."""
    module = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                module[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    if class_name is None:
        return module
    body = next(node.body for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name)
    fields = {}
    for node in body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            if isinstance(node.value, ast.Name) and node.value.id in module:
                fields[node.target.id] = module[node.value.id]
                continue
            try:
                fields[node.target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return fields


def _service_defaults() -> tuple[dict, dict, str, str]:
    """The service's defaults, read from its source: its modules import grpc, which this virtualenv lacks.
    (Config's defaults, AuditConfig's, the liveness health service, the TokenService gRPC service name.)"""
    config = ast.parse((REPO / "service" / "config.py").read_text())
    server = _constants(ast.parse((REPO / "service" / "server.py").read_text()))
    proto = (REPO / "protos" / "tokenservice" / "v1" / "token_service.proto").read_text()
    package = re.search(r"^package\s+([\w.]+);", proto, re.MULTILINE).group(1)
    return _constants(config, "Config"), _constants(config, "AuditConfig"), server["LIVENESS_SERVICE"], \
        f"{package}.TokenService"


CONFIG_DEFAULTS, AUDIT_DEFAULTS, LIVENESS_SERVICE, READINESS_SERVICE = _service_defaults()

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
_NAMESPACED = {"type": "object", "required": ["name", "namespace"], "additionalProperties": False,
               "properties": {**_METADATA_FIELDS, "namespace": _STR}}
_CLUSTER_SCOPED = {"type": "object", "required": ["name"], "additionalProperties": False,
                   "properties": _METADATA_FIELDS}


def _custom_resource(api_version: str, kind: str, spec: dict, metadata: dict = _NAMESPACED) -> dict:
    """The schema of one custom resource: the envelope every kind shares, around its spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": metadata,
                       "spec": spec},
    }


def _strict(properties: dict, required: tuple[str, ...] = (), **more: object) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": properties, "required": list(required),
            **more}


_DURATION = {"type": "string", "pattern": r"^(\d+(h|m|s))+$"}
_ISSUER_REF = _strict({"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]},
                       "group": {"const": "cert-manager.io"}}, ("name", "kind", "group"))
# cert-manager's key usages (the ones a TLS server, client or CA certificate may need).
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"]
_USAGE_LIST = {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": _USAGES}}
_ISSUER_SPEC = _strict({
    "selfSigned": _strict({}),
    "ca": _strict({"secretName": _STR}, ("secretName",)),
}, minProperties=1, maxProperties=1)
_POLICY_VALIDATIONS = {"type": "array", "minItems": 1,
                       "items": _strict({"rule": _STR, "message": _STR}, ("rule",))}
_POLICY_STRINGS = _strict({"required": {"type": "boolean"}, "values": {"type": "array", "items": _STR},
                           "validations": _POLICY_VALIDATIONS})
_POLICY_STRING = _strict({"required": {"type": "boolean"}, "value": _STR, "validations": _POLICY_VALIDATIONS})
_SELECTOR_LABELS = _strict({"matchLabels": _LABELS})

SCHEMAS = {
    "ServiceMonitor": _custom_resource("monitoring.coreos.com/v1", "ServiceMonitor", _strict({
        "selector": _SELECTOR_LABELS,
        "namespaceSelector": {"type": "object"},
        "endpoints": {"type": "array", "minItems": 1, "items": _strict({
            "port": _STR,
            "path": {"type": "string", "pattern": "^/"},
            "scheme": {"enum": ["http", "https"]},
            "interval": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
            "scrapeTimeout": {"type": "string", "pattern": r"^(\d+(ms|s|m|h))+$"},
        }, ("port",))},
    }, ("selector", "endpoints"))),
    "PrometheusRule": _custom_resource("monitoring.coreos.com/v1", "PrometheusRule", _strict(
        {"groups": {"type": "array", "minItems": 1}}, ("groups",))),
    "Certificate": _custom_resource("cert-manager.io/v1", "Certificate", _strict({
        "secretName": _STR,
        "secretTemplate": _strict({"labels": _LABELS, "annotations": _LABELS}),
        "isCA": {"type": "boolean"},
        "commonName": {"type": "string", "maxLength": 64},
        "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[a-z0-9.-]+$"}},
        "uris": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^spiffe://\S+$"}},
        "duration": _DURATION,
        "renewBefore": _DURATION,
        "usages": _USAGE_LIST,
        "privateKey": _strict({
            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
            "size": {"type": "integer"},
            "encoding": {"enum": ["PKCS1", "PKCS8"]},
            "rotationPolicy": {"enum": ["Never", "Always"]},
        }, ("algorithm", "rotationPolicy")),
        "issuerRef": _ISSUER_REF,
    }, ("secretName", "issuerRef", "privateKey"),
        anyOf=[{"required": ["dnsNames"]}, {"required": ["uris"]}, {"required": ["commonName"]}])),
    "Issuer": _custom_resource("cert-manager.io/v1", "Issuer", _ISSUER_SPEC),
    "ClusterIssuer": _custom_resource("cert-manager.io/v1", "ClusterIssuer", _ISSUER_SPEC, _CLUSTER_SCOPED),
    "CertificateRequestPolicy": _custom_resource("policy.cert-manager.io/v1alpha1", "CertificateRequestPolicy",
                                                 _strict({
        "selector": _strict({
            "issuerRef": _strict({"name": _STR, "kind": _STR, "group": _STR}),
            "namespace": _strict({"matchNames": {"type": "array", "minItems": 1, "items": _STR},
                                  "matchLabels": _LABELS}, minProperties=1),
        }, ("issuerRef",)),
        "allowed": _strict({
            "commonName": _POLICY_STRING,
            "dnsNames": _POLICY_STRINGS,
            "ipAddresses": _POLICY_STRINGS,
            "uris": _POLICY_STRINGS,
            "emailAddresses": _POLICY_STRINGS,
            "isCA": {"type": "boolean"},
            "usages": _USAGE_LIST,
        }),
        "constraints": _strict({"minDuration": _DURATION, "maxDuration": _DURATION, "privateKey": _strict({
            "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "minSize": {"type": "integer"},
            "maxSize": {"type": "integer"}})}),
    }, ("selector", "allowed")), _CLUSTER_SCOPED),
    "Bundle": _custom_resource("trust.cert-manager.io/v1alpha1", "Bundle", _strict({
        "sources": {"type": "array", "minItems": 1, "items": _strict({
            "secret": _strict({"name": _STR, "key": _STR}, ("name", "key")),
            "configMap": _strict({"name": _STR, "key": _STR}, ("name", "key")),
            "inLine": _STR,
            "useDefaultCAs": {"type": "boolean"},
        }, minProperties=1, maxProperties=1)},
        "target": _strict({"configMap": _strict({"key": _STR}, ("key",)),
                           "namespaceSelector": _SELECTOR_LABELS}, ("configMap", "namespaceSelector")),
    }, ("sources", "target")), _CLUSTER_SCOPED),
}
# The custom kinds the manifests may use: the ones there is a schema for.
CUSTOM_KINDS = {(schema["properties"]["apiVersion"]["const"], kind) for kind, schema in SCHEMAS.items()}

CHECKOV_SKIP = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=\S.{19,}$")


class Problems(list):
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

    mount: dict
    volume: dict
    kind: str | None  # "secret", "configMap", or None for another volume type
    name: str | None  # the Secret's or ConfigMap's name
    key: str | None  # the key the file holds, None when no key maps to it

    @property
    def source(self) -> dict:
        return self.volume.get(self.kind, {}) if self.kind else {}


def mounted_file(path: str | None, mounts: dict, volumes: dict) -> MountedFile | None:
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
    objects: list[dict]
    deployment: dict
    container: dict
    config: dict
    volumes: dict
    mounts: dict
    services: list[dict]

    @property
    def spec(self) -> dict:
        return self.deployment["spec"]["template"]["spec"]

    @property
    def namespace(self) -> str | None:
        return self.deployment["metadata"].get("namespace")

    @property
    def labels(self) -> dict:
        return self.deployment["spec"]["template"]["metadata"]["labels"]

    def setting(self, name: str, default: object = None) -> object:
        section, _, key = name.rpartition(".")
        table = self.config.get(section, {}) if section else self.config
        return table.get(key, default)

    def port(self, setting: str) -> int | None:
        address = self.setting(setting, CONFIG_DEFAULTS.get(setting))
        return port_of(address) if address else None

    def of_kind(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def file(self, setting: str) -> MountedFile | None:
        return mounted_file(self.setting(setting), self.mounts, self.volumes)

    @property
    def expected_ports(self) -> dict[str, int | None]:
        return {"grpc": self.port("grpc_addr"), "grpc-api-key": self.port("tls.api_key_addr"),
                "health": self.port("health_addr"), "metrics": self.port("metrics_addr")}


def find_pod(objects: list[dict], where: str, problems: Problems) -> Pod | None:
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
    problems.need(pod.container.get("args", [])[-2:] == ["--config", f"{config_dir}/config.toml"],
                  f"{pod.where}: container args are --config {config_dir}/config.toml")


def check_ports(pod: Pod, problems: Problems) -> None:
    """Container ports on the configured addresses; the Service exposes the caller ports and metrics only."""
    expected = pod.expected_ports
    ports = {p["name"]: p["containerPort"] for p in pod.container["ports"]}
    problems.need(ports == expected,
                  f"{pod.where}: container ports {expected} (from config.toml: grpc_addr, tls.api_key_addr, "
                  f"health_addr, metrics_addr); got {ports}")
    problems.need(len(pod.services) == 1, f"{pod.where}: one Service {APP}")
    for service in pod.services:
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        problems.need(set(by_name) == set(SERVICE_PORTS),
                      f"{pod.where}: Service ports are {', '.join(SERVICE_PORTS)} (not the plaintext health port); "
                      f"got {sorted(by_name)}")
        for name in CALLER_PORTS:
            problems.need(by_name.get(name, {}).get("appProtocol") == "grpc",
                          f"{pod.where}: Service port {name} has appProtocol grpc")
        for name, port in by_name.items():
            problems.need(port.get("targetPort") == name and port.get("port") == expected.get(name),
                          f"{pod.where}: Service port {name} is {expected.get(name)}, targetPort {name}")
        selector = service["spec"].get("selector", {})
        problems.need(selector and all(pod.labels.get(k) == v for k, v in selector.items()),
                      f"{pod.where}: the Service selects the {APP} pods")


def check_probes(pod: Pod, problems: Problems) -> None:
    """Native gRPC probes on the plaintext health port: the kubelet speaks neither TLS nor API keys."""
    health_port = pod.port("health_addr")
    problems.need(health_port is not None, f"{pod.where}: config.toml sets health_addr (the probes' plaintext port)")
    for probe, service_name in (("startupProbe", LIVENESS_SERVICE), ("livenessProbe", LIVENESS_SERVICE),
                                ("readinessProbe", READINESS_SERVICE)):
        problems.need(pod.container.get(probe, {}).get("grpc") == {"port": health_port, "service": service_name},
                      f"{pod.where}: {probe} is a native gRPC probe on the health port {health_port}, "
                      f"service {service_name!r}")


def check_caller_authentication(pod: Pod, problems: Problems) -> None:
    """Callers configured, mTLS on grpc_addr, API keys from Vault, the audit trail on stdout."""
    callers = pod.setting("callers", {})
    problems.need(bool(callers), f"{pod.where}: config.toml configures [callers.<name>] (caller authentication on)")
    problems.need(not pod.setting("auth.insecure_no_caller_auth", False),
                  f"{pod.where}: auth.insecure_no_caller_auth is not set")
    problems.need(bool(pod.setting("tls.client_ca_file")),
                  f"{pod.where}: tls.client_ca_file set: grpc_addr requires client certificates")
    problems.need(bool(pod.setting("auth.api_keys_path")) and pod.port("tls.api_key_addr") is not None,
                  f"{pod.where}: auth.api_keys_path and tls.api_key_addr set for the API-key callers")
    problems.need(pod.setting("audit.output", AUDIT_DEFAULTS["output"]) == "stdout",
                  f"{pod.where}: audit.output is stdout (the pod's log, collected with it)")
    by_certificate = [c for c in callers.values() if c.get("spiffe_id") or c.get("dns_name")]
    problems.need(bool(by_certificate) and len(by_certificate) < len(callers),
                  f"{pod.where}: an example certificate caller and an example API-key caller")


def check_mounts(pod: Pod, problems: Problems) -> None:
    """Separate directories, none inside another, no subPath anywhere."""
    paths = sorted(m["mountPath"].rstrip("/") for m in pod.mounts.values())
    for index, path in enumerate(paths):
        for other in paths[index + 1:]:
            problems.need(not (other == path or other.startswith(path + "/")),
                          f"{pod.where}: volume mount {other} lies inside (or on) {path}; give each its own directory")
    for mount in pod.mounts.values():
        problems.need("subPath" not in mount and "subPathExpr" not in mount,
                      f"{pod.where}: volume {mount['name']} is mounted with a subPath, which never receives updates")


def tls_secrets(pod: Pod) -> set[str]:
    """The Secrets the server certificate and key come from."""
    return {found.name for found in map(pod.file, TLS_SECRET_KEYS) if found and found.kind == "secret"}


def check_secret_files(pod: Pod, problems: Problems) -> None:
    """The server certificate and key, the caller CA and the audit key: read-only, private, required volumes."""
    expected_keys = {**TLS_SECRET_KEYS, "tls.client_ca_file": CA_KEY, "audit.fingerprint_key_file": None}
    for setting, expected_key in expected_keys.items():
        found = pod.file(setting)
        public = setting == "tls.client_ca_file" and found is not None and found.kind == "configMap"
        problems.need(found is not None and found.key is not None and (found.kind == "secret" or public),
                      f"{pod.where}: {setting} ({pod.setting(setting)}) is a key of a Secret volume (or, for the "
                      "caller CA, a ConfigMap volume), mounted as a directory")
        if found is None or found.kind is None:
            continue
        problems.need(found.mount.get("readOnly") is True, f"{pod.where}: volume {found.mount['name']} is mounted "
                                                           "read-only")
        problems.need(not found.source.get("optional", False),
                      f"{pod.where}: volume {found.mount['name']} is not optional")
        if found.kind == "secret":
            problems.need(found.source.get("defaultMode", 0o644) & 0o007 == 0,
                          f"{pod.where}: Secret volume {found.mount['name']} is not world-readable (defaultMode)")
        if expected_key is not None:
            problems.need(found.key == expected_key, f"{pod.where}: {setting} is the key {expected_key} of its "
                                                     f"{found.kind}")
    secrets = tls_secrets(pod)
    problems.need(len(secrets) <= 1, f"{pod.where}: the server certificate and key come from one Secret; got "
                                     f"{sorted(secrets)}")


def check_server_certificate(pod: Pod, problems: Problems) -> None:
    """cert-manager objects: every Issuer referred to is rendered (a ClusterIssuer may be the cluster's); a CA
    issuer's CA is a rendered CA Certificate; the server Certificate names the Service in its namespace."""
    certificates = pod.of_kind("Certificate")
    issuers = {(o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in pod.of_kind("Issuer")}
    for certificate in certificates:
        ref, namespace = certificate["spec"]["issuerRef"], certificate["metadata"].get("namespace")
        if ref["kind"] == "Issuer":
            problems.need((namespace, ref["name"]) in issuers,
                          f"{pod.where}: Certificate/{certificate['metadata']['name']}: its Issuer {ref['name']} "
                          "is rendered in its namespace")
    # A rendered ClusterIssuer reads its Secret in cert-manager's cluster resource namespace.
    rendered_issuers = [*((namespace, issuer) for (namespace, _), issuer in issuers.items()),
                        *((CLUSTER_RESOURCE_NAMESPACE, issuer) for issuer in pod.of_kind("ClusterIssuer"))]
    for namespace, issuer in rendered_issuers:
        ca_secret = issuer["spec"].get("ca", {}).get("secretName")
        if ca_secret:
            problems.need(any(c["spec"]["secretName"] == ca_secret and c["spec"].get("isCA")
                              and c["metadata"].get("namespace") == namespace for c in certificates),
                          f"{pod.where}: {issuer['kind']}/{issuer['metadata']['name']}: its CA Secret {ca_secret} "
                          f"is issued by a rendered CA Certificate (isCA) in namespace {namespace}")
    if not certificates:
        return  # the TLS Secret is made outside Kustomize
    secrets = tls_secrets(pod)
    servers = server_certificates(pod)
    problems.need(len(servers) == 1, f"{pod.where}: one cert-manager Certificate issues the TLS Secret "
                                     f"{sorted(secrets)}")
    for server in servers:
        spec = server["spec"]
        problems.need("server auth" in spec.get("usages", []), f"{pod.where}: the server Certificate has usage "
                                                                "server auth")
        problems.need(not spec.get("isCA"), f"{pod.where}: the server Certificate is not a CA")
        problems.need(spec["privateKey"].get("rotationPolicy") == "Always",
                      f"{pod.where}: the server Certificate gets a new private key at each renewal "
                      "(rotationPolicy Always)")
        for service in pod.services:
            namespace = service["metadata"].get("namespace")
            wanted = {APP, f"{APP}.{namespace}", f"{APP}.{namespace}.svc"}
            missing = wanted - set(spec.get("dnsNames", []))
            problems.need(not missing, f"{pod.where}: the server Certificate names the Service; missing "
                                       f"{sorted(missing)}")
            problems.need(server["metadata"].get("namespace") == namespace,
                          f"{pod.where}: the server Certificate is in the Service's namespace")


def server_certificates(pod: Pod) -> list[dict]:
    secrets = tls_secrets(pod)
    return [c for c in pod.of_kind("Certificate")
            if c["spec"]["secretName"] in secrets and c["metadata"].get("namespace") == pod.namespace]


IssuerKey = tuple[str, str | None, str]


def issuer_of(certificate: dict) -> IssuerKey:
    """(kind, namespace or None for a ClusterIssuer, name) of the issuer a Certificate names."""
    ref = certificate["spec"]["issuerRef"]
    namespace = certificate["metadata"].get("namespace") if ref["kind"] == "Issuer" else None
    return ref["kind"], namespace, ref["name"]


def key_of(issuer: dict) -> IssuerKey:
    """The same triple for an Issuer or ClusterIssuer object."""
    namespace = issuer["metadata"].get("namespace") if issuer["kind"] == "Issuer" else None
    return issuer["kind"], namespace, issuer["metadata"]["name"]


def caller_issuers(pod: Pod, problems: Problems) -> list[dict]:
    """The issuers whose CA tls.client_ca_file holds, by where the file comes from: a namespaced CA Issuer's
    Secret (its ca.crt alone), or a trust-manager Bundle of ClusterIssuer CA Secrets and nothing else."""
    found = pod.file("tls.client_ca_file")
    if found is None or found.kind is None:
        return []
    where = f"{pod.where}: tls.client_ca_file"
    if found.kind == "secret" and found.name in tls_secrets(pod):
        problems.append(f"{where} comes from the server's TLS Secret {found.name}: the server certificate's CA "
                        "would vouch for callers; mount the caller CA instead")
        return []
    if found.kind == "secret":
        problems.need([item["key"] for item in found.source.get("items", [])] == [CA_KEY],
                      f"{where}: the Secret volume {found.mount['name']} maps the key {CA_KEY} alone (items), so "
                      "the CA's private key never reaches the pod")
        issuers = [i for i in pod.of_kind("Issuer") if i["spec"].get("ca", {}).get("secretName") == found.name
                   and i["metadata"].get("namespace") == pod.namespace]
        problems.need(bool(issuers), f"{where}: the Secret {found.name} is the CA of a rendered CA Issuer in "
                                     f"namespace {pod.namespace} (the caller CA)")
        return issuers
    bundles = [b for b in pod.of_kind("Bundle") if b["metadata"]["name"] == found.name]
    problems.need(len(bundles) == 1, f"{where}: the ConfigMap {found.name} is the target of a rendered "
                                     "trust-manager Bundle of the same name")
    if len(bundles) != 1:
        return []
    spec = bundles[0]["spec"]
    problems.need(spec["target"]["configMap"]["key"] == found.key,
                  f"{where}: Bundle/{found.name} writes the key {found.key}")
    namespace_labels = {"kubernetes.io/metadata.name": pod.namespace, **next(
        (n["metadata"].get("labels", {}) for n in pod.of_kind("Namespace") if n["metadata"]["name"] == pod.namespace),
        {})}
    wanted = spec["target"]["namespaceSelector"].get("matchLabels", {})
    problems.need(bool(wanted) and all(namespace_labels.get(k) == v for k, v in wanted.items()),
                  f"{where}: Bundle/{found.name} selects namespace {pod.namespace} by its labels")
    cluster_issuers = {i["spec"].get("ca", {}).get("secretName"): i for i in pod.of_kind("ClusterIssuer")}
    issuers = []
    for source in spec["sources"]:
        secret = source.get("secret", {})
        problems.need(secret.get("name") in cluster_issuers and secret.get("key") == CA_KEY,
                      f"{where}: every source of Bundle/{found.name} is the {CA_KEY} of a rendered ClusterIssuer's "
                      f"CA Secret (no default CAs, inline or other certificates); got {source}")
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
        problems.need(key not in server_issuers, f"{name}: does not issue the server certificate; the server's "
                                                 "CA and the caller CA are separate")
        for certificate in (c for c in pod.of_kind("Certificate") if issuer_of(c) == key):
            check_caller_certificate(pod, certificate, problems)
        if issuer["kind"] == "ClusterIssuer":
            check_caller_policies(pod, issuer, problems)


def spiffe_namespace(uri: str) -> str | None:
    """The namespace of a Kubernetes SPIFFE ID spiffe://<trust domain>/ns/<namespace>/sa/<service account>."""
    match = re.fullmatch(r"spiffe://[a-z0-9.-]+/ns/([a-z0-9-]+)/sa/[a-z0-9.-]+", uri)
    return match.group(1) if match else None


def check_caller_certificate(pod: Pod, certificate: dict, problems: Problems) -> None:
    """A caller certificate identifies a caller of its own namespace and is good for nothing else."""
    spec, namespace = certificate["spec"], certificate["metadata"].get("namespace")
    name = f"{pod.where}: Certificate/{certificate['metadata']['name']} (from the caller CA)"
    identities = {c.get("spiffe_id") for c in pod.setting("callers", {}).values()} - {None}
    problems.need(not spec.get("isCA") and "client auth" in spec.get("usages", [])
                  and set(spec.get("usages", [])) <= CALLER_USAGES,
                  f"{name}: is no CA and has the usages of a client certificate only ({sorted(CALLER_USAGES)})")
    problems.need(not spec.get("dnsNames") and not spec.get("commonName") and spec.get("uris"),
                  f"{name}: carries SPIFFE IDs (uris) and no DNS name or common name")
    for uri in spec.get("uris", []):
        problems.need(spiffe_namespace(uri) == namespace,
                      f"{name}: {uri} is a SPIFFE ID of its own namespace {namespace}")
        problems.need(uri in identities, f"{name}: {uri} is a configured caller's spiffe_id")


def selects(policy: dict, issuer: dict) -> bool:
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


def check_caller_policies(pod: Pod, issuer: dict, problems: Problems) -> None:
    """Every policy that can select the caller ClusterIssuer selects namespaces, allows only SPIFFE IDs bound
    to the requesting namespace (each configured caller's from its namespace, none from another), and no CA."""
    name = f"{pod.where}: ClusterIssuer/{issuer['metadata']['name']} (the caller CA)"
    policies = [p for p in pod.of_kind("CertificateRequestPolicy") if selects(p, issuer)]
    problems.need(bool(policies), f"{name}: a rendered CertificateRequestPolicy selects it (with cert-manager's "
                                  "default approver off, nothing else approves its requests)")
    callers = [c["spiffe_id"] for c in pod.setting("callers", {}).values() if c.get("spiffe_id")]
    for policy in policies:
        where = f"{pod.where}: CertificateRequestPolicy/{policy['metadata']['name']} (selects the caller CA)"
        allowed = policy["spec"]["allowed"]
        problems.need(set(allowed) <= {"uris", "usages"} and not allowed.get("isCA"),
                      f"{where}: allows SPIFFE IDs (uris) and usages only: no names, addresses, common name or CA")
        problems.need(set(allowed.get("usages", [])) <= CALLER_USAGES,
                      f"{where}: allows the usages of a client certificate only ({sorted(CALLER_USAGES)})")
        uris = allowed.get("uris", {})
        tests = [namespace_bound(v["rule"]) for v in uris.get("validations", [])]
        tests = [test for test in tests if test is not None]
        problems.need(uris.get("required") is True and bool(tests),
                      f"{where}: requires a URI and binds it to the requesting namespace with a validation "
                      "self.matches('^spiffe://<trust domain>/ns/' + cr.namespace + '/sa/<service account>$')")
        problems.need(bool(policy["spec"]["selector"].get("namespace")),
                      f"{where}: selects the namespaces that may request caller certificates")
        for uri in callers:
            own = spiffe_namespace(uri) or ""
            problems.need(all(test(own, uri) for test in tests) and any(wildcard(v, uri) for v in uris.get(
                "values", ["*"])), f"{where}: permits {uri} requested from its namespace {own}")
            for other, claimed in (("another-namespace", uri), (own, f"{uri}/x"), (own, uri.replace(
                    f"/ns/{own}/", "/ns/another-namespace/"))):
                problems.need(not all(test(other, claimed) for test in tests),
                              f"{where}: refuses {claimed} requested from namespace {other}")


def check_policy_bindings(objects: list[dict], where: str, problems: Problems) -> None:
    """RBAC lets requesters use named CertificateRequestPolicies only (never every policy there is)."""
    for role in (o for o in objects if o["kind"] in ("ClusterRole", "Role")):
        for rule in role.get("rules", []):
            uses = {"use", "*"} & set(rule.get("verbs", []))
            on_policies = ({"certificaterequestpolicies", "*"} & set(rule.get("resources", []))
                           and {"policy.cert-manager.io", "*"} & set(rule.get("apiGroups", [])))
            problems.need(not (uses and on_policies) or bool(rule.get("resourceNames")),
                          f"{where}: {role['kind']}/{role['metadata']['name']}: grants use of "
                          "CertificateRequestPolicies by name (resourceNames) only")


def check_lifecycle(pod: Pod, problems: Problems) -> None:
    """A preStop sleep lets endpoints drop the pod before SIGTERM; the grace period covers it and the drain."""
    pre_stop = pod.container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    grace = float(pod.setting("shutdown_grace_seconds", CONFIG_DEFAULTS["shutdown_grace_seconds"]))
    termination = pod.spec.get("terminationGracePeriodSeconds", 30)
    problems.need(pre_stop > 0, f"{pod.where}: a preStop sleep lets endpoints drop the pod before SIGTERM")
    problems.need(termination > pre_stop + grace,
                  f"{pod.where}: terminationGracePeriodSeconds {termination} > preStop {pre_stop} + shutdown "
                  f"grace {grace}")


def check_hardening(pod: Pod, problems: Problems) -> None:
    """Non-root, read-only root filesystem, nothing to escalate with, no API token, bounded, a pinned image."""
    security, pod_security, where = pod.container.get("securityContext", {}), pod.spec.get("securityContext", {}), \
        pod.where
    problems.need(pod_security.get("runAsNonRoot") is True and security.get("runAsNonRoot") is True,
                  f"{where}: runAsNonRoot")
    problems.need(security.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
    problems.need(security.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
    problems.need(security.get("capabilities", {}).get("drop") == ["ALL"], f"{where}: capabilities drop ALL")
    problems.need(pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                  f"{where}: seccomp RuntimeDefault")
    problems.need(pod.spec.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken "
                                                                         "false")
    resources = pod.container.get("resources", {})
    problems.need(all(resources.get(kind, {}).get(r) for kind in ("requests", "limits") for r in ("cpu", "memory")),
                  f"{where}: cpu and memory requests and limits")
    image = pod.container["image"]
    problems.need("OVERLAY-MUST-SET-TAG" not in image and ":" in image.rsplit("/", 1)[-1] or "@sha256:" in image,
                  f"{where}: the overlay sets the image tag (got {image})")


def check_vault_token(pod: Pod, problems: Problems) -> None:
    """The only token in the pod is a projected one for Vault, short-lived, where the config reads it."""
    projected = pod.volumes.get("vault-token", {}).get("projected", {}).get("sources", [])
    sources = [s["serviceAccountToken"] for s in projected if s.get("serviceAccountToken")]
    problems.need(len(sources) == 1 and sources[0].get("audience") == "vault"
                  and sources[0].get("expirationSeconds", 3600) <= 3600,
                  f"{pod.where}: a projected serviceAccountToken for audience vault, expiring within an hour")
    vault = pod.setting("vault", {})
    if vault.get("auth") == "kubernetes" and sources:
        expected = f"{pod.mounts['vault-token']['mountPath']}/{sources[0]['path']}"
        configured = next((v for k, v in vault.items() if k.endswith("token_file") or k.endswith("jwt_file")), None)
        problems.need(configured == expected, f"{pod.where}: config.toml reads the Vault token at {expected} (got "
                                              f"{configured})")


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
        problems.need(set(SERVICE_PORTS) <= admitted,
                      f"{name}: admits the named ports {', '.join(SERVICE_PORTS)}; got {sorted(map(str, admitted))}")
        problems.need(all(rule.get("ports") for rule in rules) and not health & admitted,
                      f"{name}: admits no pod to the plaintext health port (every rule names its ports)")


POD_RULES = (check_config_argument, check_ports, check_probes, check_caller_authentication, check_mounts,
             check_secret_files, check_server_certificate, check_caller_trust_root, check_lifecycle,
             check_hardening, check_vault_token, check_network_policies)


def check_kinds(objects: list[dict], where: str, problems: Problems) -> None:
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


def check_checkov_skips(objects: list[dict], where: str, problems: Problems) -> None:
    """Each skip gives its reason."""
    for obj in objects:
        for key, value in (obj["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip"):
                problems.need(bool(CHECKOV_SKIP.match(value)),
                              f"{where}: {obj['kind']}/{obj['metadata']['name']}: annotation {key} must read "
                              f"CKV_ID=<reason of 20+ characters>; got {value!r}")


def write_prometheus_rules(objects: list[dict], stem: str, rules_dir: Path) -> None:
    for obj in (o for o in objects if o["kind"] == "PrometheusRule"):
        out = rules_dir / f"{stem}-{obj['metadata']['name']}.rules.yaml"
        out.write_text(yaml.safe_dump(obj["spec"], sort_keys=False))


def load(path: Path) -> list[dict]:
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
