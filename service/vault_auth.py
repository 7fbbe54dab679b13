"""Ways to log in to Vault. Each one sets a token on an hvac client.

Credentials are read from their files at every login, not once at start,
because the files are rotated underneath a running service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import hvac

from service.config import VaultConfig
from service.errors import ConfigError, SecretSourceError


class VaultAuth(Protocol):
    """Logs an hvac client in to Vault."""

    name: str

    def login(self, client: hvac.Client) -> None:
        """Set a fresh token on `client`; raise SecretSourceError when that fails."""


def _read_credential(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().strip()
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
        self._token = token
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

    def login(self, client: hvac.Client) -> None:
        role_id = _read_credential(self._role_id_file, "AppRole role id")
        secret_id = _read_credential(self._secret_id_file, "AppRole secret id")
        client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=self._mount)


def auth_from_config(vault: VaultConfig) -> VaultAuth:
    """The auth method that `vault.auth` names."""
    if vault.auth == "approle":
        return AppRoleAuth(vault.role_id_file, vault.secret_id_file, vault.approle_mount)
    return TokenAuth(vault.token, vault.token_file)
