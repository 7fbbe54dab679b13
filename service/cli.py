"""The `tokenservice` command: serve, dev, mint, verify, secret sync, api-key new, fingerprint."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import grpc
from tokenservice.client import TLSFileError, create_channel, error_reason
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.addresses import parse_address, read_ports_file
from service.api_keys import hash_api_key, new_api_key
from service.audit import AuditLog, load_fingerprint_key
from service.config import (
    CALLER_NAME_PATTERN,
    DEFAULT_ORG_NAME,
    DEFAULT_SECRET_PATH,
    DEFAULT_TRANSIT_MOUNT,
    TRANSIT_KEY_PREFIX,
    Config,
    OrgConfig,
    load_config,
    require_caller_auth_decision,
)
from service.dev import OpenBaoDevServer, find_bao, stop_process
from service.errors import ConfigError, SecretRejectedError
from service.files import read_small_stream, read_small_text
from service.logs import configure_logging
from service.minting import Identity
from service.parent_death import tied_to_parent
from service.secret_sync import (
    SyncError,
    SyncResult,
    fetch_secret,
    kustomer_api_url,
    org_for_sync,
    read_api_key,
    sync_secret,
)
from service.secrets import SecretVersion, validate_secret
from service.server import run, warn_if_insecure
from service.transit_import import ImportResult, import_secret
from service.vault_auth import session_from_config
from service.workers import run_workers

DEFAULT_CLIENT_ADDR = "localhost:50051"
DEV_SECRET_BYTES = 64
DEV_REFRESH_SECONDS = 5
# The service's shutdown grace (10 s) and some margin.
DEV_STOP_TIMEOUT_SECONDS = 15
# `dev --transit`: the default org's Transit key, under the shipped policy's kustomer-* grant.
DEV_TRANSIT_KEY = f"{TRANSIT_KEY_PREFIX}{DEFAULT_ORG_NAME}"

# Credentials of `mint` and `verify`: the same environment variables as the client examples.
CLIENT_CREDENTIAL_FLAGS = (
    ("--ca-file", "TOKENSERVICE_CA_FILE", "PEM CA bundle that signed the server certificate; turns TLS on"),
    ("--cert-file", "TOKENSERVICE_CERT_FILE", "PEM client certificate, for mTLS"),
    ("--key-file", "TOKENSERVICE_KEY_FILE", "PEM key of the client certificate"),
    ("--tls-server-name", "TOKENSERVICE_TLS_SERVER_NAME", "name to check in the server certificate"),
    ("--api-key-file", "TOKENSERVICE_API_KEY_FILE", "file holding this caller's API key (or env TOKENSERVICE_API_KEY)"),
)

# Flags of `serve`, and the setting each overrides.
SERVE_FLAGS = {
    "grpc_addr": "grpc_addr",
    "metrics_addr": "metrics_addr",
    "default_org": "default_org",
    "refresh_interval": "refresh_interval_seconds",
    "workers": "workers",
    "vault_addr": "vault.addr",
    "kv_mount": "vault.kv_mount",
    "secret_path": "secret_path",
    "secret_field": "secret_field",
    "insecure_no_caller_auth": "auth.insecure_no_caller_auth",
    "ports_file": "ports_file",
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenservice", description="Mint Kustomer chat login tokens over gRPC, signed with a secret from Vault."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the service (production)")
    serve_cmd.add_argument(
        "--config", default=os.environ.get("TOKENSERVICE_CONFIG"), help="TOML config file (env TOKENSERVICE_CONFIG)"
    )
    serve_cmd.add_argument(
        "--grpc-addr", help="gRPC listen address (env TOKENSERVICE_GRPC_ADDR, default 0.0.0.0:50051)"
    )
    serve_cmd.add_argument(
        "--metrics-addr", help="/metrics listen address (env TOKENSERVICE_METRICS_ADDR, default 0.0.0.0:9090)"
    )
    serve_cmd.add_argument("--default-org", help="org used when a request names none")
    serve_cmd.add_argument("--refresh-interval", type=float, help="seconds between secret refreshes (default 30)")
    serve_cmd.add_argument("--vault-addr", help="Vault URL (env VAULT_ADDR)")
    serve_cmd.add_argument("--kv-mount", help="KV v2 mount (env TOKENSERVICE_KV_MOUNT, default secret)")
    serve_cmd.add_argument("--secret-path", help=f"KV path of the default org's secret (default {DEFAULT_SECRET_PATH})")
    serve_cmd.add_argument("--secret-field", help="key of the secret inside the KV entry (default secret)")
    serve_cmd.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the gRPC port (env TOKENSERVICE_WORKERS, default: one per core)",
    )
    serve_cmd.add_argument(
        "--insecure-no-caller-auth",
        action="store_const",
        const=True,
        default=None,
        help="serve without caller authentication: anyone who reaches the port can mint "
        "(env TOKENSERVICE_INSECURE_NO_CALLER_AUTH=1)",
    )
    serve_cmd.add_argument(
        "--ports-file",
        help="once listening, write the bound ports there as JSON, for programs (env TOKENSERVICE_PORTS_FILE)",
    )
    serve_cmd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    dev_cmd = commands.add_parser("dev", help="run the service against a throwaway OpenBao dev server")
    dev_cmd.add_argument(
        "--grpc-addr", default="127.0.0.1:50051", help="default 127.0.0.1:50051 (port 0: any free one)"
    )
    dev_cmd.add_argument("--metrics-addr", default="127.0.0.1:9090", help="default 127.0.0.1:9090")
    dev_cmd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    dev_cmd.add_argument(
        "--transit",
        action="store_true",
        help="sign through Vault Transit: the dev secret is imported into a Transit key and the "
        "service never holds it (docs/transit.md)",
    )

    secret_cmd = commands.add_parser("secret", help="manage the signing secret in Vault")
    secret_actions = secret_cmd.add_subparsers(dest="action", required=True)
    sync_cmd = secret_actions.add_parser(
        "sync",
        help="copy the org's chat secret from Kustomer's API into Vault (check-and-set, only if changed): "
        'its KV path, or for an org with signing = "transit" its Transit key',
    )
    sync_cmd.add_argument("--org", required=True, help="Kustomer org, as in https://ORG.kustomerapp.com")
    sync_cmd.add_argument(
        "--config",
        default=os.environ.get("TOKENSERVICE_CONFIG"),
        help="TOML config naming the org's Vault path (env TOKENSERVICE_CONFIG)",
    )
    sync_cmd.add_argument("--api-key-file", help="file holding the Kustomer API key (else env KUSTOMER_API_KEY)")
    sync_cmd.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    sync_cmd.add_argument("--timeout", type=float, default=10.0, help="Kustomer API timeout in seconds (default 10)")

    api_key_cmd = commands.add_parser("api-key", help="make an API key for a caller")
    api_key_actions = api_key_cmd.add_subparsers(dest="action", required=True)
    new_key_cmd = api_key_actions.add_parser(
        "new", help="print a new random key (hand it to the caller) and its hash (store that in Vault)"
    )
    new_key_cmd.add_argument("--caller", required=True, help="the [callers.<name>] the key is for")

    fingerprint_cmd = commands.add_parser(
        "fingerprint", help="print the audit fingerprint of a customer identity, to search the audit trail"
    )
    _add_identity_flags(fingerprint_cmd, exactly_one=True)
    fingerprint_cmd.add_argument(
        "--config",
        default=os.environ.get("TOKENSERVICE_CONFIG"),
        help="TOML config naming audit.fingerprint_key_file (env TOKENSERVICE_CONFIG)",
    )

    mint_cmd = commands.add_parser("mint", help="mint a token and print it")
    _add_identity_flags(mint_cmd, exactly_one=False)
    _add_client_flags(mint_cmd)

    verify_cmd = commands.add_parser("verify", help="check a token")
    verify_token = verify_cmd.add_mutually_exclusive_group()
    verify_token.add_argument(
        "token", nargs="?", help="'-' reads it from stdin (a token given here is visible to every local user)"
    )
    verify_token.add_argument("--token-file", help="file holding the token")
    _add_client_flags(verify_cmd)
    return parser


def _add_identity_flags(command: argparse.ArgumentParser, *, exactly_one: bool) -> None:
    """--email / --external-id, '-' reading stdin, and their -file twins: identities need not be in argv."""
    shared = command.add_mutually_exclusive_group(required=True) if exactly_one else None
    for kind in (identity.value for identity in Identity):
        group = shared or command.add_mutually_exclusive_group()
        flag = kind.replace("_", "-")
        group.add_argument(
            f"--{flag}",
            help=f"the {kind.replace('_', ' ')}; '-' reads it from stdin (given here "
            "it is visible to every local user)",
        )
        group.add_argument(f"--{flag}-file", help=f"file holding the {kind.replace('_', ' ')}")


def _add_client_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--org", default="", help="Kustomer org (default: the server's default org)")
    command.add_argument(
        "--addr",
        default=os.environ.get("TOKENSERVICE_ADDR", DEFAULT_CLIENT_ADDR),
        help=f"server address (env TOKENSERVICE_ADDR, default {DEFAULT_CLIENT_ADDR})",
    )
    command.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default 5)")
    for flag, variable, what in CLIENT_CREDENTIAL_FLAGS:
        command.add_argument(flag, default=os.environ.get(variable), help=f"{what} (env {variable})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {
            "serve": _serve,
            "dev": _dev,
            "mint": _mint,
            "verify": _verify,
            "secret": _secret_sync,
            "api-key": _new_api_key,
            "fingerprint": _fingerprint,
        }[args.command](args)
    except ConfigError as error:
        print(f"tokenservice: configuration refused: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    overrides = {setting: getattr(args, flag) for flag, setting in SERVE_FLAGS.items()}
    config = load_config(args.config, os.environ, overrides)
    require_caller_auth_decision(config)
    configure_logging(args.log_level)
    warn_if_insecure(config)
    if config.workers > 1:
        return run_workers(config, config.workers, args.log_level)
    run(config)
    return 0


def _dev(args: argparse.Namespace) -> int:
    configure_logging(args.log_level)
    stop = threading.Event()
    for signal_number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signal_number, lambda *_: stop.set())
    # mkdtemp makes it 0700; it holds the root token and goes when dev stops.
    with tempfile.TemporaryDirectory(prefix="tokenservice-dev-") as directory, OpenBaoDevServer() as vault:
        files = _DevFiles(Path(directory))
        _write_private(files.root_token, vault.root_token + "\n")
        secret = secrets.token_urlsafe(DEV_SECRET_BYTES)[:DEV_SECRET_BYTES]
        version = _import_dev_secret(vault, secret) if args.transit else vault.write_secret(DEFAULT_SECRET_PATH, secret)
        _write_private(files.config, _dev_config(vault, files, transit=args.transit))
        service = _start_dev_service(args, files)
        try:
            ports = _wait_for_announcement(files.ports, service, stop)
            if ports is not None:
                print(_dev_banner(args, ports, vault, files, version), file=sys.stderr, flush=True)
                while service.poll() is None and not stop.wait(0.2):
                    pass
        finally:
            stop_process(service, timeout=DEV_STOP_TIMEOUT_SECONDS)
    return service.returncode if service.returncode >= 0 else 1


@dataclasses.dataclass(frozen=True)
class _DevFiles:
    directory: Path

    @property
    def root_token(self) -> Path:
        return self.directory / "root-token"

    @property
    def config(self) -> Path:
        return self.directory / "tokenservice.toml"

    @property
    def ports(self) -> Path:
        return self.directory / "ports.json"


def _write_private(path: Path, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as opened:
        opened.write(text)


def _import_dev_secret(vault: OpenBaoDevServer, secret: str) -> int:
    """Enable Transit on the dev server and import `secret` as the default org's key; its version."""
    client = vault.client()
    client.sys.enable_secrets_engine("transit", path=DEFAULT_TRANSIT_MOUNT)
    result = import_secret(
        client, DEFAULT_TRANSIT_MOUNT, DEV_TRANSIT_KEY, secret.encode(), org=DEFAULT_ORG_NAME, dry_run=False
    )
    return result.new_version or result.current_version


