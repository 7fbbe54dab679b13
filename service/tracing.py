"""OpenTelemetry traces: a SERVER span per RPC, CLIENT spans for Vault and Transit, trace ids on logs.

Off by default. Off, nothing of OpenTelemetry is imported: `ServerSpans.wrap` returns the behaviour
itself and `annotate`, `vault_span`, `transit_span`, `background_root_span`, `current_trace_ids` and
`current_span_context` return at once, so a call pays nothing. On, the process's `Tracing` (one per
worker) owns its TracerProvider and is the one these module functions use; it is not made the global
provider, so that nothing else in the process (and no test) depends on set-once global state.

What a call pays for its span is kept small, since the SDK's own span and export cost most of a
traced call already: the span in effect is a context variable of this module (`_Scope`), not an attached
OpenTelemetry context; the service's attributes are gathered and set once, as the span ends; the
sampler is asked before the SDK sets a span up, so a call it drops costs little, and a call without
trace context (a root) is dropped by comparing its trace id with the ratio's bound; and the trace ids
of log records and audit records are those of sampled spans only.

The standard environment variables configure it as the SDK defines them (OTEL_TRACES_EXPORTER,
OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT/PROTOCOL/HEADERS/TIMEOUT/..., OTEL_SERVICE_NAME,
OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG], OTEL_BSP_*, OTEL_SDK_DISABLED); a value in the
[tracing] section of the config file overrides its variable. The caller's context is read as W3C
traceparent/tracestate, whatever OTEL_PROPAGATORS says: that is what every caller's gRPC
instrumentation sends, and one parser keeps the per-call cost down.

No span carries an identity, a token, an API key or a secret: the service adds attributes only
through `annotate`, whose names are fixed and whose values must look like what they claim to be;
URLs lose their query and credentials; exceptions are recorded by type, never by message.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import math
import os
import re
import threading
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeGuard
from urllib.parse import urlsplit

import grpc
import requests

from service.errors import ConfigError
from service.grpc_types import Behavior, ServicerContext, failed_code, invocation_metadata, status_code
from service.minting import IDENTITY_KINDS

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Link, Span, SpanContext, SpanKind
    from opentelemetry.trace.span import TraceState

EXPORTERS = ("otlp", "none")
PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = (
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
    "always_on",
    "always_off",
    "traceidratio",
)
RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")
# The keys of the [tracing] section.
TRACING_SETTINGS = (
    "enabled",
    "exporter",
    "endpoint",
    "protocol",
    "sampler",
    "sampler_arg",
    "service_name",
    "resource_attributes",
)
DEFAULT_SERVICE_NAME = "tokenservice"
WORKER_ATTRIBUTE = "tokenservice.worker"
# The SDK's own defaults, when neither the file nor the environment names one.
_DEFAULT_EXPORTER = "otlp"
_DEFAULT_PROTOCOL = "grpc"
_DEFAULT_SAMPLER = "parentbased_always_on"
_HTTP_TRACES_PATH = "/v1/traces"

# The RPC conventions: a server span is an error only for codes that say the server failed; a
# refusal (INVALID_ARGUMENT, PERMISSION_DENIED...) is the caller's, and shows in rpc.grpc.status_code.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,63}\Z")
_OUTCOME = re.compile(r"[a-z][a-z_]{0,31}\Z")


def _is_count(value: object) -> TypeGuard[int]:
    return type(value) is int and value >= 0


def _is_identity_kind(value: object) -> TypeGuard[str]:
    return value in IDENTITY_KINDS


def _matches(pattern: re.Pattern[str]) -> Callable[[object], TypeGuard[str]]:
    def matches(value: object) -> TypeGuard[str]:
        return isinstance(value, str) and pattern.match(value) is not None

    return matches


# What `annotate` may set: its keyword -> (attribute name, what a value must look like). The shapes
# keep an identity out even when a caller passes the wrong variable: an email has an '@', a token dots.
_ANNOTATIONS: dict[str, tuple[str, Callable[[object], TypeGuard[str | int]]]] = {
    "org": ("tokenservice.org", _matches(_NAME)),
    "caller": ("tokenservice.caller", _matches(_NAME)),
    "identity_kind": ("tokenservice.identity_kind", _is_identity_kind),
    "secret_version": ("tokenservice.secret_version", _is_count),
    "batch_size": ("tokenservice.batch_size", _is_count),
    "error_reason": ("tokenservice.error_reason", _matches(_REASON)),
    "outcome": ("tokenservice.outcome", _matches(_OUTCOME)),
}


@dataclasses.dataclass(frozen=True)
class TracingConfig:
    """The [tracing] section. None: the standard environment variable decides, else the SDK's default."""

    enabled: bool = False
    exporter: str | None = None  # otlp | none (OTEL_TRACES_EXPORTER)
    # Like OTEL_EXPORTER_OTLP_ENDPOINT: for http/protobuf, /v1/traces is appended.
    endpoint: str | None = None
    protocol: str | None = None  # grpc | http/protobuf (OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL)
    sampler: str | None = None  # OTEL_TRACES_SAMPLER
    sampler_arg: float | None = None  # OTEL_TRACES_SAMPLER_ARG, for the ratio samplers
    service_name: str | None = None  # OTEL_SERVICE_NAME; neither: "tokenservice"
    resource_attributes: Mapping[str, str | bool | int | float] = dataclasses.field(default_factory=dict)


