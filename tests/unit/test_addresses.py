"""The one listen-address parser, the port claim of the worker supervisor, and the ports file."""

from __future__ import annotations

import errno
import json
import os
import socket
from concurrent import futures

import grpc
import pytest

from service.addresses import (
    Address,
    AddressError,
    PortClaim,
    announce,
    explain_listen_failure,
    parse_address,
    read_ports_file,
    withdraw,
)
from service.config import load_config
from service.errors import ConfigError
from service.workers import CRASH_LOOP_RESTARTS, CRASH_LOOP_WINDOW_SECONDS, RestartPolicy


@pytest.mark.parametrize(
    ("text", "host", "port", "formatted"),
    [
        ("127.0.0.1:50051", "127.0.0.1", 50051, "127.0.0.1:50051"),
        (" 0.0.0.0:65535 ", "0.0.0.0", 65535, "0.0.0.0:65535"),
        ("localhost:0", "localhost", 0, "localhost:0"),
        ("tokenservice.internal:443", "tokenservice.internal", 443, "tokenservice.internal:443"),
        ("[::1]:50051", "::1", 50051, "[::1]:50051"),
        ("[::]:9090", "::", 9090, "[::]:9090"),
        ("[fe80::1%eth0]:7", "fe80::1%eth0", 7, "[fe80::1%eth0]:7"),
    ],
)
def test_host_port_and_bracketed_ipv6_parse_and_format_back(text, host, port, formatted):
    address = parse_address(text)
    assert (address.host, address.port, str(address)) == (host, port, formatted)
    assert parse_address(str(address)) == address


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nowhere", "the port is missing"),
        ("::1:50051", "goes in brackets, as in [::1]:50051"),
        (":50051", "the host is missing"),
        ("host:65536", "from 0 to 65535"),
        ("host:http", "from 0 to 65535"),
        ("host:\u00b2", "from 0 to 65535"),
        ("host:", "from 0 to 65535"),
        ("[::1]50051", "[address]:port"),
        ("[not-v6]:1", "is not an IPv6 address"),
        ("999.1.1.1:1", "is not an IPv4 address"),
        ("a b:1", "neither an IP address nor a host name"),
        ("http://127.0.0.1:50051", "no scheme"),
    ],
)
def test_malformed_addresses_are_refused_saying_what_is_wrong(text, says):
    with pytest.raises(AddressError, match=None) as refused:
        parse_address(text)
    assert says in str(refused.value)


def test_config_refuses_an_address_naming_the_setting_and_the_fix():
    with pytest.raises(ConfigError) as refused:
        load_config(None, {"VAULT_TOKEN": "t"}, {"health_addr": "::1:8081"})
    message = str(refused.value)
    assert message.startswith("setting health_addr (from command line): must be host:port or [IPv6]:port")
    assert "[::1]:8081" in message
    assert load_config(None, {"VAULT_TOKEN": "t", "TOKENSERVICE_GRPC_ADDR": "[::1]:1"}).grpc_addr == "[::1]:1"


def listen(port: int, *, reuse_address: bool = False, reuse_port: bool = False) -> None:
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, int(reuse_address))
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, int(reuse_port))
        other.bind(("127.0.0.1", port))
        other.listen()


def grpc_bind(port: int, *, share: bool) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1), options=[("grpc.so_reuseport", int(share))])
    try:
        bound = server.add_insecure_port(f"127.0.0.1:{port}")
    except RuntimeError:
        return 0
    server.start()  # a grpc server that never started keeps its port bound until the process exits
    server.stop(None).wait()
    return bound


def test_a_claimed_port_takes_workers_only_and_no_connection_reaches_the_claim():
    claim = PortClaim("grpc_addr", "127.0.0.1:0")
    port = claim.address.port
    try:
        assert port != 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        for reuse_address in (False, True):
            with pytest.raises(OSError) as refused:
                listen(port, reuse_address=reuse_address)
            assert refused.value.errno == errno.EADDRINUSE
        with pytest.raises(
            ConfigError,
            match=rf"^setting grpc_addr: cannot listen on 127.0.0.1:{port}: in use by "
            "another process$",
        ):
            PortClaim("grpc_addr", f"127.0.0.1:{port}")
        assert grpc_bind(port, share=False) == 0
        assert grpc_bind(port, share=True) == port  # what a worker does
    finally:
        claim.close()
    listen(port, reuse_address=True)  # closing the claim gives the port back


def test_a_port_another_process_listens_on_cannot_be_claimed():
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(ConfigError, match=r"setting tls\.api_key_addr: cannot listen on .*: in use by another"):
            PortClaim("tls.api_key_addr", f"127.0.0.1:{other.getsockname()[1]}")


def test_time_wait_connections_of_a_previous_run_do_not_block_the_claim():
    with socket.socket() as previous:
        previous.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        previous.bind(("127.0.0.1", 0))
        previous.listen()
        port = previous.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = previous.accept()
        accepted.close()  # the server side closes first, so its end waits in TIME_WAIT
        client.close()
    with pytest.raises(OSError):  # the TIME_WAIT connection is there: a bind without SO_REUSEADDR fails
        listen(port)
    PortClaim("grpc_addr", f"127.0.0.1:{port}").close()


def test_a_failed_bind_is_explained():
    refusal = explain_listen_failure("grpc_addr", "192.0.2.1:50051")  # TEST-NET-1: on no interface here
    assert str(refusal) == (
        "setting grpc_addr: cannot listen on 192.0.2.1:50051: no network interface of this machine has that address"
    )


def test_the_ports_file_appears_whole_names_its_process_and_is_withdrawn(tmp_path):
    ports_file = tmp_path / "ports.json"
    fields = {"pid": os.getpid(), "grpc_port": 1234, "metrics_port": 5678}
    announce("listening", fields, str(ports_file))
    assert json.loads(ports_file.read_text()) == fields
    assert os.listdir(tmp_path) == ["ports.json"]  # no temporary file left beside it
    assert read_ports_file(ports_file, os.getpid()) == fields
    assert read_ports_file(ports_file, os.getpid() + 1) is None
    assert read_ports_file(tmp_path / "absent.json") is None
    withdraw(str(ports_file))
    assert not ports_file.exists()


def test_an_unwritable_ports_file_is_refused_naming_the_setting(tmp_path):
    with pytest.raises(ConfigError, match="setting ports_file: cannot write"):
        announce("listening", {"pid": 1}, str(tmp_path / "absent-directory" / "ports.json"))
    with pytest.raises(ConfigError, match=r"setting ports_file .*: must be a file in an existing directory"):
        load_config(None, {"VAULT_TOKEN": "t", "TOKENSERVICE_PORTS_FILE": str(tmp_path / "absent" / "p.json")})


def test_restarts_back_off_and_a_crash_loop_stops_them():
    now = [0.0]
    policy = RestartPolicy(clock=lambda: now[0])
    delays = []
    for _ in range(CRASH_LOOP_RESTARTS):
        delays.append(policy.delay_after_exit())
        now[0] += 1
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert policy.delay_after_exit() is None
    now[0] += CRASH_LOOP_WINDOW_SECONDS
    assert policy.delay_after_exit() == 0.5  # exits long ago no longer count


def test_address_is_a_value():
    assert Address("::1", 5).with_port(6) == Address("::1", 6) and Address("::1", 6).family == socket.AF_INET6
