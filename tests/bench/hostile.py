"""Hostile-load benchmark: a legitimate caller's latency and the service's memory
while peers without credentials hold thousands of streams and send refused batches.

Run by hand (see tests/bench/README.md, "Hostile load"):

    .venv/bin/python tests/bench/hostile.py [--duration 15] [--streams 4000] [--json FILE]

It starts an OpenBao dev server and one `tokenservice serve` configured as
production runs it (TLS, an API-key caller, health on a plaintext port, the
audit trail into a file), measures the caller at idle, then again while
three hostile peers run, and prints both. Everything listens on or connects
to 127.0.0.1 only and is stopped before it exits, also on Ctrl-C.

The peers speak raw HTTP/2 (the `h2` package), because what they do is what
a gRPC client never would: streams whose request never ends. The module's
flood functions are also what tests/security/test_resource_limits.py uses.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import shutil
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402
import h2.config  # noqa: E402
import h2.connection  # noqa: E402
import h2.errors  # noqa: E402
import h2.events  # noqa: E402
import h2.exceptions  # noqa: E402
import hpack  # noqa: E402
from grpc_health.v1 import health_pb2  # noqa: E402
from tokenservice.v1 import token_service_pb2 as pb  # noqa: E402
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc  # noqa: E402

from tests.bench.bench import grpc_frame  # noqa: E402
from tests.support import status_code  # noqa: E402

if TYPE_CHECKING:
    from tests.bench.bench import Run

MINT_TOKEN = "/tokenservice.v1.TokenService/MintToken"
MINT_TOKENS = "/tokenservice.v1.TokenService/MintTokens"
HEALTH_WATCH = "/grpc.health.v1.Health/Watch"


@dataclasses.dataclass(frozen=True)
class StreamKind:
    """What a hostile stream sends: its path, the request bytes, and whether it ever ends."""

    name: str
    path: str
    body: bytes
    ends: bool


def watch_with_name(name_bytes: int) -> StreamKind:
    """A health Watch naming a service of `name_bytes` bytes: the server may keep it open for ever."""
    request = health_pb2.HealthCheckRequest(service="x" * name_bytes).SerializeToString()
    return StreamKind(f"health Watch, {name_bytes:,} B name", HEALTH_WATCH, grpc_frame(request), ends=True)


def half_sent(announced_bytes: int) -> StreamKind:
    """A MintTokens call announcing an `announced_bytes` request and sending all of it but the last byte."""
    body = b"\x00" + struct.pack(">I", announced_bytes) + b"\x0a" * (announced_bytes - 1)
    return StreamKind(
        f"MintTokens, {announced_bytes:,} B announced, 1 B short, never ends", MINT_TOKENS, body, ends=False
    )


HEADERS_ONLY = StreamKind("MintToken, headers only, never ends", MINT_TOKEN, b"", ends=False)
RAPID_RESET = "MintToken cancelled at once, rapid reset (TLS port)"


@dataclasses.dataclass
class FloodStats:
    """What a flood's streams met. `refused_locally` counts streams the peer did not open because the
    server's SETTINGS_MAX_CONCURRENT_STREAMS was reached on that connection."""

    opened: int = 0
    answered: int = 0
    reset: int = 0
    cancelled: int = 0
    refused_locally: int = 0
    connections_closed: int = 0
    goaways: int = 0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    messages: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def open_now(self) -> int:
        return self.opened - self.answered - self.reset - self.cancelled

    def summary(self) -> dict:
        return {
            **{
                name: getattr(self, name)
                for name in (
                    "opened",
                    "answered",
                    "reset",
                    "cancelled",
                    "refused_locally",
                    "connections_closed",
                    "goaways",
                    "open_now",
                )
            },
            "grpc_status": dict(self.statuses),
        }


