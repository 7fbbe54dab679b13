"""Signing through Vault Transit: an org's Kustomer secret lives in Vault as an
imported HMAC key (service/transit_import.py puts it there) and never reaches
the service, which asks Transit for the HMAC-SHA256 of each signing input.

A Vault round trip per token would cap the mint rate at the round-trip rate,
so concurrent requests are coalesced: batches of up to `max_batch_size` inputs
go to Vault as one `batch_input` call, one at a time per VaultCaller (more only
when full); an input waits for others to join it until as many have come as
came back in the largest recent batch, or a millisecond after the last arrival,
and `max_wait_seconds` at most (see _Batcher). The batch requests go through
aiohttp on the event loop, which they never block (service/vault_http.py);
logging in, key reads, and any request hvac must make (a proxy, a token Vault
refused) run in worker threads through the caller's hvac client.

There is no local fallback: when Vault cannot answer in time, the caller gets
SignerUnavailableError, and `healthy` turns False after
`unhealthy_after_failures` failed requests in a row (True again on the next
success). Errors and logs name the org, the mount and the key, never an input.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import contextvars
import dataclasses
import functools
import logging
import re
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Generic, NamedTuple, Protocol, TypeVar

import hvac
import hvac.exceptions
import requests
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from service.errors import ConfigError, SecretSourceError, SignerUnavailableError
from service.tracing import current_span_context, transit_span
from service.vault_http import RedirectedError, VaultHttp

if TYPE_CHECKING:
    from opentelemetry.trace import SpanContext

logger = logging.getLogger(__name__)

T = TypeVar("T")
Item = TypeVar("Item")
R = TypeVar("R")

# Transit key names and mount paths as Vault accepts them in a URL without quoting surprises.
KEY_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
MOUNT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?:/[A-Za-z0-9][A-Za-z0-9_.-]*)*")
# Transit's answer for one input: "vault:v<version>:<standard base64 of the MAC>".
TRANSIT_HMAC = re.compile(r"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]{43}=)")
HMAC_SHA256_BYTES = 32
HASH_ALGORITHM = "sha2-256"
# How long the batcher waits for one more input before it sends what it has (at most max_wait)...
ARRIVAL_GAP_SECONDS = 0.001
# ...once an iteration of the event loop this short brings no input: a loop with nothing else to run.
IDLE_ITERATION_SECONDS = 0.0002
# How many answered batches the batcher remembers the sizes of (see _Batcher).
BATCHES_REMEMBERED = 16
# Batches in flight at once, per org, process and Vault session, all but one of them full: a queue of
# full batches (a MintTokens flood) would otherwise wait for Vault one request at a time.
BATCHES_IN_FLIGHT = 4
# Vault refuses a request of more than 1,000 JSON strings (max_request_json_strings); a verify input is 4.
MAX_BATCH_SIZE = 200

TRANSIT_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class VaultCaller(Protocol):
    """Runs an operation with a logged-in hvac client (service.vault_auth.VaultSession)."""

    def call(self, operation: Callable[[hvac.Client], T]) -> T: ...


@dataclasses.dataclass(frozen=True)
class TransitSettings:
    """How requests to Transit are coalesced and bounded."""

    # The longest an input waits for others to share its request (under steady load; alone, a millisecond).
    max_wait_seconds: float = 0.01
    # The most inputs in one Transit request.
    max_batch_size: int = 128
    # The HTTP timeout of one Transit request, and how long a caller waits by default.
    timeout_seconds: float = 2.0
    # Failed requests in a row after which `healthy` is False.
    unhealthy_after_failures: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.max_wait_seconds <= 0.1:
            raise ConfigError("setting transit.max_wait_seconds: must be between 0 and 0.1 (seconds)")
        if not 1 <= self.max_batch_size <= MAX_BATCH_SIZE:
            raise ConfigError(
                f"setting transit.max_batch_size: must be between 1 and {MAX_BATCH_SIZE} (Vault refuses "
                "requests of more than 1,000 JSON strings)"
            )
        if not 0 < self.timeout_seconds <= 60:
            raise ConfigError("setting transit.timeout_seconds: must be above 0 and at most 60")
        if self.unhealthy_after_failures < 1:
            raise ConfigError("setting transit.unhealthy_after_failures: must be at least 1")


class TransitSignature(NamedTuple):
    """An HMAC-SHA256 computed by Transit, and the key version that computed it."""

    mac: bytes
    key_version: int


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """What `transit/keys/<key>` says about the (HMAC) key."""

    latest_version: int
    exportable: bool
    allow_plaintext_backup: bool


class TransitMetrics:
    """The Transit metrics, registered once per registry and shared by every org's signer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.request_duration = Histogram(
            "tokenservice_transit_request_duration_seconds",
            "Time of one request to Vault Transit, by org and operation (hmac, verify, key_info).",
            ["org", "operation"],
            buckets=TRANSIT_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "tokenservice_transit_batch_size",
            "Inputs per Vault Transit request, by org and operation.",
            ["org", "operation"],
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.errors_total = Counter(
            "tokenservice_transit_errors",
            "Failed Vault Transit requests and calls, by org and kind (unreachable, "
            "timeout, denied, key_missing, vault_error, malformed, item_error, login, deadline).",
            ["org", "kind"],
            registry=registry,
        )
        self.healthy = Gauge(
            "tokenservice_transit_healthy",
            "1 when the org's last Vault Transit requests succeeded (in every worker), else 0.",
            ["org"],
            multiprocess_mode="livemin",
            registry=registry,
        )


