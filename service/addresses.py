"""Listen addresses: the one parser, the claim that keeps a port to this service's own processes, and the
machine-readable announcement of the ports bound.

Who may bind a port the service uses (Linux's rules for TCP; both sockets are checked at bind() and again at
listen()): a socket conflicts with every socket already bound to the same port and an overlapping address
unless both set SO_REUSEPORT and belong to the same effective user, or both set SO_REUSEADDR and the one
already there is not listening.

- A single process binds its gRPC ports without SO_REUSEPORT (grpc sets it by default): nothing else can
  listen on them, whatever it sets.
- Workers must share their ports, so they bind with SO_REUSEPORT. Their supervisor first claims each port
  (PortClaim): it listens once without SO_REUSEPORT, which is refused if anything else listens on or holds
  the port, then stops listening but keeps the port bound with SO_REUSEPORT and without SO_REUSEADDR for
  as long as it runs. Its workers, of the same user and with SO_REUSEPORT, can bind; a second tokenservice
  (single process or supervisor) cannot, nor can any socket without SO_REUSEPORT or of another user, also
  while a worker is being replaced.
- Not prevented: a process of the SAME user that sets SO_REUSEPORT itself joins the workers' group and
  receives a share of the connections. The kernel offers no way to close a group; a process of that user
  could equally read this service's memory, so the boundary is the user: run the service as a user of its own.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from service.errors import ConfigError

if TYPE_CHECKING:
    from service.config import Config

logger = logging.getLogger(__name__)

EXAMPLES = "for example 127.0.0.1:50051, 0.0.0.0:50051 or [::1]:50051"
_PORT = re.compile(r"^[0-9]{1,5}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_BIND_ERRORS = {
    errno.EADDRINUSE: "in use by another process",
    errno.EACCES: "permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)",
    errno.EADDRNOTAVAIL: "no network interface of this machine has that address",
}


class AddressError(ValueError):
    """Raised when a listen address is not host:port or [IPv6]:port; the message says what is wrong."""


class Address(NamedTuple):
    """A host (a name or an IP address, IPv6 without brackets) and a port (0: any free one)."""

    host: str
    port: int

    @property
    def family(self) -> socket.AddressFamily:
        return socket.AF_INET6 if ":" in self.host else socket.AF_INET

    def with_port(self, port: int) -> Address:
        return Address(self.host, port)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    """`host:port` or `[IPv6]:port`, checked; AddressError says what is wrong and how to write it."""
    text = text.strip()
    if "://" in text:
        raise AddressError(f"a listen address has no scheme: write host:port, {EXAMPLES}")
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise AddressError(f"an IPv6 address is written [address]:port, {EXAMPLES}")
        _check_ip(host, ipaddress.IPv6Address, "an IPv6 address")
        port = rest[1:]
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise AddressError(f"the port is missing: write host:port, {EXAMPLES}")
        if ":" in host:
            raise AddressError(f"an IPv6 address goes in brackets, as in [{host}]:{port}")
        if not host:
            raise AddressError("the host is missing: 0.0.0.0 listens on every IPv4 interface, [::] on every one")
        if re.fullmatch(r"[0-9.]+", host):
            _check_ip(host, ipaddress.IPv4Address, "an IPv4 address")
        elif not _HOST_NAME.match(host):
            raise AddressError(f"{host!r} is neither an IP address nor a host name")
    if not _PORT.match(port) or int(port) > 65535:
        raise AddressError(f"the port must be a number from 0 to 65535 (0 takes any free port), not {port!r}")
    return Address(host, int(port))


def _check_ip(host: str, kind: type, what: str) -> None:
    try:
        kind(host)
    except ValueError:
        raise AddressError(f"{host!r} is not {what}") from None


def listen_refusal(setting: str, address: Address, error: OSError | None) -> ConfigError:
    """The refusal of a port that cannot be bound, naming the setting, the address and the reason."""
    if isinstance(error, socket.gaierror):
        reason = "the host name does not resolve"
    elif error is not None:
        known = None if error.errno is None else _BIND_ERRORS.get(error.errno)
        reason = known or error.strerror or str(error)
    else:
        reason = "it cannot be bound"
    return ConfigError(f"setting {setting}: cannot listen on {address}: {reason}")


def explain_listen_failure(setting: str, address: str) -> ConfigError:
    """Why grpc could not bind `address` (it gives no reason): found by trying to listen there ourselves."""
    parsed = parse_address(address)
    try:
        with socket.socket(parsed.family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((parsed.host, parsed.port))
            probe.listen()
    except OSError as error:
        return listen_refusal(setting, parsed, error)
    return listen_refusal(setting, parsed, None)


class PortClaim:
    """Holds a TCP port for as long as the supervisor runs, so that only its own workers can bind it.

    See the module docstring for what this prevents and what it does not.
    """

    def __init__(self, setting: str, address: str) -> None:
        parsed = parse_address(address)
        port = parsed.port or _free_port(parsed)
        self.address = parsed.with_port(port)
        self._socket = socket.socket(parsed.family, socket.SOCK_STREAM)
        try:
            # SO_REUSEADDR lets the check pass over TIME_WAIT connections of a previous run; listen() is
            # the check itself: it is refused while any socket but those in TIME_WAIT holds the port.
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._socket.bind((parsed.host, port))
            self._socket.listen()
            # Stops listening (connections go to the workers only) and keeps the port, bound explicitly.
            self._socket.shutdown(socket.SHUT_RD)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
            self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError as error:
            self._socket.close()
            raise listen_refusal(setting, self.address, error) from None

    def close(self) -> None:
        self._socket.close()


def _free_port(address: Address) -> int:
    # A port bound as 0 is given back when its socket stops listening, so the claim binds an explicit one.
    try:
        with socket.socket(address.family, socket.SOCK_STREAM) as probe:
            probe.bind((address.host, 0))
            port: int = probe.getsockname()[1]
            return port
    except OSError:
        return 0  # the claim's own bind then fails and says why


def listening_fields(
    config: Config, *, grpc_port: int, metrics_port: int | None, api_key_port: int | None, health_port: int | None
) -> dict[str, Any]:
    """What a process listening for the service announces: its pid, the ports bound, and what they serve."""
    tls = config.tls
    return {
        "pid": os.getpid(),
        "grpc_port": grpc_port,
        "metrics_port": metrics_port or None,
        "api_key_port": api_key_port or None,
        "health_port": health_port or None,
        "orgs": sorted(config.orgs),
        "tls": "mtls" if tls and tls.client_ca_file else "tls" if tls else "off",
        "callers": sorted(config.auth.callers),
    }


def announce(message: str, fields: Mapping[str, Any], ports_file: str | None) -> None:
    """Log the bound ports for people and, when asked, write them to `ports_file` for programs.

    The file appears whole (written beside it, then renamed) and only once every port is bound.
    """
    logger.info(message, extra={"fields": dict(fields)})
    if ports_file:
        try:
            _write_atomically(Path(ports_file), json.dumps(dict(fields)))
        except OSError as error:
            raise ConfigError(f"setting ports_file: cannot write {ports_file}: {error.strerror}") from None


def _write_atomically(path: Path, text: str) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as temporary:
        temporary.write(text + "\n")
    os.replace(temporary.name, path)


def read_ports_file(path: str | Path, pid: int | None = None) -> dict[str, Any] | None:
    """The announcement in `path`; None while there is none (or, with `pid`, none by that process)."""
    try:
        fields = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return fields if pid is None or fields.get("pid") == pid else None


def withdraw(ports_file: str | None) -> None:
    """Remove this process's announcement, so that no program reads ports that nothing listens on any more."""
    if ports_file and read_ports_file(ports_file, os.getpid()) is not None:
        Path(ports_file).unlink(missing_ok=True)