def _tls_context() -> ssl.SSLContext:
    """TLS as an attacker does it: no certificate of its own, and no check of the server's."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    return context


def request_headers(port: int, path: str, *, tls: bool) -> list[tuple[str, str]]:
    """The headers of a gRPC call to `path` on 127.0.0.1:`port`, without credentials."""
    return [
        (":method", "POST"),
        (":scheme", "https" if tls else "http"),
        (":path", path),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ]


class HostileConnection:
    """One HTTP/2 connection that opens gRPC streams of one kind and leaves them as they are."""

    def __init__(self, port: int, kind: StreamKind, stats: FloodStats, *, tls: bool) -> None:
        self._port = port
        self._kind = kind
        self._stats = stats
        self._tls = tls
        self._h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self._unsent: dict[int, bytes] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_connection(
            "127.0.0.1", self._port, ssl=_tls_context() if self._tls else None
        )
        self._h2.initiate_connection()
        self._flush()
        self._reading = asyncio.create_task(self._read(reader))
        await asyncio.sleep(0.05)  # the server's SETTINGS, with its stream limit

    def open_streams(self, count: int) -> None:
        for _ in range(count):
            if (
                self.closed.is_set()
                or self._h2.open_outbound_streams >= self._h2.remote_settings.max_concurrent_streams
            ):
                self._stats.refused_locally += 1
                continue
            stream_id = self._h2.get_next_available_stream_id()
            ends_now = self._kind.ends and not self._kind.body
            self._h2.send_headers(
                stream_id, request_headers(self._port, self._kind.path, tls=self._tls), end_stream=ends_now
            )
            self._stats.opened += 1
            if self._kind.body:
                self._unsent[stream_id] = self._kind.body
        self._send_what_the_windows_allow()

    def open_and_cancel(self, count: int) -> None:
        """HTTP/2 rapid reset (CVE-2023-44487): `count` streams, each cancelled (RST_STREAM) as soon as it is
        opened, so that the server starts work the peer never waits for."""
        if self.closed.is_set():
            return
        for _ in range(count):
            stream_id = self._h2.get_next_available_stream_id()
            self._h2.send_headers(stream_id, request_headers(self._port, self._kind.path, tls=self._tls))
            self._h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            self._stats.opened += 1
            self._stats.cancelled += 1
        self._flush()

    def open_streams_count(self) -> int:
        return self._h2.open_outbound_streams

    async def drained(self) -> None:
        if self._writer is not None and not self.closed.is_set():
            with contextlib.suppress(ConnectionError):
                await self._writer.drain()

    def close(self) -> None:
        if self._reading is not None:
            self._reading.cancel()
        if self._writer is not None:
            self._writer.transport.abort()  # at once: a TLS close would wait for the server's close_notify
        self.closed.set()

    def _send_what_the_windows_allow(self) -> None:
        for stream_id in list(self._unsent):
            data = self._unsent[stream_id]
            try:
                while data:
                    room = min(
                        len(data), self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size
                    )
                    if room <= 0:
                        break
                    self._h2.send_data(stream_id, data[:room])
                    data = data[room:]
                if data:
                    self._unsent[stream_id] = data
                    continue
                del self._unsent[stream_id]
                if self._kind.ends:
                    self._h2.end_stream(stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self._unsent.pop(stream_id, None)
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                try:
                    events = self._h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    # h2 refuses the PING that follows a graceful GOAWAY, and drops the GOAWAY's event with it.
                    if self._h2.state_machine.state == h2.connection.ConnectionState.CLOSED:
                        self._stats.goaways += 1
                    break
                for event in events:
                    self._count(event)
                self._send_what_the_windows_allow()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            self._stats.connections_closed += 1
            self.closed.set()

    def _count(self, event: h2.events.Event) -> None:
        if isinstance(event, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
            headers = {name.decode(): value.decode() for name, value in event.headers}
            status = headers.get("grpc-status")
            if status is not None:
                name = status_code(int(status)).name
                self._stats.answered += 1
                self._stats.statuses[name] += 1
                self._stats.messages[f"{name}: {urllib.parse.unquote(headers.get('grpc-message', ''))[:60]}"] += 1
        elif isinstance(event, h2.events.StreamReset):
            self._unsent.pop(event.stream_id, None)
            if not event.remote_reset or event.error_code == 0:
                return  # the end of a stream the server already answered
            self._stats.reset += 1
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._stats.goaways += 1


@contextlib.asynccontextmanager
async def flood(
    port: int, kind: StreamKind, *, connections: int, streams_per_connection: int, tls: bool = False
) -> AsyncIterator[FloodStats]:
    """Open `connections` connections with `streams_per_connection` streams of `kind` each, and hold them
    until the block ends."""
    stats = FloodStats()
    peers = [HostileConnection(port, kind, stats, tls=tls) for _ in range(connections)]
    try:
        await asyncio.gather(*(peer.connect() for peer in peers))
        for peer in peers:
            peer.open_streams(streams_per_connection)
            await peer.drained()
        yield stats
    finally:
        for peer in peers:
            peer.close()


async def keep_flooding(
    port: int,
    kind: StreamKind,
    *,
    connections: int,
    streams_per_connection: int,
    tls: bool,
    until: float,
    stats: FloodStats,
    refill_every: float,
) -> None:
    """As `flood`, for as long as `until` (a monotonic time): every `refill_every` seconds, the streams the
    server ended are opened again, and the connections it closed made again, as a determined peer does."""
    peers: list[HostileConnection] = []
    try:
        while time.monotonic() < until:
            peers = [peer for peer in peers if not peer.closed.is_set()]
            fresh = [HostileConnection(port, kind, stats, tls=tls) for _ in range(connections - len(peers))]
            for peer in fresh:
                with contextlib.suppress(OSError):
                    await peer.connect()
                    peers.append(peer)
            for peer in peers:
                peer.open_streams(streams_per_connection - peer.open_streams_count())
                await peer.drained()
            await asyncio.sleep(max(0.0, min(refill_every, until - time.monotonic())))
    finally:
        for peer in peers:
            peer.close()


async def rapid_reset(port: int, *, tls: bool, stats: FloodStats, until: float, streams: int | None = None) -> None:
    """One connection that opens MintToken streams without credentials and cancels each at once, as fast as
    it can, until `until` (a monotonic time) or `streams` streams; a connection the server closes is made
    again."""
    while time.monotonic() < until and (streams is None or stats.opened < streams):
        peer = HostileConnection(port, HEADERS_ONLY, stats, tls=tls)
        try:
            await peer.connect()
            while not peer.closed.is_set() and time.monotonic() < until:
                if streams is not None and stats.opened >= streams:
                    break
                peer.open_and_cancel(100)
                await peer.drained()
        except OSError:
            await asyncio.sleep(0.1)
        finally:
            peer.close()


async def endless_header_block(port: int, *, tls: bool, until: float) -> int:
    """A MintToken stream whose header block never ends: HEADERS without END_HEADERS, then CONTINUATION
    frames of small valid headers until `until` (a monotonic time). HTTP/2 has no flow control for headers,
    and the server must decode the whole block to keep its HPACK table in step. The bytes sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=_tls_context() if tls else None)
    encoder = hpack.Encoder()
    request = request_headers(port, MINT_TOKEN, tls=tls)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(_SETTINGS, 0, b""))
    writer.write(_frame(_HEADERS, 1, encoder.encode(request)))
    continuation = _frame(_CONTINUATION, 1, encoder.encode([("x-pad", "v" * 100)]) * 100)
    answers = asyncio.create_task(_discard(reader))
    sent = 0
    try:
        while time.monotonic() < until and not answers.done():
            writer.write(continuation)
            await writer.drain()
            sent += len(continuation)
    except ConnectionError:
        pass
    finally:
        answers.cancel()
        writer.transport.abort()
    return sent


