"""Who can obtain a certificate that the shipped deployment accepts as a caller's.

The overlays and the cluster-wide trust root (deploy/trust) are rendered with
the pinned kubectl (deploy/validate --tools), and an attacker who may create
cert-manager Certificates in a namespace of their own asks for a certificate
carrying a configured caller's SPIFFE ID from every issuer whose CA the server
trusts for callers. Whether cert-manager would sign it is decided by a model
written here, independently of deploy/check_rendered.py: a namespaced Issuer
serves its own namespace only; without any CertificateRequestPolicy,
cert-manager's default approver approves everything; with approver-policy
(deploy/trust turns the default approver off), a request is signed when a
policy bound to its requester (cert-manager's controller, for a Certificate)
selects its issuer and namespace and permits every field (approver-policy's
documented rules: '*' wildcards, `required`, the CEL validations, which the
model evaluates for the `self.matches(...)` form the policies use).

Before the caller CA, the server trusted ca.crt of its own TLS Secret, the CA
of the cluster-wide ClusterIssuer tokenservice-ca: any namespace's Certificate
for any SPIFFE ID was signed by a CA the server trusted.

Then deploy/check_rendered.py is shown to refuse renders changed the ways that
would reopen the hole.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CERT_MANAGER = {"kind": "ServiceAccount", "name": "cert-manager", "namespace": "cert-manager"}
# A Certificate's usages when it names none (cert-manager's default).
DEFAULT_USAGES = ["digital signature", "key encipherment"]
CALLER_LABEL = {"tokenservice.io/caller": "true"}


@pytest.fixture(scope="module")
def tools() -> Path:
    completed = subprocess.run([str(DEPLOY / "validate"), "--tools"], capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return Path(completed.stdout.strip().splitlines()[-1])


def render(tools: Path, directory: Path) -> list[dict]:
    rendered = subprocess.run(
        [str(tools / "kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert rendered.returncode == 0, rendered.stderr
    as_json = subprocess.run(
        [
            str(tools / "python"),
            "-c",
            "import json, sys, yaml; json.dump([o for o in yaml.safe_load_all(sys.stdin) if o], sys.stdout)",
        ],
        input=rendered.stdout,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert as_json.returncode == 0, as_json.stderr
    return json.loads(as_json.stdout)


@pytest.fixture(scope="module")
def rendered(tools) -> dict[str, list[dict]]:
    return {
        "dev": render(tools, DEPLOY / "overlays" / "dev"),
        "prod": render(tools, DEPLOY / "overlays" / "prod"),
        "trust": render(tools, DEPLOY / "trust"),
    }


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict], kind: str, name: str) -> dict:
    return next(o for o in of_kind(objects, kind) if o["metadata"]["name"] == name)


def config_of(objects: list[dict]) -> dict:
    deployment = named(objects, "Deployment", "tokenservice")
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config")
    return tomllib.loads(named(objects, "ConfigMap", volume["configMap"]["name"])["data"]["config.toml"])


def trusted_for_callers(objects: list[dict]) -> list[tuple[str, str, str | None]]:
    """The issuers, as (kind, name, namespace or None), whose CA is in the server's tls.client_ca_file."""
    deployment = named(objects, "Deployment", "tokenservice")
    namespace = deployment["metadata"]["namespace"]
    pod = deployment["spec"]["template"]["spec"]
    path = config_of(objects)["tls"]["client_ca_file"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == path.rpartition("/")[0])
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    if "secret" in volume:
        secret = volume["secret"]["secretName"]
        # The Secret of a CA Issuer holds that CA; the Secret of an issued certificate holds its issuer's CA.
        issuers = [
            ("Issuer", i["metadata"]["name"], namespace)
            for i in of_kind(objects, "Issuer")
            if i["spec"].get("ca", {}).get("secretName") == secret
        ]
        issued = [
            c["spec"]["issuerRef"]
            for c in of_kind(objects, "Certificate")
            if c["spec"]["secretName"] == secret and not c["spec"].get("isCA")
        ]
        return issuers + [(r["kind"], r["name"], namespace if r["kind"] == "Issuer" else None) for r in issued]
    bundle = named(objects, "Bundle", volume["configMap"]["name"])
    secrets = {s["secret"]["name"] for s in bundle["spec"]["sources"]}
    return [
        ("ClusterIssuer", i["metadata"]["name"], None)
        for i in of_kind(objects, "ClusterIssuer")
        if i["spec"]["ca"]["secretName"] in secrets
    ]