def _dev_config(vault: OpenBaoDevServer, files: _DevFiles, *, transit: bool) -> str:
    # The service reads the root token from its file: neither its command line nor its environment holds it.
    signing = [f"[orgs.{DEFAULT_ORG_NAME}]", 'signing = "transit"'] if transit else []
    return "\n".join(
        [
            f"refresh_interval_seconds = {DEV_REFRESH_SECONDS}",
            "[vault]",
            f"addr = {json.dumps(vault.addr)}",
            f"token_file = {json.dumps(str(files.root_token))}",
            "[auth]",
            "insecure_no_caller_auth = true",
            *signing,
            "",
        ]
    )


def _start_dev_service(args: argparse.Namespace, files: _DevFiles) -> subprocess.Popen[bytes]:
    """`tokenservice serve` as production runs it, on this dev config; it dies with dev, even by SIGKILL."""
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith(("VAULT_", "BAO_", "TOKENSERVICE_"))
    }
    # -P: the package installed beside this Python, never a service/ directory where dev happens to run.
    return subprocess.Popen(
        tied_to_parent(
            [
                sys.executable,
                "-P",
                "-m",
                "service.cli",
                "serve",
                "--config",
                str(files.config),
                "--grpc-addr",
                args.grpc_addr,
                "--metrics-addr",
                args.metrics_addr,
                "--workers",
                "1",
                "--ports-file",
                str(files.ports),
                "--log-level",
                args.log_level,
            ]
        ),
        env=environment,
        stdin=subprocess.DEVNULL,
    )


