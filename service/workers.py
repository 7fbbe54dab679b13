"""Several worker processes sharing the gRPC ports, so the service uses every core.

Python runs one core per process; each worker is a whole single-process service (its own gRPC server on
the shared ports via SO_REUSEPORT, its own secret refresh) and the kernel spreads connections across them.
Workers write their metrics to files (prometheus-client's multiprocess mode) and this supervisor serves
the sum on /metrics. The supervisor:

- claims every gRPC port before any worker starts (service/addresses.PortClaim): a port that another
  process uses is refused at start (exit code 2), and no second instance can join the workers' ports later;
- announces the service (the "listening" log line and the ports file) once every worker listens; a worker
  that fails before that stops the service with the worker's exit code, since a replacement would fail alike;
- replaces a worker that exits later, after a delay that doubles with each exit in the last
  CRASH_LOOP_WINDOW_SECONDS, from RESTART_DELAY_SECONDS up to MAX_RESTART_DELAY_SECONDS. More than
  CRASH_LOOP_RESTARTS exits in that window are a fault that restarting does not cure: it stops the service
  and exits 1, so that the process manager (systemd, Kubernetes) sees it;
- passes SIGTERM or SIGINT on to every worker, each of which drains as a single process does.

Workers get SIGTERM when the supervisor dies, even by SIGKILL (Linux's PR_SET_PDEATHSIG), and drain as on
a normal stop; the supervisor's claims close with it, so a successor can bind the ports once they have.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

from service.addresses import (
    PortClaim,
    announce,
    listen_refusal,
    listening_fields,
    parse_address,
    read_ports_file,
    withdraw,
)
from service.config import Config
from service.errors import ConfigError
from service.parent_death import parent_death_signal

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
RESTART_DELAY_SECONDS = 0.5
MAX_RESTART_DELAY_SECONDS = 30.0
CRASH_LOOP_RESTARTS = 5
CRASH_LOOP_WINDOW_SECONDS = 300.0
# From start to listening takes a worker about a second; far longer means it hangs.
WORKER_START_TIMEOUT_SECONDS = 60.0
CONFIG_EXIT_CODE = 2
_EXIT_MARGIN_SECONDS = 5
_POLL_SECONDS = 0.1


def exit_with_parent(parent_pid: int) -> None:
    """SIGTERM to this process once `parent_pid` is gone: by the kernel, or else by a thread that checks."""
    if not parent_death_signal(parent_pid):
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1)
    os.kill(os.getpid(), signal.SIGTERM)


class RestartPolicy:
    """How long to wait before replacing a worker that exited, or None: exits come too often to go on."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._exits: list[float] = []

    def delay_after_exit(self) -> float | None:
        now = self._clock()
        self._exits = [at for at in self._exits if now - at < CRASH_LOOP_WINDOW_SECONDS] + [now]
        if len(self._exits) > CRASH_LOOP_RESTARTS:
            return None
        return min(RESTART_DELAY_SECONDS * 2.0 ** (len(self._exits) - 1), MAX_RESTART_DELAY_SECONDS)


@dataclasses.dataclass
class _Worker:
    slot: int
    process: BaseProcess
    ports_file: Path
    started: float
    listening: bool = False


def _worker_main(config: Config, log_level: str, supervisor_pid: int) -> None:
    exit_with_parent(supervisor_pid)
    # Imported here: in a spawned worker, prometheus-client must load after
    # PROMETHEUS_MULTIPROC_DIR is set, which the environment already did.
    from service.logs import configure_logging
    from service.server import run

    configure_logging(log_level)
    try:
        run(config, serve_metrics=False)
    except ConfigError as error:
        print(f"tokenservice worker: configuration refused: {error}", file=sys.stderr, flush=True)
        sys.exit(CONFIG_EXIT_CODE)


def _grpc_addresses(config: Config) -> Iterator[tuple[str, str]]:
    yield "grpc_addr", config.grpc_addr
    if config.tls is not None and config.tls.api_key_addr:
        yield "tls.api_key_addr", config.tls.api_key_addr
    if config.health_addr:
        yield "health_addr", config.health_addr


