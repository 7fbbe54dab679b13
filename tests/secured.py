"""A `tokenservice serve` configured as production would be: TLS on its ports,
mTLS on grpc_addr, API keys whose hashes are in OpenBao, one caller of each
kind, and an audit trail with its fingerprint key.

`write_secured_config` is the one place that writes this set-up; tests vary it
with its parameters (orgs, callers, API keys, settings) rather than writing
their own TOML."""

from __future__ import annotations

import dataclasses
import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypedDict, Unpack

import grpc

from service.api_keys import hash_api_key, new_api_key
from service.dev import OpenBaoDevServer
from tests.certificates import CertificateAuthority, Issued
from tests.support import OpenBaoFileServer, ServiceProcess, new_secret

CERTIFICATE_CALLER_SPIFFE_ID = "spiffe://corp.example/ns/shop/sa/checkout"
ALL_RPCS = ("MintToken", "MintTokens", "VerifyToken")

OpenBao = OpenBaoDevServer | OpenBaoFileServer


@dataclasses.dataclass(frozen=True)
class Caller:
    """One [callers.<name>] section: a certificate caller (by SPIFFE ID or DNS name) or, with
    neither, an API-key caller; empty `identities` and `rpcs` and no rate leave the service's defaults."""

    spiffe_id: str | None = None
    dns_name: str | None = None
    orgs: tuple[str, ...] = ("acme",)
    identities: tuple[str, ...] = ()
    rpcs: tuple[str, ...] = ()
    rate_per_second: float | None = None
    burst: int | None = None

    def settings(self) -> dict[str, object]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value not in (None, ())}


def default_callers(rate_per_second: float = 100) -> dict[str, Caller]:
    """The checkout service (mTLS, emails only) and the reports job (an API key), both on org acme."""
    burst = max(200, int(rate_per_second))
    return {
        "checkout": Caller(
            spiffe_id=CERTIFICATE_CALLER_SPIFFE_ID, identities=("email",), rate_per_second=rate_per_second, burst=burst
        ),
        "reports": Caller(rpcs=ALL_RPCS, rate_per_second=rate_per_second, burst=burst),
    }


@dataclasses.dataclass
class SecuredFiles:
    """Everything a caller and the test need to know of a secured service."""

    config_file: Path
    ca: CertificateAuthority
    server: Issued
    client: Issued
    fingerprint_key: bytes
    secrets: dict[str, str]
    secret_paths: dict[str, str]
    api_keys: dict[str, list[str]]
    keys_path: str

    @property
    def default_org(self) -> str:
        return next(iter(self.secret_paths))

    @property
    def secret(self) -> str:
        """The default org's signing secret."""
        return self.secrets[self.default_org]

    @property
    def secret_path(self) -> str:
        return self.secret_paths[self.default_org]

    @property
    def api_key(self) -> str:
        """The first key of the first API-key caller (the reports job by default)."""
        return next(iter(self.api_keys.values()))[0]

    def api_key_credentials(self, key: str | None) -> grpc.ChannelCredentials:
        """Server-only TLS to the API-key port, with `key` as the API key on every call (None: no credentials)."""
        credentials = grpc.ssl_channel_credentials(self.ca.cert_pem)
        if key is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(key))
        return credentials

    def client_env(self, service: ServiceProcess) -> dict[str, str]:
        """The client examples' environment for mTLS on grpc_addr with the checkout certificate."""
        return {
            "TOKENSERVICE_ADDR": service.grpc_target,
            "TOKENSERVICE_CA_FILE": str(self.ca.cert_file),
            "TOKENSERVICE_CERT_FILE": str(self.client.cert_file),
            "TOKENSERVICE_KEY_FILE": str(self.client.key_file),
        }

    def api_key_env(self, service: ServiceProcess) -> dict[str, str]:
        """The client examples' environment for server-only TLS on the API-key port, with a key."""
        return {
            "TOKENSERVICE_ADDR": f"127.0.0.1:{service.listening['api_key_port']}",
            "TOKENSERVICE_CA_FILE": str(self.ca.cert_file),
            "TOKENSERVICE_API_KEY": self.api_key,
        }


class SecuredConfig(TypedDict, total=False):
    """The keywords of `write_secured_config`, which `start_secured_service` passes on."""

    tls: str
    workers: int | None
    rate_per_second: float
    orgs: Mapping[str, str] | None
    callers: Mapping[str, Caller] | None
    extra_callers: Mapping[str, Caller] | None
    api_keys: Mapping[str, Sequence[str]] | None
    keys_path: str | None
    settings: Mapping[str, object] | None