class _Table:
    """Checked reads of the [tracing] table; a refusal names the setting and where it came from."""

    def __init__(self, table: Mapping[str, Any], source: str) -> None:
        self._table = table
        self._source = source

    def refuse(self, key: str, expected: str) -> ConfigError:
        return ConfigError(f"setting tracing.{key} (from {self._source}): {expected}; got {self._table[key]!r}")

    def flag(self, key: str) -> bool:
        value = self._table.get(key, False)
        if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "0", "false", "no"):
            return value.strip().lower() in ("1", "true", "yes")
        if not isinstance(value, bool):
            raise self.refuse(key, "must be true or false")
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str | None:
        value = self._table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise self.refuse(key, f"must be one of {', '.join(choices)}")
        return value.strip().lower()

    def text(self, key: str) -> str | None:
        value = self._table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.refuse(key, "must be a non-empty string")
        return value.strip()

    def endpoint(self, key: str) -> str | None:
        value = self.text(key)
        parts = urlsplit(value or "")
        if value is not None and (parts.scheme not in ("http", "https") or not parts.hostname or parts.query):
            raise self.refuse(
                key,
                "must be an http:// or https:// URL of the collector, without a query "
                "(e.g. http://otel-collector:4317)",
            )
        return value

    def ratio(self, key: str) -> float | None:
        value = self._table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise self.refuse(key, "must be a number from 0 to 1")
        try:
            ratio = float(value)
        except ValueError:
            raise self.refuse(key, "must be a number from 0 to 1") from None
        if not math.isfinite(ratio) or not 0 <= ratio <= 1:
            raise self.refuse(key, "must be a number from 0 to 1")
        return ratio

    def attributes(self, key: str) -> dict[str, str | bool | int | float]:
        value = self._table.get(key, {})
        if not isinstance(value, Mapping) or not all(
            isinstance(name, str) and name and isinstance(item, (str, bool, int, float)) for name, item in value.items()
        ):
            raise self.refuse(
                key,
                "must be a table of names to strings, numbers or booleans, e.g. "
                '{ "deployment.environment.name" = "prod" }',
            )
        return dict(value)


def parse_tracing_settings(
    table: Mapping[str, Any], source: str = "the config file", environ: Mapping[str, str] | None = None
) -> TracingConfig:
    """The [tracing] section, checked; with tracing enabled, also the OTEL_* variables it relies on.

    `table` holds the section's keys (TRACING_SETTINGS) unprefixed; `source` names where it came from
    in errors; `environ` defaults to os.environ. Raises ConfigError naming the setting or variable."""
    unknown = sorted(set(table) - set(TRACING_SETTINGS))
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join('tracing.' + key for key in unknown)} (from {source}); "
            f"the [tracing] section takes {', '.join(TRACING_SETTINGS)}"
        )
    settings = _Table(table, source)
    config = TracingConfig(
        enabled=settings.flag("enabled"),
        exporter=settings.choice("exporter", EXPORTERS),
        endpoint=settings.endpoint("endpoint"),
        protocol=settings.choice("protocol", PROTOCOLS),
        sampler=settings.choice("sampler", SAMPLERS),
        sampler_arg=settings.ratio("sampler_arg"),
        service_name=settings.text("service_name"),
        resource_attributes=settings.attributes("resource_attributes"),
    )
    environ = os.environ if environ is None else environ
    if config.sampler_arg is not None and _sampler_name(config, environ) not in RATIO_SAMPLERS:
        raise settings.refuse(
            "sampler_arg",
            f"applies only to the samplers {', '.join(RATIO_SAMPLERS)} (tracing.sampler or OTEL_TRACES_SAMPLER)",
        )
    if config.enabled:
        check_environment(config, environ)
    return config