class _TransitFailedError(Exception):
    """A failed Transit request: `kind` is the metric label, `message` the caller's error, `status` Vault's
    HTTP status when it answered with an error."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status: int | None = None


# The HTTP status behind each of hvac's exceptions (as hvac.exceptions.VaultError.from_status maps them).
_HVAC_STATUS: dict[type[Exception], int] = {
    hvac.exceptions.InvalidRequest: 400,
    hvac.exceptions.Unauthorized: 401,
    hvac.exceptions.Forbidden: 403,
    hvac.exceptions.InvalidPath: 404,
    hvac.exceptions.RateLimitExceeded: 429,
    hvac.exceptions.InternalServerError: 500,
    hvac.exceptions.VaultNotInitialized: 501,
    hvac.exceptions.BadGateway: 502,
    hvac.exceptions.VaultDown: 503,
}
# What a Transit batch request that succeeded was answered (VaultHttp and hvac raise for any error status).
_TRANSIT_OK = 200


class SignerHealth:
    """`unhealthy_after` failures in a row make it unhealthy; the next success makes it healthy.

    Recorded from the event loop and from worker threads (key reads), hence the lock; `on_change` is
    called in whichever thread recorded the change."""

    def __init__(self, unhealthy_after: int, on_change: Callable[[bool], None] | None = None) -> None:
        self._unhealthy_after = unhealthy_after
        self._on_change = on_change
        self._failures = 0
        self._lock = threading.Lock()

    @property
    def healthy(self) -> bool:
        return self._failures < self._unhealthy_after

    @property
    def consecutive_failures(self) -> int:
        return self._failures

    def record(self, ok: bool) -> None:
        with self._lock:
            was = self.healthy
            self._failures = 0 if ok else self._failures + 1
            changed = self.healthy != was
        if changed and self._on_change is not None:
            self._on_change(not was)


@dataclasses.dataclass
class _Entry(Generic[Item, R]):
    item: Item
    future: asyncio.Future[R]
    enqueued_at: float


class _Batcher(Generic[Item, R]):
    """Coalesces items into batches: `per_caller` workers per caller, each sending one batch at a time.

    A caller's first worker sends a batch when it is full; when it holds as many items as the largest
    of the last BATCHES_REMEMBERED batches answered (in steady traffic the calls those answered come
    round again, and once they are all back nobody else is coming); when its oldest item has waited
    `max_wait`; or once no item has arrived for ARRIVAL_GAP_SECONDS and the event loop has nothing
    else to run (an iteration of the loop that brings no item and is short: IDLE_ITERATION_SECONDS).
    Handlers submit while they run, so a burst is one batch, and under load batches fill (while one
    is in flight, and for up to `max_wait`): the calls queue then anyway, and each item that shares a
    request saves Vault and the service a request. The largest, not the last: a batch cut short once
    (a caller late) would otherwise set the size of the next, and batches would only ever shrink.
    The gap alone is not enough: a loaded loop, or a process that lost its CPU for a while, can go a
    millisecond between arrivals with more calls already waiting in grpc. The other workers send
    full batches only, so that a flood of them (large MintTokens) does not wait for Vault one request
    at a time. Items whose caller stopped waiting are left out."""

    def __init__(
        self,
        callers: Sequence[VaultCaller],
        send: Callable[[VaultCaller, list[Item]], Awaitable[list[R | SignerUnavailableError]]],
        *,
        max_batch: int,
        max_wait: float,
        per_caller: int = 1,
    ) -> None:
        self._callers = list(callers)
        self._per_caller = per_caller
        self._send = send
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._pending: deque[_Entry[Item, R]] = deque()
        self._wakeup = asyncio.Event()
        # Set once the queue holds `_expected` items: what the first worker waits for during the gap. Not
        # `_wakeup`, which the full-only workers wait on: they would be woken by every mint past the count.
        self._count_reached = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._last_arrival = 0.0
        # Calls of submit so far: an iteration of the event loop that adds none is one without arrivals.
        self._arrivals = 0
        # The sizes of the batches answered last, and the largest of them: a partial batch that size goes.
        self._answered: deque[int] = deque(maxlen=BATCHES_REMEMBERED)
        self._expected = max_batch

    def submit(self, items: Sequence[Item]) -> list[asyncio.Future[R]]:
        """Queue `items`; a future per item. Cancel a future to withdraw its item."""
        self._start()
        loop = asyncio.get_running_loop()
        now = self._last_arrival = loop.time()
        self._arrivals += 1
        futures = [loop.create_future() for _ in items]
        self._pending.extend(_Entry(item, future, now) for item, future in zip(items, futures, strict=True))
        if len(self._pending) == len(items) or len(self._pending) >= self._max_batch:
            self._wakeup.set()
        if len(self._pending) >= self._expected:
            self._count_reached.set()
        return futures

    async def close(self, error: Callable[[], SignerUnavailableError]) -> None:
        """Stop the workers; every queued or in-flight item fails with `error()`."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        _fail(self._pending, error)
        self._pending.clear()

    def _start(self) -> None:
        if not self._workers:
            # In a context of their own: they serve every later call, not the one that happened to start them.
            self._workers = [
                asyncio.create_task(self._work(caller, full_only=index > 0), context=contextvars.Context())
                for caller in self._callers
                for index in range(self._per_caller)
            ]

    async def _work(self, caller: VaultCaller, *, full_only: bool) -> None:
        while True:
            batch = await self._next_batch(full_only)
            try:
                outcomes = await self._send(caller, [entry.item for entry in batch])
            except asyncio.CancelledError:
                self._pending.extendleft(reversed(batch))
                raise
            self._answered.append(len(batch))
            self._expected = max(self._answered)
            for entry, outcome in zip(batch, outcomes, strict=True):
                if entry.future.done():
                    continue
                if isinstance(outcome, SignerUnavailableError):
                    entry.future.set_exception(outcome)
                else:
                    entry.future.set_result(outcome)

    async def _next_batch(self, full_only: bool) -> list[_Entry[Item, R]]:
        """The next batch to send, never empty: a full one, or for the first worker one that is ready."""
        while True:
            while self._pending and self._pending[0].future.done():
                self._pending.popleft()
            if len(self._pending) >= self._max_batch and (batch := self._take()):
                return batch
            if self._pending and not full_only:
                # Awaits an iteration of the loop, during which the queue can grow, fill or empty: look again.
                if await self._ready_to_send() and (batch := self._take()):
                    return batch
                continue
            self._wakeup.clear()
            await self._wakeup.wait()

    async def _ready_to_send(self) -> bool:
        """Whether a batch that is not full should go now: it is as large as the largest recent batch
        answered, its oldest item has waited `max_wait`, or no item has come for ARRIVAL_GAP_SECONDS
        and the event loop has nothing else to run (an iteration that brings no item and takes at most
        IDLE_ITERATION_SECONDS). Waits until one of them may hold."""
        if len(self._pending) >= self._expected:
            return True
        loop = asyncio.get_running_loop()
        now = loop.time()
        oldest_due = self._pending[0].enqueued_at + self._max_wait
        if now >= oldest_due:
            return True
        due = min(oldest_due, self._last_arrival + ARRIVAL_GAP_SECONDS)
        if now < due:
            # submit wakes it early, once the queue holds as many items as the largest recent batch.
            self._count_reached.clear()
            timer = loop.call_at(due, self._count_reached.set)
            try:
                await self._count_reached.wait()
            finally:
                timer.cancel()
            return False
        arrivals = self._arrivals
        await asyncio.sleep(0)
        return self._arrivals == arrivals and loop.time() - now <= IDLE_ITERATION_SECONDS

    def _take(self) -> list[_Entry[Item, R]]:
        batch: list[_Entry[Item, R]] = []
        while self._pending and len(batch) < self._max_batch:
            entry = self._pending.popleft()
            if not entry.future.done():
                batch.append(entry)
        return batch


