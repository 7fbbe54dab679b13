"""Signing secrets: where they are read from, how they are checked, and the
store that keeps the last good one per org fresh in the background.

The request path only ever reads `SecretStore.current`, a dictionary lookup;
Vault is called from the refreshers alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol

import hvac
import hvac.exceptions
import requests

from service.config import OrgConfig, VaultConfig
from service.errors import (
    OrgUnknownError,
    SecretDeletedError,
    SecretRejectedError,
    SecretSourceError,
    SecretUnavailableError,
)
from service.metrics import Metrics
from service.refresher import Outcome, Refresher, RetrySchedule, content_digest
from service.vault_auth import VaultSession

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SecretVersion:
    """A secret value as read from the store, with its KV v2 version. Any JSON value a KV field
    can hold, until validate_secret accepts it (a string) or refuses it."""

    value: object = dataclasses.field(repr=False)
    version: int

    @property
    def digest(self) -> bytes:
        return content_digest(self.value)


@dataclasses.dataclass(frozen=True)
class SigningSecret:
    """A validated secret ready to sign with; `mac` is HMAC-SHA256 keyed once,
    for the mint path to copy instead of re-deriving the key pads per token."""

    key: bytes = dataclasses.field(repr=False)
    version: int
    loaded_at: float
    mac: hmac.HMAC = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mac", hmac.new(self.key, digestmod=hashlib.sha256))


@dataclasses.dataclass(frozen=True)
class KvEntry:
    """The data of the latest version of a KV v2 entry."""

    data: Mapping[str, object] = dataclasses.field(repr=False)
    version: int

    @property
    def digest(self) -> bytes:
        return content_digest(dict(self.data))


class SecretSource(Protocol):
    """Reads KV v2 entries: an org's signing secret, or the API key hashes."""

    def read(self, org: OrgConfig) -> SecretVersion:
        """The latest version of the org's secret; raise SecretSourceError when it cannot be read."""

    def read_entry(self, path: str) -> KvEntry:
        """The latest version of the entry at `path`; raise SecretSourceError when it cannot be read."""


