"""Config layering (file < environment < flags) and refusals that name the setting."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.config import load_config
from service.errors import ConfigError
from service.files import MAX_SMALL_FILE_BYTES

TOKEN_ENV = {"VAULT_TOKEN": "t"}
# A refusal names the file a setting came from, between its name and what is wrong.
FROM = r" \(from .*tokenservice\.toml\): "


def write(tmp_path, text: str):
    path = tmp_path / "tokenservice.toml"
    path.write_text(text)
    return path


def test_defaults_give_one_default_org_at_kustomer_chat():
    config = load_config(None, TOKEN_ENV)
    assert config.default_org == "default"
    assert (config.orgs["default"].path, config.orgs["default"].field) == ("kustomer/chat", "secret")
    assert (config.grpc_addr, config.metrics_addr) == ("0.0.0.0:50051", "0.0.0.0:9090")
    assert (config.refresh_interval_seconds, config.batch_limit, config.min_secret_bytes) == (30, 1000, 32)
    assert config.vault.timeout_seconds <= 5 and config.max_staleness_seconds is None


def test_flags_override_environment_which_overrides_the_file(tmp_path):
    path = write(
        tmp_path,
        'grpc_addr = "127.0.0.1:1"\nmetrics_addr = "127.0.0.1:2"\n'
        'refresh_interval_seconds = 10\n[vault]\naddr = "http://file:8200"\n',
    )
    env = {
        **TOKEN_ENV,
        "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:3",
        "TOKENSERVICE_REFRESH_INTERVAL": "20",
        "VAULT_ADDR": "http://env:8200",
    }
    config = load_config(path, env, {"refresh_interval_seconds": 40, "grpc_addr": None})
    assert config.grpc_addr == "127.0.0.1:1"
    assert config.metrics_addr == "127.0.0.1:3"
    assert config.vault.addr == "http://env:8200"
    assert config.refresh_interval_seconds == 40


def test_several_orgs_with_a_default(tmp_path):
    path = write(
        tmp_path,
        'default_org = "acme"\n[orgs.acme]\npath = "kustomer/acme"\n'
        '[orgs.globex]\npath = "kustomer/globex"\nfield = "jwt_secret"\n',
    )
    config = load_config(path, TOKEN_ENV)
    assert config.default_org == "acme"
    assert config.orgs["globex"].field == "jwt_secret"


@pytest.mark.parametrize(
    "text, env, named",
    [
        ("refresh_interval_seconds = -1\n", {}, "refresh_interval_seconds"),
        ("", {"TOKENSERVICE_REFRESH_INTERVAL": "soon"}, "TOKENSERVICE_REFRESH_INTERVAL"),
        ('grpc_addr = "nowhere"\n', {}, "grpc_addr"),
        ("refresh_intervall = 3\n", {}, "refresh_intervall"),
        ('[vault]\nauth = "ldap"\n', {}, "vault.auth"),
        ('[vault]\naddr = "vault:8200"\n', {}, "vault.addr"),
        ('[orgs.acme]\npath = "a"\n[orgs.globex]\npath = "b"\n', {}, "default_org"),
        ('default_org = "other"\n[orgs.acme]\npath = "a"\n', {}, "default_org"),
        ('[orgs.Acme_Corp]\npath = "a"\n', {}, "orgs.Acme_Corp"),
        # A trailing newline would pass an anchored pattern used with match() rather than fullmatch().
        ('[orgs."acme\\n"]\npath = "a"\n', {}, "orgs.acme"),
        ('[orgs.acme]\nfield = "a"\n', {}, "orgs.acme.path"),
        ('[orgs.acme]\npath = "/"\n', {}, "orgs.acme.path"),
        ('[orgs]\nacme = "kustomer/acme"\n', {}, "orgs.acme"),
        # int() would cut a fraction off, and fails on infinity.
        ("workers = 1.5\n", {}, "workers"),
        ("workers = inf\n", {}, "workers"),
        ("batch_limit = 0\n", {}, "batch_limit"),
        ("not toml [", {}, "not valid TOML"),
        # Hostile values pasted into flags: another Vault path by dot segments or URL syntax, a fork bomb.
        ('[orgs.acme]\npath = "kustomer/../../sys/seal"\n', {}, "orgs.acme.path"),
        ("", {"TOKENSERVICE_SECRET_PATH": "../../sys/seal"}, "TOKENSERVICE_SECRET_PATH"),
        ("", {"TOKENSERVICE_SECRET_PATH": "kustomer/chat?version=1"}, "TOKENSERVICE_SECRET_PATH"),
        ("", {"TOKENSERVICE_SECRET_PATH": "kustomer/./chat"}, "TOKENSERVICE_SECRET_PATH"),
        ("", {"TOKENSERVICE_SECRET_PATH": "kustomer/chat\r\nX-Injected: 1"}, "TOKENSERVICE_SECRET_PATH"),
        ('[auth]\napi_keys_path = "a/%2e%2e/sys"\n', {}, "auth.api_keys_path"),
        ("", {"TOKENSERVICE_KV_MOUNT": "../sys"}, "TOKENSERVICE_KV_MOUNT"),
        ('[vault]\nkubernetes_mount = "kubernetes/../token"\n', {}, "vault.kubernetes_mount"),
        ("workers = 100000\n", {}, "workers"),
    ],
)
def test_bad_settings_are_refused_by_name(tmp_path, text, env, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(write(tmp_path, text), {**TOKEN_ENV, **env})


def test_token_auth_without_a_token_is_refused():
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        load_config(None, {})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", TOKEN_ENV)


def test_a_config_that_is_no_small_toml_file_is_refused_without_reading_it_all(tmp_path):
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)  # opened without a writer, it would block the start for ever
    too_big = tmp_path / "big.toml"
    too_big.write_text("# " + "x" * MAX_SMALL_FILE_BYTES + "\n")
    not_text = tmp_path / "binary.toml"
    not_text.write_bytes(b"\xff\xfe\x00")
    for path, problem in (
        (fifo, "not a regular file"),
        (Path("/dev/zero"), "not a regular file"),
        (tmp_path, "Is a directory"),
        (too_big, "larger than 1,048,576 bytes"),
        (not_text, "not UTF-8"),
    ):
        with pytest.raises(ConfigError, match=problem):
            load_config(path, TOKEN_ENV)


def test_kubernetes_auth_needs_a_role_and_reads_the_projected_token_path(tmp_path):
    with pytest.raises(ConfigError, match=r"vault\.kubernetes_role"):
        load_config(write(tmp_path, '[vault]\nauth = "kubernetes"\n'), {})
    config = load_config(write(tmp_path, '[vault]\nauth = "kubernetes"\nkubernetes_role = "tokenservice"\n'), {})
    assert config.vault.kubernetes_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert config.vault.kubernetes_mount == "kubernetes"


CALLERS = """
[tls]
cert_file = "{pem}"
key_file = "{pem}"
client_ca_file = "{pem}"
api_key_addr = "127.0.0.1:50053"
[auth]
api_keys_path = "/tokenservice/api-keys/"
[callers.web]
spiffe_id = "spiffe://corp.example/ns/web/sa/web"
orgs = ["default"]
[callers.batch]
orgs = ["*"]
identities = ["external_id"]
rpcs = ["MintToken", "MintTokens"]
rate_per_second = 5.5
burst = 50
"""


def callers_config(tmp_path, text: str = CALLERS):
    """A config file with the callers above; the TLS files exist (load_config checks only that)."""
    pem = tmp_path / "any.pem"
    pem.write_text("-----BEGIN CERTIFICATE-----\n")
    return write(tmp_path, text.replace("{pem}", str(pem)))


def test_callers_are_read_with_their_policies_and_defaults(tmp_path):
    config = load_config(callers_config(tmp_path), TOKEN_ENV)
    web, batch = config.auth.callers["web"], config.auth.callers["batch"]
    assert config.auth.enabled and config.auth.api_keys_path == "tokenservice/api-keys" and config.auth.public_health
    assert (web.orgs, web.identities, web.rpcs) == (
        frozenset({"default"}),
        frozenset({"email", "external_id"}),
        frozenset({"MintToken"}),
    )
    assert (web.rate_per_second, web.burst, web.spiffe_id) == (100, 200, "spiffe://corp.example/ns/web/sa/web")
    assert (batch.identities, batch.rpcs, batch.rate_per_second, batch.burst) == (
        frozenset({"external_id"}),
        frozenset({"MintToken", "MintTokens"}),
        5.5,
        50,
    )
    assert batch.may_mint_for("anything") and not web.may_mint_for("other")


@pytest.mark.parametrize(
    "text, named",
    [
        (
            '[callers.web]\norgs = ["nope"]\n',
            r"callers\.web\.orgs" + FROM + r"must be a non-empty list of \*, default; got \['nope'\]",
        ),
        (
            '[callers.web]\nspiffe_id = "spiffe://a/b"\n',
            r"callers\.web\.orgs" + FROM + r"is required; set orgs = \[\.\.\.\] to one or more of \*, default$",
        ),
        ('[callers.Web]\norgs = ["*"]\n', "callers.Web.*lower-case"),
        (
            '[callers.web]\norgs = ["*"]\nrpcs = ["DeleteEverything"]\n',
            r"callers\.web\.rpcs" + FROM + r"must be a non-empty list of MintToken, MintTokens, VerifyToken",
        ),
        (
            '[callers.web]\norgs = ["*"]\nidentities = []\n',
            r"callers\.web\.identities" + FROM + r"must be a non-empty list",
        ),
        (
            '[callers.web]\norgs = ["*"]\nidentities = ["phone"]\n',
            r"callers\.web\.identities" + FROM + r"must be a non-empty list of email, external_id; got \['phone'\]",
        ),
        (
            '[callers.web]\norgs = ["*"]\nrate_per_second = 0\n',
            r"callers\.web\.rate_per_second" + FROM + r"must be a number above 0 \(tokens per second\); got 0",
        ),
        (
            '[callers.web]\norgs = ["*"]\nburst = 1.5\n',
            r"callers\.web\.burst" + FROM + r"must be a whole number >= 1 \(tokens",
        ),
        (
            '[callers.web]\norgs = ["*"]\nspiffe_id = "https://x"\n',
            r"callers\.web\.spiffe_id" + FROM + r"must be a spiffe:// URI",
        ),
        ('[callers.web]\norgs = [["*"]]\n', r"callers\.web\.orgs" + FROM + r"must be a non-empty list"),
        (
            '[callers.web]\norgs = ["*"]\ndns_name = "a b"\n',
            r"callers\.web\.dns_name" + FROM + r"must be the DNS SAN of the caller's certificate",
        ),
        ('[callers.web]\norgs = ["*"]\nrole = "admin"\n', "unknown key.*role"),
        ('[callers.web]\norgs = ["*"]\n', "callers web: have no spiffe_id or dns_name.*auth.api_keys_path"),
        (
            '[callers.a]\norgs = ["*"]\ndns_name = "x.example"\n[callers.b]\norgs = ["*"]\ndns_name = "x.example"\n',
            "callers.a and callers.b: both claim",
        ),
        ('[tls]\ncert_file = "/etc/hostname"\n', "tls.cert_file and tls.key_file: give both"),
        ('[tls]\ncert_file = "/nonexistent.pem"\nkey_file = "/etc/hostname"\n', "tls.cert_file.*readable file"),
        (
            '[tls]\ncert_file = "/etc/hostname"\nkey_file = "/etc/hostname"\napi_key_addr = "127.0.0.1:1"\n',
            "tls.api_key_addr.*only needed with tls.client_ca_file",
        ),
        ('[auth]\npublic_health = "sometimes"\n', "auth.public_health.*true or false"),
    ],
)
def test_bad_caller_and_tls_settings_are_refused_by_name(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, text), TOKEN_ENV)


def test_serving_without_callers_must_be_asked_for_and_cannot_be_combined_with_callers(tmp_path):
    from service.config import require_caller_auth_decision

    with pytest.raises(ConfigError, match="--insecure-no-caller-auth"):
        require_caller_auth_decision(load_config(None, TOKEN_ENV))
    insecure = load_config(None, {**TOKEN_ENV, "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "1"})
    require_caller_auth_decision(insecure)
    assert not insecure.auth.enabled
    require_caller_auth_decision(load_config(callers_config(tmp_path), TOKEN_ENV))
    with pytest.raises(ConfigError, match="callers are configured, so caller authentication cannot be off"):
        load_config(callers_config(tmp_path), {**TOKEN_ENV, "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "true"})


def test_callers_the_ports_give_no_way_in_are_refused(tmp_path):
    without_client_ca = CALLERS.replace('client_ca_file = "{pem}"\napi_key_addr = "127.0.0.1:50053"\n', "")
    with pytest.raises(ConfigError, match="callers web: are recognised by their client certificate, but no port"):
        load_config(callers_config(tmp_path, without_client_ca), TOKEN_ENV)
    without_key_port = CALLERS.replace('api_key_addr = "127.0.0.1:50053"\n', "")
    with pytest.raises(ConfigError, match="callers batch: authenticate with API keys, but grpc_addr requires"):
        load_config(callers_config(tmp_path, without_key_port), TOKEN_ENV)