def _variable(environ: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of the variables that is set and not empty, with its value as the SDK reads it."""
    for name in names:
        value = environ.get(name, "").strip()
        if value:
            return name, value
    return None


def _refuse_variable(name: str, value: str, expected: str) -> ConfigError:
    return ConfigError(f"environment variable {name}: {expected}; got {value!r}")


def check_environment(config: TracingConfig, environ: Mapping[str, str]) -> None:
    """Refuse OTEL_* values that the SDK would only warn about and replace, for what the file leaves to them."""
    exporter = _variable(environ, "OTEL_TRACES_EXPORTER")
    if config.exporter is None and exporter and exporter[1].lower() not in EXPORTERS:
        raise _refuse_variable(
            *exporter,
            f"must be one of {', '.join(EXPORTERS)} (stdout carries the audit "
            "trail, so spans go to an OTLP collector only)",
        )
    protocol = _variable(environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    if config.protocol is None and protocol and protocol[1] not in PROTOCOLS:
        raise _refuse_variable(*protocol, f"must be one of {', '.join(PROTOCOLS)}")
    sampler = _variable(environ, "OTEL_TRACES_SAMPLER")
    if config.sampler is None and sampler and sampler[1].lower() not in SAMPLERS:
        raise _refuse_variable(*sampler, f"must be one of {', '.join(SAMPLERS)}")
    argument = _variable(environ, "OTEL_TRACES_SAMPLER_ARG")
    if config.sampler_arg is None and argument and _sampler_name(config, environ) in RATIO_SAMPLERS:
        try:
            ratio = float(argument[1])
        except ValueError:
            ratio = math.nan
        if not 0 <= ratio <= 1:
            raise _refuse_variable(*argument, "must be a number from 0 to 1")


def _sampler_name(config: TracingConfig, environ: Mapping[str, str]) -> str:
    found = _variable(environ, "OTEL_TRACES_SAMPLER")
    return config.sampler or (found[1].lower() if found else _DEFAULT_SAMPLER)


_TRACE_CONTEXT_KEYS = ("traceparent", "tracestate")
# What TraceIdRatioBased compares with its bound: a trace id's low 64 bits.
_TRACE_ID_LOW_BITS = (1 << 64) - 1


class _Scope:
    """The span that a task's work belongs to (a call's server span, a refresh's root span, a Transit
    request's client span), with the service's attributes gathered for it until it ends.

    The scope, not OpenTelemetry's current context, is what `annotate`, the trace ids of log records
    and the parents of client spans read: setting it costs a context variable, where attaching a
    context cost more, and gathering the attributes sets them on the span once, as it ends."""

    __slots__ = ("_dropped", "_ids", "_span", "attributes", "recording")

    def __init__(self, span: Span | None, dropped: Callable[[], Span] | None = None) -> None:
        """`span`, or None for one the sampler dropped, which `dropped` makes if something asks for it."""
        self._span = span
        self._dropped = dropped
        self.recording = span is not None and span.is_recording()
        self.attributes: dict[str, str | int] = {}
        self._ids: tuple[str, str] | None = None

    @property
    def span(self) -> Span:
        if self._span is None:
            assert self._dropped is not None
            self._span = self._dropped()
        return self._span

    def ids(self) -> tuple[str, str] | None:
        if not self.recording:
            return None  # no trace holds this span: the ids would lead nowhere
        if self._ids is None:
            context = self.span.get_span_context()
            if not context.is_valid:
                return None
            self._ids = format(context.trace_id, "032x"), format(context.span_id, "016x")
        return self._ids

    def end(self) -> None:
        if self.recording:
            self.span.set_attributes(self.attributes)
            self.span.end()


_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("tokenservice_span", default=None)


class _MethodAttributes:
    """A traced method's constant attributes, per port: `main` for calls on grpc_addr, `api_key` for calls
    on tls.api_key_addr (None while the server has no such port)."""

    __slots__ = ("api_key", "main")

    def __init__(self, main: dict[str, Any]) -> None:
        self.main = main
        self.api_key: dict[str, Any] | None = None


class ServerSpans:
    """Wraps unary behaviours, once per method, so that every call runs in a SERVER span.

    The span continues the caller's traceparent/tracestate, carries the RPC attributes of the
    OpenTelemetry conventions and is the scope of the behaviour, so `annotate`, Vault spans and log
    records join it. Disabled (or for a service not in `services`), `wrap` returns the behaviour."""

    def __init__(
        self, active: _Active | None, address: str, port: int | None, services: Collection[str] | None
    ) -> None:
        self._active = active
        self._address = address
        self._port = port
        self._api_key_port: tuple[str, int] | None = None
        self._services = None if services is None else frozenset(services)
        self._methods: list[_MethodAttributes] = []

    def listening(self, port: int, api_key_port: tuple[str, int] | None = None) -> None:
        """Record the ports the server listens on (known only once bound), as server.address/port:
        grpc_addr's port, and tls.api_key_addr's (host, port) when the server has that port too."""
        self._port, self._api_key_port = port, api_key_port
        for method in self._methods:
            self._set_ports(method)

    def _set_ports(self, method: _MethodAttributes) -> None:
        if self._port is not None:
            method.main["server.port"] = self._port
        if self._api_key_port is not None:
            address, port = self._api_key_port
            method.api_key = {**method.main, "server.address": address, "server.port": port}

    def wrap(self, behavior: Behavior, service: str, method: str) -> Behavior:
        """`behavior` running in a SERVER span named `service/method`."""
        if self._active is None or (self._services is not None and service not in self._services):
            return behavior
        attributes = _MethodAttributes(
            {"rpc.system": "grpc", "rpc.service": service, "rpc.method": method, "server.address": self._address}
        )
        self._set_ports(attributes)
        self._methods.append(attributes)
        return _spanned(behavior, self._active, f"{service}/{method}", attributes)


def _spanned(behavior: Behavior, active: _Active, name: str, attributes: _MethodAttributes) -> Behavior:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    # W3C trace context, as the callers' gRPC instrumentations send it; a call without it starts a trace.
    extract = TraceContextTextMapPropagator().extract
    begin, begin_root, server = active.scope, active.root_scope, trace.SpanKind.SERVER
    set_scope, reset_scope = _scope.set, _scope.reset
    failed = {code: trace.Status(trace.StatusCode.ERROR, code.name) for code in _SERVER_ERROR_CODES}

    def port_attributes(context: ServicerContext) -> dict[str, Any]:
        # Both ports are one server's, so a call does not say which it came in on; its credentials do.
        # The API-key port exists only when grpc_addr requires a client certificate (the configuration
        # refuses it otherwise), and never asks for one itself.
        if attributes.api_key is None or context.peer_identities():
            return attributes.main
        return attributes.api_key

    def end(scope: _Scope, code: grpc.StatusCode) -> None:
        if not scope.recording:
            return
        span = scope.span
        scope.attributes["rpc.grpc.status_code"] = code.value[0]
        span.set_attributes(scope.attributes)
        if code in failed:
            span.set_status(failed[code])
        span.end()

    async def traced(request: Any, context: ServicerContext) -> Any:
        # The W3C trace context headers, in one pass (inline: this runs on every call, most without them).
        carrier = {}
        for key, value in invocation_metadata(context):
            if key in _TRACE_CONTEXT_KEYS and isinstance(value, str):
                carrier[key] = value
        scope = (
            begin(name, extract(carrier), server, port_attributes(context))
            if carrier
            else begin_root(name, server, port_attributes, context)
        )
        token = set_scope(scope)
        if not scope.recording:
            # Most calls at a low ratio: the scope is still set, so that what the call starts is dropped too.
            try:
                return await behavior(request, context)
            finally:
                reset_scope(token)
        code = grpc.StatusCode.UNKNOWN
        try:
            response = await behavior(request, context)
            code = status_code(context) or grpc.StatusCode.OK
            return response
        except BaseException as error:
            code = failed_code(context, error)
            raise
        finally:
            reset_scope(token)
            end(scope, code)

    return traced


class HttpSpan:
    """What `vault_span` and `transit_span` yield: record the response's status once it is known."""

    __slots__ = ("_span",)

    def __init__(self, span: Span | None) -> None:
        self._span = span

    def set_status_code(self, status_code: int) -> None:
        """http.response.status_code; from 400 on, the span is an error of that type (the conventions)."""
        if self._span is None:
            return
        self._span.set_attribute("http.response.status_code", status_code)
        if status_code >= 400:
            _mark_error(self._span, str(status_code))

    def set_error(self, error_type: str) -> None:
        """The request failed without an HTTP status: `error_type` is low-cardinality text (a kind, a class name)."""
        if self._span is not None:
            _mark_error(self._span, error_type)

    def set_url(self, url: str) -> None:
        """url.full, server.address and server.port of `url`, once known (its scheme, host, port and path only)."""
        if self._span is not None:
            self._span.set_attributes(_url_attributes(url))


def _url_attributes(url: str) -> dict[str, str | int]:
    parts = urlsplit(url)
    return {
        "server.address": parts.hostname or "",
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
        # Scheme, host and path only: a query or user info may hold a credential.
        "url.full": f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path or '/'}",
    }


