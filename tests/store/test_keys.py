import json
import stat

import keyring
import pytest

from carebox.store import keys
from carebox.store.keys import KeyProblem, WrongPassphrase, create_data_key, keychain_available, unlock_data_key

FAST_N = 2**12


def test_key_goes_to_the_keychain_when_there_is_one(tmp_path, memory_keyring) -> None:
    d = tmp_path / "store"
    key = create_data_key(d)
    meta = json.loads((d / "key.json").read_text())
    assert meta["holder"] == "keyring"
    assert "wrapped" not in meta
    assert len(memory_keyring.secrets) == 1
    assert unlock_data_key(d) == key
    assert key.hex() not in (d / "key.json").read_text()


def test_headless_falls_back_to_a_passphrase(tmp_path, no_keychain) -> None:
    assert not keychain_available()
    d = tmp_path / "store"
    key = create_data_key(d, passphrase="correct horse", scrypt_n=FAST_N)
    meta = json.loads((d / "key.json").read_text())
    assert meta["holder"] == "passphrase"
    answers = iter(["correct horse"])
    assert unlock_data_key(d, lambda _p: next(answers)) == key
    assert stat.S_IMODE((d / "key.json").stat().st_mode) == 0o600
    assert stat.S_IMODE(d.stat().st_mode) == 0o700


def test_headless_without_passphrase_refuses(tmp_path, no_keychain) -> None:
    with pytest.raises(KeyProblem, match="passphrase"):
        create_data_key(tmp_path / "s")
    assert not (tmp_path / "s" / "key.json").exists()


def test_plaintext_backends_do_not_count_as_a_keychain() -> None:
    from keyring.backend import KeyringBackend

    class PlaintextKeyring(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, s, u):  # pragma: no cover
            return None

        def set_password(self, s, u, p):  # pragma: no cover
            pass

        def delete_password(self, s, u):  # pragma: no cover
            pass

    PlaintextKeyring.__module__ = "keyrings.alt.file"
    keyring.set_keyring(PlaintextKeyring())
    assert not keychain_available()


def test_wrong_passphrase_three_tries_then_a_clear_error(tmp_path, no_keychain) -> None:
    d = tmp_path / "store"
    create_data_key(d, passphrase="right one", scrypt_n=FAST_N)
    before = (d / "key.json").read_bytes()
    asked: list[str] = []

    def ask(prompt: str) -> str:
        asked.append(prompt)
        return "wrong"

    with pytest.raises(WrongPassphrase, match="3 tries"):
        unlock_data_key(d, ask)
    assert len(asked) == 3
    assert (d / "key.json").read_bytes() == before
    assert sorted(p.name for p in d.iterdir()) == ["key.json"]


def test_passphrase_from_environment(tmp_path, no_keychain, monkeypatch) -> None:
    d = tmp_path / "store"
    key = create_data_key(d, passphrase="env secret", scrypt_n=FAST_N)
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "env secret")
    assert unlock_data_key(d) == key
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "nope")
    with pytest.raises(WrongPassphrase, match="CAREBOX_PASSPHRASE"):
        unlock_data_key(d)


def test_passphrase_command(tmp_path, no_keychain, monkeypatch) -> None:
    d = tmp_path / "store"
    key = create_data_key(d, passphrase="from a command", scrypt_n=FAST_N)
    monkeypatch.setenv("CAREBOX_PASSCOMMAND", "echo 'from a command'")
    assert unlock_data_key(d) == key


def test_missing_keychain_entry_is_explained(tmp_path, memory_keyring) -> None:
    d = tmp_path / "store"
    create_data_key(d)
    memory_keyring.secrets.clear()
    with pytest.raises(KeyProblem, match="missing from the keychain"):
        unlock_data_key(d)


def test_default_scrypt_cost_is_the_documented_one() -> None:
    assert keys.SCRYPT_N == 2**17


def test_change_passphrase(tmp_path, no_keychain) -> None:
    from carebox.store.keys import change_passphrase

    d = tmp_path / "store"
    key = create_data_key(d, passphrase="old passphrase", scrypt_n=FAST_N)
    with pytest.raises(KeyProblem, match="at least 8"):
        change_passphrase(d, key, "short", scrypt_n=FAST_N)
    change_passphrase(d, key, "new passphrase", scrypt_n=FAST_N)
    assert unlock_data_key(d, lambda _p: "new passphrase") == key
    with pytest.raises(WrongPassphrase):
        unlock_data_key(d, lambda _p: "old passphrase")
    assert stat.S_IMODE((d / "key.json").stat().st_mode) == 0o600


def test_a_new_key_is_written_only_when_saved(tmp_path, no_keychain) -> None:
    d = tmp_path / "store"
    made = keys.new_data_key(passphrase="correct horse", scrypt_n=FAST_N)
    assert not d.exists() and made.holder == "passphrase"
    assert made.save(d) == made.data_key
    assert unlock_data_key(d, lambda _p: "correct horse") == made.data_key
    with pytest.raises(KeyProblem, match="already has a key"):
        made.save(d)


def test_a_new_keychain_key_goes_to_the_keychain_only_when_saved(tmp_path, memory_keyring) -> None:
    made = keys.new_data_key()
    assert made.holder == "keyring" and memory_keyring.secrets == {}
    made.save(tmp_path / "s")
    assert len(memory_keyring.secrets) == 1 and unlock_data_key(tmp_path / "s") == made.data_key


@pytest.mark.parametrize(
    ("backend", "no_keychain_without_import"),
    [
        ("keyring.backends.fail.Keyring", True),
        ("keyrings.alt.file.PlaintextKeyring", True),
        ("keyring.backends.SecretService.Keyring", False),
        ("", False),
    ],
)
def test_the_environment_can_say_there_is_no_keychain_without_importing_keyring(
    monkeypatch, backend: str, no_keychain_without_import: bool
) -> None:
    """Where keyring is not loaded yet, $PYTHON_KEYRING_BACKEND naming the fail or a plaintext
    backend answers keychain_available() (False) at once; anything else asks keyring."""
    import sys

    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend)
    assert not keys._env_names_no_keychain()  # keyring is loaded here (the test keychain): it decides
    monkeypatch.delitem(sys.modules, "keyring")
    assert keys._env_names_no_keychain() is no_keychain_without_import
