"""Configuration: a TOML file, then environment variables, then flags.

Later layers override earlier ones. Every value is checked once, here, and a
refused value names its setting, where it came from and what is expected.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, cast, overload

from service.addresses import AddressError, parse_address
from service.errors import ConfigError
from service.files import read_small_text
from service.minting import Identity
from service.tracing import TracingConfig, parse_tracing_settings
from service.transit import KEY_NAME_PATTERN, MOUNT_PATTERN, TransitSettings

# Kustomer org names are the first label of <org>.kustomerapp.com.
ORG_NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
ORG_NAME_MAX_BYTES = 63
_ORG_NAMES = "org names are lower-case letters, digits and '-', as in the Kustomer URL"

# Environment variables for the common single-org case, and the setting each feeds.
ENVIRONMENT_SETTINGS = {
    "TOKENSERVICE_GRPC_ADDR": "grpc_addr",
    "TOKENSERVICE_METRICS_ADDR": "metrics_addr",
    "TOKENSERVICE_REFRESH_INTERVAL": "refresh_interval_seconds",
    "TOKENSERVICE_WORKERS": "workers",
    "TOKENSERVICE_DEFAULT_ORG": "default_org",
    "TOKENSERVICE_KV_MOUNT": "vault.kv_mount",
    "TOKENSERVICE_SECRET_PATH": "secret_path",
    "TOKENSERVICE_SECRET_FIELD": "secret_field",
    "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "auth.insecure_no_caller_auth",
    "TOKENSERVICE_AUDIT_OUTPUT": "audit.output",
    "TOKENSERVICE_PORTS_FILE": "ports_file",
    "TOKENSERVICE_TRACING": "tracing.enabled",
    "VAULT_ADDR": "vault.addr",
    "VAULT_TOKEN": "vault.token",
}

DEFAULT_ORG_NAME = "default"
DEFAULT_SECRET_PATH = "kustomer/chat"
DEFAULT_SECRET_FIELD = "secret"
# More workers than this a core share the cores and add only memory; many more are a typo, and would fork them all.
MAX_WORKERS_PER_CORE = 4


def _cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0))


# How an org's tokens are signed: with its secret read from KV, or by Vault Transit, which keeps it.
KV_SIGNING = "kv"
TRANSIT_SIGNING = "transit"
DEFAULT_TRANSIT_MOUNT = "transit"
# The shipped Transit policy grants the keys named so (deploy/vault/tokenservice-transit-policy.hcl).
TRANSIT_KEY_PREFIX = "kustomer-"
AUTH_METHODS = ("token", "approle", "kubernetes")
# What a caller may assert (every identity unless its policy says otherwise) and call; MintToken is
# what every caller is for.
_IDENTITIES = tuple(identity.value for identity in Identity)
CALLER_RPCS = ("MintToken", "MintTokens", "VerifyToken")
DEFAULT_CALLER_RPCS = ("MintToken",)
ALL_ORGS = "*"
CALLER_NAME_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
AUDIT_OFF = "off"
AUDIT_STDOUT = "stdout"
KUBERNETES_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


@dataclasses.dataclass(frozen=True)
class OrgConfig:
    """Where one Kustomer org's signing secret lives: at `path` in Vault KV v2, or (signing = "transit")
    in the Vault Transit HMAC key `transit_key`, which signs for the service and never gives the secret out."""

    name: str
    path: str = ""
    field: str = DEFAULT_SECRET_FIELD
    signing: str = KV_SIGNING
    transit_key: str = ""
    transit_mount: str = DEFAULT_TRANSIT_MOUNT

    @property
    def transit(self) -> bool:
        return self.signing == TRANSIT_SIGNING


@dataclasses.dataclass(frozen=True)
class VaultConfig:
    """How to reach and log in to Vault."""

    addr: str = "http://127.0.0.1:8200"
    kv_mount: str = "secret"
    timeout_seconds: float = 5.0
    auth: str = "token"
    token: str | None = dataclasses.field(default=None, repr=False)
    token_file: str | None = None
    approle_mount: str = "approle"
    role_id_file: str | None = None
    secret_id_file: str | None = None
    kubernetes_mount: str = "kubernetes"
    kubernetes_role: str | None = None
    kubernetes_token_file: str = KUBERNETES_TOKEN_FILE


@dataclasses.dataclass(frozen=True)
class TlsConfig:
    """TLS on the gRPC port; with a client CA, callers must present a certificate from it."""

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    # A second port with server-only TLS, for API-key callers when grpc_addr requires certificates.
    api_key_addr: str | None = None


@dataclasses.dataclass(frozen=True)
class CallerConfig:
    """One caller: how it is recognised, and what it may do."""

    name: str
    orgs: frozenset[str]
    identities: frozenset[str] = frozenset(_IDENTITIES)
    rpcs: frozenset[str] = frozenset(DEFAULT_CALLER_RPCS)
    rate_per_second: float = 100.0
    burst: int = 200
    spiffe_id: str | None = None
    dns_name: str | None = None

    def may_mint_for(self, org: str) -> bool:
        return ALL_ORGS in self.orgs or org in self.orgs


@dataclasses.dataclass(frozen=True)
class AuthConfig:
    """Who may call: the configured callers, and where their API keys live."""

    callers: Mapping[str, CallerConfig] = dataclasses.field(default_factory=dict)
    insecure_no_caller_auth: bool = False
    api_keys_path: str | None = None
    # After this long without a good read of the key set, no API key is admitted, so that a key
    # revoked in Vault cannot keep working through an outage. None: keys never go stale.
    api_keys_max_staleness_seconds: float | None = 300.0
    public_health: bool = True
    # For development only: accept API keys on a port without TLS, where they cross the network in clear text.
    insecure_api_keys_over_plaintext: bool = False
    # Calls refused before authentication (no or unknown credentials), per second: per peer address and in
    # total; beyond them a refusal is PEER_RATE_LIMITED and only counted, not audited one by one.
    unauthenticated_rate_per_peer: float = 10.0
    unauthenticated_burst_per_peer: int = 20
    unauthenticated_rate_total: float = 100.0
    unauthenticated_burst_total: int = 200

    @property
    def enabled(self) -> bool:
        return bool(self.callers)


def require_caller_auth_decision(config: Config) -> None:
    """Refuse to serve without caller authentication unless that was asked for explicitly."""
    if not config.auth.enabled and not config.auth.insecure_no_caller_auth:
        raise ConfigError(
            "caller authentication: no [callers.<name>] are configured, so anyone who can reach the port could "
            "mint tokens for any customer; configure callers (docs/callers.md), or pass "
            "--insecure-no-caller-auth (TOKENSERVICE_INSECURE_NO_CALLER_AUTH=1) to run without it"
        )


@dataclasses.dataclass(frozen=True)
class AuditConfig:
    """Where the audit trail goes, and the key that fingerprints identities in it."""

    output: str = AUDIT_STDOUT
    fingerprint_key_file: str | None = None
    # Records waiting for an output that takes no more, at most; a mint that finds no room, or whose
    # records are not written within max_wait_seconds, fails with AUDIT_UNAVAILABLE.
    max_queued_bytes: int = 8 * 1024 * 1024
    max_wait_seconds: float = 0.5
    # How often the counts of refusals not audited one by one (and of records lost) are written.
    summary_interval_seconds: float = 10.0


@dataclasses.dataclass(frozen=True)
class LimitsConfig:
    """What one process gives its peers at most, so that no peer can grow it without bound."""

    max_concurrent_rpcs: int = 1000
    max_concurrent_streams: int = 100
    max_connections: int = 1000
    max_unauthenticated_calls: int = 16
    unauthenticated_read_timeout_seconds: float = 5.0
    max_connection_idle_seconds: float = 300.0
    max_connection_age_seconds: float = 600.0
    max_connection_age_grace_seconds: float = 30.0
    min_ping_interval_seconds: float = 10.0
    max_metadata_bytes: int = 8192


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything `tokenservice serve` needs, checked."""

    orgs: Mapping[str, OrgConfig]
    default_org: str
    vault: VaultConfig = VaultConfig()
    grpc_addr: str = "0.0.0.0:50051"
    metrics_addr: str = "0.0.0.0:9090"
    refresh_interval_seconds: float = 30.0
    refresh_jitter_ratio: float = 0.1
    max_staleness_seconds: float | None = None
    min_secret_bytes: int = 32
    iat_backdate_seconds: int = 5
    batch_limit: int = 1000
    shutdown_grace_seconds: float = 10.0
    workers: int = dataclasses.field(default_factory=_cores)
    health_addr: str | None = None
    tls: TlsConfig | None = None
    auth: AuthConfig = AuthConfig()
    audit: AuditConfig = AuditConfig()
    limits: LimitsConfig = LimitsConfig()
    transit: TransitSettings = dataclasses.field(default_factory=TransitSettings)
    # Where `serve` writes the bound ports as JSON once it listens, for programs (tests, scripts/dev).
    ports_file: str | None = None
    tracing: TracingConfig = dataclasses.field(default_factory=TracingConfig)