def _mark_error(span: Span, error_type: str) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR, error_type))


_NO_HTTP_SPAN = contextlib.nullcontext(HttpSpan(None))
_NO_SPAN = contextlib.nullcontext()


class _ReservedIds:
    """The SDK's random ids, except that a trace id drawn with `reserve` is the next one the SDK asks for in
    this thread: the sampler's decision on that id, taken before the span, is then the SDK's own."""

    def __init__(self) -> None:
        from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

        self._random = RandomIdGenerator()
        self.generate_span_id = self._random.generate_span_id
        self.is_trace_id_random = self._random.is_trace_id_random
        # A trace id as the SDK draws one, not reserved: its own method, a call less on every root.
        self.draw: Callable[[], int] = self._random.generate_trace_id
        self._reserved = threading.local()

    def reserve(self, trace_id: int | None = None) -> int:
        """`trace_id` (or a new one) as the next one the SDK takes in this thread."""
        self._reserved.trace_id = trace_id = self._random.generate_trace_id() if trace_id is None else trace_id
        return trace_id

    def release(self) -> None:
        self._reserved.trace_id = None

    def generate_trace_id(self) -> int:
        trace_id: int | None = getattr(self._reserved, "trace_id", None)
        if trace_id is None:
            return self._random.generate_trace_id()
        self._reserved.trace_id = None
        return trace_id


