"""The config.toml files the Kustomize base and overlays ship, made runnable on this machine.

Only what a cluster alone provides is replaced, each by a substitution that must
match exactly once (so a renamed or duplicated setting fails loudly):

- the files the pod mounts: the server certificate and key of the Secret
  tokenservice-tls (cert-manager) become a test server CA's (tests/certificates.py),
  issued for the Service's names as the Certificate of components/cert-manager
  is; the caller CA (tls.client_ca_file) becomes a second test CA's
  certificate, the one that issues the callers' certificates, unless the
  config reads it from the TLS Secret's directory, as the server's own CA;
  the audit fingerprint key (Secret tokenservice-audit) becomes a fresh random
  file;
- with a Vault: its address, the Kubernetes auth mount and the projected token
  file (the `vault_kubernetes_auth` fixture, set up by deploy/vault/setup.sh),
  and the default org's secret path;
- the listen addresses in the file (health_addr, tls.api_key_addr) become
  loopback ports the OS picks; grpc_addr and metrics_addr come through the
  environment, as ServiceProcess sets them.

Everything else (callers, policy, TLS and mTLS, the API key path, audit to
stdout, public_health) runs as written. `start` runs it as the pod does, and
the channel helpers call it as the example callers would.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import re
import secrets
import tomllib
import uuid
from pathlib import Path

import grpc
from tokenservice.v1 import token_service_pb2, token_service_pb2_grpc

from service.api_keys import hash_api_key, new_api_key
from tests.certificates import CertificateAuthority, Issued
from tests.support import ServiceProcess, new_secret

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def config_path(name: str) -> Path:
    """deploy/base/config.toml for "base", else the overlay's."""
    return DEPLOY / ("base" if name == "base" else f"overlays/{name}") / "config.toml"


def namespace_of(name: str) -> str:
    """The namespace an overlay deploys to (its namespace.yaml); "default" for the base."""
    namespace_file = DEPLOY / "overlays" / name / "namespace.yaml"
    if not namespace_file.exists():
        return "default"
    match = re.search(r"^kind: Namespace\nmetadata:\n  name: (\S+)$", namespace_file.read_text(), re.MULTILINE)
    assert match, f"{namespace_file}: a Namespace with its name"
    return match.group(1)


def substitute(text: str, pattern: str, replacement: str) -> str:
    result, count = re.subn(pattern, lambda _: replacement, text, flags=re.MULTILINE)
    assert count == 1, f"expected exactly one match of {pattern!r} in the shipped config"
    return result


@dataclasses.dataclass
class LocalFiles:
    """What the pod's Secret volumes would hold, made here."""

    ca: CertificateAuthority  # the server certificate's CA, which callers check the server with
    caller_ca: CertificateAuthority  # the CA of tls.client_ca_file, which issues the callers' certificates
    server: Issued
    server_name: str
    fingerprint_key: bytes
    fingerprint_key_file: Path

    def fingerprint(self, kind: str, value: str) -> str:
        """The audit fingerprint of an identity, computed independently of service/audit.py."""
        return hmac.new(self.fingerprint_key, f"{kind}\0{value}".encode(), hashlib.sha256).hexdigest()[:32]


def with_local_files(text: str, directory: Path, namespace: str) -> tuple[str, LocalFiles]:
    """The config text with the Secret-mounted files replaced by local ones (see the module docstring)."""
    config = tomllib.loads(text)
    assert config["tls"]["cert_file"].endswith("/tls.crt") and config["tls"]["key_file"].endswith("/tls.key")
    assert config["tls"]["client_ca_file"].endswith("/ca.crt")
    ca = CertificateAuthority(directory, name="cluster-ca")
    shares_the_server_secret = (
        config["tls"]["client_ca_file"].rpartition("/")[0] == config["tls"]["cert_file"].rpartition("/")[0]
    )
    caller_ca = ca if shares_the_server_secret else CertificateAuthority(directory, name="caller-ca")
    # As the Certificate of components/cert-manager names the Service.
    server = ca.issue(
        "tokenservice-tls",
        dns=(
            "tokenservice",
            f"tokenservice.{namespace}",
            f"tokenservice.{namespace}.svc",
            f"tokenservice.{namespace}.svc.cluster.local",
        ),
    )
    # As `head -c 32 /dev/urandom | base64` makes it (deploy/README.md), with its newline.
    fingerprint_key = secrets.token_urlsafe(32).encode()
    fingerprint_key_file = directory / "fingerprint-key"
    fingerprint_key_file.write_bytes(fingerprint_key + b"\n")
    text = substitute(text, r'^cert_file = ".*"$', f'cert_file = "{server.cert_file}"')
    text = substitute(text, r'^key_file = ".*"$', f'key_file = "{server.key_file}"')
    text = substitute(text, r'^client_ca_file = ".*"$', f'client_ca_file = "{caller_ca.cert_file}"')
    text = substitute(text, r'^fingerprint_key_file = ".*"$', f'fingerprint_key_file = "{fingerprint_key_file}"')
    return text, LocalFiles(
        ca, caller_ca, server, f"tokenservice.{namespace}.svc", fingerprint_key, fingerprint_key_file
    )


@dataclasses.dataclass
class Caller:
    name: str
    policy: dict


def example_callers(config: dict) -> tuple[Caller, Caller]:
    """The first caller with a certificate identity, and the first API-key caller."""
    callers = [Caller(name, policy) for name, policy in config.get("callers", {}).items()]
    by_certificate = [c for c in callers if c.policy.get("spiffe_id") or c.policy.get("dns_name")]
    by_key = [c for c in callers if not (c.policy.get("spiffe_id") or c.policy.get("dns_name"))]
    assert by_certificate and by_key, "the config has an example certificate caller and an example API-key caller"
    return by_certificate[0], by_key[0]