def _worker_config(config: Config, claims: dict[str, PortClaim]) -> Config:
    """The config with every gRPC listener on its claimed port, so that all workers share it."""
    tls = config.tls
    if tls is not None and tls.api_key_addr:
        tls = dataclasses.replace(tls, api_key_addr=str(claims["tls.api_key_addr"].address))
    health = claims.get("health_addr")
    return dataclasses.replace(
        config, grpc_addr=str(claims["grpc_addr"].address), tls=tls, health_addr=str(health.address) if health else None
    )


def run_workers(config: Config, workers: int, log_level: str) -> int:
    """Run `workers` worker processes until SIGTERM/SIGINT; the exit code."""
    run_directory = Path(tempfile.mkdtemp(prefix="tokenservice-"))
    metrics_dir = run_directory / "metrics"
    metrics_dir.mkdir()
    os.environ[MULTIPROCESS_DIR_VARIABLE] = str(metrics_dir)
    claims: dict[str, PortClaim] = {}
    try:
        for setting, address in _grpc_addresses(config):
            claims[setting] = PortClaim(setting, address)
        return _Supervisor(config, claims, workers, log_level, run_directory).run()
    finally:
        for claim in claims.values():
            claim.close()
        shutil.rmtree(run_directory, ignore_errors=True)


