"""The per-org signing mode and the [transit] settings: defaults, and refusals that name the setting."""

from __future__ import annotations

import pytest

from service.config import load_config
from service.errors import ConfigError

TOKEN_ENV = {"VAULT_TOKEN": "t"}
# A refusal names the file a setting came from, between its name and what is wrong.
FROM = r" \(from .*tokenservice\.toml\): "


def write(tmp_path, text: str):
    path = tmp_path / "tokenservice.toml"
    path.write_text(text)
    return path


def test_a_transit_org_needs_no_path_and_its_key_defaults_to_kustomer_org(tmp_path):
    config = load_config(
        write(
            tmp_path,
            'default_org = "acme"\n[orgs.acme]\nsigning = "transit"\n[orgs.globex]\npath = "kustomer/globex"\n',
        ),
        TOKEN_ENV,
    )
    acme, globex = config.orgs["acme"], config.orgs["globex"]
    assert (acme.signing, acme.transit_key, acme.transit_mount) == ("transit", "kustomer-acme", "transit")
    assert acme.transit and not globex.transit and globex.signing == "kv" and globex.path == "kustomer/globex"
    settings = config.transit
    assert (
        settings.max_wait_seconds,
        settings.max_batch_size,
        settings.timeout_seconds,
        settings.unhealthy_after_failures,
    ) == (0.01, 128, 2.0, 3)


def test_transit_key_mount_and_settings_are_taken_from_the_file(tmp_path):
    config = load_config(
        write(
            tmp_path,
            "[transit]\nmax_wait_seconds = 0.002\nmax_batch_size = 64\n"
            "timeout_seconds = 0.5\nunhealthy_after_failures = 5\n"
            '[orgs.acme]\nsigning = "transit"\ntransit_key = "kustomer-shop"\n'
            'transit_mount = "/signing/transit/"\n',
        ),
        TOKEN_ENV,
    )
    acme = config.orgs["acme"]
    assert (acme.transit_key, acme.transit_mount) == ("kustomer-shop", "signing/transit")
    assert (
        config.transit.max_wait_seconds,
        config.transit.max_batch_size,
        config.transit.timeout_seconds,
        config.transit.unhealthy_after_failures,
    ) == (0.002, 64, 0.5, 5)


@pytest.mark.parametrize(
    "text, env, match",
    [
        (
            '[orgs.acme]\nsigning = "vault"\n',
            {},
            r"orgs\.acme\.signing" + FROM + r"must be \"kv\".*or \"transit\".*; got 'vault'",
        ),
        ('[orgs.acme]\nsigning = ["transit"]\n', {}, r"orgs\.acme\.signing" + FROM + r"must be \"kv\""),
        (
            '[orgs.acme]\nsigning = "transit"\npath = "kustomer/acme"\n',
            {},
            r"orgs\.acme.*path.*signing = \"transit\" reads no KV",
        ),
        (
            '[orgs.acme]\npath = "kustomer/acme"\ntransit_key = "kustomer-acme"\n',
            {},
            r"orgs\.acme.*transit_key.*only with signing = \"transit\"",
        ),
        (
            '[orgs.acme]\nsigning = "transit"\ntransit_key = "../sys/seal"\n',
            {},
            r"orgs\.acme\.transit_key" + FROM + r"must be 1-128",
        ),
        (
            '[orgs.acme]\nsigning = "transit"\ntransit_mount = "a b"\n',
            {},
            r"orgs\.acme\.transit_mount" + FROM + r"must be the path of a Vault Transit mount",
        ),
        (
            '[orgs.acme]\nsigning = "transit"\ntransit_key = 7\n',
            {},
            r"orgs\.acme\.transit_key" + FROM + r"must be 1-128.*; got 7$",
        ),
        (
            'default_org = "acme"\n[orgs.acme]\nsigning = "transit"\n',
            {"TOKENSERVICE_SECRET_PATH": "kustomer/x"},
            r"secret_path.*org acme signs through Vault Transit",
        ),
        ("[transit]\nmax_batch_size = 0\n", {}, r"setting transit\.max_batch_size.*must be a whole number >= 1"),
        ("[transit]\nmax_batch_size = 201\n", {}, r"transit\.max_batch_size.*between 1 and 200.*1,000 JSON strings"),
        ("[transit]\nmax_wait_seconds = 1\n", {}, r"setting transit\.max_wait_seconds.*between 0 and 0\.1"),
        ("[transit]\ntimeout_seconds = 0\n", {}, r"setting transit\.timeout_seconds"),
        ("[transit]\nbatch = 3\n", {}, r"unknown setting\(s\) transit\.batch"),
    ],
)
def test_refusals_name_the_setting(tmp_path, text, env, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text), {**TOKEN_ENV, **env})