class _Active:
    """The tracer of the enabled `Tracing`, behind the module functions."""

    def __init__(self, provider: TracerProvider, root_bound: int | None) -> None:
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.sdk.trace import sampling

        self.tracer = provider.get_tracer("tokenservice")
        self._root_bound = root_bound
        self._dropped_root: _Scope | None = None
        self._trace = trace
        self._client, self._internal = trace.SpanKind.CLIENT, trace.SpanKind.INTERNAL
        self.no_parent = Context()
        self._sampler = provider.sampler
        ids = provider.id_generator
        # Asking a sampler that keeps every span first would only ask it twice.
        self._ids = (
            ids
            if isinstance(ids, _ReservedIds) and provider.sampler not in (sampling.ALWAYS_ON, sampling.DEFAULT_ON)
            else None
        )
        self._dropped_flags = trace.TraceFlags(trace.TraceFlags.DEFAULT)
        self._drop = sampling.Decision.DROP

    def start(
        self,
        name: str,
        parent: Context,
        kind: SpanKind,
        attributes: Mapping[str, str | int],
        links: Sequence[Link] = (),
    ) -> Span:
        """tracer.start_span, the sampler asked first where it may drop the span (see `_dropped`)."""
        dropped = self._dropped(name, parent, kind, attributes, links)
        if dropped is not None:
            return dropped()
        return self.tracer.start_span(
            name, parent, kind, attributes, links, record_exception=False, set_status_on_exception=False
        )

    def root_scope(
        self,
        name: str,
        kind: SpanKind,
        attributes_of: Callable[[ServicerContext], Mapping[str, str | int]],
        context: ServicerContext,
    ) -> _Scope:
        """`scope` for a span without a parent. Where the sampler's decision on a root is a bound on the
        trace id's low 64 bits (see `_root_bound`), a dropped root costs a random number and a comparison:
        most calls at a low ratio carry no trace context and are dropped, so this is most calls' cost,
        and `attributes_of(context)` is called only for a span that is started.

        The roots it drops share one scope, which records nothing: what a dropped span parents is dropped
        too (its trace id is one the bound drops), and nothing sends or logs the id of a span not sampled."""
        ids, bound = self._ids, self._root_bound
        if ids is None or bound is None:
            return self.scope(name, self.no_parent, kind, attributes_of(context))
        trace_id = ids.draw()
        if trace_id & _TRACE_ID_LOW_BITS >= bound:
            if self._dropped_root is None:
                self._dropped_root = _Scope(None, functools.partial(self._dropped_span, trace_id, None))
            return self._dropped_root
        ids.reserve(trace_id)
        return _Scope(
            self.tracer.start_span(
                name,
                self.no_parent,
                kind,
                attributes_of(context),
                record_exception=False,
                set_status_on_exception=False,
            )
        )

    def scope(self, name: str, parent: Context, kind: SpanKind, attributes: Mapping[str, str | int]) -> _Scope:
        """A scope for a new span, as `start` makes it; one the sampler drops is made only if asked for."""
        dropped = self._dropped(name, parent, kind, attributes, ())
        if dropped is not None:
            return _Scope(None, dropped)
        return _Scope(
            self.tracer.start_span(
                name, parent, kind, attributes, record_exception=False, set_status_on_exception=False
            )
        )

    def _dropped(
        self, name: str, parent: Context, kind: SpanKind, attributes: Mapping[str, str | int], links: Sequence[Link]
    ) -> Callable[[], Span] | None:
        """What makes the span if the sampler drops it, None if it keeps it (or is not asked first).

        The SDK asks the sampler after it has set up most of a span, which was most of an unsampled
        call's cost; asked first, with the trace id that the SDK then takes, it decides the same."""
        ids = self._ids
        if ids is None:
            return None
        parent_context = None if parent is self.no_parent else self._trace.get_current_span(parent).get_span_context()
        trace_id = parent_context.trace_id if parent_context and parent_context.is_valid else ids.reserve()
        decision = self._sampler.should_sample(parent, trace_id, name, kind, attributes, links)
        if decision.decision is not self._drop:
            return None
        ids.release()
        return functools.partial(self._dropped_span, trace_id, decision.trace_state)

    def _dropped_span(self, trace_id: int, trace_state: TraceState | None) -> Span:
        assert self._ids is not None
        context = self._trace.SpanContext(
            trace_id, self._ids.generate_span_id(), False, self._dropped_flags, trace_state
        )
        return self._trace.NonRecordingSpan(context)

    def _parent(self) -> Any:
        """The context whose span is the current scope's, for a child span; none: a root."""
        scope = _scope.get()
        return self.no_parent if scope is None else self._trace.set_span_in_context(scope.span, self.no_parent)

    @contextlib.contextmanager
    def client_span(self, operation: str, method: str, url: str, template: str | None) -> Iterator[HttpSpan]:
        attributes = _url_attributes(url)
        template = template or urlsplit(url).path or "/"
        attributes |= {
            "http.request.method": method,
            "url.template": template,
            "tokenservice.vault.operation": operation,
        }
        span = self.start(f"{method} {template}", self._parent(), self._client, attributes)
        try:
            yield HttpSpan(span)
        except BaseException as error:
            _mark_error(span, type(error).__qualname__)
            raise
        finally:
            span.end()

    @contextlib.contextmanager
    def transit_span(
        self, org: str, operation: str, template: str, batch_size: int, calls: Sequence[SpanContext | None]
    ) -> Iterator[HttpSpan]:
        """A CLIENT span for one Transit batch request, the scope of its work: parented to the first
        call waiting on it whose trace is sampled (else the first call), linked to the other sampled ones."""
        first: SpanContext | None = None
        sampled: dict[tuple[int, int], SpanContext] = {}
        for call in calls:
            if call is None:
                continue
            if first is None:
                first = call
            if call.trace_flags.sampled:
                sampled.setdefault((call.trace_id, call.span_id), call)
        parent = next(iter(sampled.values()), first)
        links = [self._trace.Link(call) for call in sampled.values() if call is not parent]
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "url.template": template,
            "tokenservice.vault.operation": f"transit.{operation}",
            "tokenservice.org": org,
            "tokenservice.batch_size": batch_size,
        }
        span = self.start(
            f"POST {template}",
            self.no_parent
            if parent is None
            else self._trace.set_span_in_context(self._trace.NonRecordingSpan(parent), self.no_parent),
            self._client,
            attributes,
            links,
        )
        scope = _Scope(span)
        token = _scope.set(scope)
        try:
            yield HttpSpan(span)
        finally:
            _scope.reset(token)
            scope.end()

    @contextlib.contextmanager
    def root_span(self, name: str) -> Iterator[None]:
        span = self.start(name, self.no_parent, self._internal, {})
        scope = _Scope(span)
        token = _scope.set(scope)
        try:
            yield
        except BaseException as error:
            _mark_error(span, type(error).__qualname__)
            raise
        finally:
            _scope.reset(token)
            scope.end()


