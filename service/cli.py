"""The `tokenservice` command: serve, dev, mint, verify, secret sync, api-key new, fingerprint."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

import grpc
from tokenservice.client import TLSFileError, create_channel, error_reason
from tokenservice.v1 import token_service_pb2 as pb
from tokenservice.v1 import token_service_pb2_grpc as pb_grpc

from service.api_keys import hash_api_key, new_api_key
from service.audit import AuditLog, load_fingerprint_key
from service.config import (
    CALLER_NAME_PATTERN,
    DEFAULT_SECRET_PATH,
    Config,
    load_config,
    require_caller_auth_decision,
)
from service.dev import OpenBaoDevServer, find_bao
from service.errors import ConfigError
from service.logs import configure_logging
from service.secret_sync import SyncError, fetch_secret, org_for_sync, read_api_key, sync_secret
from service.server import run, warn_if_insecure
from service.vault_auth import session_from_config
from service.workers import run_workers

DEFAULT_CLIENT_ADDR = "localhost:50051"
DEV_SECRET_BYTES = 64

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
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokenservice", description="Mint Kustomer chat login tokens over gRPC, signed with a secret from Vault.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the service (production)")
    serve_cmd.add_argument("--config", default=os.environ.get("TOKENSERVICE_CONFIG"),
                           help="TOML config file (env TOKENSERVICE_CONFIG)")
    serve_cmd.add_argument("--grpc-addr", help="gRPC listen address (env TOKENSERVICE_GRPC_ADDR, default 0.0.0.0:50051)")
    serve_cmd.add_argument("--metrics-addr",
                           help="/metrics listen address (env TOKENSERVICE_METRICS_ADDR, default 0.0.0.0:9090)")
    serve_cmd.add_argument("--default-org", help="org used when a request names none")
    serve_cmd.add_argument("--refresh-interval", type=float, help="seconds between secret refreshes (default 30)")
    serve_cmd.add_argument("--vault-addr", help="Vault URL (env VAULT_ADDR)")
    serve_cmd.add_argument("--kv-mount", help="KV v2 mount (env TOKENSERVICE_KV_MOUNT, default secret)")
    serve_cmd.add_argument("--secret-path", help=f"KV path of the default org's secret (default {DEFAULT_SECRET_PATH})")
    serve_cmd.add_argument("--secret-field", help="key of the secret inside the KV entry (default secret)")
    serve_cmd.add_argument("--workers", type=int,
                           help="worker processes sharing the gRPC port (env TOKENSERVICE_WORKERS, default: one per core)")
    serve_cmd.add_argument("--insecure-no-caller-auth", action="store_const", const=True, default=None,
                           help="serve without caller authentication: anyone who reaches the port can mint "
                                "(env TOKENSERVICE_INSECURE_NO_CALLER_AUTH=1)")
    serve_cmd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    dev_cmd = commands.add_parser("dev", help="run the service against a throwaway OpenBao dev server")
    dev_cmd.add_argument("--grpc-addr", default="127.0.0.1:50051")
    dev_cmd.add_argument("--metrics-addr", default="127.0.0.1:9090")
    dev_cmd.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    secret_cmd = commands.add_parser("secret", help="manage the signing secret in Vault")
    secret_actions = secret_cmd.add_subparsers(dest="action", required=True)
    sync_cmd = secret_actions.add_parser(
        "sync", help="copy the org's chat secret from Kustomer's API into Vault (check-and-set, only if changed)")
    sync_cmd.add_argument("--org", required=True, help="Kustomer org, as in https://ORG.kustomerapp.com")
    sync_cmd.add_argument("--config", default=os.environ.get("TOKENSERVICE_CONFIG"),
                          help="TOML config naming the org's Vault path (env TOKENSERVICE_CONFIG)")
    sync_cmd.add_argument("--api-key-file", help="file holding the Kustomer API key (else env KUSTOMER_API_KEY)")
    sync_cmd.add_argument("--dry-run", action="store_true", help="say what would change; write nothing")
    sync_cmd.add_argument("--timeout", type=float, default=10.0, help="Kustomer API timeout in seconds (default 10)")

    api_key_cmd = commands.add_parser("api-key", help="make an API key for a caller")
    api_key_actions = api_key_cmd.add_subparsers(dest="action", required=True)
    new_key_cmd = api_key_actions.add_parser(
        "new", help="print a new random key (hand it to the caller) and its hash (store that in Vault)")
    new_key_cmd.add_argument("--caller", required=True, help="the [callers.<name>] the key is for")

    fingerprint_cmd = commands.add_parser(
        "fingerprint", help="print the audit fingerprint of a customer identity, to search the audit trail")
    fingerprint_identity = fingerprint_cmd.add_mutually_exclusive_group(required=True)
    fingerprint_identity.add_argument("--email")
    fingerprint_identity.add_argument("--external-id")
    fingerprint_cmd.add_argument("--config", default=os.environ.get("TOKENSERVICE_CONFIG"),
                                 help="TOML config naming audit.fingerprint_key_file (env TOKENSERVICE_CONFIG)")

    mint_cmd = commands.add_parser("mint", help="mint a token and print it")
    mint_cmd.add_argument("--email", default="")
    mint_cmd.add_argument("--external-id", default="")
    _add_client_flags(mint_cmd)

    verify_cmd = commands.add_parser("verify", help="check a token ('-' reads it from stdin)")
    verify_cmd.add_argument("token")
    _add_client_flags(verify_cmd)
    return parser


def _add_client_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument("--org", default="", help="Kustomer org (default: the server's default org)")
    command.add_argument("--addr", default=os.environ.get("TOKENSERVICE_ADDR", DEFAULT_CLIENT_ADDR),
                         help=f"server address (env TOKENSERVICE_ADDR, default {DEFAULT_CLIENT_ADDR})")
    command.add_argument("--timeout", type=float, default=5.0, help="deadline in seconds (default 5)")
    for flag, variable, what in CLIENT_CREDENTIAL_FLAGS:
        command.add_argument(flag, default=os.environ.get(variable), help=f"{what} (env {variable})")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"serve": _serve, "dev": _dev, "mint": _mint, "verify": _verify, "secret": _secret_sync,
                "api-key": _new_api_key, "fingerprint": _fingerprint}[args.command](args)
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
    with OpenBaoDevServer() as vault:
        version = vault.write_secret(DEFAULT_SECRET_PATH, secrets.token_urlsafe(DEV_SECRET_BYTES)[:DEV_SECRET_BYTES])
        config = load_config(None, {}, {
            "vault.addr": vault.addr, "vault.token": vault.root_token,
            "grpc_addr": args.grpc_addr, "metrics_addr": args.metrics_addr, "refresh_interval_seconds": 5,
            "auth.insecure_no_caller_auth": True,
        })
        print(_dev_banner(config, vault, version), file=sys.stderr, flush=True)
        run(config)
    return 0


def _dev_banner(config: Config, vault: OpenBaoDevServer, version: int) -> str:
    env = f"VAULT_ADDR={vault.addr} VAULT_TOKEN={vault.root_token}"
    return "\n".join([
        "tokenservice dev: a throwaway OpenBao dev server holds a random 64-byte secret; NOT for production.",
        "  !! CALLER AUTHENTICATION IS OFF: anyone who can reach the port can mint tokens. Production needs",
        "  !! [callers.<name>] in the config (README, \"Callers\"); `serve` refuses to start without them.",
        f"  gRPC:     {config.grpc_addr}   (health, reflection, tokenservice.v1.TokenService)",
        f"  metrics:  http://{config.metrics_addr}/metrics",
        f"  Vault:    {vault.addr} (dev root token {vault.root_token}), secret at secret/{DEFAULT_SECRET_PATH} "
        f"version {version}",
        "Mint a token:",
        f"  tokenservice mint --addr {config.grpc_addr} --email someone@example.com",
        "Rotate the secret (picked up within 5 s, no restart):",
        f"  {env} {find_bao()} kv put secret/{DEFAULT_SECRET_PATH} secret=$(head -c 48 /dev/urandom | base64 | tr -d '/+=')",
        "Ctrl-C stops the service and the dev server.",
    ])


def _secret_sync(args: argparse.Namespace) -> int:
    config = load_config(args.config, os.environ)
    org = org_for_sync(config, args.org)
    api_key = read_api_key(args.api_key_file, os.environ)
    try:
        secret = fetch_secret(args.org, api_key, os.environ.get("KUSTOMER_API_URL"), timeout=args.timeout)
        result = sync_secret(session_from_config(config.vault), config.vault.kv_mount, org, secret,
                             min_secret_bytes=config.min_secret_bytes, dry_run=args.dry_run)
    except SyncError as error:
        print(f"tokenservice secret sync: {error}", file=sys.stderr)
        return 1
    print(result.describe())
    return 0


def _new_api_key(args: argparse.Namespace) -> int:
    if not CALLER_NAME_PATTERN.match(args.caller):
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
    kind, value = ("email", args.email) if args.email is not None else ("external_id", args.external_id)
    print(f"{kind}_fingerprint {audit.fingerprint(kind, value)}")
    return 0


def _mint(args: argparse.Namespace) -> int:
    request = pb.MintTokenRequest(email=args.email, external_id=args.external_id, org=args.org)
    response = _call(args, lambda stub: stub.MintToken(request, timeout=args.timeout))
    if response is None:
        return 1
    print(response.token)
    return 0


def _verify(args: argparse.Namespace) -> int:
    token = sys.stdin.read().strip() if args.token == "-" else args.token
    response = _call(args, lambda stub: stub.VerifyToken(pb.VerifyTokenRequest(token=token, org=args.org),
                                                         timeout=args.timeout))
    if response is None:
        return 1
    if response.valid:
        identity = "email" if response.identity_used == pb.IDENTITY_EMAIL else "externalId"
        print(f"valid: Kustomer will use the {identity}; issued {response.issued_at.ToJsonString()}, "
              f"valid until {response.valid_until.ToJsonString()}")
        return 0
    print(f"invalid: {response.reason}: {response.detail}")
    return 1


def _call(args: argparse.Namespace, rpc):
    with _channel(args) as channel:
        try:
            return rpc(pb_grpc.TokenServiceStub(channel))
        except grpc.RpcError as error:
            print(f"tokenservice: {_describe(error)}", file=sys.stderr)
            return None


def _channel(args: argparse.Namespace) -> grpc.Channel:
    """A channel built by the Python client package from the TLS and key flags; refusals name the flag."""
    try:
        return create_channel(args.addr, ca_file=args.ca_file or None, cert_file=args.cert_file or None,
                              key_file=args.key_file or None, server_name=args.tls_server_name or None,
                              api_key=_api_key(args), default_timeout=args.timeout)
    except TLSFileError as error:
        raise ConfigError(f"--{error.option.replace('_', '-')} {error.path}: {error.problem}") from None
    except ValueError as error:
        raise ConfigError(f"{error}; the flags are --ca-file, --cert-file, --key-file, --tls-server-name and "
                          "--api-key-file (or their TOKENSERVICE_* variables)") from None


def _api_key(args: argparse.Namespace) -> str | None:
    if not args.api_key_file:
        return os.environ.get("TOKENSERVICE_API_KEY") or None
    try:
        with open(args.api_key_file) as key_file:
            return key_file.read().strip() or None
    except OSError as error:
        raise ConfigError(f"--api-key-file: cannot read {args.api_key_file}: {error.strerror}") from None


def _describe(error: grpc.RpcError) -> str:
    reason = error_reason(error)
    return f"{error.code().name}{f' [{reason}]' if reason else ''}: {error.details()}"
