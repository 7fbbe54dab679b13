"""A real OTLP trace receiver on 127.0.0.1, for both OTLP/gRPC and OTLP/HTTP (protobuf).

It implements opentelemetry-proto's TraceService over grpc and POST /v1/traces over http.server,
keeps every request's bytes as they arrived, and decodes them with opentelemetry-proto's
ExportTraceServiceRequest, so that tests assert on what an exporter really sent.
"""

from __future__ import annotations

import dataclasses
import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

SPAN_KINDS = {value: name.removeprefix("SPAN_KIND_") for name, value in trace_pb2.Span.SpanKind.items()}
_TRACE_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name


def attribute_value(value: common_pb2.AnyValue) -> Any:
    """An OTLP AnyValue as a Python value."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [attribute_value(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return None if kind is None else getattr(value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    """OTLP KeyValues as a dict."""
    return {item.key: attribute_value(item.value) for item in key_values}


@dataclasses.dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, with the resource and scope it came under."""

    span: trace_pb2.Span
    resource: dict[str, Any]
    scope: str
    protocol: str

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def kind(self) -> str:
        return SPAN_KINDS[self.span.kind]

    @property
    def attributes(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_span_id(self) -> str:
        return self.span.parent_span_id.hex()

    @property
    def status(self) -> tuple[str, str]:
        """(STATUS_CODE_UNSET|OK|ERROR, message)."""
        return trace_pb2.Status.StatusCode.Name(self.span.status.code), self.span.status.message


@dataclasses.dataclass(frozen=True)
class ReceivedRequest:
    """One export request: its bytes as received (decompressed) and as decoded."""

    protocol: str
    raw: bytes
    decoded: trace_service_pb2.ExportTraceServiceRequest

    def spans(self) -> Iterator[ReceivedSpan]:
        for resource_spans in self.decoded.resource_spans:
            resource = attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    yield ReceivedSpan(span, resource, scope_spans.scope.name, self.protocol)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    """TraceService/Export: hands each request to the receiver."""

    def __init__(self, receive: Callable[[str, bytes], None]) -> None:
        self._receive = receive

    def Export(self, request: bytes, context: grpc.ServicerContext) -> trace_service_pb2.ExportTraceServiceResponse:
        self._receive("grpc", request)
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(receive: Callable[[str, bytes], None]) -> type[http.server.BaseHTTPRequestHandler]:
    class OtlpHttpHandler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            encoding = self.headers.get("Content-Encoding", "identity")
            body = (
                gzip.decompress(body)
                if encoding == "gzip"
                else zlib.decompress(body)
                if encoding == "deflate"
                else body
            )
            receive("http/protobuf", body)
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:  # `format`: the base class's name
            pass

    return OtlpHttpHandler


class OtlpReceiver:
    """Listens on 127.0.0.1 ephemeral ports for OTLP/gRPC (`grpc_endpoint`) and OTLP/HTTP
    (`http_endpoint`); both record into the same list. Use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[ReceivedRequest] = []
        self._changed = threading.Condition()
        self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        service = _TraceService(self._receive)
        # The request stays bytes here, so that tests see exactly what was sent.
        handlers: dict[str, grpc.RpcMethodHandler[bytes, trace_service_pb2.ExportTraceServiceResponse]] = {
            "Export": grpc.unary_unary_rpc_method_handler(
                service.Export, response_serializer=trace_service_pb2.ExportTraceServiceResponse.SerializeToString
            )
        }
        self._grpc.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(_TRACE_SERVICE, handlers),))
        self.grpc_port = self._grpc.add_insecure_port("127.0.0.1:0")
        self._http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(self._receive))
        self.http_port = self._http.server_address[1]
        self._http_thread = threading.Thread(target=self._http.serve_forever, name="otlp-http", daemon=True)

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT takes it (the exporter appends /v1/traces)."""
        return f"http://127.0.0.1:{self.http_port}"

    def __enter__(self) -> OtlpReceiver:
        self._grpc.start()
        self._http_thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.shutdown()
        self._http.server_close()
        self._grpc.stop(grace=None)

    def _receive(self, protocol: str, raw: bytes) -> None:
        decoded = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
        with self._changed:
            self.requests.append(ReceivedRequest(protocol, raw, decoded))
            self._changed.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        with self._changed:
            return [span for request in self.requests for span in request.spans()]

    def raw(self) -> bytes:
        """Every request's bytes, concatenated."""
        with self._changed:
            return b"".join(request.raw for request in self.requests)

    def clear(self) -> None:
        with self._changed:
            self.requests.clear()

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """The spans received, once `predicate` holds for them; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                spans = [span for request in self.requests for span in request.spans()]
                if predicate(spans):
                    return spans
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"the OTLP receiver did not get the expected spans within {timeout:g} s; "
                        f"got {[span.name for span in spans]}"
                    )
                self._changed.wait(left)
