"""Secret validation and the store's adopt / keep-last-good behaviour, with an in-memory source."""

from __future__ import annotations

import os
import ssl

import pytest
from prometheus_client import generate_latest

from service.config import OrgConfig
from service.errors import OrgUnknownError, SecretRejectedError, SecretUnavailableError
from service.metrics import Metrics
from service.secrets import InMemorySecretSource, SecretStore, SecretVersion, validate_secret
from tests.support import metric_value

GOOD = "s" * 40


@pytest.mark.parametrize("value", [
    "", "short", " " + GOOD, GOOD + "\n",
    ssl.DER_cert_to_PEM_cert(os.urandom(48)).strip(),  # PEM armour, made here rather than committed
    "ssh-ed25519 " + "A" * 68,
    '{"kty":"oct","k":"' + "A" * 43 + '"}',
])
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