def _tokenservice_command() -> str:
    """How to run this command again: by its path when it is in a virtualenv that is not on PATH."""
    beside_python = Path(sys.executable).parent / "tokenservice"
    return str(beside_python) if beside_python.exists() and not shutil.which("tokenservice") else "tokenservice"


def _wait_for_announcement(
    ports_file: Path, service: subprocess.Popen[bytes], stop: threading.Event
) -> dict[str, Any] | None:
    """The service's announcement of its ports; None if it exits (it says why) or Ctrl-C comes first."""
    while service.poll() is None and not stop.is_set():
        ports = read_ports_file(ports_file, service.pid)
        if ports is not None:
            return ports
        stop.wait(0.05)
    return None


def _dev_banner(
    args: argparse.Namespace, ports: dict[str, Any], vault: OpenBaoDevServer, files: _DevFiles, version: int
) -> str:
    grpc_addr = parse_address(args.grpc_addr).with_port(ports["grpc_port"])
    metrics_addr = parse_address(args.metrics_addr).with_port(ports["metrics_port"])
    held = (
        f"Transit key {DEFAULT_TRANSIT_MOUNT}/keys/{DEV_TRANSIT_KEY} version {version} (the service never holds "
        "the secret)"
        if args.transit
        else f"secret at secret/{DEFAULT_SECRET_PATH} version {version}"
    )
    return "\n".join(
        [
            "tokenservice dev: a throwaway OpenBao dev server holds a random 64-byte secret; NOT for production.",
            "  !! CALLER AUTHENTICATION IS OFF: anyone who can reach the port can mint tokens. Production needs",
            "  !! [callers.<name>] in the config (docs/callers.md); `serve` refuses to start without them.",
            f"  gRPC:     {grpc_addr}   (health, reflection, tokenservice.v1.TokenService)",
            f"  metrics:  http://{metrics_addr}/metrics",
            f"  Vault:    {vault.addr}   {held}",
            f"            root token in {files.root_token} (mode 0600; removed when dev stops)",
            f"  ports:    {files.ports}   (the bound ports as JSON, for scripts)",
            "Mint a token (real identities: '--email -' reads stdin, so they stay out of the shell history and ps):",
            f"  {_tokenservice_command()} mint --addr {grpc_addr} --email someone@example.com",
            *(_dev_transit_rotation(vault, files) if args.transit else _dev_kv_rotation(vault, files)),
            "Ctrl-C stops the service and the dev server.",
        ]
    )


