"""`tokenservice secret sync`: copy an org's chat signing secret from Kustomer's
API into Vault, as Kustomer's guide has an operator do by hand.

The secret is fetched with `GET /v1/auth/customer/settings` (an API key with
the org.admin and org.user roles) and written to the org's KV v2 path with
check-and-set, only when it differs from the current version. Nothing here
ever prints the secret or the API key.

The key is an org admin's: it is sent to https://ORG.api.kustomerapp.com of a
valid org name (or to KUSTOMER_API_URL when that is https, or plain http on a
loopback literal for local stand-ins) and nowhere else: no redirect is followed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import urllib.parse
from collections.abc import Mapping

import hvac
import hvac.exceptions
import requests
import requests.auth

from service.config import ORG_NAME_PATTERN, Config, OrgConfig
from service.errors import ConfigError, SecretRejectedError
from service.files import read_small_text
from service.secrets import SecretVersion, validate_secret
from service.vault_auth import VaultSession

SETTINGS_PATH = "/v1/auth/customer/settings"


class SyncError(Exception):
    """Raised when the secret cannot be fetched or written; nothing was written to Vault."""


@dataclasses.dataclass(frozen=True)
class SyncResult:
    """What a sync found and did; `new_version` is None when Vault already held the secret."""

    org: str
    where: str
    current_version: int
    new_version: int | None
    dry_run: bool

    def describe(self) -> str:
        current = f"version {self.current_version}" if self.current_version else "no secret yet"
        if self.new_version is None:
            return f"org {self.org}: {self.where} ({current}) already holds Kustomer's secret; nothing written"
        if self.dry_run:
            return (
                f"org {self.org}: would write version {self.new_version} of {self.where} (now: {current}); "
                "dry run, nothing written"
            )
        return f"org {self.org}: wrote version {self.new_version} of {self.where} (was: {current})"


def kustomer_api_url(org: str, api_url: str | None) -> str:
    """The base URL the API key is sent to: Kustomer's host of a valid org name, or KUSTOMER_API_URL if it
    is https (or plain http on a loopback address literal, for local stand-ins). Raise ConfigError otherwise.

    The org name becomes part of a host name, so it is checked before anything else happens."""
    if not ORG_NAME_PATTERN.fullmatch(org):
        raise ConfigError(
            "--org: not a Kustomer org name; it must be a DNS label (lower-case letters, digits "
            "and '-', 1-63 characters, no leading or trailing '-'), as ORG in "
            "https://ORG.kustomerapp.com"
        )
    if api_url is None:
        return f"https://{org}.api.kustomerapp.com"
    return _checked_api_url(api_url)


def _checked_api_url(api_url: str) -> str:
    # The value is the operator's own, but it is not echoed: it may carry credentials in its user part.
    try:
        parts = urllib.parse.urlsplit(api_url)
        host = parts.hostname
        _ = parts.port  # a malformed port raises only when read
    except ValueError:
        raise ConfigError("KUSTOMER_API_URL: not a URL; expected https://HOST[:PORT]") from None
    if not host or parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise ConfigError("KUSTOMER_API_URL: expected https://HOST[:PORT][/PATH], without user info, query or fragment")
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback_literal(host)):
        return api_url.rstrip("/")
    raise ConfigError(
        "KUSTOMER_API_URL: must be an https:// URL (plain http only on a loopback address literal "
        "such as 127.0.0.1 or [::1], for a local stand-in): the API key must not cross a network "
        "in the clear"
    )


def _is_loopback_literal(host: str) -> bool:
    # A literal only: resolving a name here would be a lookup before the check, and 'localhost' may resolve
    # anywhere.
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Bearer(requests.auth.AuthBase):
    """The API key as a bearer token; as the request's auth, it also keeps ~/.netrc from replacing it."""

    def __init__(self, api_key: str) -> None:
        self._api_key = api_key

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        return request


def read_api_key(api_key_file: str | None, environ: Mapping[str, str]) -> str:
    """The Kustomer API key, from a file or KUSTOMER_API_KEY (never from a flag)."""
    if api_key_file:
        try:
            key = read_small_text(api_key_file).strip()
        except OSError as error:
            raise ConfigError(f"--api-key-file {api_key_file}: {error.strerror}") from None
    else:
        key = environ.get("KUSTOMER_API_KEY", "").strip()
    if not key:
        raise ConfigError("a Kustomer API key is required: pass --api-key-file FILE or set KUSTOMER_API_KEY")
    return key


def org_for_sync(config: Config, name: str) -> OrgConfig:
    """The org whose Vault path receives the secret: the one named, or the only one configured."""
    if name in config.orgs:
        return config.orgs[name]
    if len(config.orgs) == 1:
        only = next(iter(config.orgs.values()))
        return dataclasses.replace(only, name=name)
    raise ConfigError(f"--org {name}: not a configured org; configured: {', '.join(sorted(config.orgs))}")