@dataclasses.dataclass
class LocalDeployment:
    """An overlay's config.toml ready to serve here, with what its callers need to call it."""

    overlay: str
    config_file: Path
    config: dict
    files: LocalFiles
    org: str
    secret: str
    certificate_caller: Caller
    client: Issued
    api_key_caller: Caller
    api_key: str

    def audit_records(self, log_text: str) -> list[dict]:
        """The audit records among the process's output lines (audit.output = "stdout" shares the
        log file with the JSON log records of stderr, which all have a "message")."""
        records = []
        for line in log_text.splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if "message" not in record and {"request_id", "caller", "status"} <= record.keys():
                    records.append(record)
        return records


def prepare(overlay: str, openbao, auth, directory: Path) -> LocalDeployment:
    """The overlay's config.toml against `openbao` with Kubernetes auth `auth`: a fresh secret for the
    default org, a fresh API key for the example API-key caller (its hash written to auth.api_keys_path,
    which the "tokenservice" policy reads), a client certificate for the example certificate caller."""
    text = config_path(overlay).read_text()
    config = tomllib.loads(text)
    org = config["default_org"]
    path = f"kustomer/shipped-{uuid.uuid4().hex[:8]}"
    openbao.write_secret(path, secret := new_secret())
    text = substitute(text, r'^addr = "https?://.*"$', f'addr = "{openbao.addr}"')
    text = substitute(text, r'^kubernetes_mount = ".*"$', f'kubernetes_mount = "{auth.mount}"')
    text = substitute(text, r'^kubernetes_token_file = ".*"$', f'kubernetes_token_file = "{auth.token_file}"')
    text = substitute(text, rf'^path = "{re.escape(config["orgs"][org]["path"])}"$', f'path = "{path}"')
    text = substitute(text, r'^health_addr = ".*"$', 'health_addr = "127.0.0.1:0"')
    text = substitute(text, r'^api_key_addr = ".*"$', 'api_key_addr = "127.0.0.1:0"')
    assert 'kubernetes_role = "tokenservice"' in text and auth.role == "tokenservice"
    text, files = with_local_files(text, directory, namespace_of(overlay))

    certificate_caller, api_key_caller = example_callers(config)
    policy = certificate_caller.policy
    client = files.caller_ca.issue(
        certificate_caller.name,
        uris=(policy["spiffe_id"],) if policy.get("spiffe_id") else (),
        dns=(policy["dns_name"],) if not policy.get("spiffe_id") else (),
    )
    api_key = new_api_key()
    openbao.client().secrets.kv.v2.create_or_update_secret(
        path=config["auth"]["api_keys_path"],
        secret={api_key_caller.name: hash_api_key(api_key)},
        mount_point=config["vault"]["kv_mount"],
    )

    config_file = directory / "config.toml"
    config_file.write_text(text)
    return LocalDeployment(
        overlay, config_file, config, files, org, secret, certificate_caller, client, api_key_caller, api_key
    )


# As in the pod: caller authentication on (no insecure flag), the audit trail on stdout.
POD_ENVIRONMENT = {"TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "", "TOKENSERVICE_AUDIT_OUTPUT": ""}


def start(deployment: LocalDeployment) -> ServiceProcess:
    return ServiceProcess.start(POD_ENVIRONMENT, ["--config", str(deployment.config_file)])


def mtls_channel(service: ServiceProcess, deployment: LocalDeployment, client=None) -> grpc.Channel:
    """A channel to grpc_addr as a caller inside the cluster: the Service's name, the cluster CA."""
    credentials = grpc.ssl_channel_credentials(
        deployment.files.ca.cert_pem, client.key_pem if client else None, client.cert_pem if client else None
    )
    return grpc.secure_channel(
        f"127.0.0.1:{service.listening['grpc_port']}",
        credentials,
        options=[("grpc.ssl_target_name_override", deployment.files.server_name)],
    )


def api_key_channel(service: ServiceProcess, deployment: LocalDeployment, key: str | None) -> grpc.Channel:
    """A channel to tls.api_key_addr: server-only TLS, the key as `authorization: Bearer`."""
    credentials = grpc.ssl_channel_credentials(deployment.files.ca.cert_pem)
    if key is not None:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(key))
    return grpc.secure_channel(
        f"127.0.0.1:{service.listening['api_key_port']}",
        credentials,
        options=[("grpc.ssl_target_name_override", deployment.files.server_name)],
    )


def mint(channel: grpc.Channel, request_id: str, **fields: str) -> token_service_pb2.MintTokenResponse:
    return token_service_pb2_grpc.TokenServiceStub(channel).MintToken(
        token_service_pb2.MintTokenRequest(**fields), metadata=(("x-request-id", request_id),), timeout=5
    )


CLAIMS = {"email": "email", "external_id": "externalId"}


def claimed(claims: dict, identity: dict[str, str]) -> dict[str, str]:
    """The request identity as the token's claims carry it."""
    return {kind: claims[CLAIMS[kind]] for kind in identity}


def identity_for(policy: dict) -> dict[str, str]:
    """A request identity the caller's policy allows (email when it may, else an external id)."""
    if "email" in policy.get("identities", ["email", "external_id"]):
        return {"email": "jane@example.com"}
    return {"external_id": "customer-4711"}
