"""deploy/check_rendered.py refuses renders that break its rules, and passes the shipped ones.

Each case takes a shipped overlay or variant (deploy/variants) as `kubectl kustomize` renders it,
changes it the way a mistake would, and expects check_rendered.py to fail naming the problem: the dev
overlay as it was, with the dev root token and the seed secret in command lines; egress that shuts out
DNS, Vault or the OpenTelemetry Collector; tracing whose config line a later component dropped; Transit
orgs that the shipped Vault policy or the configured role does not cover. Components listed in the
wrong order are rendered for real.
"""

from __future__ import annotations

import copy
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deploy.rendered import DEPLOY, check_rendered, config_map, container, install_tools, named, render

OVERLAYS = ("dev", "prod")
VARIANTS = ("prod-tracing", "transit")


@pytest.fixture(scope="module")
def tools() -> Path:
    return install_tools()


@pytest.fixture(scope="module")
def rendered(tools) -> dict[str, list[dict]]:
    return (
        {name: render(tools, DEPLOY / "overlays" / name) for name in OVERLAYS}
        | {name: render(tools, DEPLOY / "variants" / name) for name in VARIANTS}
        | {"trust": render(tools, DEPLOY / "trust")}
    )


@pytest.mark.parametrize("name", OVERLAYS + VARIANTS)
def test_the_shipped_renders_pass(rendered, tools, tmp_path, name):
    assert check_rendered(tools, tmp_path, rendered[name], rendered["trust"]) == (0, "")


def changed(objects: list[dict], change: Callable[[list[dict]], None]) -> list[dict]:
    objects = copy.deepcopy(objects)
    change(objects)
    return objects


# ------------------------------------------------------------------------------------------ command lines


def root_secret(objects: list[dict]) -> str:
    """The generated name (with its hash) of the dev OpenBao's root token Secret."""
    return next(
        o["metadata"]["name"]
        for o in objects
        if o["kind"] == "Secret" and o["metadata"]["name"].startswith("openbao-dev-root-")
    )


def seed_script(objects: list[dict]) -> list[str]:
    """The `sh -ec` command of the dev seed Job (a list to change in place)."""
    return container(objects, "Job", "openbao-dev-seed")["command"]


def root_token_argument(objects: list[dict]) -> None:
    """openbao-dev.yaml as it was: the root token, from a Secret, expanded into an argument."""
    container(objects, "Deployment", "openbao-dev")["args"].append("-dev-root-token-id=$(BAO_DEV_ROOT_TOKEN_ID)")


def seed_secret_argument(objects: list[dict]) -> None:
    """seed-job.yaml as it was: the random signing secret as a `bao kv put` argument."""
    script = seed_script(objects)
    lines = script[-1].splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "bao kv put -mount=secret kustomer/example" in line)
    script[-1] = "".join(
        [
            *lines[: at - 1],
            "bao kv put -mount=secret kustomer/example \\\n",
            "  secret=\"$(od -An -tx1 -N32 /dev/urandom | tr -d ' \\n')\" >/dev/null\n",
            *lines[at + 1 :],
        ]
    )


def api_key_argument(objects: list[dict]) -> None:
    """seed-job.yaml as it was: the dev API key as a `bao kv put` argument."""
    script = seed_script(objects)
    script[-1] = script[-1].replace(
        "printf '%s' \"$key\" | bao kv put -mount=secret dev-only/api-key-helpdesk key=-",
        'bao kv put -mount=secret dev-only/api-key-helpdesk key="$key"',
    )


def secret_value_literal(objects: list[dict]) -> None:
    """The dev root token (the value of a rendered Secret) written into the arguments."""
    container(objects, "Deployment", "openbao-dev")["args"].append("-dev-root-token-id=dev-only-root-token")


def vault_token_literal(objects: list[dict]) -> None:
    script = seed_script(objects)
    script[-1] = script[-1].replace(
        # A token of Vault's shape, made here so that no token-like literal is committed.
        "sh /opt/vault-setup/setup.sh",
        f"bao login hvs.{secrets.token_hex(12)}\nsh /opt/vault-setup/setup.sh",
    )


