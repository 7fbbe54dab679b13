#!/usr/bin/env python3
"""Checks on rendered overlays that kubernetes-validate and checkov do not make.

Run by deploy/validate with the tools virtualenv's Python (PyYAML, jsonschema):

    check_rendered.py RULES_OUT_DIR RENDERED.yaml...

1. Kinds: every object is either a built-in kind (schema-checked by
   kubernetes-validate) or one of the custom kinds below, which
   kubernetes-validate has no schema for. Those are checked here instead,
   against strict schemas of the fields this repo uses: the Prometheus
   Operator's ServiceMonitor and PrometheusRule (whose spec is also written
   to RULES_OUT_DIR for `promtool check rules`), and cert-manager's
   Certificate and Issuer.
2. checkov skips: every checkov.io/skipN annotation reads CKV_ID=<reason>.
3. TokenService's pod, against the config.toml in its own ConfigMap:
   - container ports grpc, grpc-api-key, health and metrics on the configured
     addresses; named Service ports grpc and grpc-api-key (appProtocol grpc)
     and metrics, and not the plaintext health port;
   - startup, liveness ("liveness") and readiness (tokenservice.v1.TokenService)
     probes: native gRPC probes on health_addr's port;
   - caller authentication on: callers configured, mTLS on grpc_addr
     (tls.client_ca_file), API keys at a path, audit to stdout with a
     fingerprint key file;
   - the TLS files and the audit key read from Secret volumes mounted
     read-only as directories (no subPath, which would never see a renewal),
     with no mount inside another; the TLS Secret issued by a rendered
     cert-manager Certificate for the Service's names (when the overlay has
     one), from an issuer that exists;
   - terminationGracePeriodSeconds > preStop sleep + shutdown grace, the
     projected Vault token (audience "vault") mounted where the config reads
     it, and the hardening the deployment issue asks for;
   - a NetworkPolicy selecting the pods admits the caller ports and metrics,
     never the health port.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

_STR = {"type": "string"}
_LABELS = {"type": "object", "additionalProperties": _STR}
_METADATA = {
    "type": "object", "required": ["name", "namespace"], "additionalProperties": False,
    "properties": {"name": _STR, "namespace": _STR, "labels": _LABELS, "annotations": _LABELS},
}


def _custom_resource(api_version: str, kind: str, spec: dict) -> dict:
    """The schema of one custom resource: the envelope every kind shares, around its spec."""
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        "properties": {"apiVersion": {"const": api_version}, "kind": {"const": kind}, "metadata": _METADATA,
                       "spec": spec},
    }


_DURATION = {"type": "string", "pattern": r"^(\d+(h|m|s))+$"}
_ISSUER_REF = {
    "type": "object", "required": ["name", "kind", "group"], "additionalProperties": False,
    "properties": {"name": _STR, "kind": {"enum": ["Issuer", "ClusterIssuer"]}, "group": {"const": "cert-manager.io"}},
}
# cert-manager's key usages (the ones a TLS server or client certificate may need).
_USAGES = ["digital signature", "key encipherment", "server auth", "client auth", "cert sign", "crl sign"]
SCHEMAS = {
    "ServiceMonitor": _custom_resource("monitoring.coreos.com/v1", "ServiceMonitor", {
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
    }),
    "PrometheusRule": _custom_resource("monitoring.coreos.com/v1", "PrometheusRule", {
        "type": "object", "required": ["groups"], "additionalProperties": False,
        "properties": {"groups": {"type": "array", "minItems": 1}},
    }),
    "Certificate": _custom_resource("cert-manager.io/v1", "Certificate", {
        "type": "object", "required": ["secretName", "issuerRef", "privateKey"], "additionalProperties": False,
        "anyOf": [{"required": ["dnsNames"]}, {"required": ["uris"]}, {"required": ["commonName"]}],
        "properties": {
            "secretName": _STR,
            "secretTemplate": {
                "type": "object", "additionalProperties": False,
                "properties": {"labels": _LABELS, "annotations": _LABELS},
            },
            "isCA": {"type": "boolean"},
            "commonName": {"type": "string", "maxLength": 64},
            "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^[a-z0-9.-]+$"}},
            "uris": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": r"^spiffe://\S+$"}},
            "duration": _DURATION,
            "renewBefore": _DURATION,
            "usages": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": _USAGES}},
            "privateKey": {
                "type": "object", "required": ["algorithm", "rotationPolicy"], "additionalProperties": False,
                "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]},
                    "size": {"type": "integer"},
                    "encoding": {"enum": ["PKCS1", "PKCS8"]},
                    "rotationPolicy": {"enum": ["Never", "Always"]},
                },
            },
            "issuerRef": _ISSUER_REF,
        },
    }),
    "Issuer": _custom_resource("cert-manager.io/v1", "Issuer", {
        "type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
        "properties": {
            "selfSigned": {"type": "object", "additionalProperties": False, "properties": {}},
            "ca": {"type": "object", "required": ["secretName"], "additionalProperties": False,
                   "properties": {"secretName": _STR}},
        },
    }),
}
# The custom kinds the manifests may use: the ones there is a schema for.
CUSTOM_KINDS = {(schema["properties"]["apiVersion"]["const"], kind) for kind, schema in SCHEMAS.items()}

CHECKOV_SKIP = re.compile(r"^CKV2?_[A-Z0-9]+_\d+=\S.{19,}$")


class Problems(list):
    def need(self, condition: bool, message: str) -> None:
        if not condition and message not in self:
            self.append(message)


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def secret_file(path: str | None, mounts: dict, volumes: dict) -> tuple[str | None, str | None, dict | None]:
    """Where a configured file comes from: (Secret name, key, mount) when it lies directly in a
    Secret volume's directory, else (None, None, the mount it lies in or None)."""
    if not path:
        return None, None, None
    directory, _, name = path.rpartition("/")
    for mount in mounts.values():
        if mount["mountPath"].rstrip("/") != directory:
            continue
        secret = volumes.get(mount["name"], {}).get("secret")
        if secret is None:
            return None, None, mount
        items = secret.get("items")
        key = name if items is None else next((i["key"] for i in items if i["path"] == name), None)
        return secret["secretName"], key, mount
    return None, None, None


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
    tls = config.get("tls", {})
    auth = config.get("auth", {})
    audit = config.get("audit", {})

    # Ports: what config.toml listens on, declared on the container and (but health) on the Service.
    grpc_port = port_of(config.get("grpc_addr", "0.0.0.0:50051"))
    metrics_port = port_of(config.get("metrics_addr", "0.0.0.0:9090"))
    health_port = port_of(config["health_addr"]) if "health_addr" in config else None
    api_key_port = port_of(tls["api_key_addr"]) if "api_key_addr" in tls else None
    expected_ports = {"grpc": grpc_port, "grpc-api-key": api_key_port, "health": health_port, "metrics": metrics_port}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    problems.need(ports == expected_ports,
                  f"{where}: container ports {expected_ports} (from config.toml: grpc_addr, tls.api_key_addr, "
                  f"health_addr, metrics_addr); got {ports}")
    services = [o for o in objects if o["kind"] == "Service" and o["metadata"]["name"] == "tokenservice"]
    problems.need(len(services) == 1, f"{where}: one Service tokenservice")
    for service in services:
        by_name = {p["name"]: p for p in service["spec"]["ports"]}
        problems.need(set(by_name) == {"grpc", "grpc-api-key", "metrics"},
                      f"{where}: Service ports are grpc, grpc-api-key and metrics (not the plaintext health port); "
                      f"got {sorted(by_name)}")
        for name in ("grpc", "grpc-api-key"):
            problems.need(by_name.get(name, {}).get("appProtocol") == "grpc",
                          f"{where}: Service port {name} has appProtocol grpc")
        for name, port in by_name.items():
            problems.need(port.get("targetPort") == name and port.get("port") == expected_ports.get(name),
                          f"{where}: Service port {name} is {expected_ports.get(name)}, targetPort {name}")
        selector = service["spec"].get("selector", {})
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        problems.need(selector and all(labels.get(k) == v for k, v in selector.items()),
                      f"{where}: the Service selects the tokenservice pods")

    # Probes: native gRPC on the plaintext health port (the kubelet speaks neither TLS nor API keys).
    problems.need(health_port is not None, f"{where}: config.toml sets health_addr (the probes' plaintext port)")
    for probe, service_name in (("startupProbe", "liveness"), ("livenessProbe", "liveness"),
                                ("readinessProbe", "tokenservice.v1.TokenService")):
        problems.need(container.get(probe, {}).get("grpc") == {"port": health_port, "service": service_name},
                      f"{where}: {probe} is a native gRPC probe on the health port {health_port}, "
                      f"service {service_name!r}")

    # Caller authentication, as the issue asks: on, mTLS on grpc_addr, API keys, audit.
    callers = config.get("callers", {})
    problems.need(bool(callers), f"{where}: config.toml configures [callers.<name>] (caller authentication on)")
    problems.need(not auth.get("insecure_no_caller_auth", False), f"{where}: auth.insecure_no_caller_auth is not set")
    problems.need(bool(tls.get("client_ca_file")),
                  f"{where}: tls.client_ca_file set: grpc_addr requires client certificates")
    problems.need(bool(auth.get("api_keys_path")) and api_key_port is not None,
                  f"{where}: auth.api_keys_path and tls.api_key_addr set for the API-key callers")
    problems.need(audit.get("output", "stdout") == "stdout",
                  f"{where}: audit.output is stdout (the pod's log, collected with it)")
    problems.need(any(c.get("spiffe_id") or c.get("dns_name") for c in callers.values())
                  and any(not (c.get("spiffe_id") or c.get("dns_name")) for c in callers.values()),
                  f"{where}: an example certificate caller and an example API-key caller")

    # Mounts: separate directories, none inside another, no subPath anywhere.
    paths = sorted(m["mountPath"].rstrip("/") for m in mounts.values())
    for index, path in enumerate(paths):
        for other in paths[index + 1:]:
            problems.need(not (other == path or other.startswith(path + "/")),
                          f"{where}: volume mount {other} lies inside (or on) {path}; give each its own directory")
    for mount in mounts.values():
        problems.need("subPath" not in mount and "subPathExpr" not in mount,
                      f"{where}: volume {mount['name']} is mounted with a subPath, which never receives updates")

    # The TLS files and the audit key: read-only Secret directories.
    tls_keys = {"tls.cert_file": "tls.crt", "tls.key_file": "tls.key", "tls.client_ca_file": "ca.crt"}
    tls_secrets = set()
    for setting in (*tls_keys, "audit.fingerprint_key_file"):
        section, _, key_name = setting.partition(".")
        value = config.get(section, {}).get(key_name)
        secret, key, mount = secret_file(value, mounts, volumes)
        problems.need(secret is not None and key is not None,
                      f"{where}: {setting} ({value}) is a key of a Secret volume, mounted as a directory")
        if mount is not None:
            problems.need(mount.get("readOnly") is True, f"{where}: volume {mount['name']} is mounted read-only")
        if secret is None:
            continue
        volume = volumes[mount["name"]]["secret"]
        problems.need(volume.get("defaultMode", 0o644) & 0o007 == 0,
                      f"{where}: Secret volume {mount['name']} is not world-readable (defaultMode)")
        problems.need(not volume.get("optional", False), f"{where}: Secret volume {mount['name']} is not optional")
        if setting in tls_keys:
            tls_secrets.add(secret)
            problems.need(key == tls_keys[setting],
                          f"{where}: {setting} is the key {tls_keys[setting]} of a kubernetes.io/tls Secret")
    problems.need(len(tls_secrets) <= 1, f"{where}: the TLS files come from one Secret; got {sorted(tls_secrets)}")
    check_certificates(objects, where, services, tls_secrets, callers, problems)

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

    check_network_policies(objects, where, deployment, problems)