def fetch_secret(org: str, api_key: str, base: str, *, timeout: float = 10.0) -> str:
    """The org's chat secret from Kustomer at `base` (from kustomer_api_url); raise SyncError naming what
    went wrong. Redirects are not followed: the key goes to `base` and nowhere else."""
    try:
        with requests.Session() as session:
            # A plaintext request (loopback only) must not pass through an environment proxy, which would see
            # the key; an https one may, the tunnel keeps the key from it.
            session.trust_env = base.startswith("https://")
            response = session.get(
                f"{base}{SETTINGS_PATH}",
                timeout=timeout,
                auth=_Bearer(api_key),
                allow_redirects=False,
                headers={"Content-Type": "application/json"},
            )
    except requests.Timeout:
        raise SyncError(f"Kustomer API at {base} did not answer within {timeout:g} s; retry later") from None
    except requests.RequestException as error:
        raise SyncError(f"cannot reach the Kustomer API at {base}: {type(error).__name__}") from None
    _check_status(response, org)
    try:
        body = response.json()
    except ValueError:
        raise SyncError(f"Kustomer API answered HTTP {response.status_code} with a body that is not JSON") from None
    secret = _dig(body, "data", "attributes", "secret")
    if not isinstance(secret, str) or not secret:
        raise SyncError(
            "Kustomer's answer has no data.attributes.secret (or it is empty); "
            "check that chat authentication is enabled for the org"
        )
    return secret


def _check_status(response: requests.Response, org: str) -> None:
    status = response.status_code
    if status in (401, 403):
        raise SyncError(
            f"Kustomer refused the API key (HTTP {status}): the key needs the org.admin and org.user "
            "roles; create one under Settings > Security > API Keys"
        )
    if status == 404:
        raise SyncError(
            f"Kustomer has no settings for org {org!r} (HTTP 404): check that --org matches "
            f"https://{org}.kustomerapp.com"
        )
    if 300 <= status < 400:
        raise SyncError(
            f"Kustomer API answered HTTP {status}, a redirect, which is not followed (the API key goes "
            "to the org's API host only): check --org and KUSTOMER_API_URL"
        )
    if status == 429:
        retry = response.headers.get("Retry-After", "")
        # Echoed only when it is a number of seconds: it is the answering server's text.
        raise SyncError(
            "Kustomer rate-limited the request (HTTP 429); retry "
            + (f"after {retry} s" if retry.isascii() and retry.isdigit() else "later")
        )
    if status >= 500:
        raise SyncError(f"Kustomer API failed (HTTP {status}); retry later")
    if status != 200:
        raise SyncError(f"Kustomer API answered HTTP {status}, expected 200")


def _dig(body: object, *keys: str) -> object:
    for key in keys:
        if not isinstance(body, dict):
            return None
        body = body.get(key)
    return body


def sync_secret(
    session: VaultSession, kv_mount: str, org: OrgConfig, secret: str, *, min_secret_bytes: int, dry_run: bool
) -> SyncResult:
    """Write `secret` to the org's KV path with check-and-set, unless it is already there."""
    where = f"{kv_mount}/{org.path}"
    try:
        validate_secret(SecretVersion(secret, 0), min_secret_bytes)
    except SecretRejectedError as error:
        raise SyncError(f"Kustomer's secret would be refused by the service ({error}); nothing written") from None
    try:
        return session.call(lambda client: _write_if_changed(client, kv_mount, org, where, secret, dry_run))
    except hvac.exceptions.Forbidden:
        raise SyncError(f"Vault denied writing {where}: the token needs create/update on it") from None
    except hvac.exceptions.InvalidRequest as error:
        raise SyncError(f"Vault refused the write to {where} ({error}); another writer may have raced: rerun") from None
    except (hvac.exceptions.VaultError, requests.RequestException) as error:
        raise SyncError(f"Vault at {where} could not be used: {type(error).__name__}") from None


def _write_if_changed(
    client: hvac.Client, kv_mount: str, org: OrgConfig, where: str, secret: str, dry_run: bool
) -> SyncResult:
    kv = client.secrets.kv.v2
    try:
        current = kv.read_secret_version(path=org.path, mount_point=kv_mount, raise_on_deleted_version=False)["data"]
        data, version = dict(current.get("data") or {}), int(current["metadata"]["version"])
    except hvac.exceptions.InvalidPath:
        data, version = {}, 0
    if data.get(org.field) == secret:
        return SyncResult(org.name, where, version, None, dry_run)
    if dry_run:
        return SyncResult(org.name, where, version, version + 1, dry_run)
    written = kv.create_or_update_secret(
        path=org.path, mount_point=kv_mount, cas=version, secret={**data, org.field: secret}
    )
    return SyncResult(org.name, where, version, int(written["data"]["version"]), dry_run)
