"""Shared test set-up: every test gets a private in-memory keychain (installed through
keyring's own API) and private config/data folders, so no test touches the user's."""

from __future__ import annotations

import keyring
import pytest
from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class MemoryKeyring(KeyringBackend):
    """A real keyring backend that keeps secrets in a dict (tests only)."""

    priority = 10  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], str] = {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.secrets.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.secrets[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        if (service, username) not in self.secrets:
            raise PasswordDeleteError(username)
        del self.secrets[(service, username)]


@pytest.fixture(autouse=True)
def memory_keyring(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> MemoryKeyring:
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    for var in ("CAREBOX_CONFIG", "CAREBOX_PASSPHRASE", "CAREBOX_PASSCOMMAND", "CAREBOX_NOW"):
        monkeypatch.delenv(var, raising=False)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture
def no_keychain() -> None:
    """A headless machine: keyring's own 'fail' backend, as on a box with no secret service."""
    from keyring.backends import fail

    keyring.set_keyring(fail.Keyring())