def check_certificates(objects: list[dict], where: str, services: list[dict], tls_secrets: set[str],
                       callers: dict, problems: Problems) -> None:
    """cert-manager objects: the server certificate names the Service; every Issuer referred to is
    rendered (a ClusterIssuer is the cluster's); a CA issuer's CA is a rendered CA certificate; a
    client certificate's identities are those of configured callers."""
    certificates = [o for o in objects if o["kind"] == "Certificate"]
    issuers = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Issuer"}
    identities = {c.get("spiffe_id") for c in callers.values()} | {c.get("dns_name") for c in callers.values()}
    for certificate in certificates:
        spec = certificate["spec"]
        name = f"{where}: Certificate/{certificate['metadata']['name']}"
        ref = spec["issuerRef"]
        if ref["kind"] == "Issuer":
            problems.need(ref["name"] in issuers, f"{name}: its Issuer {ref['name']} is rendered in the overlay")
        if "client auth" in spec.get("usages", []):
            for identity in spec.get("uris", []) + spec.get("dnsNames", []):
                problems.need(identity in identities,
                              f"{name}: client certificate identity {identity} is a configured caller's")
    for issuer in issuers.values():
        ca_secret = issuer["spec"].get("ca", {}).get("secretName")
        if ca_secret:
            problems.need(any(c["spec"]["secretName"] == ca_secret and c["spec"].get("isCA") for c in certificates),
                          f"{where}: Issuer/{issuer['metadata']['name']}: its CA Secret {ca_secret} is issued by a "
                          "rendered CA Certificate (isCA)")
    if not certificates:
        return  # the TLS Secret is made outside Kustomize
    servers = [c for c in certificates if c["spec"]["secretName"] in tls_secrets]
    problems.need(len(servers) == 1,
                  f"{where}: one cert-manager Certificate issues the TLS Secret {sorted(tls_secrets)}")
    for server in servers:
        spec = server["spec"]
        problems.need("server auth" in spec.get("usages", []), f"{where}: the server Certificate has usage server auth")
        problems.need(not spec.get("isCA"), f"{where}: the server Certificate is not a CA")
        problems.need(spec["privateKey"].get("rotationPolicy") == "Always",
                      f"{where}: the server Certificate gets a new private key at each renewal (rotationPolicy Always)")
        for service in services:
            namespace = service["metadata"].get("namespace")
            wanted = {"tokenservice", f"tokenservice.{namespace}", f"tokenservice.{namespace}.svc"}
            missing = wanted - set(spec.get("dnsNames", []))
            problems.need(not missing, f"{where}: the server Certificate names the Service; missing {sorted(missing)}")
            problems.need(server["metadata"].get("namespace") == namespace,
                          f"{where}: the server Certificate is in the Service's namespace")


