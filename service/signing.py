"""Signing through Vault Transit, for the orgs configured with signing = "transit".

A "kv" org signs in the process with the secret SecretStore holds: a dictionary
lookup and an HMAC, synchronous, the mint path as benchmarked; nothing here is
on that path. A "transit" org never holds its secret: Vault Transit computes
each token's HMAC (service/transit.py), so its mints and verifications await
Vault, coalesced into batch requests.

`TransitOrgs` holds the transit orgs' signers, one Vault session each, reads
each key's latest version on the refresh schedule (with the Refresher that
keeps the KV secrets fresh) and tells the server when readiness may have
changed: a transit org is ready once its key has been read and while its
signer is healthy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from service.config import OrgConfig
from service.errors import SecretSourceError, SignerUnavailableError
from service.refresher import Outcome, Refresher, RetrySchedule, content_digest
from service.transit import KeyInfo, TransitMetrics, TransitSettings, TransitSigner, VaultCaller

logger = logging.getLogger(__name__)

# What is kept back of a call's remaining deadline for the answer to reach the caller, so that a Vault
# that does not answer in time is reported as SIGNER_UNAVAILABLE, not as the caller's DEADLINE_EXCEEDED.
DEADLINE_MARGIN_RATIO = 0.1
MAX_DEADLINE_MARGIN_SECONDS = 0.05


def vault_timeout(time_remaining: float | None) -> float | None:
    """How long Vault may take within a call that has `time_remaining` seconds left (gRPC's
    `context.time_remaining()`); None without a deadline: the signer's own timeout then."""
    if time_remaining is None:
        return None
    return max(0.0, time_remaining - min(MAX_DEADLINE_MARGIN_SECONDS, time_remaining * DEADLINE_MARGIN_RATIO))


@dataclasses.dataclass(frozen=True)
class _KeySnapshot:
    """One read of a Transit key's metadata, in the form the Refresher compares."""

    info: KeyInfo

    @property
    def version(self) -> int:
        return self.info.latest_version

    @property
    def digest(self) -> bytes:
        return content_digest(dataclasses.asdict(self.info))


class TransitOrgs:
    """The Transit signers of the transit orgs among `orgs`, and their background key reads.

    `session` makes a logged-in Vault session (service.vault_auth.session_from_config); each org gets
    its own, so that one org's batch never waits for another's. `on_readiness_change` is awaited, on
    the event loop, whenever a key read ends or a signer's health changes. Call `start()` on the
    loop, and `stop()` at shutdown."""

    def __init__(
        self,
        orgs: Mapping[str, OrgConfig],
        settings: TransitSettings,
        session: Callable[[], VaultCaller],
        *,
        metrics: TransitMetrics | None,
        refresh_interval: float,
        jitter_ratio: float,
        on_readiness_change: Callable[[], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._on_readiness_change = on_readiness_change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._updates: set[asyncio.Future[None]] = set()
        self.signers: dict[str, TransitSigner] = {
            name: TransitSigner(
                [session()],
                org=name,
                key=org.transit_key,
                mount=org.transit_mount,
                settings=settings,
                metrics=metrics,
                on_health_change=self._health_changed,
            )
            for name, org in orgs.items()
            if org.transit
        }
        self._refreshers = {
            name: Refresher(
                "Transit key",
                functools.partial(_read_key, signer),
                functools.partial(_adopted, name),
                self._refreshed,
                RetrySchedule(refresh_interval, jitter_ratio),
                log_fields={"org": name, "key": signer.where},
                clock=clock,
            )
            for name, signer in self.signers.items()
        }

    def is_ready(self) -> bool:
        """True when every transit org's key has been read and its signer is healthy."""
        return all(signer.healthy and signer.latest_version is not None for signer in self.signers.values())

    def start(self) -> None:
        """Read every key now and then on the refresh schedule, in background tasks."""
        self._loop = asyncio.get_running_loop()
        for refresher in self._refreshers.values():
            refresher.start()

    async def stop(self) -> None:
        """Stop the key reads and the signers; calls still waiting for Vault fail with SIGNER_UNAVAILABLE."""
        await asyncio.gather(*(refresher.stop() for refresher in self._refreshers.values()))
        await asyncio.gather(*(signer.close() for signer in self.signers.values()))

    async def _refreshed(self, _outcome: Outcome) -> None:
        await self._on_readiness_change()

    def _health_changed(self, _healthy: bool) -> None:
        # Called on the loop or in a key read's worker thread; the readiness update belongs to the loop.
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._schedule_update)

    def _schedule_update(self) -> None:
        update = asyncio.ensure_future(self._on_readiness_change())
        self._updates.add(update)  # held until done: the loop keeps only weak references to tasks
        update.add_done_callback(self._updates.discard)


def _read_key(signer: TransitSigner) -> _KeySnapshot:
    """The Refresher's read, in its worker thread, as the signer's blocking read must be."""
    try:
        return _KeySnapshot(signer.read_key_info())
    except SignerUnavailableError as error:
        # The refresher's kind of failure: logged, retried with backoff, the version in use kept.
        raise SecretSourceError(error.message) from None


def _adopted(org: str, snapshot: _KeySnapshot) -> None:
    logger.info("Transit key version in use", extra={"fields": {"org": org, "version": snapshot.version}})