def wildcard(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), value) is not None


def cel_matches(rule: str, value: str, namespace: str) -> bool:
    """self.matches(<string literals and cr.namespace joined by +>), the one CEL form the policies use."""
    match = re.fullmatch(r"self\.matches\((.*)\)", rule.strip())
    assert match, f"the model evaluates self.matches(...) rules only: {rule}"
    parts = [part.strip() for part in match.group(1).split("+")]
    pattern = "".join(namespace if part == "cr.namespace" else part.strip("'") for part in parts)
    return re.search(pattern, value) is not None


def permits_strings(allowed: dict | None, values: list[str], namespace: str) -> bool:
    if not values:
        return not (allowed or {}).get("required")
    if allowed is None or ("values" not in allowed and not allowed.get("validations")):
        return False
    return all(
        any(wildcard(v, value) for v in allowed.get("values", ["*"]))
        and all(cel_matches(check["rule"], value, namespace) for check in allowed.get("validations", []))
        for value in values
    )


def as_slice(allowed: dict | None) -> dict | None:
    """An allowed single string (value) as an allowed list of one (values)."""
    if allowed is None or "value" not in allowed:
        return allowed
    return {**allowed, "values": [allowed["value"]]}


def permits(policy: dict, request: dict) -> bool:
    allowed = policy["spec"].get("allowed", {})
    common_name = [request["commonName"]] if request.get("commonName") else []
    return (
        permits_strings(as_slice(allowed.get("commonName")), common_name, request["namespace"])
        and permits_strings(allowed.get("dnsNames"), request.get("dnsNames", []), request["namespace"])
        and permits_strings(allowed.get("uris"), request.get("uris", []), request["namespace"])
        and (not request.get("isCA") or allowed.get("isCA") is True)
        and set(request.get("usages", DEFAULT_USAGES)) <= set(allowed.get("usages", []))
    )


def bound_to_cert_manager(objects: list[dict], policy: str) -> bool:
    roles = {
        r["metadata"]["name"]
        for r in of_kind(objects, "ClusterRole")
        if any(
            "use" in rule["verbs"]
            and "certificaterequestpolicies" in rule["resources"]
            and policy in rule.get("resourceNames", [])
            for rule in r["rules"]
        )
    }
    return any(
        b["roleRef"]["name"] in roles and CERT_MANAGER in b["subjects"] for b in of_kind(objects, "ClusterRoleBinding")
    )


def selected(policy: dict, request: dict) -> bool:
    selector = policy["spec"]["selector"]
    issuer_ref = selector.get("issuerRef") or {}
    kind, name = request["issuer"][:2]
    if not all(
        wildcard(issuer_ref[f], v)
        for f, v in (("name", name), ("kind", kind), ("group", "cert-manager.io"))
        if f in issuer_ref
    ):
        return False
    namespaces = selector.get("namespace") or {}
    return any(wildcard(n, request["namespace"]) for n in namespaces.get("matchNames", ["*"])) and all(
        request["labels"].get(k) == v for k, v in namespaces.get("matchLabels", {}).items()
    )


def signed(objects: list[dict], request: dict) -> bool:
    """Whether cert-manager would sign a Certificate `request` (its spec, plus namespace, labels, issuer)."""
    kind, _, issuer_namespace = request["issuer"]
    if kind == "Issuer" and issuer_namespace != request["namespace"]:
        return False  # a namespaced Issuer serves Certificates of its own namespace only
    policies = of_kind(objects, "CertificateRequestPolicy")
    if not policies:
        return True  # cert-manager's default approver
    return any(
        selected(p, request) and bound_to_cert_manager(objects, p["metadata"]["name"]) and permits(p, request)
        for p in policies
    )


def namespace_labels(objects: list[dict], namespace: str) -> dict[str, str]:
    found = [n for n in of_kind(objects, "Namespace") if n["metadata"]["name"] == namespace]
    return {"kubernetes.io/metadata.name": namespace, **(found[0]["metadata"].get("labels", {}) if found else {})}


def caller_ids(objects: list[dict]) -> list[str]:
    return [c["spiffe_id"] for c in config_of(objects)["callers"].values() if c.get("spiffe_id")]


def request(issuer, namespace: str, labels: dict, **spec: object) -> dict:
    return {
        "issuer": issuer,
        "namespace": namespace,
        "labels": {"kubernetes.io/metadata.name": namespace, **labels},
        "usages": ["digital signature", "client auth"],
        **spec,
    }


