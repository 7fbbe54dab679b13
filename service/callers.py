"""Who is calling, and what it may do: authentication, policy and rate limits.

A caller is recognised by its client certificate (the SPIFFE URI SAN when
there is one, else its DNS SANs), or by an API key in `authorization: Bearer`
metadata. A certificate with a URI SAN that grpc does not report as its
SPIFFE ID (several URI SANs, or a malformed one) names no caller: it is
refused, never taken by its DNS SANs. Each configured caller has a policy
(orgs, identity kinds, RPCs) and a token bucket. With caller authentication
off, every call is the `unknown` caller and nothing is limited.

Calls refused before authentication (no or unknown credentials) are limited
too, since they cost the service work and an audit record each: per peer
address and for all peers together (`auth.unauthenticated_*`); beyond that
they are answered PEER_RATE_LIMITED and only counted.
"""

from __future__ import annotations

import collections
import ipaddress
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

from service.api_keys import ApiKeyStore
from service.config import AuthConfig, CallerConfig
from service.errors import (
    CredentialsInvalidError,
    IdentityNotAllowedError,
    OrgNotAllowedError,
    PeerRateLimitedError,
    PermissionDeniedError,
    RateLimitedError,
    RpcNotAllowedError,
    UnauthenticatedError,
)
from service.grpc_types import CallerSource, invocation_metadata
from service.metrics import UNKNOWN_CALLER, Metrics
from service.minting import Identity

_BEARER_PREFIX = "bearer "
_MAX_SHOWN_IDENTITY = 200
# The identity kinds a request may assert, looked up once: an enum member's value is slow to read per call.
_EMAIL, _EXTERNAL_ID = Identity.EMAIL.value, Identity.EXTERNAL_ID.value
# Peer addresses whose refusals are counted apart; the least recently refused are forgotten beyond
# this (an address that comes back starts with a full bucket, and the total bucket still holds).
MAX_TRACKED_PEERS = 10_000
_IPV6_PREFIX_BITS = 64  # one host or site usually holds a whole /64


