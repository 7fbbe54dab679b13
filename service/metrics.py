"""Prometheus metrics of the service, on a registry that is passed in.

Label values are bounded: orgs and callers are the configured ones (or "unknown"),
identities and reasons are fixed sets, gRPC methods are the registered ones.
No label ever carries an email, an external id or a token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

UNKNOWN_ORG_LABEL = "unknown"
# The caller of a call that did not authenticate, or of any call with caller authentication off.
UNKNOWN_CALLER = "unknown"

MINT_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
GRPC_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """Every metric the service exports, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._http_server: WSGIServer | None = None
        r = self.registry
        self.tokens_issued_total = Counter(
            "tokenservice_tokens_issued",
            "Tokens minted, by org and the identity Kustomer will use.",
            ["org", "identity", "caller"],
            registry=r,
        )
        self.mint_errors_total = Counter(
            "tokenservice_mint_errors",
            "Mint attempts refused, by org, ErrorInfo reason and caller.",
            ["org", "reason", "caller"],
            registry=r,
        )
        self.auth_failures_total = Counter(
            "tokenservice_auth_failures",
            "Calls refused as unauthenticated or outside the caller's policy, by ErrorInfo reason.",
            ["reason"],
            registry=r,
        )
        self.rate_limited_total = Counter(
            "tokenservice_rate_limited", "Calls refused because the caller was over its rate.", ["caller"], registry=r
        )
        self.peer_rate_limited_total = Counter(
            "tokenservice_peer_rate_limited",
            "Calls refused before authentication while over the refusal rate of "
            "their peer address or of all peers (scope: peer, total); counted and summarised, not audited one by "
            "one.",
            ["scope"],
            registry=r,
        )
        self.audit_unavailable_total = Counter(
            "tokenservice_audit_unavailable",
            "Mint calls failed closed (AUDIT_UNAVAILABLE) because their audit "
            "records could not be queued or written in time.",
            registry=r,
        )
        self.audit_records_dropped_total = Counter(
            "tokenservice_audit_records_dropped",
            "Mint attempts whose audit record was never written (queue full, "
            "write error); each is counted in the trail's next summary record.",
            registry=r,
        )
        self.api_key_refresh_total = Counter(
            "tokenservice_api_key_refresh",
            "Reads of the API key hashes from Vault, by result (ok, error, deleted).",
            ["result"],
            registry=r,
        )
        self.api_keys_loaded = Gauge(
            "tokenservice_api_keys_loaded",
            "API keys currently accepted (the fewest across workers).",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.api_keys_fresh = Gauge(
            "tokenservice_api_keys_fresh",
            "1 when the API key set is loaded and within "
            "auth.api_keys_max_staleness_seconds, so keys are admitted (in every worker), else 0.",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.api_keys_last_refresh_timestamp = Gauge(
            "tokenservice_api_keys_last_refresh_timestamp_seconds",
            "Unix time of the last successful read of the API key hashes from Vault (the oldest across workers).",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.server_busy_total = Counter(
            "tokenservice_server_busy",
            "Calls refused as RESOURCE_EXHAUSTED SERVER_BUSY: as many calls as the server allows at once were in "
            "progress (limits.max_concurrent_rpcs; on the plaintext health port, its own 100).",
            registry=r,
        )
        self.unauthenticated_limited_total = Counter(
            "tokenservice_unauthenticated_limited",
            "Calls without credentials refused before their request was "
            "read, by why: busy (limits.max_unauthenticated_calls in progress) or slow (request not sent within "
            "limits.unauthenticated_read_timeout_seconds).",
            ["why"],
            registry=r,
        )
        self.unauthenticated_abandoned_total = Counter(
            "tokenservice_unauthenticated_abandoned",
            "Calls without credentials that the peer cancelled or left before sending their request; "
            "thousands a second are an HTTP/2 rapid reset.",
            registry=r,
        )
        self.tls_reload_total = Counter(
            "tokenservice_tls_reload",
            "Reloads of changed TLS certificate files, by result (ok, error).",
            ["result"],
            registry=r,
        )
        self.mint_duration = Histogram(
            "tokenservice_mint_duration_seconds",
            "Time to validate and sign one token.",
            buckets=MINT_LATENCY_BUCKETS,
            registry=r,
        )
        self.secret_version = Gauge(
            "tokenservice_secret_version",
            "Vault KV v2 version of the secret in use, by org (the oldest across workers).",
            ["org"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.secret_loaded = Gauge(
            "tokenservice_secret_loaded",
            "1 when the org has a valid, fresh enough secret to sign with (in every worker), else 0.",
            ["org"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.secret_last_refresh_timestamp = Gauge(
            "tokenservice_secret_last_refresh_timestamp_seconds",
            "Unix time of the last successful read of the org's secret from Vault (the oldest across workers).",
            ["org"],
            multiprocess_mode="livemin",
            registry=r,
        )
        self.vault_refresh_total = Counter(
            "tokenservice_vault_refresh",
            "Reads of the secret from Vault, by result (ok, error, rejected, deleted).",
            ["org", "result"],
            registry=r,
        )
        self.grpc_started_total = Counter(
            "grpc_server_started",
            "RPCs started on the server.",
            ["grpc_type", "grpc_service", "grpc_method"],
            registry=r,
        )
        self.grpc_handled_total = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            ["grpc_type", "grpc_service", "grpc_method", "grpc_code"],
            registry=r,
        )
        self.grpc_handling_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of RPCs handled by the server.",
            ["grpc_type", "grpc_service", "grpc_method"],
            buckets=GRPC_LATENCY_BUCKETS,
            registry=r,
        )

    def serve_http(self, host: str, port: int) -> int:
        """Expose /metrics on host:port in a background thread; the bound port."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        self._http_server = server
        return server.server_port

    def stop_http(self) -> None:
        """Stop the /metrics endpoint, if it was started."""
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