class VaultSecretSource:
    """Reads secrets from a Vault (or OpenBao) KV v2 mount through a VaultSession."""

    def __init__(self, vault: VaultConfig, session: VaultSession) -> None:
        self._vault = vault
        self._session = session

    def read(self, org: OrgConfig) -> SecretVersion:
        entry = self.read_entry(org.path)
        if org.field not in entry.data:
            raise SecretSourceError(
                f"{self._where(org.path)} has no field {org.field!r}; write the secret under that key"
            )
        return SecretVersion(value=entry.data[org.field], version=entry.version)

    def read_entry(self, path: str) -> KvEntry:
        try:
            return self._session.call(lambda client: self._read(client, path))
        except hvac.exceptions.Forbidden:
            raise SecretSourceError(
                f"Vault denied reading {self._where(path)}; grant the {self._session.auth_name} "
                "identity read access to that path"
            ) from None
        except hvac.exceptions.VaultDown:
            raise SecretSourceError(f"Vault at {self._vault.addr} is sealed or down") from None
        except hvac.exceptions.VaultError as error:
            raise SecretSourceError(f"Vault refused reading {self._where(path)}: {type(error).__name__}") from None
        except requests.RequestException as error:
            raise SecretSourceError(f"Vault at {self._vault.addr} is unreachable: {type(error).__name__}") from None

    def _read(self, client: hvac.Client, path: str) -> KvEntry:
        try:
            response = client.secrets.kv.v2.read_secret_version(
                path=path, mount_point=self._vault.kv_mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath as missing:
            raise self._missing(path, missing) from None
        data = response["data"]
        return KvEntry(data=data.get("data") or {}, version=int(data["metadata"]["version"]))

    def _missing(self, path: str, error: hvac.exceptions.InvalidPath) -> SecretSourceError:
        # KV v2 answers a read of a deleted or destroyed latest version with 404 and that version's
        # metadata in the body: no metadata read is needed, which the shipped policy does not grant.
        metadata = _member(_member(error.json, "data"), "metadata")
        if not isinstance(metadata, dict) or not metadata:
            return SecretSourceError(f"no entry at {self._where(path)}; write one")
        if metadata.get("destroyed"):
            return SecretDeletedError(
                f"the latest version ({metadata.get('version')}) of {self._where(path)} "
                "is destroyed; write a new version"
            )
        return SecretDeletedError(
            f"the latest version ({metadata.get('version')}) of {self._where(path)} "
            "is deleted; undelete it or write a new version"
        )

    def _where(self, path: str) -> str:
        return f"{self._vault.kv_mount}/{path}"


def _member(value: object, name: str) -> object:
    """`value[name]` of a JSON object, else None: an error body is whatever the server sent."""
    return value.get(name) if isinstance(value, dict) else None


class InMemorySecretSource:
    """Serves secrets and entries from dictionaries; for tests and local experiments."""

    def __init__(
        self, secrets: Mapping[str, SecretVersion] | None = None, entries: Mapping[str, KvEntry] | None = None
    ) -> None:
        self.secrets: dict[str, SecretVersion] = dict(secrets or {})
        self.entries: dict[str, KvEntry] = dict(entries or {})

    def read(self, org: OrgConfig) -> SecretVersion:
        if org.path not in self.secrets:
            raise SecretSourceError(f"no secret at {org.path}")
        return self.secrets[org.path]

    def read_entry(self, path: str) -> KvEntry:
        if path not in self.entries:
            raise SecretSourceError(f"no entry at {path}")
        return self.entries[path]


_KEY_FILE_MARKERS = ("-----BEGIN", "ssh-rsa ", "ssh-ed25519 ", "ssh-dss ", "ecdsa-sha2-")


def validate_secret(candidate: SecretVersion, min_bytes: int) -> bytes:
    """The secret's key bytes; raise SecretRejectedError when it is unfit to sign with."""
    value = candidate.value
    if not isinstance(value, str) or not value:
        raise SecretRejectedError(f"version {candidate.version} is empty or not a string")
    if value != value.strip():
        raise SecretRejectedError(f"version {candidate.version} has leading or trailing whitespace")
    key = value.encode()
    if len(key) < min_bytes:
        raise SecretRejectedError(
            f"version {candidate.version} is {len(key)} bytes, below min_secret_bytes={min_bytes}"
        )
    if value.startswith(_KEY_FILE_MARKERS) or _is_json_object(value):
        raise SecretRejectedError(f"version {candidate.version} looks like a PEM, SSH or JSON key, not an HMAC secret")
    return key


def _is_json_object(value: str) -> bool:
    if not value.startswith("{"):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False


class SecretStore:
    """Holds the last good signing secret of every KV org, each kept fresh by its own refresher.

    Orgs that sign through Vault Transit are known (`knows`) but never read: their secret stays in Vault.

    `on_readiness_change` is awaited with True when every org has a usable
    secret and with False when one stops having one.
    """

    def __init__(
        self,
        orgs: Mapping[str, OrgConfig],
        source: SecretSource,
        metrics: Metrics,
        *,
        min_secret_bytes: int = 32,
        refresh_interval: float = 30.0,
        jitter_ratio: float = 0.1,
        max_staleness: float | None = None,
        on_readiness_change: Callable[[bool], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._known = frozenset(orgs)
        self._orgs = {name: org for name, org in orgs.items() if not org.transit}
        self._metrics = metrics
        self._min_secret_bytes = min_secret_bytes
        self._max_staleness = max_staleness
        self._on_readiness_change = on_readiness_change
        self._clock = clock
        self._secrets: dict[str, SigningSecret] = {}
        self._ready = False
        self._refreshers = {
            org: Refresher(
                "secret",
                functools.partial(source.read, config),
                functools.partial(self._adopt, org),
                functools.partial(self._refreshed, org),
                RetrySchedule(refresh_interval, jitter_ratio),
                log_fields={"org": org},
                clock=clock,
            )
            for org, config in self._orgs.items()
        }

    def current(self, org: str) -> SigningSecret:
        """The secret to sign with for `org`; never calls Vault."""
        secret = self._secrets.get(org)
        if secret is None:
            if org not in self._known:
                raise OrgUnknownError(
                    f"org: not a configured org; use one of {', '.join(sorted(self._known))} or leave it empty",
                    field="org",
                )
            raise SecretUnavailableError(
                f"no valid signing secret is loaded for org {org!r} yet; retry with backoff", field="org"
            )
        if self._max_staleness is not None and self._refreshers[org].older_than(self._max_staleness):
            raise SecretUnavailableError(
                f"the signing secret of org {org!r} could not be refreshed for over "
                f"{self._max_staleness:g} s; retry with backoff",
                field="org",
            )
        return secret

    def knows(self, org: str) -> bool:
        """True when `org` is configured (in either signing mode)."""
        return org in self._known

    def is_ready(self) -> bool:
        """True when every KV org has a usable secret."""
        return all(self._usable(org) for org in self._orgs)

    async def refresh(self, org: str) -> bool:
        """Read `org`'s secret once and adopt it if changed and valid; True when Vault's secret is current."""
        return (await self._refreshers[org].refresh()).current

    async def load_once(self) -> None:
        """Read every org's secret once, concurrently."""
        await asyncio.gather(*(self.refresh(org) for org in self._orgs))

    def start(self) -> None:
        """Start refreshing every org's secret in the background."""
        for refresher in self._refreshers.values():
            refresher.start()

    async def stop(self) -> None:
        """Stop the refreshers."""
        await asyncio.gather(*(refresher.stop() for refresher in self._refreshers.values()))

    def _adopt(self, org: str, candidate: SecretVersion) -> None:
        key = validate_secret(candidate, self._min_secret_bytes)
        previous = self._secrets.get(org)
        self._secrets[org] = SigningSecret(key=key, version=candidate.version, loaded_at=self._clock())
        self._metrics.secret_version.labels(org=org).set(candidate.version)
        logger.info(
            "signing secret adopted",
            extra={
                "fields": {
                    "org": org,
                    "version": candidate.version,
                    "previous_version": previous.version if previous else None,
                }
            },
        )

    async def _refreshed(self, org: str, outcome: Outcome) -> None:
        self._metrics.vault_refresh_total.labels(org=org, result=outcome.metric_result).inc()
        confirmed_at = self._refreshers[org].confirmed_at
        if outcome.current and confirmed_at is not None:  # a current outcome has just set it
            self._metrics.secret_last_refresh_timestamp.labels(org=org).set(confirmed_at)
        await self._update_readiness()

    async def _update_readiness(self) -> None:
        for org in self._orgs:
            self._metrics.secret_loaded.labels(org=org).set(1 if self._usable(org) else 0)
        ready = self.is_ready()
        if ready != self._ready:
            self._ready = ready
            logger.info("readiness changed", extra={"fields": {"serving": ready}})
            if self._on_readiness_change is not None:
                await self._on_readiness_change(ready)

    def _usable(self, org: str) -> bool:
        try:
            self.current(org)
        except (SecretUnavailableError, OrgUnknownError):
            return False
        return True