def write_secured_config(
    openbao: OpenBao,
    directory: Path,
    *,
    tls: str = "mtls",
    workers: int | None = 1,
    rate_per_second: float = 100,
    orgs: Mapping[str, str] | None = None,
    callers: Mapping[str, Caller] | None = None,
    extra_callers: Mapping[str, Caller] | None = None,
    api_keys: Mapping[str, Sequence[str]] | None = None,
    keys_path: str | None = None,
    settings: Mapping[str, object] | None = None,
) -> SecuredFiles:
    """Certificates, a fingerprint key, signing secrets and API key hashes in OpenBao, and a config using them.

    `orgs` maps each org to its KV path (the first is default_org; default: acme at a fresh path), each
    given a fresh secret. `callers` replaces `default_callers(rate_per_second)`, `extra_callers` adds to
    them. `api_keys` maps API-key callers to their keys (default: one new key for reports), whose hashes
    go to `keys_path` (default: a fresh path). `settings` is merged into the config as TOML would read
    it: {"refresh_interval_seconds": 0.5, "auth": {"public_health": False}}.

    `tls` is what grpc_addr serves, as the ports file names it: "mtls" (client certificates; API keys on
    tls.api_key_addr), "tls" (the server's certificate only; API keys on grpc_addr) or "off"; without
    "mtls", `callers` must have no certificate caller. `workers` None leaves the service's default."""
    ca = CertificateAuthority(directory)
    server = ca.issue_server()
    client = ca.issue("checkout", uris=(CERTIFICATE_CALLER_SPIFFE_ID,))
    suffix = uuid.uuid4().hex[:8]
    secret_paths = dict(orgs or {"acme": f"kustomer/secured-{suffix}"})
    org_secrets = {org: new_secret() for org in secret_paths}
    for org, path in secret_paths.items():
        openbao.write_secret(path, org_secrets[org])
    keys = {caller: list(values) for caller, values in (api_keys or {"reports": [new_api_key()]}).items()}
    keys_path = keys_path or f"tokenservice/api-keys-{suffix}"
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=keys_path, secret={caller: " ".join(map(hash_api_key, values)) for caller, values in keys.items()}
    )
    fingerprint_key = secrets.token_urlsafe(32).encode()
    # With the newline an editor or `kubectl create secret --from-file` leaves, which the service strips.
    (directory / "fingerprint.key").write_bytes(fingerprint_key + b"\n")
    document: dict[str, object] = {
        **({"workers": workers} if workers is not None else {}),
        "health_addr": "127.0.0.1:0",
        "grpc_addr": "127.0.0.1:0",
        "metrics_addr": "127.0.0.1:0",
        "default_org": next(iter(secret_paths)),
        "orgs": {org: {"path": path} for org, path in secret_paths.items()},
        **({"tls": _tls_table(tls, ca, server)} if tls != "off" else {}),
        "auth": {"api_keys_path": keys_path},
        "audit": {"fingerprint_key_file": str(directory / "fingerprint.key")},
        "callers": {
            name: caller.settings()
            for name, caller in {**(callers or default_callers(rate_per_second)), **(extra_callers or {})}.items()
        },
    }
    config_file = directory / "config.toml"
    config_file.write_text(toml_text(merged(document, settings or {})))
    return SecuredFiles(config_file, ca, server, client, fingerprint_key, org_secrets, secret_paths, keys, keys_path)


def _tls_table(tls: str, ca: CertificateAuthority, server: Issued) -> dict[str, str]:
    """The [tls] section of `tls` "mtls" or "tls" (see write_secured_config)."""
    assert tls in ("mtls", "tls"), f"tls must be mtls, tls or off, not {tls!r}"
    table = {"cert_file": str(server.cert_file), "key_file": str(server.key_file)}
    if tls == "mtls":
        table |= {"client_ca_file": str(ca.cert_file), "api_key_addr": "127.0.0.1:0"}
    return table


def start_secured_service(
    openbao: OpenBao, directory: Path, *, env: Mapping[str, str] | None = None, **config: Unpack[SecuredConfig]
) -> tuple[ServiceProcess, SecuredFiles]:
    """`tokenservice serve --config` with caller authentication on, SERVING; `config` goes to
    `write_secured_config`, `env` adds to the service's environment (e.g. another VAULT_TOKEN)."""
    files = write_secured_config(openbao, directory, **config)
    service = ServiceProcess.start(
        {
            "VAULT_ADDR": openbao.addr,
            "VAULT_TOKEN": openbao.root_token,
            "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "",
            **(env or {}),
        },
        ["--config", str(files.config_file)],
    )
    service.secret = files.secret
    return service, files


def merged(document: Mapping[str, object], changes: Mapping[str, object]) -> dict[str, object]:
    """`document` with `changes`: tables merged key by key, any other value replaced."""
    result = dict(document)
    for key, value in changes.items():
        current = result.get(key)
        if isinstance(value, Mapping) and isinstance(current, Mapping):  # tables
            result[key] = merged(current, value)
        else:
            result[key] = value
    return result


def toml_text(table: Mapping[str, object], name: str = "") -> str:
    """A TOML document of `table`: its values first, then a [name.key] section per nested table."""
    values = [f"{key} = {toml_value(value)}" for key, value in table.items() if not isinstance(value, Mapping)]
    tables = {key: value for key, value in table.items() if isinstance(value, Mapping)}
    head = f"[{name}]\n" if name and (values or not tables) else ""
    parts = [head + "".join(f"{line}\n" for line in values)] if head or values else []
    parts += [toml_text(value, f"{name}.{key}" if name else key) for key, value in tables.items()]
    return "\n".join(parts)


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {value!r} in the secured config")
