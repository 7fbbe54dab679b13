"""`tokenservice secret sync` for a transit org: import Kustomer's secret into
Vault Transit as an HMAC key (BYOK), so that it is kept only there.

The first time, `transit/keys/<key>/import` creates the key: type hmac, not
exportable, no plaintext backup, no rotation inside Vault (a new secret comes
only by import). Later, `import_version` adds a version, and only when the
secret differs from the key's latest version: the HMAC of a fixed probe,
computed here with the secret and by Transit with the latest version, tells.

The secret travels wrapped, as Transit's BYOK flow requires: an ephemeral
AES-256 key encrypted with Transit's RSA wrapping key (RSA-OAEP, SHA-256),
followed by the secret wrapped with that AES key (AES key wrap with padding,
RFC 5649). Nothing here prints, logs or returns the secret.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import urllib.parse
from collections.abc import Callable
from typing import TypeVar

import hvac
import hvac.exceptions
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

from service.errors import SecretSourceError
from service.secret_sync import SyncError
from service.transit import HASH_ALGORITHM, KEY_NAME_PATTERN, MOUNT_PATTERN, VaultCaller

T = TypeVar("T")

# What both sides HMAC to compare secrets; fixed, so that a rerun compares the same thing.
PROBE = b"tokenservice transit import probe v1"
EPHEMERAL_KEY_BYTES = 32
MIN_WRAPPING_KEY_BITS = 2048
OPERATOR_POLICY = "deploy/vault/tokenservice-transit-operator-policy.hcl"


@dataclasses.dataclass(frozen=True)
class ImportResult:
    """What an import found and did; `new_version` is None when the key already held the secret."""

    org: str
    where: str
    current_version: int
    new_version: int | None
    dry_run: bool

    def describe(self) -> str:
        current = f"version {self.current_version}" if self.current_version else "no key yet"
        if self.new_version is None:
            return (
                f"org {self.org}: Transit key {self.where} ({current}) already holds Kustomer's secret; "
                "nothing imported"
            )
        what = "as a new key" if not self.current_version else f"as version {self.new_version}"
        if self.dry_run:
            return (
                f"org {self.org}: would import Kustomer's secret into {self.where} {what} (now: {current}); "
                "dry run, nothing imported"
            )
        return (
            f"org {self.org}: imported Kustomer's secret into {self.where} {what} (was: {current}); "
            "new tokens are signed with it"
        )


def wrap_for_import(secret: bytes, wrapping_key_pem: str) -> str:
    """The `ciphertext` of an import request: base64(RSA-OAEP(ephemeral AES key) || KWP(secret))."""
    try:
        public_key = serialization.load_pem_public_key(wrapping_key_pem.encode("ascii"))
    except (ValueError, UnsupportedAlgorithm):
        raise SyncError(
            "Transit's wrapping key is not a PEM public key; check that the mount is a Transit engine"
        ) from None
    if not isinstance(public_key, rsa.RSAPublicKey) or public_key.key_size < MIN_WRAPPING_KEY_BITS:
        raise SyncError(
            f"Transit's wrapping key is not an RSA key of at least {MIN_WRAPPING_KEY_BITS} bits; "
            "refusing to wrap the secret with it"
        )
    ephemeral = os.urandom(EPHEMERAL_KEY_BYTES)
    wrapped_key = public_key.encrypt(
        ephemeral, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    return base64.b64encode(wrapped_key + aes_key_wrap_with_padding(ephemeral, secret)).decode("ascii")


def import_secret(
    vault: VaultCaller | hvac.Client, mount: str, key: str, secret: bytes, *, org: str, dry_run: bool
) -> ImportResult:
    """Import `secret` into the Transit key `mount`/keys/`key` unless its latest version already holds it;
    raise SyncError naming what went wrong (nothing was imported then)."""
    if not KEY_NAME_PATTERN.fullmatch(key) or not MOUNT_PATTERN.fullmatch(mount):
        raise SyncError(f"org {org}: transit_key or transit_mount is not a valid Transit name; see the org's config")
    transit = _Transit(mount, key)
    if isinstance(vault, hvac.Client):
        return transit.run(lambda: transit.import_if_changed(vault, secret, org, dry_run))
    return transit.run(lambda: vault.call(lambda client: transit.import_if_changed(client, secret, org, dry_run)))


class _Transit:
    """The Transit requests of one import, each failure named with its path and the grant it needs."""

    def __init__(self, mount: str, key: str) -> None:
        quoted = urllib.parse.quote(key, safe="")
        self.mount = mount
        self.where = f"{mount}/keys/{key}"
        self._key_url = f"/v1/{mount}/keys/{quoted}"
        self._hmac_path = f"{mount}/hmac/{key}"
        self._hmac_url = f"/v1/{mount}/hmac/{quoted}/{HASH_ALGORITHM}"
        self._step = ""

    def run(self, operation: Callable[[], T]) -> T:
        try:
            return operation()
        except hvac.exceptions.Forbidden:
            raise SyncError(
                f"Vault denied {self._step}: the token needs the operator policy {OPERATOR_POLICY}"
            ) from None
        except hvac.exceptions.VaultDown:
            raise SyncError(f"Vault is sealed or down ({self._step}); unseal it and rerun") from None
        except hvac.exceptions.VaultError as error:
            raise SyncError(
                f"Vault refused {self._step} ({'; '.join(error.errors or [type(error).__name__])}); "
                "nothing more was imported"
            ) from None
        except requests.RequestException as error:
            raise SyncError(f"Vault could not be reached ({self._step}): {type(error).__name__}") from None
        except SecretSourceError as error:
            raise SyncError(f"logging in to Vault failed: {error}") from None
        except (KeyError, TypeError, ValueError):
            raise SyncError(
                f"Vault answered {self._step} with what is not a Transit answer; check that "
                f"{self.mount} is a Transit mount"
            ) from None

    def import_if_changed(self, client: hvac.Client, secret: bytes, org: str, dry_run: bool) -> ImportResult:
        current = self._latest_version(client)
        if current and self._holds(client, secret, current):
            return ImportResult(org, self.where, current, None, dry_run)
        if dry_run:
            return ImportResult(org, self.where, current, current + 1, dry_run)
        ciphertext = wrap_for_import(secret, self._wrapping_key(client))
        if current:
            self._step = f"{self.where}/import_version (update)"
            client.adapter.post(
                f"{self._key_url}/import_version", json={"ciphertext": ciphertext, "hash_function": "SHA256"}
            )
        else:
            self._step = f"{self.where}/import (update)"
            client.adapter.post(
                f"{self._key_url}/import",
                json={
                    "ciphertext": ciphertext,
                    "hash_function": "SHA256",
                    "type": "hmac",
                    "exportable": False,
                    "allow_plaintext_backup": False,
                    "allow_rotation": False,
                },
            )
        new = self._latest_version(client)
        if new <= current or not self._holds(client, secret, new):
            raise SyncError(
                f"after the import, {self.where} version {new} does not compute Kustomer's HMAC; "
                "another writer may have raced: rerun"
            )
        return ImportResult(org, self.where, current, new, dry_run)

    def _latest_version(self, client: hvac.Client) -> int:
        """The key's latest version, 0 when there is no key; refuse a key that is not an HMAC key."""
        self._step = f"reading {self.where} (read)"
        try:
            data = client.adapter.get(self._key_url)["data"]
        except hvac.exceptions.InvalidPath:
            return 0
        if data.get("type") != "hmac":
            raise SyncError(f"{self.where} is a {data.get('type')} key, not hmac: choose another transit_key")
        return int(data["latest_version"])

    def _holds(self, client: hvac.Client, secret: bytes, version: int) -> bool:
        self._step = f"HMAC of a probe with {self.where} version {version} ({self._hmac_path}, update)"
        answer = client.adapter.post(
            self._hmac_url, json={"input": base64.b64encode(PROBE).decode("ascii"), "key_version": version}
        )
        expected = f"vault:v{version}:" + base64.b64encode(hmac.new(secret, PROBE, hashlib.sha256).digest()).decode()
        return hmac.compare_digest(str(answer["data"]["hmac"]).encode(), expected.encode())

    def _wrapping_key(self, client: hvac.Client) -> str:
        self._step = f"reading {self.mount}/wrapping_key (read)"
        return str(client.adapter.get(f"/v1/{self.mount}/wrapping_key")["data"]["public_key"])