def attacks(objects: list[dict]) -> list[tuple[str, dict]]:
    """Certificates an attacker who may create Certificates somewhere asks for, from each trusted issuer."""
    found = []
    for issuer in trusted_for_callers(objects):
        for uri in caller_ids(objects):
            own = uri.split("/ns/")[1].split("/")[0]
            for namespace, labels in (
                ("attacker", CALLER_LABEL),
                ("attacker", {}),
                ("tokenservice", {}),
                ("cert-manager", {}),
            ):
                if namespace != own:
                    found.append(
                        (f"{uri} from namespace {namespace} {labels}", request(issuer, namespace, labels, uris=[uri]))
                    )
            found += [
                (
                    f"{uri} and another namespace's ID",
                    request(issuer, own, CALLER_LABEL, uris=[uri, uri.replace(f"/ns/{own}/", "/ns/attacker/")]),
                ),
                (
                    f"{uri} with a path beyond the service account",
                    request(issuer, own, CALLER_LABEL, uris=[f"{uri}/x"]),
                ),
                (
                    "the server's name",
                    request(issuer, own, CALLER_LABEL, uris=[uri], dnsNames=["tokenservice.tokenservice.svc"]),
                ),
                (
                    "a CA",
                    request(
                        issuer, own, CALLER_LABEL, uris=[uri], isCA=True, usages=["digital signature", "cert sign"]
                    ),
                ),
                ("server auth", request(issuer, own, CALLER_LABEL, uris=[uri], usages=["server auth"])),
            ]
    return found


def test_the_prod_server_trusts_only_the_caller_ca(rendered):
    objects = rendered["prod"] + rendered["trust"]
    server = named(objects, "Certificate", "tokenservice")
    trusted = trusted_for_callers(objects)
    assert trusted == [("ClusterIssuer", "tokenservice-callers", None)]
    assert (server["spec"]["issuerRef"]["kind"], server["spec"]["issuerRef"]["name"], None) not in trusted


def test_no_namespace_obtains_a_caller_identity_it_does_not_own_in_prod(rendered):
    objects = rendered["prod"] + rendered["trust"]
    issued = [what for what, attack in attacks(objects) if signed(objects, attack)]
    assert issued == [], f"cert-manager would sign, from a CA the server trusts for callers: {issued}"


def test_a_caller_namespace_obtains_its_own_identity_and_the_shipped_certificates_are_signed(rendered):
    """The controls: the model approves what must be approved."""
    objects = rendered["prod"] + rendered["trust"]
    for uri in caller_ids(objects):
        own = uri.split("/ns/")[1].split("/")[0]
        for issuer in trusted_for_callers(objects):
            assert signed(objects, request(issuer, own, CALLER_LABEL, uris=[uri])), uri
            assert not signed(objects, request(issuer, own, {}, uris=[uri])), "only labelled caller namespaces"
    for certificate in of_kind(objects, "Certificate"):
        namespace = certificate["metadata"]["namespace"]
        ref = certificate["spec"]["issuerRef"]
        issuer = (ref["kind"], ref["name"], namespace if ref["kind"] == "Issuer" else None)
        spec = {
            k: v for k, v in certificate["spec"].items() if k in ("commonName", "dnsNames", "uris", "isCA", "usages")
        }
        assert signed(
            objects, {"issuer": issuer, "namespace": namespace, "labels": namespace_labels(objects, namespace), **spec}
        ), certificate["metadata"]


def test_the_dev_caller_ca_serves_its_namespace_and_the_dev_caller_only(rendered):
    objects = rendered["dev"]
    trusted = trusted_for_callers(objects)
    assert trusted == [("Issuer", "tokenservice-dev-callers", "tokenservice-dev")]
    assert [
        what
        for what, attack in attacks(objects)
        if signed(objects, attack) and attack["namespace"] != "tokenservice-dev"
    ] == []
    from_caller_ca = [c for c in of_kind(objects, "Certificate") if c["spec"]["issuerRef"]["name"] == trusted[0][1]]
    assert [c["spec"]["uris"] for c in from_caller_ca] == [caller_ids(objects)]