def load_config(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Build the config from a TOML file, the environment and flag overrides.

    `overrides` uses the same dotted setting names as the file (for example
    ``vault.addr``); a value of None means the flag was not given.
    """
    settings: dict[str, tuple[Any, str]] = {}
    if path is not None:
        for name, value in _flatten(_read_toml(Path(path))).items():
            settings[name] = (value, f"{path}")
    for variable, name in ENVIRONMENT_SETTINGS.items():
        if environ and environ.get(variable):
            settings[name] = (environ[variable], f"environment variable {variable}")
    for name, value in (overrides or {}).items():
        if value is not None:
            settings[name] = (value, "command line")
    return _build(settings, os.environ if environ is None else environ)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = read_small_text(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found; pass an existing file to --config") from None
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror or error}; pass a TOML file to --config") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path}: not valid TOML ({error})") from None


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        # Tables of names chosen by the operator stay whole.
        if isinstance(value, dict) and key not in ("orgs", "callers", "resource_attributes"):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


class _Settings:
    """Typed, checked access to settings; remembers which were used.

    One reader holds the layered settings, named as in the file (`vault.addr`); one reader per
    [orgs.<name>] or [callers.<name>] table holds that table's keys, so that its refusals name
    `orgs.acme.path` and the file the table came from.
    """

    def __init__(self, settings: dict[str, tuple[Any, str]], table: str = "", source: str = "") -> None:
        self._settings = settings
        self._table = table
        self.source = source
        self.used: set[str] = set()

    def raw(self, name: str) -> tuple[Any, str] | None:
        self.used.add(name)
        return self._settings.get(name)

    def refuse(self, name: str, expected: str) -> ConfigError:
        """A refusal of setting `name`, as given or (when it is missing) as this reader's table lacks it."""
        setting = f"{self._table}.{name}" if self._table else name
        if name not in self._settings:
            return ConfigError(f"setting {setting}{self._from(self.source)}: {expected}")
        value, source = self._settings[name]
        return ConfigError(f"setting {setting}{self._from(source)}: {expected}; got {value!r}")

    def refuse_table(self, expected: str) -> ConfigError:
        """A refusal of this reader's whole [orgs.<name>]-style table rather than of one key."""
        return ConfigError(f"setting {self._table}{self._from(self.source)}: {expected}")

    @staticmethod
    def _from(source: str) -> str:
        return f" (from {source})" if source else ""

    @overload
    def string(self, name: str, default: str, *, pattern: re.Pattern[str] | None = None, expected: str = "") -> str: ...

    @overload
    def string(
        self, name: str, default: None, *, pattern: re.Pattern[str] | None = None, expected: str = ""
    ) -> str | None: ...

    def string(
        self, name: str, default: str | None, *, pattern: re.Pattern[str] | None = None, expected: str = ""
    ) -> str | None:
        """A non-empty string, stripped; with a pattern, one it matches (`expected` says what that is)."""
        found = self.raw(name)
        if found is None:
            return default
        value = found[0].strip() if isinstance(found[0], str) else ""
        if not value or (pattern is not None and not pattern.fullmatch(value)):
            raise self.refuse(name, expected or "must be a non-empty string")
        return value

    def choice(self, name: str, default: str, choices: Collection[str], expected: str) -> str:
        found = self.raw(name)
        if found is None:
            return default
        value = found[0]
        if not isinstance(value, str) or value.strip() not in choices:
            raise self.refuse(name, expected)
        return value.strip()

    def number(
        self,
        name: str,
        default: float | None,
        *,
        minimum: float,
        maximum: float = math.inf,
        integer: bool = False,
        above: bool = False,
        meaning: str = "",
    ) -> Any:
        """A number >= minimum (> minimum if `above`) and <= maximum; `meaning` says in the refusal what it
        counts."""
        found = self.raw(name)
        if found is None:
            return default
        expected = f"must be {'a whole number' if integer else 'a number'} {'above' if above else '>='} {minimum}"
        expected += f" and <= {maximum}" if maximum != math.inf else ""
        expected += f" ({meaning})" if meaning else ""
        value = found[0]
        # A fraction is no whole number, though int() would cut it off.
        if isinstance(value, bool) or (integer and isinstance(value, float) and not value.is_integer()):
            raise self.refuse(name, expected)
        try:
            number = int(value) if integer else float(value)
        except (TypeError, ValueError, OverflowError):
            raise self.refuse(name, expected) from None
        if not math.isfinite(number) or (number <= minimum if above else number < minimum) or number > maximum:
            raise self.refuse(name, expected)
        return number

    def flag(self, name: str, default: bool) -> bool:
        found = self.raw(name)
        if found is None:
            return default
        value = found[0]
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.strip().lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise self.refuse(name, "must be true or false (or 1/0 in the environment)")
        return value

    def names(self, name: str, default: Collection[str] | None, allowed: Collection[str]) -> frozenset[str]:
        """A non-empty list of names from `allowed`; without a default, it must be given."""
        found = self.raw(name)
        listed = ", ".join(sorted(allowed))
        if found is None:
            if default is None:
                raise self.refuse(name, f"is required; set {name} = [...] to one or more of {listed}")
            return frozenset(default)
        value = found[0]
        if (
            not isinstance(value, (list, tuple))
            or not value
            or any(not isinstance(item, str) or item not in allowed for item in value)
        ):
            raise self.refuse(name, f"must be a non-empty list of {listed}")
        return frozenset(value)

    def section(self, name: str) -> tuple[dict[str, Any], str]:
        """The settings of section `name`, without its prefix, and where they came from."""
        prefix = f"{name}."
        found = {key: self._settings[key] for key in self._settings if key.startswith(prefix)}
        self.used.update(found)
        sources = sorted({source for _, source in found.values()})
        return {key[len(prefix) :]: value for key, (value, _) in found.items()}, " and ".join(sources)

    def tables(self, name: str, expected: str, pattern: re.Pattern[str], named: str) -> dict[str, _Settings]:
        """A reader for each [<name>.<entry>] table, whose entry names match `pattern` (`named` says how)."""
        found = self.raw(name)
        if found is None:
            return {}
        tables, source = found
        if not isinstance(tables, dict) or not tables:
            raise self.refuse(name, expected)
        readers = {}
        for entry, keys in tables.items():
            table = keys if isinstance(keys, dict) else {}
            reader = _Settings({key: (value, source) for key, value in table.items()}, f"{name}.{entry}", source)
            if not pattern.fullmatch(entry):
                raise reader.refuse_table(named)
            if not isinstance(keys, dict):
                raise reader.refuse_table(f"must be a table; got {keys!r}")
            readers[entry] = reader
        return readers

    def unknown(self) -> list[str]:
        return sorted(name for name in self._settings if name not in self.used)


def _build(layered: dict[str, tuple[Any, str]], environ: Mapping[str, str]) -> Config:
    settings = _Settings(layered)
    defaults = Config(orgs={}, default_org=DEFAULT_ORG_NAME)
    vault = _build_vault(settings)
    orgs, default_org = _build_orgs(settings)
    staleness = settings.number("max_staleness_seconds", None, minimum=0)
    config = Config(
        orgs=orgs,
        default_org=default_org,
        vault=vault,
        grpc_addr=_address(settings, "grpc_addr", defaults.grpc_addr),
        metrics_addr=_address(settings, "metrics_addr", defaults.metrics_addr),
        refresh_interval_seconds=settings.number(
            "refresh_interval_seconds", defaults.refresh_interval_seconds, minimum=0.1
        ),
        refresh_jitter_ratio=settings.number("refresh_jitter_ratio", defaults.refresh_jitter_ratio, minimum=0),
        max_staleness_seconds=staleness or None,
        min_secret_bytes=settings.number("min_secret_bytes", defaults.min_secret_bytes, minimum=1, integer=True),
        iat_backdate_seconds=settings.number(
            "iat_backdate_seconds", defaults.iat_backdate_seconds, minimum=0, integer=True
        ),
        batch_limit=settings.number("batch_limit", defaults.batch_limit, minimum=1, integer=True),
        shutdown_grace_seconds=settings.number("shutdown_grace_seconds", defaults.shutdown_grace_seconds, minimum=0),
        workers=settings.number(
            "workers",
            defaults.workers,
            minimum=1,
            maximum=MAX_WORKERS_PER_CORE * _cores(),
            integer=True,
            meaning=f"worker processes; more than {MAX_WORKERS_PER_CORE} a core only add memory",
        ),
        health_addr=_address(settings, "health_addr", None),
        tls=_build_tls(settings),
        auth=_build_auth(settings, orgs),
        audit=_build_audit(settings),
        limits=_build_limits(settings),
        transit=_build_transit(settings),
        ports_file=_writable_file(settings, "ports_file"),
        tracing=_build_tracing(settings, environ),
    )
    _check_callers_can_connect(config)
    _check_api_key_staleness(config)
    _check_api_key_transport(config)
    if config.refresh_jitter_ratio >= 1:
        raise settings.refuse("refresh_jitter_ratio", "must be below 1 (a fraction of the refresh interval)")
    if config.iat_backdate_seconds >= 600:
        raise settings.refuse("iat_backdate_seconds", "must be below 600, or tokens expire before they are used")
    unknown = settings.unknown()
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; see docs/configuration.md")
    return config


@overload
def _address(settings: _Settings, name: str, default: str) -> str: ...


@overload
def _address(settings: _Settings, name: str, default: None) -> str | None: ...


def _address(settings: _Settings, name: str, default: str | None) -> str | None:
    address = settings.string(name, default)
    if address is None:
        return None
    try:
        return str(parse_address(address))
    except AddressError as error:
        raise settings.refuse(name, f"must be host:port or [IPv6]:port: {error}") from None


def _mount(settings: _Settings, name: str, default: str) -> str:
    """The path of a Vault mount (KV, AppRole, Kubernetes auth), without slashes around it."""
    expected = "must be the path of a Vault mount, such as 'secret': letters, digits, '_', '.', '-' between slashes"
    return settings.string(name, default, pattern=_MOUNT_SETTING, expected=expected).strip("/")


def _build_vault(settings: _Settings) -> VaultConfig:
    defaults = VaultConfig()
    addr = settings.string("vault.addr", defaults.addr)
    if not addr.startswith(("http://", "https://")):
        raise settings.refuse("vault.addr", "must be an http:// or https:// URL")
    auth = settings.choice("vault.auth", defaults.auth, AUTH_METHODS, f"must be one of {', '.join(AUTH_METHODS)}")
    vault = VaultConfig(
        addr=addr.rstrip("/"),
        kv_mount=_mount(settings, "vault.kv_mount", defaults.kv_mount),
        timeout_seconds=settings.number("vault.timeout_seconds", defaults.timeout_seconds, minimum=0.1),
        auth=auth,
        token=settings.string("vault.token", None),
        token_file=settings.string("vault.token_file", None),
        approle_mount=_mount(settings, "vault.approle_mount", defaults.approle_mount),
        role_id_file=settings.string("vault.role_id_file", None),
        secret_id_file=settings.string("vault.secret_id_file", None),
        kubernetes_mount=_mount(settings, "vault.kubernetes_mount", defaults.kubernetes_mount),
        kubernetes_role=settings.string("vault.kubernetes_role", None),
        kubernetes_token_file=settings.string("vault.kubernetes_token_file", defaults.kubernetes_token_file),
    )
    if vault.auth == "token" and not (vault.token or vault.token_file):
        raise ConfigError(
            "setting vault.token: token auth needs a Vault token; set VAULT_TOKEN or vault.token_file "
            '(or use vault.auth = "approle")'
        )
    if vault.auth == "approle" and not (vault.role_id_file and vault.secret_id_file):
        raise ConfigError("settings vault.role_id_file and vault.secret_id_file: AppRole auth needs both files")
    if vault.auth == "kubernetes" and not vault.kubernetes_role:
        raise ConfigError(
            "setting vault.kubernetes_role: Kubernetes auth needs the Vault role bound to the service account"
        )
    return vault


def _build_orgs(settings: _Settings) -> tuple[dict[str, OrgConfig], str]:
    tables = settings.tables(
        "orgs", "must be a table of [orgs.<name>] sections, each with a path", ORG_NAME_PATTERN, _ORG_NAMES
    )
    default_org = settings.string("default_org", None)
    secret_path = settings.string("secret_path", None, pattern=_KV_PATH, expected=_KV_PATH_EXPECTED)
    secret_field = settings.string("secret_field", None)
    if not tables:
        name = default_org or DEFAULT_ORG_NAME
        _check_org_name(settings, "default_org", name)
        org = OrgConfig(name, secret_path or DEFAULT_SECRET_PATH, secret_field or DEFAULT_SECRET_FIELD)
        return {name: org}, name
    orgs = {name: _build_org(name, table) for name, table in tables.items()}
    if default_org is None:
        if len(orgs) > 1:
            source = next(iter(tables.values())).source
            raise ConfigError(f"setting default_org (from {source}): required when several orgs are configured")
        default_org = next(iter(orgs))
    if default_org not in orgs:
        raise settings.refuse("default_org", f"must name one of the configured orgs ({', '.join(sorted(orgs))})")
    if secret_path or secret_field:
        current = orgs[default_org]
        if current.transit:
            name = "secret_path" if secret_path else "secret_field"
            raise settings.refuse(
                name, f"org {default_org} signs through Vault Transit and reads no KV secret; unset it"
            )
        orgs[default_org] = OrgConfig(default_org, secret_path or current.path, secret_field or current.field)
    return orgs, default_org


# A KV path: segments between single slashes (dropped around it), none of them "." or ".." (which the
# HTTP client would resolve to another path) nor holding control characters or URL syntax.
_KV_SEGMENT = r"(?!\.\.?(?:/|$))[^/\x00-\x1f\x7f?#%\\]+"
_KV_PATH = re.compile(rf"/*{_KV_SEGMENT}(?:/{_KV_SEGMENT})*/*")
_KV_PATH_EXPECTED = (
    "must be a KV v2 path such as 'kustomer/chat': segments between single slashes, none '.' or '..', "
    "without control characters, '?', '#', '%' or '\\'"
)
# A mount as Vault takes it, also with a slash before or after.
_MOUNT_SETTING = re.compile(rf"/*(?:{MOUNT_PATTERN.pattern})/*")
# The keys of an [orgs.<name>] table, by signing mode.
_ORG_KEYS = {KV_SIGNING: ("path", "field", "signing"), TRANSIT_SIGNING: ("signing", "transit_key", "transit_mount")}


def _build_org(name: str, table: _Settings) -> OrgConfig:
    signing = table.choice(
        "signing",
        KV_SIGNING,
        _ORG_KEYS,
        'must be "kv" (the secret read from Vault KV) or "transit" (Vault Transit signs, the secret stays there)',
    )
    _check_org_keys(table, signing)
    if signing == TRANSIT_SIGNING:
        return _build_transit_org(name, table)
    path = table.string("path", None, pattern=_KV_PATH, expected=_KV_PATH_EXPECTED)
    if path is None:
        raise table.refuse("path", 'is required; set path = "<KV v2 path of the org\'s secret>"')
    return OrgConfig(name, path.strip("/"), table.string("field", DEFAULT_SECRET_FIELD))


def _check_org_keys(table: _Settings, signing: str) -> None:
    # Only signing has been read yet, so the table's other keys are the ones still unread.
    unknown = set(table.unknown()) - set(_ORG_KEYS[signing])
    kv_keys, transit_keys = unknown & {"path", "field"}, unknown & {"transit_key", "transit_mount"}
    if signing == TRANSIT_SIGNING and kv_keys:
        raise table.refuse_table(
            f'{", ".join(sorted(kv_keys))}: an org with signing = "transit" reads no KV secret; remove them'
        )
    if signing == KV_SIGNING and transit_keys:
        raise table.refuse_table(
            f'{", ".join(sorted(transit_keys))}: only with signing = "transit"; add that or remove them'
        )
    if unknown:
        raise table.refuse_table(
            f"unknown key(s) {', '.join(sorted(unknown))}; allowed with signing = "
            f"{signing!r}: {', '.join(_ORG_KEYS[signing])}"
        )


def _build_transit_org(name: str, table: _Settings) -> OrgConfig:
    key = table.string(
        "transit_key",
        f"{TRANSIT_KEY_PREFIX}{name}",
        pattern=KEY_NAME_PATTERN,
        expected="must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit "
        f"(the shipped policy grants {TRANSIT_KEY_PREFIX}*)",
    )
    mount = table.string(
        "transit_mount",
        DEFAULT_TRANSIT_MOUNT,
        pattern=_MOUNT_SETTING,
        expected=f"must be the path of a Vault Transit mount, such as {DEFAULT_TRANSIT_MOUNT!r}",
    )
    return OrgConfig(name, signing=TRANSIT_SIGNING, transit_key=key, transit_mount=mount.strip("/"))


def _check_org_name(settings: _Settings, setting: str, name: str) -> None:
    if not ORG_NAME_PATTERN.fullmatch(name):
        raise settings.refuse(setting, _ORG_NAMES)


def _readable_file(settings: _Settings, name: str) -> str | None:
    path = settings.string(name, None)
    if path is not None and not os.access(path, os.R_OK):
        raise settings.refuse(name, "must name a readable file")
    return path


def _writable_file(settings: _Settings, name: str) -> str | None:
    path = settings.string(name, None)
    if path is not None and not os.access(Path(path).parent, os.W_OK):
        raise settings.refuse(name, "must be a file in an existing directory this user can write to")
    return path


def _build_tls(settings: _Settings) -> TlsConfig | None:
    cert_file = _readable_file(settings, "tls.cert_file")
    key_file = _readable_file(settings, "tls.key_file")
    client_ca_file = _readable_file(settings, "tls.client_ca_file")
    api_key_addr = _address(settings, "tls.api_key_addr", None)
    if not (cert_file or key_file):
        if client_ca_file or api_key_addr:
            raise ConfigError("settings tls.cert_file and tls.key_file: required by the other tls settings")
        return None
    if not (cert_file and key_file):
        raise ConfigError("settings tls.cert_file and tls.key_file: give both, the server certificate and its key")
    if api_key_addr and not client_ca_file:
        raise settings.refuse(
            "tls.api_key_addr",
            "is only needed with tls.client_ca_file (grpc_addr already accepts API keys without it); remove it",
        )
    return TlsConfig(cert_file, key_file, client_ca_file, api_key_addr)


def _build_audit(settings: _Settings) -> AuditConfig:
    return AuditConfig(
        output=settings.string("audit.output", AUDIT_STDOUT),
        fingerprint_key_file=_readable_file(settings, "audit.fingerprint_key_file"),
        max_queued_bytes=settings.number(
            "audit.max_queued_bytes", AuditConfig.max_queued_bytes, minimum=65536, integer=True
        ),
        max_wait_seconds=settings.number("audit.max_wait_seconds", AuditConfig.max_wait_seconds, minimum=0.01),
        summary_interval_seconds=settings.number(
            "audit.summary_interval_seconds", AuditConfig.summary_interval_seconds, minimum=0.1
        ),
    )


def _build_tracing(settings: _Settings, environ: Mapping[str, str]) -> TracingConfig:
    table, source = settings.section("tracing")
    return parse_tracing_settings(table, source, environ) if table else TracingConfig()


def _build_limits(settings: _Settings) -> LimitsConfig:
    limits = LimitsConfig(
        **{
            field.name: settings.number(
                f"limits.{field.name}",
                cast(float, field.default),
                minimum=1 if field.type == "int" else 0.001,
                integer=field.type == "int",
            )
            for field in dataclasses.fields(LimitsConfig)
        }
    )
    if limits.max_metadata_bytes < 1024:
        raise settings.refuse("limits.max_metadata_bytes", "must be at least 1024 (gRPC's own headers need room)")
    return limits


def _build_transit(settings: _Settings) -> TransitSettings:
    values = {
        field.name: settings.number(
            f"transit.{field.name}",
            cast(float, field.default),
            minimum=1 if field.type == "int" else 0,
            integer=field.type == "int",
        )
        for field in dataclasses.fields(TransitSettings)
    }
    return TransitSettings(**values)


def _build_auth(settings: _Settings, orgs: Mapping[str, OrgConfig]) -> AuthConfig:
    insecure = settings.flag("auth.insecure_no_caller_auth", False)
    tables = settings.tables(
        "callers",
        "must be a table of [callers.<name>] sections",
        CALLER_NAME_PATTERN,
        "caller names are lower-case letters, digits and '-' (they become metric labels)",
    )
    callers = {name: _build_caller(name, table, orgs) for name, table in tables.items()}
    auth = AuthConfig(
        callers=callers,
        insecure_no_caller_auth=insecure,
        api_keys_path=(
            settings.string("auth.api_keys_path", None, pattern=_KV_PATH, expected=_KV_PATH_EXPECTED) or ""
        ).strip("/")
        or None,
        api_keys_max_staleness_seconds=settings.number(
            "auth.api_keys_max_staleness_seconds", AuthConfig.api_keys_max_staleness_seconds, minimum=0
        )
        or None,
        public_health=settings.flag("auth.public_health", True),
        insecure_api_keys_over_plaintext=settings.flag("auth.insecure_api_keys_over_plaintext", False),
        **_unauthenticated_limits(settings),
    )
    if insecure and callers:
        raise ConfigError(
            "setting auth.insecure_no_caller_auth: callers are configured, so caller authentication "
            "cannot be off; remove --insecure-no-caller-auth (or TOKENSERVICE_INSECURE_NO_CALLER_AUTH)"
        )
    _check_identities(settings, callers)
    return auth


def _check_callers_can_connect(config: Config) -> None:
    """Refuse callers that the configured ports give no way in."""
    callers = config.auth.callers.values()
    by_certificate = sorted(c.name for c in callers if c.spiffe_id or c.dns_name)
    by_key = sorted(c.name for c in callers if not (c.spiffe_id or c.dns_name))
    client_ca = config.tls.client_ca_file if config.tls else None
    api_key_addr = config.tls.api_key_addr if config.tls else None
    if by_certificate and not client_ca:
        raise ConfigError(
            f"callers {', '.join(by_certificate)}: are recognised by their client certificate, but "
            "no port asks for one; set tls.cert_file, tls.key_file and tls.client_ca_file"
        )
    if by_key and client_ca and not api_key_addr:
        raise ConfigError(
            f"callers {', '.join(by_key)}: authenticate with API keys, but grpc_addr requires a "
            "client certificate (tls.client_ca_file); set tls.api_key_addr for them"
        )


def _unauthenticated_limits(settings: _Settings) -> dict[str, Any]:
    limits = {}
    for scope in ("per_peer", "total"):
        rate, burst = f"unauthenticated_rate_{scope}", f"unauthenticated_burst_{scope}"
        limits[rate] = settings.number(f"auth.{rate}", getattr(AuthConfig, rate), minimum=0.01)
        limits[burst] = settings.number(f"auth.{burst}", getattr(AuthConfig, burst), minimum=1, integer=True)
    return limits


def _check_api_key_transport(config: Config) -> None:
    """Refuse API keys on a port without TLS, where anyone on the path could read them, unless asked for."""
    if config.auth.api_keys_path and config.tls is None and not config.auth.insecure_api_keys_over_plaintext:
        raise ConfigError(
            "setting auth.api_keys_path: API keys would cross the network in clear text, since "
            "grpc_addr has no TLS; set tls.cert_file and tls.key_file, or for development only "
            "auth.insecure_api_keys_over_plaintext = true"
        )


def _check_api_key_staleness(config: Config) -> None:
    """Refuse a staleness bound that ordinary refreshing cannot keep, which would refuse every key."""
    staleness = config.auth.api_keys_max_staleness_seconds
    if config.auth.api_keys_path and staleness is not None and staleness < 2 * config.refresh_interval_seconds:
        raise ConfigError(
            f"setting auth.api_keys_max_staleness_seconds: {staleness:g} s is less than two refresh "
            f"intervals (refresh_interval_seconds = {config.refresh_interval_seconds:g}); raise it, "
            "or set 0 to never refuse keys for staleness"
        )


def _check_identities(settings: _Settings, callers: Mapping[str, CallerConfig]) -> None:
    seen: dict[str, str] = {}
    for caller in callers.values():
        for identity in filter(None, (caller.spiffe_id, caller.dns_name)):
            if identity in seen:
                raise ConfigError(
                    f"settings callers.{seen[identity]} and callers.{caller.name}: both claim the "
                    f"certificate identity {identity!r}; each identity names one caller"
                )
            seen[identity] = caller.name
    if not settings.raw("auth.api_keys_path") and any(
        not (caller.spiffe_id or caller.dns_name) for caller in callers.values()
    ):
        names = sorted(caller.name for caller in callers.values() if not (caller.spiffe_id or caller.dns_name))
        raise ConfigError(
            f"callers {', '.join(names)}: have no spiffe_id or dns_name, so they need API keys; "
            "set auth.api_keys_path to the Vault KV path of the key hashes"
        )


_SPIFFE_ID = re.compile(r"spiffe://.*", re.DOTALL)
_DNS_NAME = re.compile(r"[^ ]+")
_CALLER_KEYS = {"orgs", "identities", "rpcs", "rate_per_second", "burst", "spiffe_id", "dns_name"}


def _build_caller(name: str, table: _Settings, orgs: Mapping[str, OrgConfig]) -> CallerConfig:
    unknown = set(table.unknown()) - _CALLER_KEYS  # nothing is read yet: these are all its keys
    if unknown:
        raise table.refuse_table(
            f"unknown key(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(_CALLER_KEYS))}"
        )
    defaults = CallerConfig(name=name, orgs=frozenset())
    caller_orgs = table.names("orgs", None, set(orgs) | {ALL_ORGS})
    rate = table.number("rate_per_second", defaults.rate_per_second, minimum=0, above=True, meaning="tokens per second")
    burst = table.number("burst", defaults.burst, minimum=1, integer=True, meaning="tokens a caller may use at once")
    spiffe_id = table.string(
        "spiffe_id",
        None,
        pattern=_SPIFFE_ID,
        expected="must be a spiffe:// URI, as in the caller certificate's URI SAN",
    )
    dns_name = table.string(
        "dns_name", None, pattern=_DNS_NAME, expected="must be the DNS SAN of the caller's certificate"
    )
    return CallerConfig(
        name=name,
        orgs=caller_orgs,
        identities=table.names("identities", _IDENTITIES, _IDENTITIES),
        rpcs=table.names("rpcs", DEFAULT_CALLER_RPCS, CALLER_RPCS),
        rate_per_second=rate,
        burst=burst,
        spiffe_id=spiffe_id,
        dns_name=dns_name,
    )