def check_network_policies(objects: list[dict], where: str, deployment: dict, problems: Problems) -> None:
    """A NetworkPolicy that selects the tokenservice pods admits the caller ports and metrics, never health."""
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for policy in (o for o in objects if o["kind"] == "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if not selector or not all(labels.get(k) == v for k, v in selector.items()):
            continue
        name = f"{where}: NetworkPolicy/{policy['metadata']['name']}"
        rules = policy["spec"].get("ingress", [])
        admitted = {port.get("port") for rule in rules for port in rule.get("ports", [])}
        problems.need({"grpc", "grpc-api-key", "metrics"} <= admitted,
                      f"{name}: admits the named ports grpc, grpc-api-key and metrics; "
                      f"got {sorted(map(str, admitted))}")
        problems.need(all(rule.get("ports") for rule in rules) and "health" not in admitted and 50052 not in admitted,
                      f"{name}: admits no pod to the plaintext health port (every rule names its ports)")


def main(argv: list[str]) -> int:
    rules_dir, rendered = Path(argv[0]), [Path(p) for p in argv[1:]]
    rules_dir.mkdir(parents=True, exist_ok=True)
    problems = Problems()
    for path in rendered:
        objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
        for obj in objects:
            name = f"{path.stem}: {obj['kind']}/{obj['metadata']['name']}"
            group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
            custom = "." in group and not group.endswith(".k8s.io")
            if custom and (obj["apiVersion"], obj["kind"]) not in CUSTOM_KINDS:
                problems.append(f"{name}: custom resource kind with no check; add a schema in deploy/check_rendered.py")
            elif custom:
                for error in jsonschema.Draft202012Validator(SCHEMAS[obj["kind"]]).iter_errors(obj):
                    problems.append(f"{name}: {'.'.join(map(str, error.absolute_path))}: {error.message}")
            if obj["kind"] == "PrometheusRule":
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