def the_old_client_ca(objects: list[dict]) -> list[dict]:
    """The deployment as it was: tls.client_ca_file the ca.crt of the server's TLS Secret."""
    objects = copy.deepcopy(objects)
    deployment = named(objects, "Deployment", "tokenservice")
    for volume in deployment["spec"]["template"]["spec"]["volumes"]:
        if volume["name"] == "tls":
            volume["secret"]["items"].append({"key": "ca.crt", "path": "ca.crt"})
    config_map = next(o for o in of_kind(objects, "ConfigMap") if "config.toml" in o.get("data", {}))
    config_map["data"]["config.toml"] = re.sub(
        r'(?m)^client_ca_file = ".*"$',
        'client_ca_file = "/etc/tokenservice/tls/ca.crt"',
        config_map["data"]["config.toml"],
    )
    return objects


def test_the_model_sees_the_hole_of_a_client_ca_shared_with_the_server(rendered):
    """The control of the attack test: with the old client CA and no policies, every attack is signed."""
    objects = the_old_client_ca(rendered["prod"])
    assert trusted_for_callers(objects) == [("ClusterIssuer", "tokenservice-ca", None)]
    assert all(signed(objects, attack) for _, attack in attacks(objects))


def write(path: Path, objects: list[dict]) -> Path:
    path.write_text("".join(f"---\n{json.dumps(o)}\n" for o in objects))  # JSON is YAML
    return path


def check_rendered(tools: Path, tmp_path: Path, overlay: list[dict], cluster: list[dict]) -> tuple[int, str]:
    completed = subprocess.run(
        [
            str(tools / "python"),
            str(DEPLOY / "check_rendered.py"),
            str(tmp_path / "rules"),
            "--cluster",
            str(write(tmp_path / "trust.yaml", cluster)),
            str(write(tmp_path / "overlay.yaml", overlay)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.returncode, completed.stderr


def permissive_policy(objects: list[dict]) -> list[dict]:
    extra = {
        "apiVersion": "policy.cert-manager.io/v1alpha1",
        "kind": "CertificateRequestPolicy",
        "metadata": {"name": "allow-all"},
        "spec": {"selector": {"issuerRef": {}}, "allowed": {"uris": {"values": ["*"]}}},
    }
    return [*objects, extra]


def without_namespace_rule(objects: list[dict]) -> list[dict]:
    objects = copy.deepcopy(objects)
    del named(objects, "CertificateRequestPolicy", "tokenservice-callers")["spec"]["allowed"]["uris"]["validations"]
    return objects


def with_default_cas(objects: list[dict]) -> list[dict]:
    objects = copy.deepcopy(objects)
    named(objects, "Bundle", "tokenservice-callers-ca")["spec"]["sources"].append({"useDefaultCAs": True})
    return objects


def dev_client_of_another_namespace(objects: list[dict]) -> list[dict]:
    objects = copy.deepcopy(objects)
    named(objects, "Certificate", "dev-client")["spec"]["uris"] = ["spiffe://cluster.local/ns/shop/sa/checkout"]
    return objects


def dev_caller_ca_key_mounted(objects: list[dict]) -> list[dict]:
    objects = copy.deepcopy(objects)
    volumes = named(objects, "Deployment", "tokenservice")["spec"]["template"]["spec"]["volumes"]
    del next(v for v in volumes if v["name"] == "caller-ca")["secret"]["items"]
    return objects


@pytest.mark.parametrize(
    "overlay, change, on, message",
    [
        ("prod", the_old_client_ca, "overlay", "comes from the server's TLS Secret"),
        ("dev", the_old_client_ca, "overlay", "comes from the server's TLS Secret"),
        (
            "prod",
            permissive_policy,
            "cluster",
            "CertificateRequestPolicy/allow-all (selects the caller CA): requires a "
            "URI and binds it to the requesting namespace",
        ),
        ("prod", without_namespace_rule, "cluster", "binds it to the requesting namespace"),
        ("prod", with_default_cas, "cluster", "no default CAs"),
        ("dev", dev_client_of_another_namespace, "overlay", "is a SPIFFE ID of its own namespace"),
        ("dev", dev_caller_ca_key_mounted, "overlay", "maps the key ca.crt alone"),
    ],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_check_rendered_refuses_a_render_that_reopens_the_hole(rendered, tools, tmp_path, overlay, change, on, message):
    cluster = rendered["trust"]
    assert check_rendered(tools, tmp_path, rendered[overlay], cluster) == (0, "")
    changed = (rendered[overlay], change(cluster)) if on == "cluster" else (change(rendered[overlay]), cluster)
    code, problems = check_rendered(tools, tmp_path, *changed)
    assert code == 1 and message in problems, problems