class _Supervisor(Collector):
    """Starts the workers, replaces those that exit, and stops them all; its own metrics are collected here."""

    def __init__(
        self, config: Config, claims: dict[str, PortClaim], count: int, log_level: str, run_directory: Path
    ) -> None:
        self._config = config
        self._ports = {setting: claim.address.port for setting, claim in claims.items()}
        self._worker_config = _worker_config(config, claims)
        self._count = count
        self._log_level = log_level
        self._run_directory = run_directory
        self._metrics_dir = str(run_directory / "metrics")
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._restart_at: dict[int, float] = {}
        self._policy = RestartPolicy()
        self._stop = threading.Event()
        self._spawned = 0
        self._restarts = 0
        self._serving = 0
        self._exit_codes: list[int | None] = []

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "tokenservice_worker_restarts", "Workers started to replace one that exited.", value=self._restarts
        )
        yield GaugeMetricFamily(
            "tokenservice_workers_serving", "Worker processes listening on the gRPC ports.", value=self._serving
        )

    def run(self) -> int:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, self._metrics_dir)
        registry.register(self)
        metrics_address = parse_address(self._config.metrics_addr)
        try:
            http_server, _ = start_http_server(metrics_address.port, addr=metrics_address.host, registry=registry)
        except OSError as error:
            raise listen_refusal("metrics_addr", metrics_address, error) from None
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signal_number, lambda *_: self._stop.set())
        try:
            exit_code = self._serve(http_server.server_port)
        finally:
            withdraw(self._config.ports_file)
            self._stop_workers()
            http_server.shutdown()
        clean = exit_code == 0 and all(code == 0 for code in self._exit_codes)
        return exit_code or (0 if clean else 1)

    def _serve(self, metrics_port: int) -> int:
        for slot in range(self._count):
            self._spawn(slot)
        failed = self._wait_until_listening()
        if failed is not None:
            return failed
        if self._stop.is_set():
            return 0
        announce(
            "listening",
            {
                **listening_fields(
                    self._config,
                    grpc_port=self._ports["grpc_addr"],
                    metrics_port=metrics_port,
                    api_key_port=self._ports.get("tls.api_key_addr"),
                    health_port=self._ports.get("health_addr"),
                ),
                "workers": self._count,
            },
            self._config.ports_file,
        )
        return self._watch()

    def _spawn(self, slot: int) -> None:
        self._spawned += 1
        ports_file = self._run_directory / f"worker-{self._spawned}.json"
        config = dataclasses.replace(self._worker_config, ports_file=str(ports_file))
        process = self._context.Process(
            target=_worker_main, args=(config, self._log_level, os.getpid()), name=f"tokenservice-worker-{slot}"
        )
        process.start()
        self._workers[slot] = _Worker(slot, process, ports_file, time.monotonic())

    def _has_started_listening(self, worker: _Worker) -> bool:
        """True once, when the worker's announcement appears."""
        if worker.listening or read_ports_file(worker.ports_file, worker.process.pid) is None:
            return False
        worker.listening = True
        self._serving += 1
        return True

    def _wait_until_listening(self) -> int | None:
        """None once every worker listens (or a stop was asked for), else the exit code of the service."""
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        while not self._stop.wait(_POLL_SECONDS):
            for worker in self._workers.values():
                if worker.process.exitcode is not None:
                    logger.error(
                        "a worker failed to start; stopping the service",
                        extra={
                            "fields": {
                                "slot": worker.slot,
                                "pid": worker.process.pid,
                                "exit_code": worker.process.exitcode,
                            }
                        },
                    )
                    return CONFIG_EXIT_CODE if worker.process.exitcode == CONFIG_EXIT_CODE else 1
                self._has_started_listening(worker)
            if all(worker.listening for worker in self._workers.values()):
                return None
            if time.monotonic() > deadline:
                logger.error(
                    "workers did not start listening in time; stopping the service",
                    extra={"fields": {"timeout_seconds": WORKER_START_TIMEOUT_SECONDS}},
                )
                return 1
        return None

    def _watch(self) -> int:
        """Replace workers that exit until a stop is asked for (0) or they crash-loop (1)."""
        while not self._stop.wait(_POLL_SECONDS):
            for worker in list(self._workers.values()):
                if worker.process.exitcode is not None:
                    if not self._schedule_replacement(worker):
                        return 1
                elif self._has_started_listening(worker):
                    logger.info("worker replaced", extra={"fields": {"slot": worker.slot, "pid": worker.process.pid}})
                elif not worker.listening and time.monotonic() - worker.started > WORKER_START_TIMEOUT_SECONDS:
                    logger.error(
                        "a replacement worker did not start listening in time; killing it",
                        extra={"fields": {"slot": worker.slot, "pid": worker.process.pid}},
                    )
                    worker.process.kill()
                    worker.process.join()
            for slot, at in list(self._restart_at.items()):
                if time.monotonic() >= at:
                    del self._restart_at[slot]
                    self._restarts += 1
                    self._spawn(slot)
        return 0

    def _schedule_replacement(self, worker: _Worker) -> bool:
        """Forget an exited worker and plan its replacement; False when workers crash-loop."""
        del self._workers[worker.slot]
        self._serving -= int(worker.listening)
        mark_process_dead(worker.process.pid, self._metrics_dir)
        delay = self._policy.delay_after_exit()
        logger.error(
            "worker exited",
            extra={
                "fields": {
                    "slot": worker.slot,
                    "pid": worker.process.pid,
                    "exit_code": worker.process.exitcode,
                    "restart_in_seconds": delay,
                }
            },
        )
        if delay is None:
            logger.error(
                "workers keep exiting; stopping the service",
                extra={"fields": {"exits": CRASH_LOOP_RESTARTS + 1, "window_seconds": CRASH_LOOP_WINDOW_SECONDS}},
            )
            return False
        self._restart_at[worker.slot] = time.monotonic() + delay
        return True

    def _stop_workers(self) -> None:
        logger.info("shutting down", extra={"fields": {"grace_seconds": self._config.shutdown_grace_seconds}})
        processes = [worker.process for worker in self._workers.values()]
        for process in processes:
            if process.exitcode is None:
                process.terminate()
        for process in processes:
            process.join(self._config.shutdown_grace_seconds + _EXIT_MARGIN_SECONDS)
            if process.exitcode is None:
                process.kill()
                process.join()
            mark_process_dead(process.pid, self._metrics_dir)
        self._exit_codes = [process.exitcode for process in processes]
        logger.info("stopped", extra={"fields": {"exit_codes": self._exit_codes}})