_active: _Active | None = None


class Tracing:
    """Traces for one process (a worker): its TracerProvider, exporter and batch processor."""

    def __init__(self, provider: TracerProvider | None = None, root_bound: int | None = None) -> None:
        """`root_bound`: where `provider`'s sampler keeps a span without a parent exactly when its trace
        id's low 64 bits are below a bound, that bound (see `_root_bound`); None where it does not say."""
        self._provider = provider
        self._active = None if provider is None else _Active(provider, root_bound)

    @classmethod
    def disabled(cls) -> Tracing:
        """No tracing: nothing of OpenTelemetry is imported, and nothing costs a call anything."""
        return cls()

    @classmethod
    def from_config(cls, config: TracingConfig, worker_name: str | None = None) -> Tracing:
        """Tracing as `config` and the OTEL_* variables say, made the one the module functions use.

        `worker_name` goes into the resource as tokenservice.worker (the SDK adds a per-process
        service.instance.id), so that each worker's spans say which worker served them."""
        if not config.enabled or os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
            return cls.disabled()
        check_environment(config, os.environ)
        tracing = cls(_provider(config, worker_name), _root_bound(config))
        tracing._activate()
        return tracing

    def _activate(self) -> None:
        """Make this the tracing that the module functions use."""
        global _active
        if self._active is not None:
            _active = self._active

    @property
    def enabled(self) -> bool:
        return self._provider is not None

    def server_spans(
        self, address: str, port: int | None = None, services: Collection[str] | None = None
    ) -> ServerSpans:
        """The wrapper of the server's methods; `address`/`port` are the listening ones (server.*),
        `services` the ones to trace (None: every one)."""
        return ServerSpans(self._active, address, port, services)

    def shutdown(self, timeout_s: float) -> bool:
        """Export the spans still pending and stop, within `timeout_s`; False if that was not enough.

        Blocks its caller (run it in a thread from an event loop); nothing is exported after it."""
        global _active
        if self._provider is None:
            return True
        if _active is self._active:
            _active = None
        # The batch processor waits up to 30 s for its exporter, whose retries have their own timeout;
        # a thread keeps the grace period whatever the collector does.
        stopping = threading.Thread(target=self._provider.shutdown, name="tracing-shutdown", daemon=True)
        stopping.start()
        stopping.join(max(0.0, timeout_s))
        return not stopping.is_alive()


