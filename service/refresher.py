"""The one background refresher of a Vault KV entry, used by the signing
secret of every org and by the API key set.

Change is detected by content, not by version number: a digest of the
entry's data, together with its version, is compared with what is held.
Version numbers alone miss a re-created entry (`kv metadata delete`, then a
new `kv put`, restarts at version 1), and KV `created_time` would depend on
Vault's clock and on metadata surviving a restore; a digest of the data says
directly whether what Vault holds is what is in use. The version is part of
the comparison so that the version reported (metrics, responses, audit)
follows Vault even when a new version repeats the old data.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Generic, Protocol, TypeVar

from service.errors import SecretDeletedError, SecretRejectedError, SecretSourceError
from service.tracing import annotate, background_root_span

logger = logging.getLogger(__name__)

INITIAL_RETRY_SECONDS = 0.5


def content_digest(content: object) -> bytes:
    """SHA-256 of a JSON value in canonical form: equal data give equal digests, whatever the key order."""
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).digest()


class Snapshot(Protocol):
    """One read of a KV v2 entry."""

    @property
    def version(self) -> int:
        """The KV v2 version that was read."""

    @property
    def digest(self) -> bytes:
        """`content_digest` of the data that was read."""


class Outcome(enum.Enum):
    """What one refresh found; every kind but ADOPTED and UNCHANGED keeps the last good content."""

    ADOPTED = "adopted"  # new content, accepted: now in use
    UNCHANGED = "unchanged"  # Vault holds what is in use
    REJECTED = "rejected"  # new content, refused by the owner's check
    DELETED = "deleted"  # the latest version is deleted or destroyed
    ERROR = "error"  # not read: unreachable, sealed, denied, missing

    @property
    def current(self) -> bool:
        """True when what is in use is what Vault holds now."""
        return self in (Outcome.ADOPTED, Outcome.UNCHANGED)

    @property
    def metric_result(self) -> str:
        """The `result` label: "ok" for every good read, adopted or not, as the alert rules expect."""
        return "ok" if self.current else self.value


class RetrySchedule:
    """Delays between refreshes: the interval, jittered so replicas spread out, after a good read;
    after a failed one a short delay that doubles up to the interval, so that a brief fault heals
    fast and a long one costs Vault no more than normal operation."""

    def __init__(self, interval: float, jitter_ratio: float, rng: random.Random | None = None) -> None:
        self._interval = interval
        self._jitter_ratio = jitter_ratio
        self._rng = rng or random.Random()
        self._retry = INITIAL_RETRY_SECONDS

    def next_delay(self, succeeded: bool) -> float:
        """Seconds to wait before the next refresh, after one that `succeeded` or not."""
        if succeeded:
            self._retry = INITIAL_RETRY_SECONDS
            return self._interval * (1 + self._rng.uniform(-self._jitter_ratio, self._jitter_ratio))
        delay = min(self._retry, self._interval) * self._rng.uniform(0.8, 1.0)
        self._retry *= 2
        return delay


S = TypeVar("S", bound=Snapshot)


class Refresher(Generic[S]):
    """Keeps one entry fresh until stopped.

    `read` runs in a worker thread, so the event loop (and the request path) never waits on Vault.
    Changed content goes to `adopt`, which raises SecretRejectedError to refuse it; `on_outcome` is
    awaited after every refresh. `what` names the entry in log messages and `log_fields` adds to them.
    """

    def __init__(
        self,
        what: str,
        read: Callable[[], S],
        adopt: Callable[[S], None],
        on_outcome: Callable[[Outcome], Awaitable[None]],
        schedule: RetrySchedule,
        *,
        log_fields: Mapping[str, object],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._what = what
        self._read = read
        self._adopt = adopt
        self._on_outcome = on_outcome
        self._schedule = schedule
        self._log_fields = dict(log_fields)
        self._clock = clock
        self._held: tuple[int, bytes] | None = None
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self.held_version: int | None = None
        self.confirmed_at: float | None = None

    def start(self) -> None:
        """Refresh now and then on the schedule, in a background task."""
        where = " ".join(f"{name}={value}" for name, value in self._log_fields.items())
        self._task = asyncio.create_task(self._run(), name=f"refresh {self._what} {where}")

    async def stop(self) -> None:
        """Stop the background task."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def older_than(self, seconds: float) -> bool:
        """True when no read has confirmed the content in use within `seconds` (or ever)."""
        return self.confirmed_at is None or self._clock() - self.confirmed_at > seconds

    async def refresh(self) -> Outcome:
        """Read once, adopt changed content, and report the outcome."""
        # Its own trace: no call asked for it, and its Vault requests are the span's children.
        with background_root_span(f"tokenservice.refresh {self._what}"):
            outcome = await self._attempt()
            org = self._log_fields.get("org")
            annotate(org=org if isinstance(org, str) else None, outcome=outcome.metric_result)
        if outcome.current:
            self.confirmed_at = self._clock()
            if self._failures:
                self._log(logging.INFO, f"{self._what} refresh recovered", failed_refreshes=self._failures)
            self._failures = 0
        else:
            self._failures += 1
        await self._on_outcome(outcome)
        return outcome

    async def _run(self) -> None:
        while True:
            outcome = await self.refresh()
            await asyncio.sleep(self._schedule.next_delay(outcome.current))

    async def _attempt(self) -> Outcome:
        try:
            return self._compare(await asyncio.to_thread(self._read))
        except SecretDeletedError as error:
            self._log(
                logging.ERROR, f"latest {self._what} version unusable, keeping the last good one", error=str(error)
            )
            return Outcome.DELETED
        except SecretRejectedError as error:
            self._log(logging.ERROR, f"{self._what} rejected, keeping the last good one", error=str(error))
            return Outcome.REJECTED
        except SecretSourceError as error:
            self._log(logging.WARNING, f"{self._what} refresh failed", error=str(error))
            return Outcome.ERROR
        except Exception as error:
            # A refresh task must outlive any surprise; the message may quote data, so log the type only.
            self._log(logging.ERROR, f"{self._what} refresh failed unexpectedly", error_type=type(error).__name__)
            return Outcome.ERROR

    def _compare(self, snapshot: S) -> Outcome:
        seen = (snapshot.version, snapshot.digest)
        if seen == self._held:
            return Outcome.UNCHANGED
        self._adopt(snapshot)
        self._held, self.held_version = seen, snapshot.version
        return Outcome.ADOPTED

    def _log(self, level: int, message: str, **fields: object) -> None:
        logger.log(level, message, extra={"fields": {**self._log_fields, **fields, "kept_version": self.held_version}})
