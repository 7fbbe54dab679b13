"""Config layering (file < environment < flags) and refusals that name the setting."""

from __future__ import annotations

import pytest

from service.config import load_config
from service.errors import ConfigError

TOKEN_ENV = {"VAULT_TOKEN": "t"}


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
    path = write(tmp_path, 'grpc_addr = "127.0.0.1:1"\nmetrics_addr = "127.0.0.1:2"\n'
                           'refresh_interval_seconds = 10\n[vault]\naddr = "http://file:8200"\n')
    env = {**TOKEN_ENV, "TOKENSERVICE_METRICS_ADDR": "127.0.0.1:3", "TOKENSERVICE_REFRESH_INTERVAL": "20",
           "VAULT_ADDR": "http://env:8200"}
    config = load_config(path, env, {"refresh_interval_seconds": 40, "grpc_addr": None})
    assert config.grpc_addr == "127.0.0.1:1"
    assert config.metrics_addr == "127.0.0.1:3"
    assert config.vault.addr == "http://env:8200"
    assert config.refresh_interval_seconds == 40


def test_several_orgs_with_a_default(tmp_path):
    path = write(tmp_path, 'default_org = "acme"\n[orgs.acme]\npath = "kustomer/acme"\n'
                           '[orgs.globex]\npath = "kustomer/globex"\nfield = "jwt_secret"\n')
    config = load_config(path, TOKEN_ENV)
    assert config.default_org == "acme"
    assert config.orgs["globex"].field == "jwt_secret"


@pytest.mark.parametrize("text, env, named", [
    ("refresh_interval_seconds = -1\n", {}, "refresh_interval_seconds"),
    ("", {"TOKENSERVICE_REFRESH_INTERVAL": "soon"}, "TOKENSERVICE_REFRESH_INTERVAL"),
    ('grpc_addr = "nowhere"\n', {}, "grpc_addr"),
    ('refresh_intervall = 3\n', {}, "refresh_intervall"),
    ('[vault]\nauth = "ldap"\n', {}, "vault.auth"),
    ('[vault]\naddr = "vault:8200"\n', {}, "vault.addr"),
    ('[orgs.acme]\npath = "a"\n[orgs.globex]\npath = "b"\n', {}, "default_org"),
    ('default_org = "other"\n[orgs.acme]\npath = "a"\n', {}, "default_org"),
    ('[orgs.Acme_Corp]\npath = "a"\n', {}, "orgs.Acme_Corp"),
    ('[orgs.acme]\nfield = "a"\n', {}, "orgs.acme"),
    ("batch_limit = 0\n", {}, "batch_limit"),
    ("not toml [", {}, "not valid TOML"),
])
def test_bad_settings_are_refused_by_name(tmp_path, text, env, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(write(tmp_path, text), {**TOKEN_ENV, **env})


def test_token_auth_without_a_token_is_refused():
    with pytest.raises(ConfigError, match="VAULT_TOKEN"):
        load_config(None, {})


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", TOKEN_ENV)


def test_kubernetes_auth_needs_a_role_and_reads_the_projected_token_path(tmp_path):
    with pytest.raises(ConfigError, match="vault.kubernetes_role"):
        load_config(write(tmp_path, '[vault]\nauth = "kubernetes"\n'), {})
    config = load_config(write(tmp_path, '[vault]\nauth = "kubernetes"\nkubernetes_role = "tokenservice"\n'), {})
    assert config.vault.kubernetes_token_file == "/var/run/secrets/kubernetes.io/serviceaccount/token"
    assert config.vault.kubernetes_mount == "kubernetes"