_HEADERS, _SETTINGS, _CONTINUATION = 0x1, 0x4, 0x9


def _frame(frame_type: int, stream_id: int, payload: bytes) -> bytes:
    """An HTTP/2 frame without flags: 24-bit length, type, flags, stream id, payload."""
    return len(payload).to_bytes(3, "big") + bytes([frame_type, 0]) + stream_id.to_bytes(4, "big") + payload


async def _discard(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionError, ssl.SSLError):
        while await reader.read(65536):
            pass


# ------------------------------------------------------------------ the hostile peers, as a child process


def _refused_batches(target: str, ca_file: Path, until: float, concurrency: int, outcomes: collections.Counter) -> None:
    """MintTokens of 1,000 entries without credentials, back to back from `concurrency` threads."""
    batch = pb.MintTokensRequest(
        requests=[pb.MintTokenRequest(external_id=f"hostile-{index}") for index in range(1000)]
    )
    credentials = grpc.ssl_channel_credentials(ca_file.read_bytes())

    def send() -> None:
        with grpc.secure_channel(target, credentials) as channel:
            stub = pb_grpc.TokenServiceStub(channel)
            while time.monotonic() < until:
                try:
                    stub.MintTokens(batch, timeout=5)
                    outcomes["OK"] += 1
                except grpc.RpcError as error:
                    outcomes[error.code().name] += 1

    threads = [threading.Thread(target=send) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


async def _hold_streams(args: argparse.Namespace, until: float) -> dict[str, FloodStats]:
    kinds = {
        "half-sent MintTokens (TLS port)": (args.port, half_sent(500_000), True),
        "headers-only MintToken (TLS port)": (args.port, HEADERS_ONLY, True),
        "Watch of a 100 KB name (TLS port)": (args.port, watch_with_name(100_000), True),
        'Watch of "" (health port)': (args.health_port, watch_with_name(0), False),
    }
    stats = {name: FloodStats() for name in kinds}
    if args.rapid_resetters:
        stats[RAPID_RESET] = FloodStats()
    per_kind = max(1, args.connections // len(kinds))
    await asyncio.gather(
        *(rapid_reset(args.port, tls=True, stats=stats[RAPID_RESET], until=until) for _ in range(args.rapid_resetters)),
        *(
            keep_flooding(
                port,
                kind,
                connections=per_kind,
                streams_per_connection=args.streams // args.connections,
                tls=tls,
                until=until,
                stats=stats[name],
                refill_every=args.refill_every,
            )
            for name, (port, kind, tls) in kinds.items()
        ),
    )
    return stats


def _peers_main(args: argparse.Namespace) -> None:
    until = time.monotonic() + args.seconds
    outcomes: collections.Counter = collections.Counter()
    batches = threading.Thread(
        target=_refused_batches, args=(f"127.0.0.1:{args.port}", args.ca_file, until, args.batch_senders, outcomes)
    )
    batches.start()
    stats = asyncio.run(_hold_streams(args, until))
    batches.join()
    args.report.write_text(
        json.dumps({"streams": {name: s.summary() for name, s in stats.items()}, "refused_batches": dict(outcomes)})
    )


# ------------------------------------------------------------------ the benchmark


def bench_main(args: argparse.Namespace) -> int:
    import tests.bench.bench as bench
    from service.dev import OpenBaoDevServer

    children = bench.Children()
    workdir = Path(tempfile.mkdtemp(prefix="tokenservice-hostile-"))
    bao = OpenBaoDevServer()
    try:
        return _bench(args, bench, children, bao, workdir)
    except bench.BenchError as error:
        print(f"\nBENCHMARK FAILED: {error}", file=sys.stderr)
        return 1
    finally:
        children.stop_all()
        bao.stop()


def _bench(args: argparse.Namespace, bench, children, bao, workdir: Path) -> int:
    if not shutil.which("h2load"):
        raise bench.BenchError("h2load is missing: apt-get install -y nghttp2-client (or run tests/bench/run once)")
    bench.log("starting OpenBao dev server")
    bao.start()
    setup = bench.SecuredSetup.create(bao, workdir, limits=tomllib.loads("\n".join(args.limits)))
    service = bench.start_service(children, bao, workdir, "hostile", args.service_workers, secured=setup)
    port = int(service.grpc_target.rsplit(":", 1)[1])
    pid = service.process.pid

    def served() -> float:
        return bench.metric_sum(
            service.metrics(),
            "grpc_server_handled_total",
            lambda labels: labels.get("grpc_method") == "MintToken" and labels.get("grpc_code") == "OK",
        )

    request = pb.MintTokenRequest(external_id=bench.EXTERNAL_ID, email=bench.EMAIL).SerializeToString()
    (workdir / "unary.bin").write_bytes(grpc_frame(request))
    caller = bench.Target(
        "legit",
        "legitimate caller",
        f"https://{service.grpc_target}{MINT_TOKEN}",
        workdir / "unary.bin",
        [*bench.GRPC_HEADERS, f"authorization: Bearer {setup.api_key}"],
        False,
        args.clients,
        1,
        1,
        pid,
        service.grpc_target,
    )

    def measure(tag: str) -> tuple[Run, int, float]:
        """The caller's run, the peak RSS during it, and its calls that did not succeed: h2load counts an
        HTTP 200 as a success whatever its grpc-status, so the calls the service served OK decide."""
        served_before = served()
        peak = [bench.rss_kib(pid)]
        sampling = True

        def sample() -> None:
            while sampling:
                peak.append(bench.rss_kib(pid))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            run = bench.run_h2load(
                children, caller, workdir, tag, duration=args.duration, warmup=1, rps_per_client=args.rate
            )
        finally:
            sampling = False
            sampler.join()
        return run, max(peak), run.failures + max(0.0, run.succeeded - (served() - served_before))

    bench.log("warm-up")
    bench.run_h2load(children, caller, workdir, "warm-up", duration=2, warmup=0, rps_per_client=args.rate)
    idle_rss = bench.rss_kib(pid)
    bench.log(f"idle: the caller alone, {args.rate * args.clients} MintToken/s for {args.duration:g} s")
    idle_run, idle_peak, idle_failed = measure("idle")

    report = workdir / "peers.json"
    peers = children.start(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--peers",
            "--port",
            str(port),
            "--health-port",
            str(setup.health_port),
            "--ca-file",
            str(setup.files.ca.cert_file),
            "--seconds",
            str(args.duration + 1 + args.build_up + 2),
            "--streams",
            str(args.streams),
            "--connections",
            str(args.connections),
            "--batch-senders",
            str(args.batch_senders),
            "--rapid-resetters",
            str(args.rapid_resetters),
            "--refill-every",
            str(args.refill_every),
            "--report",
            str(report),
        ],
        output=workdir / "peers.log",
    )
    time.sleep(args.build_up)
    bench.log(
        f"flood: {args.streams} streams over {args.connections} connections, re-opened every "
        f"{args.refill_every:g} s, {args.batch_senders} senders of refused batches and "
        f"{args.rapid_resetters} rapid-reset connections; the caller again"
    )
    flood_run, flood_peak, flood_failed = measure("flood")
    try:
        peers.wait(timeout=args.duration + 60)
    except subprocess.TimeoutExpired:
        raise bench.BenchError(f"the hostile peers did not stop:\n{(workdir / 'peers.log').read_text()}") from None
    after_rss = bench.rss_kib(pid)
    if not report.exists():
        raise bench.BenchError(f"the hostile peers reported nothing:\n{(workdir / 'peers.log').read_text()}")
    hostile = json.loads(report.read_text())

    rows = [("idle", idle_run, idle_failed, idle_peak), ("flood", flood_run, flood_failed, flood_peak)]
    print("| phase | caller req/s | p50 ms | p99 ms | caller calls failed | peak RSS MiB | peak - idle MiB |")
    print("|---|---|---|---|---|---|---|")
    for phase, run, failed, peak in rows:
        print(
            f"| {phase} | {run.rps:,.0f} | {run.p50_ms:.2f} | {run.p99_ms:.2f} | {failed:g} | {peak / 1024:.0f} "
            f"| {(peak - idle_rss) / 1024:+.1f} |"
        )
    print(
        f"\nidle RSS {idle_rss / 1024:.0f} MiB; after the flood {after_rss / 1024:.0f} MiB; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
    )
    print("hostile streams (opened, and how the server ended them):")
    for name, stats in hostile["streams"].items():
        print(
            f"  {name}: opened {stats['opened']:,}, ended {stats['grpc_status']}, reset {stats['reset']}, "
            f"cancelled by the peer {stats['cancelled']:,}, "
            f"open at the end {stats['open_now']}, not opened (stream limit) {stats['refused_locally']:,}, "
            f"GOAWAYs {stats['goaways']}"
        )
    print(f"refused batches (1,000 entries, no credentials): {hostile['refused_batches']}")
    figures = {
        "idle": {
            "rps": idle_run.rps,
            "p50_ms": idle_run.p50_ms,
            "p99_ms": idle_run.p99_ms,
            "rss_kib": idle_rss,
            "peak_rss_kib": idle_peak,
            "failed": idle_failed,
        },
        "flood": {
            "rps": flood_run.rps,
            "p50_ms": flood_run.p50_ms,
            "p99_ms": flood_run.p99_ms,
            "peak_rss_kib": flood_peak,
            "failed": flood_failed,
        },
        "after_rss_kib": after_rss,
        "hostile": hostile,
    }
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    problems = []
    if flood_failed:
        problems.append("the legitimate caller had failures during the flood")
    if flood_peak - idle_rss > args.max_growth_mib * 1024:
        problems.append(f"RSS grew by more than {args.max_growth_mib} MiB")
    if flood_run.p99_ms > args.max_p99_ms:
        problems.append(f"the caller's p99 was over {args.max_p99_ms:g} ms during the flood")
    for problem in problems:
        print(f"TARGET MISSED: {problem}")
    return 1 if problems else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tests/bench/hostile.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds the caller is measured, per phase")
    parser.add_argument("--rate", type=int, default=50, help="the caller's MintToken/s per connection (default 50)")
    parser.add_argument("--clients", type=int, default=4, help="the caller's connections (default 4)")
    parser.add_argument("--streams", type=int, default=4000, help="hostile streams held at once (default 4000)")
    parser.add_argument("--connections", type=int, default=40, help="hostile connections (default 40)")
    parser.add_argument("--batch-senders", type=int, default=4, help="threads sending refused batches (default 4)")
    parser.add_argument(
        "--rapid-resetters",
        type=int,
        default=0,
        help="connections opening streams and cancelling each at once, as fast as they can (default 0)",
    )
    parser.add_argument(
        "--refill-every",
        type=float,
        default=5.0,
        help="seconds between the peers' re-opening of the streams the server ended (default 5; "
        "0.05 makes it a flood of refused streams, limited by the peers' CPU)",
    )
    parser.add_argument("--build-up", type=float, default=3.0, help="seconds the flood runs before measuring")
    parser.add_argument("--service-workers", type=int, default=1, help="the service's workers (default 1)")
    parser.add_argument("--max-growth-mib", type=float, default=50.0, help="RSS growth target (default 50)")
    parser.add_argument("--max-p99-ms", type=float, default=20.0, help="the caller's p99 target (default 20)")
    parser.add_argument(
        "--limits",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a [limits] setting for the service, e.g. max_concurrent_rpcs=2000 (repeatable)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    # The hostile peers, run as a child process by the benchmark.
    parser.add_argument("--peers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--health-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ca-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.peers:
        _peers_main(args)
        return 0
    return bench_main(args)


if __name__ == "__main__":
    sys.exit(main())
