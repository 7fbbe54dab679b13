"""Several worker processes sharing the gRPC port, so the service uses every core.

Python runs one core per process; each worker is a whole single-process
service (its own gRPC server on the shared port via SO_REUSEPORT, its own
secret refresh) and the kernel spreads connections across them. Workers
write their metrics to files (prometheus-client's multiprocess mode) and this
supervisor serves the sum on /metrics. SIGTERM or SIGINT is passed on to every
worker, each of which drains as a single process does.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import threading

from service.config import Config
from service.errors import ConfigError

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_EXIT_MARGIN_SECONDS = 5


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def reserve_port(address: str) -> int:
    """The port to share: the one in `address`, or a free one when it says 0."""
    host, port = _split(address)
    if port:
        return port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _shared(address: str) -> str:
    host, _ = _split(address)
    port = reserve_port(address)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _with_shared_ports(config: Config) -> Config:
    """The config with every gRPC listener on a fixed port, so that all workers share it."""
    tls = config.tls
    if tls is not None and tls.api_key_addr:
        tls = dataclasses.replace(tls, api_key_addr=_shared(tls.api_key_addr))
    return dataclasses.replace(
        config, grpc_addr=_shared(config.grpc_addr), tls=tls,
        health_addr=_shared(config.health_addr) if config.health_addr else None)


def _worker_main(config: Config, log_level: str) -> None:
    # Imported here: in a spawned worker, prometheus-client must load after
    # PROMETHEUS_MULTIPROC_DIR is set, which the environment already did.
    from service.logs import configure_logging
    from service.server import run

    configure_logging(log_level)
    run(config, serve_metrics=False)


def run_workers(config: Config, workers: int, log_level: str) -> int:
    """Run `workers` worker processes until SIGTERM/SIGINT; the exit code."""
    metrics_dir = tempfile.mkdtemp(prefix="tokenservice-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = metrics_dir
    try:
        return _supervise(config, workers, log_level, metrics_dir)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(config: Config, workers: int, log_level: str, metrics_dir: str) -> int:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

    worker_config = _with_shared_ports(config)
    port = _split(worker_config.grpc_addr)[1]
    registry = CollectorRegistry()
    MultiProcessCollector(registry, metrics_dir)
    metrics_host, metrics_port = _split(config.metrics_addr)
    try:
        http_server, _ = start_http_server(metrics_port, addr=metrics_host, registry=registry)
    except OSError as error:
        raise ConfigError(f"setting metrics_addr: cannot listen on {config.metrics_addr}: {error.strerror}") from None

    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signal_number, lambda *_: stop.set())
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(worker_config, log_level), name=f"tokenservice-worker-{n}")
                 for n in range(workers)]
    for process in processes:
        process.start()
    tls = worker_config.tls
    logger.info("listening", extra={"fields": {
        "grpc_port": port, "metrics_port": http_server.server_port, "workers": workers,
        "api_key_port": _split(tls.api_key_addr)[1] if tls and tls.api_key_addr else None,
        "health_port": _split(worker_config.health_addr)[1] if worker_config.health_addr else None,
        "orgs": sorted(config.orgs), "callers": sorted(config.auth.callers)}})

    while not stop.wait(0.2):
        if any(process.exitcode is not None for process in processes):
            logger.error("a worker exited on its own; stopping the others", extra={"fields": {
                "exit_codes": [process.exitcode for process in processes]}})
            break
    clean_stop = stop.is_set()
    logger.info("shutting down", extra={"fields": {"grace_seconds": config.shutdown_grace_seconds}})
    for process in processes:
        if process.exitcode is None:
            process.terminate()
    for process in processes:
        process.join(config.shutdown_grace_seconds + _EXIT_MARGIN_SECONDS)
        if process.exitcode is None:
            process.kill()
            process.join()
        mark_process_dead(process.pid, metrics_dir)
    http_server.shutdown()
    logger.info("stopped", extra={"fields": {"exit_codes": [process.exitcode for process in processes]}})
    return 0 if clean_stop and all(process.exitcode == 0 for process in processes) else 1