def secret_variable_in_script(objects: list[dict]) -> None:
    """A shell script that passes a Secret-backed variable to a program."""
    seed = container(objects, "Job", "openbao-dev-seed")
    seed["env"].append(
        {"name": "ROOT_TOKEN", "valueFrom": {"secretKeyRef": {"name": root_secret(objects), "key": "token"}}}
    )
    seed["command"][-1] = seed["command"][-1].replace(
        "sh /opt/vault-setup/setup.sh", 'bao login "${ROOT_TOKEN}"\nsh /opt/vault-setup/setup.sh'
    )


def secret_from_env_from(objects: list[dict]) -> None:
    """All of a Secret's keys as variables (envFrom), one of them expanded into an argument."""
    openbao = container(objects, "Deployment", "openbao-dev")
    openbao["envFrom"] = [{"secretRef": {"name": root_secret(objects)}}]
    openbao["args"].append("-dev-root-token-id=$(token)")


@pytest.mark.parametrize(
    "change, message",
    [
        (root_token_argument, "openbao args: expands $(BAO_DEV_ROOT_TOKEN_ID), the Secret {root}'s token"),
        (seed_secret_argument, "container seed command: passes secret=$(od"),
        (api_key_argument, "container seed command: passes key=$key"),
        (secret_value_literal, "container openbao args: holds the value of the Secret {root} (key token)"),
        (vault_token_literal, "container seed command: holds a Vault token"),
        (secret_variable_in_script, "container seed command: passes ${{ROOT_TOKEN}}, the Secret {root}'s token"),
        (secret_from_env_from, "container openbao args: expands $(token), the Secret {root}'s token"),
    ],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_no_secret_in_a_command_line(rendered, tools, tmp_path, change, message):
    assert check_rendered(tools, tmp_path, rendered["dev"], rendered["trust"]) == (0, "")
    code, problems = check_rendered(tools, tmp_path, changed(rendered["dev"], change), rendered["trust"])
    assert code == 1 and message.format(root=root_secret(rendered["dev"])) in problems, problems
    assert "dev-only-root-token" not in problems and "hvs.CAES" not in problems, "the problem names no secret"


def test_the_seed_script_passes_values_on_stdin_and_from_files(rendered, tools, tmp_path):
    """`field=-` (stdin) and `field=@file` are how the shipped scripts hand values to bao."""

    def more_forms(objects: list[dict]) -> None:
        seed_script(objects)[-1] += (
            "bao write auth/kubernetes/config token_reviewer_jwt=@/var/run/reviewer.jwt\n"
            "bao write auth/kubernetes/role/x token_policies=tokenservice token_ttl=1h\n"
        )

    assert check_rendered(tools, tmp_path, changed(rendered["dev"], more_forms), rendered["trust"]) == (0, "")


# ------------------------------------------------------------------------------------------ egress, tracing, transit


def edit_config(pattern: str, replacement: str) -> Callable[[list[dict]], None]:
    def edit(objects: list[dict]) -> None:
        data = config_map(objects)["data"]
        data["config.toml"], count = re.subn(pattern, replacement, data["config.toml"], flags=re.MULTILINE)
        assert count == 1, pattern

    edit.__name__ = f"config_{re.sub(r'[^a-z]+', '_', replacement.lower()).strip('_')}"
    return edit


def egress_rules(objects: list[dict]) -> list[dict]:
    return named(objects, "NetworkPolicy", "tokenservice")["spec"]["egress"]


def without_dns(objects: list[dict]) -> None:
    egress_rules(objects)[:] = [r for r in egress_rules(objects) if all(p["port"] != 53 for p in r["ports"])]


def without_collector(objects: list[dict]) -> None:
    egress_rules(objects)[:] = [r for r in egress_rules(objects) if all(p["port"] != 4317 for p in r["ports"])]


def collector_in_another_namespace(objects: list[dict]) -> None:
    rule = next(r for r in egress_rules(objects) if r["ports"][0]["port"] == 4317)
    rule["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] = "monitoring"


def collector_on_http_port(objects: list[dict]) -> None:
    env = container(objects, "Deployment", "tokenservice")["env"]
    next(e for e in env if e["name"] == "OTEL_EXPORTER_OTLP_ENDPOINT")["value"] = (
        "http://otel-collector.observability.svc:4318"
    )


def without_endpoint(objects: list[dict]) -> None:
    env = container(objects, "Deployment", "tokenservice")["env"]
    env[:] = [e for e in env if e["name"] != "OTEL_EXPORTER_OTLP_ENDPOINT"]


def open_egress(objects: list[dict]) -> None:
    policy = named(objects, "NetworkPolicy", "tokenservice")
    policy["spec"]["policyTypes"] = ["Ingress"]
    del policy["spec"]["egress"]


COLLECTOR = "egress allows the OpenTelemetry Collector at http://otel-collector.observability.svc:"


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("prod", without_dns, "egress is restricted and allows DNS (53/UDP)"),
        (
            "prod",
            edit_config(r'^addr = "https://vault.example.internal:8200"$', 'addr = "https://vault.example.internal"'),
            "egress is restricted and allows Vault's port 443 (vault.addr https://vault.example.internal)",
        ),
        ("prod-tracing", without_collector, COLLECTOR + "4317 (port 4317, namespace observability)"),
        ("prod-tracing", collector_in_another_namespace, COLLECTOR + "4317 (port 4317, namespace observability)"),
        ("prod-tracing", collector_on_http_port, COLLECTOR + "4318 (port 4318, namespace observability)"),
        ("prod-tracing", without_endpoint, "tracing is on and names its collector"),
        (
            "prod-tracing",
            edit_config(r"^enabled = true$", "enabled = false"),
            "sets OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_RESOURCE_ATTRIBUTES",
        ),
        (
            "transit",
            edit_config(r'^transit_key = "kustomer-example"$', 'transit_key = "example"'),
            "orgs.example: the policy tokenservice-transit-policy.hcl grants update on transit/hmac/example",
        ),
        (
            "transit",
            edit_config(r'^signing = "transit"$', 'signing = "vault"'),
            "orgs.example.signing is kv or transit",
        ),
        (
            "transit",
            edit_config(r'^kubernetes_role = "tokenservice-transit"$', 'kubernetes_role = "tokenservice"'),
            "vault.kubernetes_role tokenservice has no Transit grant, but orgs example sign through Transit",
        ),
        (
            "prod",
            edit_config(r'^kubernetes_role = "tokenservice"$', 'kubernetes_role = "tokenservice-transit"'),
            "vault.kubernetes_role tokenservice-transit reads no KV org secret (setup.sh TRANSIT=1), but orgs example",
        ),
    ],
    ids=lambda value: getattr(value, "__name__", None) if callable(value) else None,
)
def test_egress_tracing_and_transit_rules(rendered, tools, tmp_path, name, change, message):
    code, problems = check_rendered(tools, tmp_path, changed(rendered[name], change), rendered["trust"])
    assert code == 1 and message in problems, problems


