"""Per-caller API keys: the hashes live in Vault, the keys only with the callers.

The KV v2 entry at `auth.api_keys_path` has one field per caller, whose value
is one or more key hashes (``sha256:<hex>``, separated by spaces or commas, so
that a caller can hold an old and a new key while it rotates). The entry is
re-read in the background like the signing secret; adding or removing a hash
takes effect within one refresh interval, without a restart.

Keys are 256-bit random strings, so an unsalted SHA-256 is enough: nothing
about a key can be guessed from its hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Collection

from service.errors import SecretSourceError
from service.metrics import Metrics
from service.secrets import SecretSource, refresh_forever

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


def parse_key_hashes(data: dict, callers: Collection[str]) -> tuple[dict[str, str], list[str]]:
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
            if not _HASH_PATTERN.match(key_hash):
                problems.append(f"field {caller!r} holds a value that is not sha256:<64 hex digits>; "
                                "it is ignored (store hashes, never keys)")
            elif by_hash.setdefault(key_hash, caller) != caller:
                problems.append(f"key {key_id(key_hash)} is listed for two callers; it is ignored")
                by_hash[key_hash] = ""
    return {key_hash: caller for key_hash, caller in by_hash.items() if caller}, problems


class ApiKeyStore:
    """The current key hashes, refreshed from Vault; `caller_for` is the request path."""

    def __init__(
        self,
        path: str,
        source: SecretSource,
        metrics: Metrics,
        callers: Collection[str],
        *,
        refresh_interval: float = 30.0,
        jitter_ratio: float = 0.1,
        on_first_load: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._path = path
        self._source = source
        self._metrics = metrics
        self._callers = frozenset(callers)
        self._refresh_interval = refresh_interval
        self._jitter_ratio = jitter_ratio
        self._on_first_load = on_first_load
        self._by_hash: dict[str, str] = {}
        self._version: int | None = None
        self._task: asyncio.Task | None = None

    @property
    def loaded(self) -> bool:
        """True once the key set has been read at least once."""
        return self._version is not None

    def caller_for(self, key: str) -> str | None:
        """The caller that holds `key`, or None for an unknown or revoked key."""
        return self._by_hash.get(hash_api_key(key))

    async def refresh(self) -> bool:
        """Read the key set once; True when it was read. A failed read keeps the last one."""
        try:
            entry = await asyncio.to_thread(self._source.read_entry, self._path)
        except SecretSourceError as error:
            self._metrics.api_key_refresh_total.labels(result="error").inc()
            logger.warning("API key refresh failed, keeping the last key set", extra={"fields": {
                "path": self._path, "error": str(error), "kept_version": self._version}})
            return False
        except Exception as error:
            # The refresh task must outlive any surprise; the message may quote data, so log the type only.
            self._metrics.api_key_refresh_total.labels(result="error").inc()
            logger.error("API key refresh failed unexpectedly", extra={"fields": {
                "path": self._path, "error_type": type(error).__name__, "kept_version": self._version}})
            return False
        self._metrics.api_key_refresh_total.labels(result="ok").inc()
        if entry.version != self._version:
            first = not self.loaded
            self._adopt(dict(entry.data), entry.version)
            if first and self._on_first_load is not None:
                await self._on_first_load()
        return True

    def _adopt(self, data: dict, version: int) -> None:
        by_hash, problems = parse_key_hashes(data, self._callers)
        for problem in problems:
            logger.error("API key entry problem", extra={"fields": {"path": self._path, "version": version,
                                                                    "problem": problem}})
        added = sorted(key_id(h) for h in by_hash.keys() - self._by_hash.keys())
        removed = sorted(key_id(h) for h in self._by_hash.keys() - by_hash.keys())
        self._by_hash, self._version = by_hash, version
        self._metrics.api_keys_loaded.set(len(by_hash))
        logger.info("API keys adopted", extra={"fields": {
            "path": self._path, "version": version, "keys": len(by_hash), "added": added, "revoked": removed}})

    def start(self) -> None:
        """Refresh in the background until `stop`."""
        self._task = asyncio.create_task(
            refresh_forever(self.refresh, self._refresh_interval, self._jitter_ratio), name="refresh-api-keys")

    async def stop(self) -> None:
        """Stop the background refresh."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
