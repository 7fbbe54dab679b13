"""A `tokenservice serve` configured as production would be: TLS on its ports,
mTLS on grpc_addr, API keys whose hashes are in OpenBao, one caller of each
kind, and an audit trail with its fingerprint key."""

from __future__ import annotations

import dataclasses
import secrets
import uuid
from pathlib import Path

from service.api_keys import hash_api_key, new_api_key
from service.dev import OpenBaoDevServer
from tests.certificates import CertificateAuthority, Issued
from tests.support import ServiceProcess

CERTIFICATE_CALLER_SPIFFE_ID = "spiffe://corp.example/ns/shop/sa/checkout"


@dataclasses.dataclass
class SecuredFiles:
    """Everything a caller and the test need to know of a secured service."""

    config_file: Path
    ca: CertificateAuthority
    client: Issued
    api_key: str
    secret: str
    secret_path: str
    fingerprint_key: bytes

    def client_env(self, service: ServiceProcess) -> dict[str, str]:
        """The client examples' environment for mTLS on grpc_addr with the checkout certificate."""
        return {"TOKENSERVICE_ADDR": service.grpc_target, "TOKENSERVICE_CA_FILE": str(self.ca.cert_file),
                "TOKENSERVICE_CERT_FILE": str(self.client.cert_file),
                "TOKENSERVICE_KEY_FILE": str(self.client.key_file)}

    def api_key_env(self, service: ServiceProcess) -> dict[str, str]:
        """The client examples' environment for server-only TLS on the API-key port, with a key."""
        return {"TOKENSERVICE_ADDR": f"127.0.0.1:{service.listening['api_key_port']}",
                "TOKENSERVICE_CA_FILE": str(self.ca.cert_file), "TOKENSERVICE_API_KEY": self.api_key}


def write_secured_config(openbao: OpenBaoDevServer, directory: Path, *, workers: int = 1,
                         rate_per_second: float = 100, settings: dict[str, str] | None = None,
                         extra_callers: str = "") -> SecuredFiles:
    """Certificates, a fingerprint key, a signing secret and an API key hash in OpenBao, and a config using them.

    `settings` adds lines to a section (e.g. {"auth": "public_health = false"}); `extra_callers` adds
    [callers.<name>] sections."""
    ca = CertificateAuthority(directory)
    server = ca.issue_server()
    client = ca.issue("checkout", uris=(CERTIFICATE_CALLER_SPIFFE_ID,))
    suffix = uuid.uuid4().hex[:8]
    secret_path, keys_path = f"kustomer/secured-{suffix}", f"tokenservice/api-keys-{suffix}"
    openbao.write_secret(secret_path, secrets.token_urlsafe(48))
    api_key = new_api_key()
    openbao.client().secrets.kv.v2.create_or_update_secret(path=keys_path, secret={"reports": hash_api_key(api_key)})
    fingerprint_key = secrets.token_urlsafe(32).encode()
    (directory / "fingerprint.key").write_bytes(fingerprint_key)
    config_file = directory / "config.toml"
    config_file.write_text(f"""
workers = {workers}
health_addr = "127.0.0.1:0"
default_org = "acme"

[orgs.acme]
path = "{secret_path}"

[tls]
cert_file = "{server.cert_file}"
key_file = "{server.key_file}"
client_ca_file = "{ca.cert_file}"
api_key_addr = "127.0.0.1:0"

[auth]
api_keys_path = "{keys_path}"

[audit]
fingerprint_key_file = "{directory / 'fingerprint.key'}"

[callers.checkout]
spiffe_id = "{CERTIFICATE_CALLER_SPIFFE_ID}"
orgs = ["acme"]
identities = ["email"]
rate_per_second = {rate_per_second}
burst = {max(200, int(rate_per_second))}

[callers.reports]
orgs = ["acme"]
rpcs = ["MintToken", "MintTokens", "VerifyToken"]
rate_per_second = {rate_per_second}
burst = {max(200, int(rate_per_second))}
{extra_callers}""")
    for section, lines in (settings or {}).items():
        text = config_file.read_text()
        assert f"\n[{section}]\n" in text, f"no [{section}] section to add settings to"
        config_file.write_text(text.replace(f"\n[{section}]\n", f"\n[{section}]\n{lines}\n", 1))
    return SecuredFiles(config_file, ca, client, api_key, openbao.read_secret(secret_path), secret_path,
                        fingerprint_key)


def start_secured_service(openbao: OpenBaoDevServer, directory: Path, *, workers: int = 1,
                          rate_per_second: float = 100, settings: dict[str, str] | None = None,
                          extra_callers: str = "", env: dict[str, str] | None = None,
                          ) -> tuple[ServiceProcess, SecuredFiles]:
    """`tokenservice serve --config` with caller authentication on, SERVING; `env` adds to its environment."""
    files = write_secured_config(openbao, directory, workers=workers, rate_per_second=rate_per_second,
                                 settings=settings, extra_callers=extra_callers)
    service = ServiceProcess.start({"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token,
                                    "TOKENSERVICE_INSECURE_NO_CALLER_AUTH": "", **(env or {})},
                                   ["--config", str(files.config_file)])
    service.secret = files.secret
    return service, files
