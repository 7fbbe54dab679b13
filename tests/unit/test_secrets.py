"""Secret validation, the refresher (change by content, outcomes, schedule), and the stores'
adopt / keep-last-good / staleness behaviour, with in-memory sources."""

from __future__ import annotations

import asyncio
import os
import random
import ssl

import pytest
from prometheus_client import generate_latest

from service.api_keys import ApiKeyStore, hash_api_key, new_api_key
from service.config import OrgConfig
from service.errors import (
    ApiKeysStaleError,
    OrgUnknownError,
    SecretDeletedError,
    SecretRejectedError,
    SecretSourceError,
    SecretUnavailableError,
)
from service.metrics import Metrics
from service.refresher import INITIAL_RETRY_SECONDS, Outcome, Refresher, RetrySchedule
from service.secrets import InMemorySecretSource, KvEntry, SecretStore, SecretVersion, validate_secret
from tests.support import metric_value

GOOD = "s" * 40


@pytest.mark.parametrize(
    "value",
    [
        "",
        "short",
        " " + GOOD,
        GOOD + "\n",
        ssl.DER_cert_to_PEM_cert(os.urandom(48)).strip(),  # PEM armour, made here rather than committed
        "ssh-ed25519 " + "A" * 68,
        '{"kty":"oct","k":"' + "A" * 43 + '"}',
        # A KV field holds any JSON value.
        None,
        12345678901234567890123456789012345678901234567890,
        ["s" * 40],
        {"secret": "s" * 40},
    ],
)
def test_unfit_secrets_are_rejected(value):
    with pytest.raises(SecretRejectedError):
        validate_secret(SecretVersion(value, 1), 32)


def test_min_secret_bytes_is_configurable():
    assert validate_secret(SecretVersion("x" * 16, 1), 16) == b"x" * 16


def store_with(source, **options):
    metrics = Metrics()
    org = OrgConfig("acme", "kustomer/acme")
    return SecretStore({"acme": org}, source, metrics, **options), metrics


async def test_an_invalid_new_version_is_not_adopted():
    source = InMemorySecretSource({"kustomer/acme": SecretVersion(GOOD, 1)})
    store, metrics = store_with(source)
    assert await store.refresh("acme")
    source.secrets["kustomer/acme"] = SecretVersion("too-short", 2)
    assert not await store.refresh("acme")
    assert store.current("acme").version == 1 and store.current("acme").key == GOOD.encode()
    text = metrics_text(metrics)
    assert metric_value(text, "tokenservice_vault_refresh_total", org="acme", result="rejected") == 1
    assert metric_value(text, "tokenservice_secret_version", org="acme") == 1


async def test_the_last_refresh_time_is_that_of_the_last_good_read():
    now = [1000.0]
    source = InMemorySecretSource({"kustomer/acme": SecretVersion(GOOD, 1)})
    store, metrics = store_with(source, clock=lambda: now[0])
    assert await store.refresh("acme")
    now[0] += 5
    del source.secrets["kustomer/acme"]
    assert not await store.refresh("acme")
    assert metric_value(metrics_text(metrics), "tokenservice_secret_last_refresh_timestamp_seconds", org="acme") == 1000
    now[0] += 5
    source.secrets["kustomer/acme"] = SecretVersion(GOOD, 1)
    assert await store.refresh("acme")
    assert metric_value(metrics_text(metrics), "tokenservice_secret_last_refresh_timestamp_seconds", org="acme") == 1010


async def test_unknown_org_and_missing_secret_are_told_apart():
    store, _ = store_with(InMemorySecretSource())
    assert not await store.refresh("acme")
    with pytest.raises(SecretUnavailableError):
        store.current("acme")
    with pytest.raises(OrgUnknownError):
        store.current("globex")


async def test_max_staleness_stops_signing_with_an_old_secret():
    now = [1000.0]
    source = InMemorySecretSource({"kustomer/acme": SecretVersion(GOOD, 1)})
    changes = []

    async def record(ready):
        changes.append(ready)

    store, _ = store_with(source, max_staleness=60, clock=lambda: now[0], on_readiness_change=record)
    await store.refresh("acme")
    del source.secrets["kustomer/acme"]
    now[0] += 59
    await store.refresh("acme")
    assert store.current("acme").version == 1
    now[0] += 2
    await store.refresh("acme")
    with pytest.raises(SecretUnavailableError, match="60 s"):
        store.current("acme")
    assert changes == [True, False]