def _dev_kv_rotation(vault: OpenBaoDevServer, files: _DevFiles) -> list[str]:
    # The token reaches bao through its environment, the secret through the pipe: neither is in an argv.
    return [
        "Rotate the secret (picked up within 5 s, no restart):",
        f"  head -c 48 /dev/urandom | base64 | tr -d '/+=\\n' | BAO_ADDR={vault.addr} "
        f'BAO_TOKEN="$(cat {files.root_token})" {find_bao()} kv put -mount=secret {DEFAULT_SECRET_PATH} secret=-',
    ]


def _dev_transit_rotation(vault: OpenBaoDevServer, files: _DevFiles) -> list[str]:
    # As for KV: the token in bao's environment, the secret (base64, as bao wants it) through the pipe.
    return [
        "Rotate the secret: from a Kustomer org, `tokenservice secret sync --org default --config "
        f"{files.config}` (with KUSTOMER_API_KEY, and KUSTOMER_API_URL for a stand-in); here, a random one",
        "(new tokens are signed with the new version at once, VerifyToken follows within 5 s, no restart):",
        f"  head -c 48 /dev/urandom | base64 | tr -d '/+=\\n' | base64 -w0 | BAO_ADDR={vault.addr} "
        f'BAO_TOKEN="$(cat {files.root_token})" {find_bao()} transit import-version '
        f"{DEFAULT_TRANSIT_MOUNT}/keys/{DEV_TRANSIT_KEY} @/dev/stdin",
    ]


