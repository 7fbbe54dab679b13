"""Per-caller API keys: the hashes live in Vault, the keys only with the callers.

The KV v2 entry at `auth.api_keys_path` has one field per caller, whose value
is one or more key hashes (``sha256:<hex>``, separated by spaces or commas, so
that a caller can hold an old and a new key while it rotates). The entry is
re-read in the background like the signing secret; adding or removing a hash
takes effect within one refresh interval, without a restart. A key set that
could not be re-read for longer than its maximum staleness admits no key at
all: a key revoked in Vault must not keep working through a Vault outage.

Keys are 256-bit random strings, so an unsalted SHA-256 is enough: nothing
about a key can be guessed from its hash.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Collection, Mapping

from service.errors import ApiKeysStaleError
from service.metrics import Metrics
from service.refresher import Outcome, Refresher, RetrySchedule
from service.secrets import KvEntry, SecretSource

logger = logging.getLogger(__name__)

API_KEY_PREFIX = "tks_"
_HASH_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
_KEY_ID_HEX_DIGITS = 12


def new_api_key() -> str:
    """A fresh random API key; the prefix lets secret scanners recognise a leaked one."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """The form in which Vault and the service hold a key."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def key_id(key_hash: str) -> str:
    """A short, loggable name for a key: the start of its hash."""
    return key_hash.removeprefix("sha256:")[:_KEY_ID_HEX_DIGITS]


def parse_key_hashes(data: Mapping[str, object], callers: Collection[str]) -> tuple[dict[str, str], list[str]]:
    """The caller of every valid hash in a KV entry, and the problems found (for the log)."""
    by_hash: dict[str, str] = {}
    problems: list[str] = []
    for caller, value in data.items():
        if caller not in callers:
            problems.append(f"field {caller!r} names no configured caller; its keys are ignored")
            continue
        if not isinstance(value, str):
            problems.append(f"field {caller!r} is not a string of sha256:<hex> hashes; it is ignored")
            continue
        for key_hash in filter(None, re.split(r"[\s,]+", value)):
            if not _HASH_PATTERN.fullmatch(key_hash):
                problems.append(
                    f"field {caller!r} holds a value that is not sha256:<64 hex digits>; "
                    "it is ignored (store hashes, never keys)"
                )
            elif by_hash.setdefault(key_hash, caller) != caller:
                problems.append(f"key {key_id(key_hash)} is listed for two callers; it is ignored")
                by_hash[key_hash] = ""
    return {key_hash: caller for key_hash, caller in by_hash.items() if caller}, problems


class ApiKeyStore:
    """The current key hashes, kept fresh by a refresher; `caller_for` is the request path.

    `on_readiness_change` is awaited with True once the key set is loaded and
    fresh, and with False when it turns stale.
    """

    def __init__(
        self,
        path: str,
        source: SecretSource,
        metrics: Metrics,
        callers: Collection[str],
        *,
        refresh_interval: float = 30.0,
        jitter_ratio: float = 0.1,
        max_staleness: float | None = None,
        on_readiness_change: Callable[[bool], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._metrics = metrics
        self._callers = frozenset(callers)
        self._max_staleness = max_staleness
        self._on_readiness_change = on_readiness_change
        self._by_hash: dict[str, str] = {}
        self._ready = False
        self._refresher = Refresher(
            "API key set",
            functools.partial(source.read_entry, path),
            self._adopt,
            self._refreshed,
            RetrySchedule(refresh_interval, jitter_ratio),
            log_fields={"path": path},
            clock=clock,
        )

    def is_ready(self) -> bool:
        """True when keys are admitted: the key set was read, and recently enough."""
        if self._refresher.confirmed_at is None:
            return False
        return self._max_staleness is None or not self._refresher.older_than(self._max_staleness)

    def caller_for(self, key: str) -> str | None:
        """The caller that holds `key`, or None for an unknown or revoked key; never calls Vault.

        Raise ApiKeysStaleError when the key set is not loaded, or too stale to trust its revocations."""
        if not self.is_ready():
            raise ApiKeysStaleError(
                self._why_not_ready() + "; retry with backoff, or connect with a client "
                "certificate if your caller has one"
            )
        return self._by_hash.get(hash_api_key(key))

    async def refresh(self) -> bool:
        """Read the key set once; True when Vault's key set is the one in use. A failed read keeps the last one."""
        return (await self._refresher.refresh()).current

    def start(self) -> None:
        """Refresh in the background until `stop`."""
        self._refresher.start()

    async def stop(self) -> None:
        """Stop the background refresh."""
        await self._refresher.stop()

    def _why_not_ready(self) -> str:
        if self._refresher.confirmed_at is None:
            return "API keys are not accepted yet: the key set has not been read from Vault"
        return (
            f"API keys are not accepted: the key set could not be refreshed from Vault for over "
            f"{self._max_staleness:g} s, so revocations may be missed"
        )

    def _adopt(self, entry: KvEntry) -> None:
        by_hash, problems = parse_key_hashes(dict(entry.data), self._callers)
        for problem in problems:
            logger.error(
                "API key entry problem",
                extra={"fields": {"path": self._path, "version": entry.version, "problem": problem}},
            )
        added = sorted(key_id(h) for h in by_hash.keys() - self._by_hash.keys())
        removed = sorted(key_id(h) for h in self._by_hash.keys() - by_hash.keys())
        self._by_hash = by_hash
        self._metrics.api_keys_loaded.set(len(by_hash))
        logger.info(
            "API keys adopted",
            extra={
                "fields": {
                    "path": self._path,
                    "version": entry.version,
                    "keys": len(by_hash),
                    "added": added,
                    "revoked": removed,
                }
            },
        )

    async def _refreshed(self, outcome: Outcome) -> None:
        self._metrics.api_key_refresh_total.labels(result=outcome.metric_result).inc()
        if outcome.current and (confirmed_at := self._refresher.confirmed_at) is not None:
            self._metrics.api_keys_last_refresh_timestamp.set(confirmed_at)
        ready = self.is_ready()
        self._metrics.api_keys_fresh.set(1 if ready else 0)
        if ready == self._ready:
            return
        self._ready = ready
        if ready:
            logger.info(
                "API key set in use", extra={"fields": {"path": self._path, "version": self._refresher.held_version}}
            )
        else:
            logger.error(
                "API key set is stale: API key callers get UNAVAILABLE API_KEYS_STALE until it is "
                "read from Vault again; certificate callers are not affected",
                extra={
                    "fields": {
                        "path": self._path,
                        "max_staleness_seconds": self._max_staleness,
                        "kept_version": self._refresher.held_version,
                    }
                },
            )
        if self._on_readiness_change is not None:
            await self._on_readiness_change(ready)
