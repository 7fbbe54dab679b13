"""TLS for the gRPC ports, with the certificate files re-read when they change.

cert-manager (or any rotation) replaces the files on disk; gRPC asks for the
certificate configuration at each new handshake, and the files are looked at
again at most once per `check_interval`. A changed set is checked (the key
must match the certificate) before it is used, so a half-written rotation
keeps the previous certificate instead of breaking new connections.
Established connections are never dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable

import grpc

from service.config import TlsConfig
from service.errors import ConfigError
from service.files import read_small_file
from service.metrics import Metrics

logger = logging.getLogger(__name__)

DEFAULT_CHECK_INTERVAL_SECONDS = 1.0


def _file_state(path: str) -> tuple[int, int, int]:
    # Kubernetes swaps a symlink to rotate mounted files, so stat follows it.
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _read(path: str) -> bytes:
    return read_small_file(path)


def certificate_fingerprint(chain_pem: bytes) -> str:
    """SHA-256 of the first certificate of a PEM chain, for logs."""
    first = chain_pem.decode("ascii", "replace").split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


class CertificateFiles:
    """The server certificate, key and client CA files of one port, and their reloading."""

    def __init__(
        self,
        tls: TlsConfig,
        metrics: Metrics,
        *,
        require_client_certificate: bool,
        port_name: str,
        check_interval: float = DEFAULT_CHECK_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if require_client_certificate and tls.client_ca_file is None:
            raise ConfigError(
                "setting tls.client_ca_file: client certificates are required, so set the CA file that issues them"
            )
        self._tls = tls
        self._client_ca_file = tls.client_ca_file if require_client_certificate else None
        self._metrics = metrics
        self._require_client_certificate = require_client_certificate
        self._port_name = port_name
        self._check_interval = check_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self._files_state()
        self._next_check = clock() + check_interval
        try:
            self._initial = self._load()
        except (OSError, ssl.SSLError, ValueError) as error:
            raise ConfigError(
                f"settings tls.cert_file/tls.key_file/tls.client_ca_file: cannot use them: {error}"
            ) from None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that pick up rotated files at new handshakes."""
        # The fetcher may return None to keep the current configuration (grpc's documentation); the stubs omit None.
        return grpc.dynamic_ssl_server_credentials(
            self._initial,
            self._fetch,  # type: ignore[arg-type]
            require_client_authentication=self._require_client_certificate,
        )

    def _paths(self) -> list[str]:
        paths = [self._tls.cert_file, self._tls.key_file]
        if self._client_ca_file is not None:
            paths.append(self._client_ca_file)
        return paths

    def _files_state(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(_file_state(path) for path in self._paths())

    def _load(self) -> grpc.ServerCertificateConfiguration:
        # The ssl module checks what gRPC would only find out at the next handshake: that the key fits the certificate.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self._tls.cert_file, self._tls.key_file)
        chain, key = _read(self._tls.cert_file), _read(self._tls.key_file)
        client_ca = None
        if self._client_ca_file is not None:
            client_ca = _read(self._client_ca_file)
            context.load_verify_locations(cadata=client_ca.decode("ascii"))
        logger.info(
            "TLS certificate loaded",
            extra={
                "fields": {
                    "port": self._port_name,
                    "sha256": certificate_fingerprint(chain),
                    "client_certificates": "required" if client_ca else "not requested",
                }
            },
        )
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=client_ca)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC before each handshake: a new configuration, or None to keep the current one."""
        now = self._clock()
        with self._lock:
            if now < self._next_check:
                return None
            self._next_check = now + self._check_interval
            try:
                state = self._files_state()
                if state == self._state:
                    return None
                configuration = self._load()
            except (OSError, ssl.SSLError, ValueError) as error:
                self._metrics.tls_reload_total.labels(result="error").inc()
                logger.error(
                    "TLS certificate files changed but cannot be used; keeping the current ones",
                    extra={"fields": {"port": self._port_name, "error": str(error)}},
                )
                return None
            self._state = state
            self._metrics.tls_reload_total.labels(result="ok").inc()
            return configuration
