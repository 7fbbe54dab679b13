"""Rate limits (of callers and of refusals before authentication), policy checks, certificate
identities and API key parsing, without a server."""

from __future__ import annotations

import dataclasses

import pytest
from prometheus_client import generate_latest

from service.api_keys import hash_api_key, key_id, new_api_key, parse_key_hashes
from service.callers import Caller, CallerAuthenticator, RefusalLimiter, TokenBucket, peer_address
from service.config import AuthConfig, CallerConfig, load_config
from service.errors import (
    ConfigError,
    CredentialsInvalidError,
    IdentityNotAllowedError,
    OrgNotAllowedError,
    PeerRateLimitedError,
    RateLimitedError,
    RpcNotAllowedError,
)
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
    return CallerConfig(
        **{
            "name": "web",
            "orgs": frozenset({"acme"}),
            "identities": frozenset({"email"}),
            "rpcs": frozenset({"MintToken"}),
            "rate_per_second": 1,
            "burst": 1,
            **overrides,
        }
    )


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
    by_hash, problems = parse_key_hashes(
        {
            "web": f"{one}, {two}",
            "batch": f"{shared}\n",
            "other": shared,
            "stranger": one,
            "mistake": leaked_key,
            "numbers": 42,
            "revoked": " ",
        },
        callers={"web", "batch", "other", "mistake", "numbers", "revoked"},
    )
    assert by_hash == {one: "web", two: "web"}
    assert len(problems) == 4
    assert any("'stranger' names no configured caller" in p for p in problems)
    assert any(f"key {key_id(shared)} is listed for two callers" in p for p in problems)
    assert any("'mistake' holds a value that is not sha256:<64 hex digits>" in p for p in problems)
    assert any("'numbers' is not a string" in p for p in problems)
    assert leaked_key not in "".join(problems)


@pytest.mark.parametrize(
    "peer, address",
    [
        ("ipv4:10.0.3.7:51246", "10.0.3.7"),
        ("ipv6:%5B2001:db8:1:2::7%5D:443", "2001:db8:1:2::/64"),
        ("ipv6:[2001:db8:1:2:ffff::1]:443", "2001:db8:1:2::/64"),
        ("ipv6:%5B::ffff:10.0.3.7%5D:51246", "10.0.3.7"),
        ("ipv6:%5Bfe80::1%25eth0%5D:5", "fe80::/64"),
        ("unix:/run/tokenservice.sock", "unix"),
        ("", ""),
    ],
)
def test_a_refusal_is_charged_to_the_peer_address_without_the_port(peer, address):
    assert peer_address(peer) == address


def limits(**overrides) -> AuthConfig:
    return AuthConfig(
        **{
            "unauthenticated_rate_per_peer": 1,
            "unauthenticated_burst_per_peer": 2,
            "unauthenticated_rate_total": 1,
            "unauthenticated_burst_total": 100,
            **overrides,
        }
    )


def limited(limiter: RefusalLimiter, peer: str) -> float | None:
    """The retry delay when `peer` is refused PEER_RATE_LIMITED, else None."""
    try:
        limiter.check(peer)
    except PeerRateLimitedError as error:
        return error.retry_after
    return None


def test_refusals_are_limited_per_address_whatever_the_port():
    clock, metrics = FakeClock(), Metrics()
    limiter = RefusalLimiter(limits(), metrics, clock)
    assert [limited(limiter, f"ipv4:10.0.0.1:{port}") for port in (1, 2, 3)] == [None, None, pytest.approx(1.0)]
    assert limited(limiter, "ipv4:10.0.0.2:1") is None  # another address has its own bucket
    clock.now += 1
    assert limited(limiter, "ipv4:10.0.0.1:4") is None
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "tokenservice_peer_rate_limited_total", scope="peer") == 1


