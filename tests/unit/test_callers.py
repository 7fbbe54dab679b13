"""Rate limits, policy checks and API key parsing, without a server."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from service.api_keys import hash_api_key, key_id, new_api_key, parse_key_hashes
from service.callers import Caller, TokenBucket
from service.config import CallerConfig
from service.errors import IdentityNotAllowedError, OrgNotAllowedError, RateLimitedError, RpcNotAllowedError
from service.metrics import Metrics
from tests.support import metric_value


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_allows_the_burst_then_the_rate():
    clock = FakeClock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take(1) for _ in range(5)] == [0.0] * 5
    assert bucket.take(1) == pytest.approx(0.1)
    clock.now += 0.1
    assert bucket.take(1) == 0.0
    assert bucket.take(3) == pytest.approx(0.3)
    clock.now += 100  # a long pause refills to the burst, not beyond
    assert bucket.take(5) == 0.0 and bucket.take(1) > 0


def test_a_refused_take_costs_nothing():
    clock = FakeClock()
    bucket = TokenBucket(rate=1, burst=2, clock=clock)
    assert bucket.take(3) == pytest.approx(1.0)
    assert bucket.take(2) == 0.0


def policy(**overrides) -> CallerConfig:
    return CallerConfig(**{"name": "web", "orgs": frozenset({"acme"}), "identities": frozenset({"email"}),
                           "rpcs": frozenset({"MintToken"}), "rate_per_second": 1, "burst": 1, **overrides})


def test_policy_checks_name_what_was_refused_and_count_it():
    metrics = Metrics()
    caller = Caller("web", policy(), metrics, clock=FakeClock())
    caller.check_org("acme")
    caller.check_identities("a@example.com", "")
    caller.check_rpc("MintToken")
    with pytest.raises(OrgNotAllowedError, match="allowed: acme") as org:
        caller.check_org("globex")
    assert org.value.field == "org"
    with pytest.raises(IdentityNotAllowedError, match="may not assert an external id") as identity:
        caller.check_identities("a@example.com", "cust-1")
    assert identity.value.field == "external_id"
    with pytest.raises(RpcNotAllowedError, match="VerifyToken"):
        caller.check_rpc("VerifyToken")
    text = generate_latest(metrics.registry).decode()
    for reason in ("ORG_NOT_ALLOWED", "IDENTITY_NOT_ALLOWED", "RPC_NOT_ALLOWED"):
        assert metric_value(text, "tokenservice_auth_failures_total", reason=reason) == 1


def test_all_orgs_and_the_rate_limit_with_its_retry_delay():
    clock, metrics = FakeClock(), Metrics()
    caller = Caller("web", policy(orgs=frozenset({"*"}), rate_per_second=4, burst=2), metrics, clock=clock)
    caller.check_org("any-org")
    caller.check_rate(2)
    with pytest.raises(RateLimitedError) as limited:
        caller.check_rate(1)
    assert limited.value.retry_after == pytest.approx(0.25)
    assert "4 tokens/s (burst 2)" in limited.value.message
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "tokenservice_rate_limited_total", caller="web") == 1


def test_without_a_policy_nothing_is_refused():
    caller = Caller("unknown", None, Metrics())
    caller.check_org("anything")
    caller.check_identities("a@example.com", "x")
    caller.check_rpc("VerifyToken")
    for _ in range(10_000):
        caller.check_rate(1000)


def test_api_keys_are_random_prefixed_and_stored_as_sha256():
    key = new_api_key()
    assert key.startswith("tks_") and len(key) > 40 and key != new_api_key()
    assert hash_api_key(key).startswith("sha256:") and len(hash_api_key(key)) == 7 + 64
    assert key_id(hash_api_key(key)) == hash_api_key(key)[7:19]


def test_key_entries_map_hashes_to_callers_and_report_every_problem_without_the_values():
    one, two, shared = (hash_api_key(new_api_key()) for _ in range(3))
    leaked_key = new_api_key()
    by_hash, problems = parse_key_hashes({
        "web": f"{one}, {two}", "batch": f"{shared}\n", "other": shared, "stranger": one,
        "mistake": leaked_key, "numbers": 42, "revoked": " ",
    }, callers={"web", "batch", "other", "mistake", "numbers", "revoked"})
    assert by_hash == {one: "web", two: "web"}
    assert len(problems) == 4
    assert any("'stranger' names no configured caller" in p for p in problems)
    assert any(f"key {key_id(shared)} is listed for two callers" in p for p in problems)
    assert any("'mistake' holds a value that is not sha256:<64 hex digits>" in p for p in problems)
    assert any("'numbers' is not a string" in p for p in problems)
    assert leaked_key not in "".join(problems)
