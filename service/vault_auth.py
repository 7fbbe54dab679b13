"""Ways to log in to Vault. Each one sets a token on an hvac client.

Credentials are read from their files at every login, not once at start,
because the files are rotated underneath a running service.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import hvac
import hvac.exceptions

from service.config import VaultConfig
from service.errors import ConfigError, SecretSourceError
from service.files import read_small_text
from service.tracing import vault_http_session

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Renew (or log in again) once this share of the token's TTL has passed.
RENEW_AT_TTL_RATIO = 2 / 3
# A login again after a 403 waits at least this long after the previous one; the wait doubles
# each time a fresh token is refused too (the policy, not the token, is the problem), up to the cap.
INITIAL_RELOGIN_BACKOFF_SECONDS = 1.0
MAX_RELOGIN_BACKOFF_SECONDS = 300.0


class VaultAuth(Protocol):
    """Logs an hvac client in to Vault."""

    name: str

    def login(self, client: hvac.Client) -> Mapping[str, object] | None:
        """Set a fresh token on `client`: the login's `auth` block (lease_duration, renewable), or None
        when there was no login request; raise SecretSourceError when that fails."""


def _read_credential(path: str, what: str) -> str:
    try:
        value = read_small_text(path).strip()
    except OSError as error:
        raise SecretSourceError(f"cannot read {what} from {path}: {error.strerror}") from None
    if not value:
        raise SecretSourceError(f"{what} file {path} is empty")
    return value


class TokenAuth:
    """Uses a Vault token given directly (VAULT_TOKEN) or kept in a file."""

    name = "token"

    def __init__(self, token: str | None = None, token_file: str | None = None) -> None:
        if not token and not token_file:
            raise ConfigError("token auth needs VAULT_TOKEN or vault.token_file")
        self._token = token or ""  # empty only when there is a token file
        self._token_file = token_file

    def login(self, client: hvac.Client) -> None:
        client.token = _read_credential(self._token_file, "Vault token") if self._token_file else self._token


class AppRoleAuth:
    """Logs in with an AppRole role id and secret id, each read from a file."""

    name = "approle"

    def __init__(self, role_id_file: str, secret_id_file: str, mount: str = "approle") -> None:
        self._role_id_file = role_id_file
        self._secret_id_file = secret_id_file
        self._mount = mount

    def login(self, client: hvac.Client) -> Mapping[str, object]:
        role_id = _read_credential(self._role_id_file, "AppRole role id")
        secret_id = _read_credential(self._secret_id_file, "AppRole secret id")
        auth: Mapping[str, object] = client.auth.approle.login(
            role_id=role_id, secret_id=secret_id, mount_point=self._mount
        )["auth"]
        return auth


class KubernetesAuth:
    """Logs in with the pod's service-account token (a projected, Vault-audience
    token file, re-read at every login because the kubelet rotates it)."""

    name = "kubernetes"

    def __init__(self, role: str, token_file: str, mount: str = "kubernetes") -> None:
        self._role = role
        self._token_file = token_file
        self._mount = mount

    def login(self, client: hvac.Client) -> Mapping[str, object]:
        jwt = _read_credential(self._token_file, "Kubernetes service-account token")
        auth: Mapping[str, object] = client.auth.kubernetes.login(role=self._role, jwt=jwt, mount_point=self._mount)[
            "auth"
        ]
        return auth


def auth_from_config(vault: VaultConfig) -> VaultAuth:
    """The auth method that `vault.auth` names."""
    if vault.auth == "approle":
        return AppRoleAuth(
            _required(vault.role_id_file, "vault.role_id_file", "AppRole auth needs it"),
            _required(vault.secret_id_file, "vault.secret_id_file", "AppRole auth needs it"),
            vault.approle_mount,
        )
    if vault.auth == "kubernetes":
        role = _required(
            vault.kubernetes_role,
            "vault.kubernetes_role",
            "Kubernetes auth needs the Vault role bound to the service account",
        )
        return KubernetesAuth(role, vault.kubernetes_token_file, vault.kubernetes_mount)
    return TokenAuth(vault.token, vault.token_file)


def _required(value: str | None, setting: str, why: str) -> str:
    if not value:
        raise ConfigError(f"setting {setting}: {why}; set it")
    return value


class VaultSession:
    """An hvac client that stays logged in.

    The token is renewed once two thirds of its TTL have passed; when it is
    not renewable or renewal is refused, the session logs in again with its
    auth method. Vault answers 403 alike for a dead token and for a path
    outside the token's policy, so a 403 leads to a new login only when
    lookup-self does not vouch for the token, and never sooner than the
    re-login backoff allows: a denied path cannot cause a login storm.
    hvac clients are not thread-safe and calls come from worker threads,
    hence the lock.
    """

    def __init__(self, vault: VaultConfig, auth: VaultAuth, clock: Callable[[], float] = time.monotonic) -> None:
        self._vault = vault
        self._auth = auth
        self._clock = clock
        self._client: hvac.Client | None = None
        self._renew_at: float | None = None
        self._relogin_backoff = INITIAL_RELOGIN_BACKOFF_SECONDS
        self._relogin_not_before = 0.0
        self._lock = threading.Lock()

    @property
    def auth_name(self) -> str:
        return self._auth.name

    def call(self, operation: Callable[[hvac.Client], T]) -> T:
        """Run `operation` with a logged-in client; on 403, log in again and retry once if that may help."""
        with self._lock:
            client = self._logged_in()
            try:
                return operation(client)
            except hvac.exceptions.Forbidden:
                if not self._may_log_in_again(client):
                    raise
            logger.info("Vault refused the token; logging in again", extra={"fields": {"auth": self._auth.name}})
            self._client = None
            try:
                result = operation(self._logged_in())
            except hvac.exceptions.Forbidden:
                self._relogin_backoff = min(2 * self._relogin_backoff, MAX_RELOGIN_BACKOFF_SECONDS)
                raise
            self._relogin_backoff = INITIAL_RELOGIN_BACKOFF_SECONDS
            return result

    def _may_log_in_again(self, client: hvac.Client) -> bool:
        now = self._clock()
        if now < self._relogin_not_before or _token_is_alive(client):
            return False
        self._relogin_not_before = now + self._relogin_backoff
        return True

    def _logged_in(self) -> hvac.Client:
        if self._client is None:
            return self._login()
        if self._renew_at is not None and self._clock() >= self._renew_at:
            return self._renew(self._client)
        return self._client

    def _login(self) -> hvac.Client:
        # hvac hands the timeout to requests, which takes seconds as a float; hvac's stubs say int.
        # With tracing on, every request of this client (login, renewal, reads) is a client span.
        client = hvac.Client(
            url=self._vault.addr,
            timeout=self._vault.timeout_seconds,  # type: ignore[arg-type]
            session=vault_http_session(),
        )
        ttl, renewable = _lease(client, self._auth.login(client))
        self._client = client
        self._schedule_renewal(ttl)
        logger.info(
            "logged in to Vault",
            extra={"fields": {"auth": self._auth.name, "ttl_seconds": ttl, "renewable": renewable}},
        )
        return client

    def _renew(self, client: hvac.Client) -> hvac.Client:
        try:
            lease = _seconds(client.auth.token.renew_self()["auth"]["lease_duration"])
        except hvac.exceptions.VaultError:
            lease = 0
        if lease <= 0 or lease * (1 - RENEW_AT_TTL_RATIO) < 1:
            # Not renewable, refused, or at its max TTL: a new login is the only way on.
            self._client = None
            return self._login()
        self._schedule_renewal(lease)
        return client

    def _schedule_renewal(self, ttl_seconds: int) -> None:
        self._renew_at = self._clock() + ttl_seconds * RENEW_AT_TTL_RATIO if ttl_seconds else None


def _lease(client: hvac.Client, login: Mapping[str, object] | None) -> tuple[int, bool]:
    """The TTL and renewability of the client's token: from its login, else from lookup-self."""
    if login is not None:
        return _seconds(login.get("lease_duration")), bool(login.get("renewable"))
    try:
        token = client.auth.token.lookup_self()["data"]
    except hvac.exceptions.Forbidden:
        # A token without the "default" policy may not look itself up: its TTL is unknown, so it is not
        # renewed, and replaced only once Vault refuses it.
        return 0, False
    return _seconds(token.get("ttl")), bool(token.get("renewable"))


def _seconds(value: object) -> int:
    """A TTL from Vault's JSON: whole seconds, 0 when missing or not a number (unknown)."""
    return int(value) if isinstance(value, int | float) else 0


def _token_is_alive(client: hvac.Client) -> bool:
    """True when lookup-self (granted by the default policy) shows that Vault still accepts the token."""
    try:
        client.auth.token.lookup_self()
    except hvac.exceptions.Forbidden:
        return False
    return True


def session_from_config(vault: VaultConfig) -> VaultSession:
    """A session that logs in with the auth method that `vault.auth` names."""
    return VaultSession(vault, auth_from_config(vault))