def _provider(config: TracingConfig, worker_name: str | None) -> TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # shutdown_on_exit: Tracing.shutdown flushes within the grace period; the SDK's exit hook could wait 30 s.
    provider = TracerProvider(
        sampler=_sampler(config),
        resource=_resource(config, worker_name),
        shutdown_on_exit=False,
        id_generator=_ReservedIds(),  # type: ignore[arg-type]  # an IdGenerator in all but its base class
    )
    exporter = _exporter(config)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_* apply
    return provider


def _exporter(config: TracingConfig) -> Any:
    found = _variable(os.environ, "OTEL_TRACES_EXPORTER")
    if (config.exporter or (found[1].lower() if found else _DEFAULT_EXPORTER)) == "none":
        return None
    found = _variable(os.environ, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
    protocol = config.protocol or (found[1] if found else _DEFAULT_PROTOCOL)
    # endpoint=None: the exporter reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT itself.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=config.endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter(endpoint=config.endpoint and config.endpoint.rstrip("/") + _HTTP_TRACES_PATH)


def _sampler_ratio(config: TracingConfig) -> float:
    """The ratio of the ratio samplers: tracing.sampler_arg, else OTEL_TRACES_SAMPLER_ARG, else 1 (the SDK's)."""
    found = _variable(os.environ, "OTEL_TRACES_SAMPLER_ARG")
    return config.sampler_arg if config.sampler_arg is not None else float(found[1]) if found else 1.0


def _sampler(config: TracingConfig) -> Any:
    """The sampler that tracing.sampler/sampler_arg or else OTEL_TRACES_SAMPLER[_ARG] name, as the SDK makes it."""
    from opentelemetry.sdk.trace import sampling

    name = _sampler_name(config, os.environ)
    if name in RATIO_SAMPLERS:
        ratio = _sampler_ratio(config)
        return sampling.TraceIdRatioBased(ratio) if name == "traceidratio" else sampling.ParentBasedTraceIdRatio(ratio)
    return {
        "always_on": sampling.ALWAYS_ON,
        "always_off": sampling.ALWAYS_OFF,
        "parentbased_always_on": sampling.DEFAULT_ON,
        "parentbased_always_off": sampling.DEFAULT_OFF,
    }[name]


def _root_bound(config: TracingConfig) -> int | None:
    """For the ratio and always-off samplers, the bound below which a root span's trace id (its low 64
    bits) is kept: the rule of the SDK's TraceIdRatioBased, also the root sampler of the parent-based
    ones. None for the always-on samplers, which keep every span anyway."""
    from opentelemetry.sdk.trace import sampling

    name = _sampler_name(config, os.environ)
    if name in RATIO_SAMPLERS:
        return sampling.TraceIdRatioBased.get_bound_for_rate(_sampler_ratio(config))
    return 0 if name in ("always_off", "parentbased_always_off") else None


def _resource(config: TracingConfig, worker_name: str | None) -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    attributes: dict[str, Any] = dict(config.resource_attributes)
    if config.service_name:
        attributes[SERVICE_NAME] = config.service_name
    if worker_name:
        attributes[WORKER_ATTRIBUTE] = worker_name
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; what is passed here wins.
    resource = Resource.create(attributes)
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    return resource


def annotate(
    *,
    org: str | None = None,
    caller: str | None = None,
    identity_kind: str | None = None,
    secret_version: int | None = None,
    batch_size: int | None = None,
    error_reason: str | None = None,
    outcome: str | None = None,
) -> None:
    """Add the service's attributes to the current span (tokenservice.org, .caller, ...).

    Only these names exist; a value that does not look like what its name says (an org or caller
    name, an identity kind of email/external_id/email+external_id/none, a count, an UPPER_SNAKE
    reason, a lower_snake outcome) is dropped, so no identity can slip in. Off, or in a span that is
    not sampled: returns at once."""
    scope = _scope.get()
    if scope is None or not scope.recording:
        return
    for key, value in (
        ("org", org),
        ("caller", caller),
        ("identity_kind", identity_kind),
        ("secret_version", secret_version),
        ("batch_size", batch_size),
        ("error_reason", error_reason),
        ("outcome", outcome),
    ):
        if value is not None:
            name, valid = _ANNOTATIONS[key]
            if valid(value):
                scope.attributes[name] = value


def current_trace_ids() -> tuple[str, str] | None:
    """(trace_id, span_id) of the current span as 32 and 16 hex digits, or None (no span, one that is
    not sampled, or off)."""
    scope = _scope.get()
    return None if scope is None or not scope.recording else scope.ids()


def current_span_context() -> SpanContext | None:
    """The current span's context, for work that another task does on its behalf (a Transit batch
    links the calls it serves); None when off or outside any span."""
    if _active is None:
        return None
    scope = _scope.get()
    return None if scope is None else scope.span.get_span_context()


def vault_span(
    operation: str, method: str, url: str, *, template: str | None = None
) -> contextlib.AbstractContextManager[HttpSpan]:
    """A CLIENT span for one HTTP request to Vault, named `METHOD template` (the HTTP conventions).

    `url` is the request's URL; only its scheme, host, port and path are recorded. `template` is the
    path with its variable parts named (/v1/{mount}/data/{path}); without one, the path itself.
    Call `set_status_code` on what it yields once the response is in; an exception ends the span as
    an error of the exception's type."""
    if _active is None:
        return _NO_HTTP_SPAN
    return _active.client_span(operation, method, url, template)


def transit_span(
    org: str, operation: str, items: Sequence[tuple[object, SpanContext | None]]
) -> contextlib.AbstractContextManager[HttpSpan]:
    """A CLIENT span for one Vault Transit batch request (`operation` hmac or verify) of `org`, whose
    `items` are each an input with the span context of the call that submitted it (None outside a span).

    It is the scope of the request's work: the requests hvac makes for it (a login, the POST itself)
    are its children, and its log records carry its ids. Record the URL with `set_url` and the outcome
    with `set_status_code` or `set_error`. Off: a span that records nothing."""
    if _active is None:
        return _NO_HTTP_SPAN
    # The template from the operation, not the path: a mount may have several segments.
    template = f"/v1/{{mount}}/{operation}/{{key}}"
    return _active.transit_span(org, operation, template, len(items), [call for _, call in items])


def background_root_span(name: str) -> contextlib.AbstractContextManager[None]:
    """A span that starts a new trace, with no parent and no links, for work no call asked for
    (the background refresh). `name` must be fixed text: it is the span's name."""
    if _active is None:
        return _NO_SPAN
    return _active.root_span(name)


_KV_VERBS = {"GET": "read", "POST": "write", "PUT": "write", "PATCH": "write", "DELETE": "delete", "LIST": "list"}


def vault_route(method: str, path: str) -> tuple[str, str]:
    """(operation, url.template) of a Vault API path, bounded whatever the mounts and secret paths are."""
    parts = path.strip("/").split("/")
    if parts[:1] != ["v1"] or len(parts) < 2:
        return "other", "/{path}"
    parts = parts[1:]
    if parts[0] == "auth" and len(parts) >= 3:
        if parts[1] == "token" and len(parts) == 3:
            return f"token.{parts[2].removesuffix('-self')}", "/v1/auth/token/" + parts[2]
        if parts[2] == "login":
            return "login", "/v1/auth/{mount}/login"
    if parts[0] == "sys":
        return "sys", "/v1/sys/{path}"
    if len(parts) >= 3 and parts[1] in ("data", "metadata"):
        verb = _KV_VERBS.get(method, "other")
        operation = f"kv.{verb}" if parts[1] == "data" else f"kv.metadata.{verb}"
        return operation, f"/v1/{{mount}}/{parts[1]}/{{path}}"
    if len(parts) >= 3 and parts[1] in ("hmac", "sign", "verify", "encrypt", "decrypt"):
        return f"transit.{parts[1]}", f"/v1/{{mount}}/{parts[1]}/{{key}}"
    return "other", "/v1/{path}"


class TracedVaultSession(requests.Session):
    """A requests session for hvac.Client(session=...): each request to Vault (a login, a renewal,
    a read) runs in a `vault_span` under the current span, with its response status."""

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        method = request.method or "GET"
        operation, template = vault_route(method, urlsplit(request.url or "").path)
        with vault_span(operation, method, request.url or "", template=template) as span:
            response = super().send(request, **kwargs)
            span.set_status_code(response.status_code)
            return response


def vault_http_session() -> requests.Session | None:
    """A TracedVaultSession when tracing is on; None (hvac's own session) when off."""
    return None if _active is None else TracedVaultSession()