def test_open_egress_needs_no_rule(rendered, tools, tmp_path):
    """Without a NetworkPolicy restricting egress, Vault, DNS and the collector are reachable as they are."""
    assert check_rendered(tools, tmp_path, changed(rendered["prod-tracing"], open_egress), rendered["trust"]) == (0, "")


@pytest.mark.parametrize(
    "order, message",
    [
        # tracing's egress rule patches network-policy's NetworkPolicy, which is not there yet.
        (
            ("cert-manager", "transit", "tracing", "network-policy"),
            COLLECTOR + "4317 (port 4317, namespace observability)",
        ),
        # transit replaces config.toml, and with it the [tracing] section tracing appended.
        (("cert-manager", "network-policy", "tracing", "transit"), "but config.toml does not turn tracing on"),
    ],
    ids=["tracing-before-network-policy", "tracing-before-transit"],
)
def test_components_in_the_wrong_order_are_refused(rendered, tools, tmp_path, order, message):
    variant, directory = DEPLOY / "variants" / "transit", tmp_path / "variant"
    directory.mkdir()
    up = os.path.relpath(DEPLOY, directory)  # kustomize takes no absolute path
    text = (variant / "kustomization.yaml").read_text().replace("../../base", f"{up}/base")
    listed = re.compile(r"^components:\n(?:  (?:- \.\./\.\./components/\S+|#.*)\n)+", re.MULTILINE)
    assert listed.search(text), "the variant lists its components"
    text = listed.sub("components:\n" + "".join(f"  - {up}/components/{c}\n" for c in order), text)
    (directory / "kustomization.yaml").write_text(text)
    (directory / "namespace.yaml").write_text((variant / "namespace.yaml").read_text())
    code, problems = check_rendered(tools, tmp_path, render(tools, directory), rendered["trust"])
    assert code == 1 and message in problems, problems
