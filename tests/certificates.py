"""Certificates made by the tests: a CA, server certificates for loopback and
client certificates with SPIFFE URI and DNS SANs."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALIDITY = datetime.timedelta(days=1)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@dataclasses.dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM, with the files they were written to."""

    cert_pem: bytes
    key_pem: bytes
    cert_file: Path
    key_file: Path

    @property
    def fingerprint(self) -> str:
        return x509.load_pem_x509_certificate(self.cert_pem).fingerprint(hashes.SHA256()).hex()


class CertificateAuthority:
    """A throwaway CA that writes what it issues under `directory`."""

    def __init__(self, directory: Path, name: str = "test-ca") -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._subject = subject
        self.cert_pem = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self._key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
        )
        self.cert_file = directory / f"{name}.pem"
        self.cert_file.write_bytes(self.cert_pem)

    def issue(
        self, file_stem: str, *, dns: tuple[str, ...] = (), uris: tuple[str, ...] = (), ips: tuple[str, ...] = ()
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans = (
            [x509.DNSName(name) for name in dns]
            + [x509.UniformResourceIdentifier(uri) for uri in uris]
            + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        )
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, file_stem)]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
        )
        if sans:  # no names, no extension: cryptography 51 refuses an empty one, as RFC 5280 does
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            cert.public_bytes(serialization.Encoding.PEM),
            _pem_key(key),
            self.directory / f"{file_stem}.pem",
            self.directory / f"{file_stem}.key",
        )
        issued.cert_file.write_bytes(issued.cert_pem)
        issued.key_file.write_bytes(issued.key_pem)
        return issued

    def issue_server(self, file_stem: str = "server") -> Issued:
        """A server certificate for localhost and 127.0.0.1."""
        return self.issue(file_stem, dns=("localhost",), ips=("127.0.0.1",))