class TokenBucket:
    """Allows `rate` units per second on average and `burst` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._available = float(burst)
        self._updated = clock()
        self._lock = threading.Lock()

    def take(self, cost: int) -> float:
        """Take `cost` units: 0 when granted, else the seconds until they would be."""
        with self._lock:
            now = self._clock()
            self._available = min(self.burst, self._available + (now - self._updated) * self.rate)
            self._updated = now
            if self._available >= cost:
                self._available -= cost
                return 0.0
            return (cost - self._available) / self.rate


class Caller:
    """An authenticated caller (or, with authentication off, the unknown one).

    Its checks raise the refusal and count it: `tokenservice_auth_failures_total`
    for a policy denial, `tokenservice_rate_limited_total` for the rate."""

    def __init__(
        self, name: str, policy: CallerConfig | None, metrics: Metrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.policy = policy
        self._metrics = metrics
        self._bucket = TokenBucket(policy.rate_per_second, policy.burst, clock) if policy else None

    def _denied(self, error: PermissionDeniedError) -> PermissionDeniedError:
        self._metrics.auth_failures_total.labels(reason=error.reason).inc()
        return error

    def check_rpc(self, rpc: str) -> None:
        """Raise PERMISSION_DENIED unless the policy lists `rpc`."""
        if self.policy is not None and rpc not in self.policy.rpcs:
            raise self._denied(
                RpcNotAllowedError(
                    f"caller {self.name!r} may not call {rpc}; ask the service owners to add it to "
                    f"callers.{self.name}.rpcs"
                )
            )

    def check_org(self, org: str) -> None:
        """Raise PERMISSION_DENIED unless the policy lists `org`."""
        if self.policy is not None and not self.policy.may_mint_for(org):
            raise self._denied(
                OrgNotAllowedError(
                    f"org: caller {self.name!r} may not use this org; allowed: {', '.join(sorted(self.policy.orgs))}",
                    field="org",
                )
            )

    def check_identities(self, email: str, external_id: str) -> None:
        """Raise PERMISSION_DENIED if the request asserts an identity kind the policy does not list."""
        if self.policy is None:
            return
        for kind, value in ((_EMAIL, email), (_EXTERNAL_ID, external_id)):
            if value and kind not in self.policy.identities:
                raise self._denied(
                    IdentityNotAllowedError(
                        f"{kind}: caller {self.name!r} may not assert an {kind.replace('_', ' ')}; allowed: "
                        f"{', '.join(sorted(self.policy.identities))}",
                        field=kind,
                    )
                )

    def check_rate(self, cost: int) -> None:
        """Raise RESOURCE_EXHAUSTED, with the delay to wait, when the caller is over its rate."""
        if self._bucket is None:
            return
        retry_after = self._bucket.take(cost)
        if retry_after:
            self._metrics.rate_limited_total.labels(caller=self.name).inc()
            raise RateLimitedError(
                f"caller {self.name!r} is over its rate of {self._bucket.rate:g} tokens/s "
                f"(burst {self._bucket.burst:g}); retry after {retry_after:.3f} s",
                retry_after=retry_after,
            )


def peer_address(peer: str) -> str:
    """The address that a gRPC peer string (`ipv4:10.0.0.1:5000`, `ipv6:%5B::1%5D:5000`) is charged
    as: its IP without the port; an IPv6 address as its /64, or as IPv4 when it is IPv4-mapped.
    Other transports (unix sockets) are one address each kind."""
    kind, _, rest = urllib.parse.unquote(peer).partition(":")
    host = rest.rpartition(":")[0].strip("[]")
    if kind == "ipv4" and host:
        return host
    if kind != "ipv6" or not host:
        return kind
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, _IPV6_PREFIX_BITS), strict=False))


class RefusalLimiter:
    """Token buckets for calls refused before authentication, and for the requests of streams served
    without credentials (public reflection): one per peer address, in a bounded LRU so that address
    churn cannot grow it, and one for all peers together."""

    def __init__(
        self,
        auth: AuthConfig,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        max_peers: int = MAX_TRACKED_PEERS,
    ) -> None:
        self._auth = auth
        self._metrics = metrics
        self._clock = clock
        self._max_peers = max_peers
        self._peers: collections.OrderedDict[str, TokenBucket] = collections.OrderedDict()
        self._total = TokenBucket(auth.unauthenticated_rate_total, auth.unauthenticated_burst_total, clock)

    def check(self, peer: str) -> None:
        """Charge one refusal (or one request without credentials) to `peer`; raise PEER_RATE_LIMITED, with
        the delay, when it or all peers are over."""
        retry_after = self._peer_bucket(peer_address(peer)).take(1)
        scope = "peer"
        if not retry_after:
            retry_after, scope = self._total.take(1), "total"
        if retry_after:
            self._metrics.peer_rate_limited_total.labels(scope=scope).inc()
            whom = "this address" if scope == "peer" else "all addresses together"
            raise PeerRateLimitedError(
                f"too many calls (or requests on a stream) without valid credentials from {whom}; send "
                f"credentials (an API key or a client certificate of a configured caller), or retry after "
                f"{retry_after:.3f} s",
                retry_after=retry_after,
            )

    def _peer_bucket(self, address: str) -> TokenBucket:
        bucket = self._peers.get(address)
        if bucket is not None:
            self._peers.move_to_end(address)
            return bucket
        bucket = self._peers[address] = TokenBucket(
            self._auth.unauthenticated_rate_per_peer, self._auth.unauthenticated_burst_per_peer, self._clock
        )
        if len(self._peers) > self._max_peers:
            self._peers.popitem(last=False)
        return bucket


class CallerAuthenticator:
    """Finds the caller of an RPC from its certificate or API key; refusals are rate limited per peer."""

    def __init__(
        self,
        auth: AuthConfig,
        api_keys: ApiKeyStore | None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self.refusals = RefusalLimiter(auth, metrics, clock)
        self._callers = {name: Caller(name, policy, metrics, clock) for name, policy in auth.callers.items()}
        self._by_spiffe_id = {p.spiffe_id: name for name, p in auth.callers.items() if p.spiffe_id}
        self._by_dns_name = {p.dns_name: name for name, p in auth.callers.items() if p.dns_name}
        self._api_keys = api_keys
        self._anonymous = None if auth.enabled else Caller(UNKNOWN_CALLER, None, metrics)

    def authenticate(self, context: CallerSource) -> Caller:
        """The caller of this RPC; raise UNAUTHENTICATED when it cannot be told, or PEER_RATE_LIMITED
        when the peer (or every peer together) has been refused too often."""
        if self._anonymous is not None:
            return self._anonymous
        try:
            return self._callers[self._caller_name(context)]
        except UnauthenticatedError as error:
            self.refusals.check(context.peer() or "")
            self._metrics.auth_failures_total.labels(reason=error.reason).inc()
            raise

    def _caller_name(self, context: CallerSource) -> str:
        certificate_identity, by_certificate = self._certificate_caller(context.auth_context())
        key = _bearer_key(invocation_metadata(context))
        by_key = None
        if key is not None:
            by_key = self._api_keys.caller_for(key) if self._api_keys else None
            if by_key is None:
                raise CredentialsInvalidError(
                    "authorization: the API key is not valid (unknown or revoked); ask the service owners for one"
                )
        if by_certificate and by_key and by_certificate != by_key:
            raise CredentialsInvalidError(
                "the client certificate and the API key belong to different callers; send one of them"
            )
        caller = by_certificate or by_key
        if caller is not None:
            return caller
        if certificate_identity is not None:
            raise CredentialsInvalidError(
                f"the client certificate ({certificate_identity[:_MAX_SHOWN_IDENTITY]}) "
                "belongs to no configured caller; add its SPIFFE ID or DNS name to a "
                "[callers.<name>] section, or send an API key"
            )
        raise UnauthenticatedError(
            "no credentials: send `authorization: Bearer <API key>` metadata, or connect with a client "
            "certificate of a configured caller"
        )

    def _certificate_caller(self, auth_context: Mapping[str, Iterable[bytes]]) -> tuple[str | None, str | None]:
        """The certificate's identity (SPIFFE ID, else DNS names) and the caller it names, if any.

        grpc reports `peer_spiffe_id` only for a single, well-formed SPIFFE URI SAN, and every URI SAN
        in `peer_uri`; a URI SAN that is not the SPIFFE ID makes the certificate name no caller."""
        spiffe_ids = list(auth_context.get("peer_spiffe_id", ()))
        uris = list(auth_context.get("peer_uri", ()))
        if uris and (len(uris) != 1 or not spiffe_ids or uris[0] != spiffe_ids[0]):
            raise CredentialsInvalidError(
                f"the client certificate has {len(uris)} URI SAN(s), and grpc reports no SPIFFE ID of it (several "
                "URI SANs, or one that is not a well-formed spiffe:// ID); a caller certificate carries its SPIFFE "
                "ID as its only URI SAN, or no URI SAN and its DNS names"
            )
        if spiffe_ids:
            spiffe_id = spiffe_ids[0].decode(errors="replace")
            return spiffe_id, self._by_spiffe_id.get(spiffe_id)
        dns_names = sorted({name.decode(errors="replace") for name in auth_context.get("peer_dns", ())})
        if not dns_names:
            return None, None
        callers = {self._by_dns_name[name] for name in dns_names if name in self._by_dns_name}
        return ", ".join(dns_names), callers.pop() if len(callers) == 1 else None


def _bearer_key(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    """The API key of `authorization: Bearer <key>`, or None without that header."""
    for name, value in metadata or ():
        if name == "authorization":
            if not isinstance(value, str) or not value[: len(_BEARER_PREFIX)].lower() == _BEARER_PREFIX:
                raise CredentialsInvalidError("authorization: must be `Bearer <API key>`")
            return value[len(_BEARER_PREFIX) :].strip()
    return None