def _secret_sync(args: argparse.Namespace) -> int:
    # Where the API key will go is settled first: the org name becomes part of a host name.
    api_url = kustomer_api_url(args.org, os.environ.get("KUSTOMER_API_URL"))
    config = load_config(args.config, os.environ)
    org = org_for_sync(config, args.org)
    api_key = read_api_key(args.api_key_file, os.environ)
    result: SyncResult | ImportResult
    try:
        secret = fetch_secret(args.org, api_key, api_url, timeout=args.timeout)
        if org.transit:
            result = _import_into_transit(config, org, secret, dry_run=args.dry_run)
        else:
            result = sync_secret(
                session_from_config(config.vault),
                config.vault.kv_mount,
                org,
                secret,
                min_secret_bytes=config.min_secret_bytes,
                dry_run=args.dry_run,
            )
    except SyncError as error:
        print(f"tokenservice secret sync: {error}", file=sys.stderr)
        return 1
    print(result.describe())
    return 0


def _import_into_transit(config: Config, org: OrgConfig, secret: str, *, dry_run: bool) -> ImportResult:
    """Kustomer's secret, checked as the service checks a KV secret, into the org's Transit key."""
    try:
        validate_secret(SecretVersion(secret, 0), config.min_secret_bytes)
    except SecretRejectedError as error:
        raise SyncError(f"Kustomer's secret would be refused by the service ({error}); nothing imported") from None
    return import_secret(
        session_from_config(config.vault),
        org.transit_mount,
        org.transit_key,
        secret.encode(),
        org=org.name,
        dry_run=dry_run,
    )


def _new_api_key(args: argparse.Namespace) -> int:
    if not CALLER_NAME_PATTERN.fullmatch(args.caller):
        raise ConfigError("--caller: caller names are lower-case letters, digits and '-'")
    key = new_api_key()
    print(f"key (give it to {args.caller}; it is shown once and not stored anywhere): {key}")
    print(f"hash (add it to the caller's field in Vault):  {args.caller}={hash_api_key(key)}")
    return 0


def _fingerprint(args: argparse.Namespace) -> int:
    config = load_config(args.config, os.environ)
    if config.audit.fingerprint_key_file is None:
        raise ConfigError("setting audit.fingerprint_key_file: needed to compute fingerprints; pass --config")
    audit = AuditLog(None, load_fingerprint_key(config.audit, caller_auth=True))
    kind, value = next((kind, value) for kind, value in _identities(args).items() if value)
    print(f"{kind}_fingerprint {audit.fingerprint(kind, value)}")
    return 0