def test_refusals_from_every_address_together_are_limited_too():
    metrics = Metrics()
    limiter = RefusalLimiter(limits(unauthenticated_burst_total=5), metrics, FakeClock())
    outcomes = [limited(limiter, f"ipv4:10.0.0.{n}:1") for n in range(8)]
    assert outcomes[:5] == [None] * 5 and all(delay == pytest.approx(1.0) for delay in outcomes[5:])
    text = generate_latest(metrics.registry).decode()
    assert metric_value(text, "tokenservice_peer_rate_limited_total", scope="total") == 3


def test_the_peers_remembered_are_bounded_and_the_least_recent_forgotten():
    limiter = RefusalLimiter(limits(), Metrics(), FakeClock(), max_peers=2)
    for _ in range(2):
        limiter.check("ipv4:10.0.0.1:1")
    assert limited(limiter, "ipv4:10.0.0.1:1") is not None
    limiter.check("ipv4:10.0.0.2:1")
    limiter.check("ipv4:10.0.0.3:1")  # a third address: 10.0.0.1, the least recently refused, is forgotten
    assert limited(limiter, "ipv4:10.0.0.1:1") is None


@dataclasses.dataclass
class Context:
    """What CallerAuthenticator reads of a grpc.aio.ServicerContext."""

    auth: dict[str, list[bytes]]
    metadata: tuple = ()

    def auth_context(self) -> dict[str, list[bytes]]:
        return self.auth

    def invocation_metadata(self) -> tuple:
        return self.metadata

    def peer(self) -> str:
        return "ipv4:10.0.0.1:5000"


SPIFFE_ID = b"spiffe://corp.example/ns/shop/sa/checkout"


def authenticator() -> CallerAuthenticator:
    callers = {
        "checkout": policy(name="checkout", spiffe_id=SPIFFE_ID.decode()),
        "support": policy(name="support", dns_name="support.example"),
    }
    return CallerAuthenticator(AuthConfig(callers=callers), None, Metrics())


@pytest.mark.parametrize(
    "auth, caller",
    [
        ({"peer_spiffe_id": [SPIFFE_ID], "peer_uri": [SPIFFE_ID], "peer_dns": [b"support.example"]}, "checkout"),
        ({"peer_dns": [b"other.example", b"support.example"]}, "support"),
    ],
)
def test_a_certificate_names_its_spiffe_id_else_its_dns_names(auth, caller):
    assert authenticator().authenticate(Context(auth)).name == caller


@pytest.mark.parametrize(
    "auth",
    [
        {"peer_uri": [SPIFFE_ID, b"spiffe://corp.example/other"], "peer_dns": [b"support.example"]},
        {"peer_uri": [b"spiffe://corp.example"], "peer_dns": [b"support.example"]},
        {"peer_uri": [b"https://corp.example/x"], "peer_dns": [b"support.example"]},
        {"peer_uri": [b"https://corp.example/x"], "peer_spiffe_id": [SPIFFE_ID], "peer_dns": [b"support.example"]},
    ],
    ids=["two URIs", "malformed SPIFFE ID", "https URI", "URI other than the SPIFFE ID"],
)
def test_a_uri_san_that_is_not_the_spiffe_id_names_no_caller(auth):
    with pytest.raises(CredentialsInvalidError, match="URI SAN"):
        authenticator().authenticate(Context(auth))


def test_the_refusal_limits_are_settings_with_defaults_and_are_checked(tmp_path):
    config_file = tmp_path / "config.toml"
    config_file.write_text("[auth]\nunauthenticated_rate_per_peer = 2.5\nunauthenticated_burst_total = 50\n")
    auth = load_config(config_file, {"VAULT_TOKEN": "unused"}, {"auth.insecure_no_caller_auth": True}).auth
    assert (
        auth.unauthenticated_rate_per_peer,
        auth.unauthenticated_burst_per_peer,
        auth.unauthenticated_rate_total,
        auth.unauthenticated_burst_total,
    ) == (2.5, 20, 100.0, 50)
    config_file.write_text("[auth]\nunauthenticated_burst_per_peer = 0\n")
    with pytest.raises(ConfigError, match=r"auth\.unauthenticated_burst_per_peer .*whole number >= 1"):
        load_config(config_file, {"VAULT_TOKEN": "unused"})