def metrics_text(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


class ExplodingSource:
    def read(self, org):
        raise KeyError("renewable")


async def test_a_surprise_from_the_source_is_a_failed_refresh_not_a_dead_task():
    store, metrics = store_with(ExplodingSource())
    assert not await store.refresh("acme")
    assert metric_value(metrics_text(metrics), "tokenservice_vault_refresh_total", org="acme", result="error") == 1


class Entries:
    """A source whose next read is whatever the test put there, an entry or an error to raise."""

    def __init__(self, result) -> None:
        self.result = result
        self.reads = 0

    def read(self):
        self.reads += 1
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


def refresher_of(source: Entries, adopt=None, clock=lambda: 1000.0):
    adopted: list[KvEntry] = []
    outcomes: list[Outcome] = []

    async def record(outcome: Outcome) -> None:
        outcomes.append(outcome)

    refresher = Refresher(
        "entry",
        source.read,
        adopt or adopted.append,
        record,
        RetrySchedule(30, 0.1),
        log_fields={"path": "p"},
        clock=clock,
    )
    return refresher, adopted, outcomes


async def test_the_refresher_tells_changes_by_content_not_by_version_number():
    source = Entries(KvEntry({"reports": "sha256:a"}, 1))
    refresher, adopted, outcomes = refresher_of(source)
    assert await refresher.refresh() is Outcome.ADOPTED
    assert await refresher.refresh() is Outcome.UNCHANGED
    source.result = KvEntry({"reports": "sha256:b"}, 1)  # re-created: version 1 again, other data
    assert await refresher.refresh() is Outcome.ADOPTED
    source.result = KvEntry({"reports": "sha256:b"}, 2)  # same data, new version: the version is followed
    assert await refresher.refresh() is Outcome.ADOPTED
    assert [entry.version for entry in adopted] == [1, 1, 2] and refresher.held_version == 2
    assert outcomes == [Outcome.ADOPTED, Outcome.UNCHANGED, Outcome.ADOPTED, Outcome.ADOPTED]
    assert KvEntry({"a": 1, "b": 2}, 1).digest == KvEntry({"b": 2, "a": 1}, 1).digest


@pytest.mark.parametrize(
    ("raised", "outcome"),
    [
        (SecretDeletedError("the latest version (3) of secret/p is deleted"), Outcome.DELETED),
        (SecretSourceError("Vault at http://127.0.0.1:1 is unreachable: ConnectionError"), Outcome.ERROR),
        (KeyError("renewable"), Outcome.ERROR),
    ],
)
async def test_a_failed_read_keeps_what_is_held(raised, outcome):
    source = Entries(KvEntry({"reports": "sha256:a"}, 1))
    refresher, adopted, _outcomes = refresher_of(source)
    await refresher.refresh()
    source.result = raised
    assert await refresher.refresh() is outcome
    assert refresher.held_version == 1 and len(adopted) == 1 and not outcome.current
    assert outcome.metric_result == outcome.value


async def test_rejected_content_is_not_held_and_is_checked_again_at_the_next_read():
    checked = []

    def adopt(entry):
        checked.append(entry.version)
        if entry.version == 2:
            raise SecretRejectedError("version 2 is 5 bytes, below min_secret_bytes=32")

    source = Entries(KvEntry({"secret": GOOD}, 1))
    refresher, _, _ = refresher_of(source, adopt=adopt)
    await refresher.refresh()
    source.result = KvEntry({"secret": "short"}, 2)
    assert await refresher.refresh() is Outcome.REJECTED
    assert await refresher.refresh() is Outcome.REJECTED
    assert checked == [1, 2, 2] and refresher.held_version == 1
    source.result = KvEntry({"secret": GOOD}, 1)
    assert await refresher.refresh() is Outcome.UNCHANGED
    assert Outcome.UNCHANGED.metric_result == Outcome.ADOPTED.metric_result == "ok"


async def test_confirmation_time_is_the_last_good_read():
    now = [1000.0]
    source = Entries(SecretSourceError("down"))
    refresher, _, _ = refresher_of(source, clock=lambda: now[0])
    await refresher.refresh()
    # Read into a local: asserting on the attribute itself would narrow it to None for mypy past the refreshes.
    confirmed_at_first = refresher.confirmed_at
    assert confirmed_at_first is None and refresher.older_than(10**9)
    source.result = KvEntry({"k": "v"}, 1)
    await refresher.refresh()
    now[0] += 5
    source.result = SecretSourceError("down")
    await refresher.refresh()
    assert refresher.confirmed_at == 1000.0
    assert not refresher.older_than(5) and refresher.older_than(4.9)


def test_the_schedule_backs_off_doubling_up_to_the_interval_then_keeps_the_jittered_interval():
    schedule = RetrySchedule(interval=3.0, jitter_ratio=0.1, rng=random.Random(7))
    failures = [schedule.next_delay(False) for _ in range(5)]
    for delay, ceiling in zip(failures, [INITIAL_RETRY_SECONDS, 1.0, 2.0, 3.0, 3.0], strict=True):
        assert 0.8 * ceiling <= delay <= ceiling
    successes = [schedule.next_delay(True) for _ in range(200)]
    assert all(2.7 <= delay <= 3.3 for delay in successes) and max(successes) - min(successes) > 0.3
    assert schedule.next_delay(False) <= INITIAL_RETRY_SECONDS  # a success reset the backoff


async def test_the_refresher_runs_in_the_background_until_stopped():
    source = Entries(KvEntry({"k": "v"}, 1))
    refresher = Refresher("entry", source.read, lambda entry: None, _ignore, RetrySchedule(0.01, 0), log_fields={})
    refresher.start()
    await asyncio.sleep(0.2)
    await refresher.stop()
    reads = source.reads
    await asyncio.sleep(0.05)
    assert reads >= 5 and source.reads == reads


async def _ignore(outcome: Outcome) -> None:
    pass


async def test_a_secret_recreated_at_the_same_version_is_adopted():
    source = InMemorySecretSource({"kustomer/acme": SecretVersion(GOOD, 1)})
    store, metrics = store_with(source)
    await store.refresh("acme")
    source.secrets["kustomer/acme"] = SecretVersion("t" * 40, 1)
    assert await store.refresh("acme")
    assert store.current("acme").key == b"t" * 40
    assert metric_value(metrics_text(metrics), "tokenservice_vault_refresh_total", org="acme", result="ok") == 2


def key_store(source, now, **options):
    changes = []

    async def record(ready):
        changes.append(ready)

    metrics = Metrics()
    store = ApiKeyStore(
        "tokenservice/api-keys",
        source,
        metrics,
        {"reports"},
        clock=lambda: now[0],
        on_readiness_change=record,
        **options,
    )
    return store, metrics, changes


async def test_a_stale_key_set_admits_no_key_until_it_is_read_again():
    now = [1000.0]
    key = new_api_key()
    source = InMemorySecretSource(entries={"tokenservice/api-keys": KvEntry({"reports": hash_api_key(key)}, 1)})
    store, metrics, changes = key_store(source, now, max_staleness=60)
    with pytest.raises(ApiKeysStaleError, match="not been read"):
        store.caller_for(key)
    await store.refresh()
    assert store.caller_for(key) == "reports" and store.caller_for(new_api_key()) is None
    del source.entries["tokenservice/api-keys"]
    now[0] += 60
    await store.refresh()
    assert store.caller_for(key) == "reports"
    now[0] += 1
    await store.refresh()
    with pytest.raises(ApiKeysStaleError, match="over 60 s") as raised:
        store.caller_for(key)
    assert raised.value.reason == "API_KEYS_STALE" and key not in raised.value.message
    assert metric_value(metrics_text(metrics), "tokenservice_api_keys_fresh") == 0
    source.entries["tokenservice/api-keys"] = KvEntry({"reports": hash_api_key(key)}, 1)
    await store.refresh()
    assert store.caller_for(key) == "reports" and store.is_ready()
    assert changes == [True, False, True]
    assert metric_value(metrics_text(metrics), "tokenservice_api_keys_fresh") == 1


async def test_without_max_staleness_the_last_key_set_is_kept_for_good():
    now = [1000.0]
    key = new_api_key()
    source = InMemorySecretSource(entries={"tokenservice/api-keys": KvEntry({"reports": hash_api_key(key)}, 1)})
    store, _, changes = key_store(source, now)
    await store.refresh()
    source.entries.clear()
    now[0] += 10**6
    await store.refresh()
    assert store.caller_for(key) == "reports" and changes == [True]