@dataclasses.dataclass
class _Link:
    """How batch requests reach Vault through one caller: its current token, a connection per
    operation (None where requests would use a proxy: hvac then sends them), and Vault's address."""

    token: str
    connections: dict[str, VaultHttp] | None
    url: str


def _fail(entries: Sequence[_Entry[Item, R]], error: Callable[[], SignerUnavailableError]) -> None:
    for entry in entries:
        if not entry.future.done():
            entry.future.set_exception(error())


class TransitSigner:
    """HMAC-SHA256 signing and verification for one org with its Transit key.

    `callers` are VaultSessions (or anything with their `call`); one batch is in flight per caller, and
    up to BATCHES_IN_FLIGHT when they are full (one at a time where a request goes through hvac, which
    holds the session's lock). One caller suffices against a nearby Vault. `on_health_change` gets the
    new health, in the thread that saw the change (the event loop's, or that of a `read_key_info`).
    Call `close()` at shutdown."""

    def __init__(
        self,
        callers: Sequence[VaultCaller],
        *,
        org: str,
        key: str,
        mount: str = "transit",
        settings: TransitSettings = TransitSettings(),
        metrics: TransitMetrics | None = None,
        on_health_change: Callable[[bool], None] | None = None,
    ) -> None:
        if not callers:
            raise ConfigError(f"org {org}: the Transit signer needs at least one Vault session")
        if not KEY_NAME_PATTERN.fullmatch(key):
            raise ConfigError(
                f"org {org}: transit_key must be 1-128 letters, digits, '_', '.' or '-', "
                "starting with a letter or digit"
            )
        if not MOUNT_PATTERN.fullmatch(mount):
            raise ConfigError(f"org {org}: transit_mount must be a Vault mount path such as 'transit'")
        self.org = org
        self.key = key
        self.mount = mount
        self.where = f"{mount}/keys/{key}"
        self._settings = settings
        self._metrics = metrics
        self._health = SignerHealth(settings.unhealthy_after_failures, self._health_changed(on_health_change))
        self._latest_version: int | None = None
        quoted = urllib.parse.quote(key, safe="")
        self._hmac_url = f"/v1/{mount}/hmac/{quoted}/{HASH_ALGORITHM}"
        self._verify_url = f"/v1/{mount}/verify/{quoted}/{HASH_ALGORITHM}"
        self._key_url = f"/v1/{mount}/keys/{quoted}"
        self._key_caller = callers[0]
        self._links: dict[VaultCaller, _Link] = {}
        self._signing = _Batcher(
            callers,
            self._send_hmac,
            max_batch=settings.max_batch_size,
            max_wait=settings.max_wait_seconds,
            per_caller=BATCHES_IN_FLIGHT,
        )
        self._verifying = _Batcher(
            callers,
            self._send_verify,
            max_batch=settings.max_batch_size,
            max_wait=settings.max_wait_seconds,
            per_caller=BATCHES_IN_FLIGHT,
        )
        if metrics is not None:
            metrics.healthy.labels(org).set(1)

    @property
    def healthy(self) -> bool:
        """False after `unhealthy_after_failures` failed Transit requests in a row, until one succeeds."""
        return self._health.healthy

    @property
    def latest_version(self) -> int | None:
        """The newest key version seen (from `refresh_key_info` or a signature), None before either."""
        return self._latest_version

    async def sign(self, signing_input: bytes, *, timeout: float | None = None) -> TransitSignature:
        """The HMAC-SHA256 of `signing_input` with the key's latest version; raise SignerUnavailableError
        when Transit does not answer with one within `timeout` (default: the settings' timeout_seconds)."""
        (future,) = self._signing.submit([(signing_input, current_span_context())])
        return await self._awaited(future, self._timeout(timeout))

    async def sign_many(
        self, inputs: Sequence[bytes], *, timeout: float | None = None
    ) -> list[TransitSignature | SignerUnavailableError]:
        """A signature or the error per input, in order, sent in as few requests as max_batch_size allows."""
        call = current_span_context()
        futures = self._signing.submit([(signing_input, call) for signing_input in inputs])
        return await self._gathered(futures, self._timeout(timeout))

    async def verify_signature(self, signing_input: bytes, signature: bytes, *, timeout: float | None = None) -> bool:
        """Whether `signature` is the HMAC of `signing_input` with the key's latest version (older versions
        are refused, as Kustomer accepts only its current secret); raise SignerUnavailableError when
        Transit cannot tell."""
        if len(signature) != HMAC_SHA256_BYTES:
            return False
        timeout = self._timeout(timeout)
        deadline = time.monotonic() + timeout
        version = self._latest_version
        if version is None:
            version = (await self.refresh_key_info(timeout=timeout)).latest_version
        (future,) = self._verifying.submit([((signing_input, signature, version), current_span_context())])
        return await self._awaited(future, max(0.0, deadline - time.monotonic()))

    async def refresh_key_info(self, *, timeout: float | None = None) -> KeyInfo:
        """Read `transit/keys/<key>` and adopt its latest version; raise SignerUnavailableError when that fails
        or the key is not an HMAC key."""
        timeout = self._timeout(timeout)
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.read_key_info, timeout=timeout), timeout)
        except TimeoutError:
            raise self._deadline_error(timeout) from None

    def read_key_info(self, *, timeout: float | None = None) -> KeyInfo:
        """As `refresh_key_info`, blocking the calling thread: for a worker thread (a background refresher's
        read), never the event loop."""
        timeout = self._timeout(timeout)
        started = time.perf_counter()
        try:
            answer = self._call(self._key_caller, functools.partial(self._get_key_info, timeout=timeout))
            info = self._key_info(answer)
        except _TransitFailedError as failure:
            self._record_failure("key_info", failure)
            raise SignerUnavailableError(failure.message) from None
        self._observe("key_info", started, 1)
        self._record_success("key_info")
        if info.exportable or info.allow_plaintext_backup:
            logger.warning(
                "Transit key can leave Vault (exportable or plaintext backup allowed); import it again without either",
                extra={"fields": self._log_fields("key_info")},
            )
        self._adopt_version(info.latest_version)
        return info

    async def close(self) -> None:
        """Stop the batch workers; calls still waiting fail with SignerUnavailableError."""

        def closed() -> SignerUnavailableError:
            return SignerUnavailableError(
                f"the Transit signer of org {self.org} is shut down; retry on another replica"
            )

        await self._signing.close(closed)
        await self._verifying.close(closed)
        for link in list(self._links.values()):
            for connection in (link.connections or {}).values():
                await connection.close()

    def _timeout(self, timeout: float | None) -> float:
        return self._settings.timeout_seconds if timeout is None else min(timeout, self._settings.timeout_seconds)

    # asyncio.timeout rather than wait_for or wait, which add a waiter future and done callbacks to every
    # call: with the servicer's single-org path, a transit MintToken went from 383 to 365 µs of CPU.
    async def _awaited(self, future: asyncio.Future[T], timeout: float) -> T:
        try:
            async with asyncio.timeout(timeout):
                return await future  # cancelled at the timeout, so the batcher drops its item
        except TimeoutError:
            raise self._deadline_error(timeout) from None

    async def _gathered(self, futures: list[asyncio.Future[T]], timeout: float) -> list[T | SignerUnavailableError]:
        try:
            async with asyncio.timeout(timeout):
                for future in futures:
                    with contextlib.suppress(SignerUnavailableError):  # an outcome, read below
                        await future
        except TimeoutError:
            pass
        finally:
            for future in futures:
                future.cancel()  # those not done: their items are dropped, not sent
        outcomes: list[T | SignerUnavailableError] = []
        for future in futures:
            if not future.done():
                future.cancel()
                outcomes.append(self._deadline_error(timeout))
            elif future.cancelled():
                outcomes.append(self._deadline_error(timeout))
            elif isinstance(error := future.exception(), SignerUnavailableError):
                outcomes.append(error)
            else:
                outcomes.append(future.result())  # re-raises any other exception: a defect, not an outcome
        return outcomes

    def _deadline_error(self, timeout: float) -> SignerUnavailableError:
        self._count_error("deadline")
        return SignerUnavailableError(
            f"Vault Transit did not answer for org {self.org} within {timeout:g} s: check that Vault is up, "
            "unsealed and reachable at vault.addr; retry with backoff"
        )

    async def _send_hmac(
        self, caller: VaultCaller, inputs: list[tuple[bytes, SpanContext | None]]
    ) -> list[TransitSignature | SignerUnavailableError]:
        outcomes = await self._request(caller, "hmac", self._hmac_url, inputs, _hmac_input, self._signature)
        versions = [outcome.key_version for outcome in outcomes if isinstance(outcome, TransitSignature)]
        if versions:
            self._adopt_version(max(versions))
        return outcomes

    async def _send_verify(
        self, caller: VaultCaller, items: list[tuple[tuple[bytes, bytes, int], SpanContext | None]]
    ) -> list[bool | SignerUnavailableError]:
        return await self._request(caller, "verify", self._verify_url, items, _verify_input, self._validity)

    async def _request(
        self,
        caller: VaultCaller,
        operation: str,
        url: str,
        items: list[tuple[Item, SpanContext | None]],
        encode: Callable[[Item], dict[str, str]],
        decode: Callable[[object], R],
    ) -> list[R | SignerUnavailableError]:
        """Send one batch request; an outcome per item. Never raises: a failed request fails every item.

        Each item comes with the span context of the call waiting for it: traced, the request is a
        CLIENT span parented to (and linked to) those calls, with its URL, status and failure."""
        started = time.perf_counter()
        with transit_span(self.org, operation, items) as span:
            try:
                answer = await self._post(caller, operation, url, {"batch_input": [encode(item) for item, _ in items]})
                span.set_status_code(_TRANSIT_OK)
                outcomes = self._decoded(answer, len(items), decode)
            except _TransitFailedError as failure:
                if failure.status is None:
                    span.set_error(failure.kind)
                else:
                    span.set_status_code(failure.status)
                self._record_failure(operation, failure)
                return [SignerUnavailableError(failure.message) for _ in items]
            except Exception:
                logger.exception("Transit request failed unexpectedly", extra={"fields": self._log_fields(operation)})
                unreadable = _TransitFailedError(
                    "malformed", self._message("answered in a way the service cannot read")
                )
                span.set_error(unreadable.kind)
                self._record_failure(operation, unreadable)
                return [SignerUnavailableError(unreadable.message) for _ in items]
            finally:
                link = self._links.get(caller)
                if link is not None:
                    span.set_url(link.url + url)
            self._observe(operation, started, len(items))
            self._record_success(operation)
            return outcomes

    async def _post(self, caller: VaultCaller, operation: str, url: str, body: dict[str, object]) -> object:
        """Vault's answer, through the caller's connection on the loop; through hvac in a worker thread
        the first time, where requests would use a proxy, after Vault refused the token (hvac's session
        logs in again) and after a redirect (hvac follows it)."""
        link = self._links.get(caller)
        if link is not None and link.connections is not None:
            try:
                return await link.connections[operation].post(url, body, link.token, self._settings.timeout_seconds)
            except (hvac.exceptions.Forbidden, RedirectedError):
                pass
            except (hvac.exceptions.VaultError, requests.RequestException, ValueError) as error:
                raise self._failure(error) from None
        return await asyncio.to_thread(self._call, caller, functools.partial(self._post_with_hvac, caller, url, body))

    def _post_with_hvac(self, caller: VaultCaller, url: str, body: dict[str, object], client: hvac.Client) -> object:
        answer = client.adapter.post(url, json=body, timeout=self._settings.timeout_seconds)
        self._remember(caller, client)
        return answer

    def _get_key_info(self, client: hvac.Client, *, timeout: float) -> object:
        answer = client.adapter.get(self._key_url, timeout=timeout)
        self._remember(self._key_caller, client)
        return answer

    def _remember(self, caller: VaultCaller, client: hvac.Client) -> None:
        """Keep the token the caller's session holds now (renewed or new after a login) for the loop's requests."""
        link = self._links.get(caller)
        if link is None:
            # Connections open on first use, so a link that loses this race to another thread never opened one.
            signing = VaultHttp.like(client, connections=BATCHES_IN_FLIGHT)
            verifying = VaultHttp.like(client, connections=BATCHES_IN_FLIGHT)
            connections = None if signing is None or verifying is None else {"hmac": signing, "verify": verifying}
            link = self._links.setdefault(caller, _Link(client.token, connections, client.url))
        link.token = client.token

    def _decoded(self, answer: object, size: int, decode: Callable[[object], R]) -> list[R | SignerUnavailableError]:
        outcomes: list[R | SignerUnavailableError] = []
        for result in self._batch_results(answer, size):
            try:
                outcomes.append(decode(result))
            except _TransitFailedError as failure:
                self._count_error(failure.kind)
                outcomes.append(SignerUnavailableError(failure.message))
        return outcomes

    def _call(self, caller: VaultCaller, operation: Callable[[hvac.Client], T]) -> T:
        """Run `operation` through `caller` (in a worker thread); a failure, login included, as _TransitFailedError."""
        try:
            return caller.call(operation)
        except (hvac.exceptions.VaultError, requests.RequestException, SecretSourceError) as error:
            raise self._failure(error) from None

    def _key_info(self, answer: object) -> KeyInfo:
        data = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(data, dict):
            raise _TransitFailedError("malformed", self._message("answered without the key's data"))
        latest = data.get("latest_version")
        if not isinstance(latest, int) or isinstance(latest, bool) or latest < 1:
            raise _TransitFailedError("malformed", self._message("answered without a latest_version"))
        key_type = data.get("type")
        if key_type != "hmac":
            raise _TransitFailedError(
                "key_missing",
                self._message(
                    f"is of type {key_type!r}, not 'hmac'; import the org's Kustomer secret into a new key with "
                    f"`tokenservice secret sync --org {self.org}`"
                ),
            )
        return KeyInfo(latest, data.get("exportable") is True, data.get("allow_plaintext_backup") is True)

    def _batch_results(self, answer: object, size: int) -> list[object]:
        data = answer.get("data") if isinstance(answer, dict) else None
        items = data.get("batch_results") if isinstance(data, dict) else None
        if not isinstance(items, list) or len(items) != size:
            raise _TransitFailedError(
                "malformed",
                self._message(
                    "answered without one batch result per input; check that vault.addr is a Vault or OpenBao server"
                ),
            )
        return items

    def _signature(self, item: object) -> TransitSignature:
        value = item.get("hmac") if isinstance(item, dict) else None
        match = TRANSIT_HMAC.fullmatch(value) if isinstance(value, str) else None
        if match is None:
            raise self._item_failure(item)
        try:
            mac = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise _TransitFailedError("malformed", self._message("answered with an HMAC that is not base64")) from None
        return TransitSignature(mac, int(match.group(1)))

    def _validity(self, item: object) -> bool:
        if not isinstance(item, dict) or item.get("error"):
            raise self._item_failure(item)
        return item.get("valid") is True

    def _item_failure(self, item: object) -> _TransitFailedError:
        if isinstance(item, dict) and isinstance(item.get("error"), str) and item["error"]:
            # Vault's per-input error names a problem of the key or version, never the input's bytes.
            return _TransitFailedError("item_error", self._message(f"refused one input ({item['error']})"))
        return _TransitFailedError("malformed", self._message("answered without a result for one input"))

    def _failure(self, error: Exception) -> _TransitFailedError:
        """What a failed request means and how to fix it: the caller's message, the metric's kind and
        Vault's HTTP status, if it answered with an error."""
        failure = self._classified(error)
        failure.status = _HVAC_STATUS.get(type(error))
        return failure

    def _classified(self, error: Exception) -> _TransitFailedError:
        """The kind and message of a failed request."""
        if isinstance(error, SecretSourceError):
            return _TransitFailedError(
                "login", self._message(f"could not be used: logging in to Vault failed ({error})")
            )
        if isinstance(error, ValueError):  # JSONDecodeError: an answer, but not Vault's JSON
            return _TransitFailedError(
                "malformed",
                self._message("answered with what is not JSON; check that vault.addr is a Vault or OpenBao server"),
            )
        if isinstance(error, requests.Timeout):
            return _TransitFailedError(
                "timeout",
                self._message(
                    f"did not answer within {self._settings.timeout_seconds:g} s; check Vault's load and the network"
                ),
            )
        if isinstance(error, requests.RequestException):
            return _TransitFailedError(
                "unreachable", self._message("is unreachable; check vault.addr and that Vault is running")
            )
        if isinstance(error, hvac.exceptions.Forbidden):
            return _TransitFailedError(
                "denied",
                self._message(
                    "refused the service's token; it needs the tokenservice-transit policy "
                    "(deploy/vault/tokenservice-transit-policy.hcl) for this key"
                ),
            )
        if isinstance(error, hvac.exceptions.InvalidRequest | hvac.exceptions.InvalidPath):
            return _TransitFailedError(
                "key_missing",
                self._message(
                    "has no such key or mount; import the org's Kustomer secret with "
                    f"`tokenservice secret sync --org {self.org}` and check transit_mount"
                ),
            )
        if isinstance(error, hvac.exceptions.VaultDown):
            return _TransitFailedError("vault_error", self._message("is sealed or in maintenance; unseal it"))
        return _TransitFailedError("vault_error", self._message(f"failed ({type(error).__name__}); check Vault's logs"))

    def _message(self, problem: str) -> str:
        return f"Vault Transit key {self.where} for org {self.org} {problem}"

    def _adopt_version(self, version: int) -> None:
        if self._latest_version is None or version > self._latest_version:
            self._latest_version = version

    def _observe(self, operation: str, started: float, size: int) -> None:
        if self._metrics is not None:
            self._metrics.request_duration.labels(self.org, operation).observe(time.perf_counter() - started)
            self._metrics.batch_size.labels(self.org, operation).observe(size)

    def _count_error(self, kind: str) -> None:
        if self._metrics is not None:
            self._metrics.errors_total.labels(self.org, kind).inc()

    def _record_success(self, operation: str) -> None:
        if self._health.consecutive_failures:
            logger.info("Vault Transit answers again", extra={"fields": self._log_fields(operation)})
        self._health.record(True)

    def _record_failure(self, operation: str, failure: _TransitFailedError) -> None:
        self._count_error(failure.kind)
        if self._health.consecutive_failures == 0:
            # Once per run of failures: a Vault outage must not flood the log at the request rate.
            logger.warning(
                "Vault Transit request failed",
                extra={"fields": {**self._log_fields(operation), "kind": failure.kind, "error": failure.message}},
            )
        self._health.record(False)

    def _health_changed(self, callback: Callable[[bool], None] | None) -> Callable[[bool], None]:
        def changed(healthy: bool) -> None:
            logger.log(
                logging.INFO if healthy else logging.ERROR,
                "Transit signer healthy" if healthy else "Transit signer unhealthy",
                extra={"fields": {"org": self.org, "key": self.where}},
            )
            if self._metrics is not None:
                self._metrics.healthy.labels(self.org).set(1 if healthy else 0)
            if callback is not None:
                callback(healthy)

        return changed

    def _log_fields(self, operation: str) -> dict[str, object]:
        return {"org": self.org, "key": self.where, "operation": operation}


def _hmac_input(data: bytes) -> dict[str, str]:
    return {"input": base64.b64encode(data).decode("ascii")}


def _verify_input(item: tuple[bytes, bytes, int]) -> dict[str, str]:
    data, signature, version = item
    return {
        "input": base64.b64encode(data).decode("ascii"),
        "hmac": f"vault:v{version}:{base64.b64encode(signature).decode('ascii')}",
    }
