"""What one span costs the OpenTelemetry SDK alone: CPU a span, with and without the OTLP/gRPC export.

    .venv/bin/python tests/bench/span_floor.py [--spans 50000] [--rounds 2]

A child process makes `--spans` SERVER spans with the attributes a traced MintToken carries
(tracer.start_span, set_attributes, end), once with no span processor and once with the
BatchSpanProcessor and OTLPSpanExporter that tracing uses, exporting to a loopback endpoint that only
counts requests (tests/bench/bench.py's SpanSink, in this process). It prints the child's CPU time (all
its threads) a span. That is the floor of what a sampled call adds, whatever the service does around
it: compare it with a call's CPU without tracing (tests/bench/ab.py) to bound the 100 % ratio.
Then, in this process, the service's own server-span wrapper (service/tracing.ServerSpans, no
exporter) around a behaviour that does nothing, at sampling ratios 0, 0.01 and 1: what a dropped and a
sampled call cost in the wrapper. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from service.grpc_types import ServicerContext
from service.tracing import Tracing, TracingConfig
from tests.bench.bench import SpanSink

START_ATTRIBUTES: dict[str, str | int] = {
    "rpc.system": "grpc",
    "rpc.service": "tokenservice.v1.TokenService",
    "rpc.method": "MintToken",
    "server.address": "127.0.0.1",
    "server.port": 50051,
}
# What servicer.MintToken annotates, and the status code: the benchmark's services authenticate no
# caller, so their spans carry no tokenservice.caller (and only the refresher's carry an outcome).
END_ATTRIBUTES: dict[str, str | int] = {
    "tokenservice.org": "default",
    "tokenservice.identity_kind": "email",
    "tokenservice.secret_version": 3,
    "rpc.grpc.status_code": 0,
}


def make_spans(port: int, export: bool, spans: int, results: multiprocessing.Queue) -> None:
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{port}"
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "tokenservice"}), shutdown_on_exit=False)
    if export:
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    tracer, root = provider.get_tracer("tokenservice"), Context()
    started = time.process_time()
    for index in range(spans):
        span = tracer.start_span(
            "tokenservice.v1.TokenService/MintToken",
            root,
            trace.SpanKind.SERVER,
            START_ATTRIBUTES,
            record_exception=False,
            set_status_on_exception=False,
        )
        span.set_attributes(END_ATTRIBUTES)
        span.end()
        if index % 50 == 0:
            time.sleep(0.001)  # a server's idle moments, in which the export thread runs
    provider.force_flush()
    results.put((time.process_time() - started) / spans * 1e6)
    provider.shutdown()


class _Call:
    """What the wrapper reads of a call's context: no trace context from the caller, no certificate."""

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "h2load"),)

    def peer_identities(self) -> None:
        return None

    def code(self) -> None:
        return None


async def _nothing(request: bytes, _context: object) -> bytes:
    return request


async def _per_call_us(ratio: float, calls: int) -> float:
    tracing = Tracing.from_config(
        TracingConfig(enabled=True, exporter="none", sampler="parentbased_traceidratio", sampler_arg=ratio)
    )
    traced = tracing.server_spans("127.0.0.1", 50051).wrap(_nothing, "tokenservice.v1.TokenService", "MintToken")
    # Only a stand-in: what the wrapper reads of a context is all that _Call has.
    call = cast(ServicerContext, _Call())
    started = time.perf_counter()
    for _ in range(calls):
        await traced(b"", call)
    elapsed = time.perf_counter() - started
    tracing.shutdown(1.0)
    return elapsed / calls * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no SDK state from this process
    sink, results = SpanSink(), spawn.Queue()
    costs: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(args.rounds):
            for export in (False, True):
                child = spawn.Process(target=make_spans, args=(sink.port, export, args.spans, results))
                child.start()
                costs[export].append(results.get(timeout=600))
                child.join()
    finally:
        sink.stop()
    for export, label in ((False, "span only"), (True, "span + BatchSpanProcessor + OTLP/gRPC export")):
        runs = ", ".join(f"{cost:.1f}" for cost in costs[export])
        print(f"{label}: median {statistics.median(costs[export]):.1f} µs CPU a span ({runs})")
    print(f"{sink.requests} export requests, {sink.bytes / args.rounds / args.spans:.0f} bytes a span")
    for ratio in (0.0, 0.01, 1.0):
        print(f"server-span wrapper at ratio {ratio:g}: {asyncio.run(_per_call_us(ratio, args.spans)):.2f} µs a call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