def _identities(args: argparse.Namespace) -> dict[str, str]:
    """The email and external id of the flags, from argv, stdin ('-') or a file ('' when not given)."""
    if [getattr(args, identity.value) for identity in Identity].count("-") > 1:
        raise ConfigError(
            "--email and --external-id: only one of them can read stdin ('-'); give the other "
            "with --email-file or --external-id-file"
        )
    return {
        kind: _flag_value(f"--{kind.replace('_', '-')}", getattr(args, kind), getattr(args, f"{kind}_file"))
        for kind in (identity.value for identity in Identity)
    }


def _flag_value(flag: str, value: str | None, path: str | None) -> str:
    """A flag's value as given, from stdin when it is '-', or from the file of its -file twin."""
    if path is not None:
        text, where = _read_file(f"{flag}-file", path), f"{flag}-file {path}"
    elif value == "-":
        text, where = _read_stdin(flag), flag
    else:
        return value or ""
    if not text.strip():
        raise ConfigError(f"{where}: empty; expected one value (a trailing newline is fine)")
    return text.strip()


def _read_file(flag: str, path: str) -> str:
    try:
        return read_small_text(path)
    except OSError as error:
        raise ConfigError(f"{flag} {path}: cannot read ({error.strerror})") from None


def _read_stdin(flag: str) -> str:
    try:
        return read_small_stream(sys.stdin.buffer)
    except OSError as error:
        raise ConfigError(f"{flag} -: cannot read stdin ({error.strerror})") from None


def _mint(args: argparse.Namespace) -> int:
    request = pb.MintTokenRequest(**_identities(args), org=args.org)
    response = _call(args, lambda stub: stub.MintToken(request, timeout=args.timeout))
    if response is None:
        return 1
    print(response.token)
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.token is None and args.token_file is None:
        raise ConfigError("verify: give the token with --token-file PATH or as '-' to read it from stdin")
    token = _flag_value("--token", args.token, args.token_file)
    response = _call(
        args, lambda stub: stub.VerifyToken(pb.VerifyTokenRequest(token=token, org=args.org), timeout=args.timeout)
    )
    if response is None:
        return 1
    if response.valid:
        identity = "email" if response.identity_used == Identity.EMAIL.proto else "externalId"
        print(
            f"valid: Kustomer will use the {identity}; issued {response.issued_at.ToJsonString()}, "
            f"valid until {response.valid_until.ToJsonString()}"
        )
        return 0
    print(f"invalid: {response.reason}: {response.detail}")
    return 1


_Response = TypeVar("_Response")


def _call(args: argparse.Namespace, rpc: Callable[[pb_grpc.TokenServiceStub], _Response]) -> _Response | None:
    with _channel(args) as channel:
        try:
            return rpc(pb_grpc.TokenServiceStub(channel))
        except grpc.RpcError as error:
            print(f"tokenservice: {_describe(error)}", file=sys.stderr)
            return None


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel built by the Python client package from the TLS and key flags; refusals name the flag."""
    try:
        return create_channel(
            args.addr,
            ca_file=args.ca_file or None,
            cert_file=args.cert_file or None,
            key_file=args.key_file or None,
            server_name=args.tls_server_name or None,
            api_key=_api_key(args),
            default_timeout=args.timeout,
        )
    except TLSFileError as error:
        raise ConfigError(f"--{error.option.replace('_', '-')} {error.path}: {error.problem}") from None
    except ValueError as error:
        raise ConfigError(
            f"{error}; the flags are --ca-file, --cert-file, --key-file, --tls-server-name and "
            "--api-key-file (or their TOKENSERVICE_* variables)"
        ) from None


def _api_key(args: argparse.Namespace) -> str | None:
    if not args.api_key_file:
        return os.environ.get("TOKENSERVICE_API_KEY") or None
    try:
        return read_small_text(args.api_key_file).strip() or None
    except OSError as error:
        raise ConfigError(f"--api-key-file: cannot read {args.api_key_file}: {error.strerror}") from None


def _describe(error: grpc.RpcError) -> str:
    reason = error_reason(error)
    return f"{error.code().name}{f' [{reason}]' if reason else ''}: {error.details()}"


if __name__ == "__main__":  # `python -m service.cli`, as `tokenservice dev` starts the service
    sys.exit(main())
