"""The data key: made once, kept in the OS keychain or wrapped by a passphrase beside the store.

Nothing here ever writes a key in clear. Where the keychain is missing, or is one of the
plaintext file backends (keyrings.alt), the key is wrapped with a key derived from a
passphrase by scrypt and stored in ``key.json``.

Passphrase sources, first that answers wins: ``$CAREBOX_PASSPHRASE`` (tests, CI),
``$CAREBOX_PASSCOMMAND`` (a command printing it, for cron), then an interactive prompt.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shlex
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

KEY_FILE = "key.json"
KEYRING_SERVICE = "carebox"
ACCOUNT_SERVICE = "carebox-account"
SCRYPT_N = 2**17
DEMO_PASSPHRASE = "carebox-demo"  # noqa: S105 - the demo store holds invented data only
TRIES = 3


class KeyProblem(Exception):
    """Unlocking or creating the key failed; the message is one line for the user."""


class WrongPassphrase(KeyProblem):
    pass


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode())


def keychain_available() -> bool:
    """True when keyring has a real, encrypting backend (not fail, not a plaintext file)."""
    if _env_names_no_keychain():
        return False
    import keyring  # imported on use: it costs ~0.3 s at start-up
    import keyring.errors

    try:
        backend = keyring.get_keyring()
    except Exception:
        return False
    return _acceptable(backend)


def _env_names_no_keychain() -> bool:
    """True when ``$PYTHON_KEYRING_BACKEND`` names keyring's fail backend or a plaintext one and
    keyring is not loaded yet: keyring would then use that backend (nothing can have been set
    through its API), which ``_acceptable`` refuses; saying so needs no import of keyring (0.1-0.2 s
    of a first sync on a headless machine or in CI)."""
    import sys

    name = os.environ.get("PYTHON_KEYRING_BACKEND", "")
    if not name or "keyring" in sys.modules:
        return False
    module, _, cls = name.rpartition(".")
    return name == "keyring.backends.fail.Keyring" or module.startswith("keyrings.alt") or "Plaintext" in cls


def _acceptable(backend: object) -> bool:
    from keyring.backends import chainer, fail

    if isinstance(backend, fail.Keyring):
        return False
    if isinstance(backend, chainer.ChainerBackend):
        return any(_acceptable(b) for b in backend.backends)
    module = type(backend).__module__
    if module.startswith("keyrings.alt") or "Plaintext" in type(backend).__name__:
        return False
    try:
        return float(type(backend).priority) > 0  # type: ignore[arg-type]
    except Exception:
        return True


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _kdf(salt: bytes, n: int) -> Scrypt:
    return Scrypt(salt=salt, length=32, n=n, r=8, p=1)


def _wrap(data_key: bytes, passphrase: str, n: int) -> dict[str, object]:
    salt = os.urandom(16)
    kek = _kdf(salt, n).derive(passphrase.encode("utf-8"))
    nonce = os.urandom(12)
    wrapped = AESGCM(kek).encrypt(nonce, data_key, b"carebox data key")
    return {"kdf": "scrypt", "n": n, "r": 8, "p": 1, "salt": _b64(salt), "nonce": _b64(nonce), "wrapped": _b64(wrapped)}


def _unwrap(meta: dict[str, object], passphrase: str) -> bytes:
    kek = _kdf(_unb64(str(meta["salt"])), int(meta["n"])).derive(passphrase.encode("utf-8"))  # type: ignore[arg-type]
    try:
        return AESGCM(kek).decrypt(_unb64(str(meta["nonce"])), _unb64(str(meta["wrapped"])), b"carebox data key")
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase") from None


@dataclass(frozen=True)
class KeyInfo:
    holder: str  # "keyring" or "passphrase"
    store_id: str
    demo: bool = False


def key_info(store_dir: Path) -> KeyInfo | None:
    try:
        meta = json.loads((store_dir / KEY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyProblem(f"cannot read {store_dir / KEY_FILE}: {exc.__class__.__name__}") from None
    return KeyInfo(holder=meta.get("holder", ""), store_id=meta.get("store_id", ""), demo=bool(meta.get("demo")))


@dataclass(frozen=True)
class NewKey:
    """A new store's data key, made (and wrapped by its passphrase) but not kept anywhere yet:
    ``save`` writes ``key.json`` (and the keychain entry). ``carebox sync`` makes it beside the
    login and saves it only once the login has succeeded."""

    data_key: bytes = field(repr=False)
    meta: dict[str, object] = field(repr=False)

    @property
    def holder(self) -> str:
        return str(self.meta["holder"])

    def save(self, store_dir: Path) -> bytes:
        """Keep the key for the store at ``store_dir`` (which must have none yet). Returns the key."""
        store_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(store_dir, 0o700)
        if (store_dir / KEY_FILE).exists():
            raise KeyProblem(f"{store_dir} already has a key; refusing to replace it")
        if self.holder == "keyring":
            import keyring  # imported on use: it costs ~0.3 s at start-up
            import keyring.errors

            try:
                keyring.set_password(KEYRING_SERVICE, f"store:{self.meta['store_id']}", _b64(self.data_key))
            except keyring.errors.KeyringError as exc:
                raise KeyProblem(f"the keychain refused to store the key ({exc.__class__.__name__})") from None
        _write_private(store_dir / KEY_FILE, json.dumps(self.meta, indent=1))
        return self.data_key


def new_data_key(
    *, passphrase: str | None = None, use_keychain: bool | None = None, scrypt_n: int = SCRYPT_N, demo: bool = False
) -> NewKey:
    """Make a new random data key (wrapped by ``passphrase`` unless it goes to the keychain),
    writing nothing: see ``NewKey.save``."""
    data_key = secrets.token_bytes(32)
    if use_keychain is None:
        use_keychain = passphrase is None and keychain_available()
    meta: dict[str, object] = {"version": 1, "store_id": secrets.token_hex(8)}
    if use_keychain:
        meta["holder"] = "keyring"
    else:
        if not passphrase:
            raise KeyProblem("no keychain here: a passphrase is needed (set CAREBOX_PASSPHRASE or answer the prompt)")
        meta["holder"] = "passphrase"
        meta.update(_wrap(data_key, passphrase, scrypt_n))
    if demo:
        meta["demo"] = True
    return NewKey(data_key, meta)


def create_data_key(
    store_dir: Path,
    *,
    passphrase: str | None = None,
    use_keychain: bool | None = None,
    scrypt_n: int = SCRYPT_N,
    demo: bool = False,
) -> bytes:
    """Make a new random data key for a new store and keep it safely. Returns the key."""
    if (store_dir / KEY_FILE).exists():
        raise KeyProblem(f"{store_dir} already has a key; refusing to replace it")
    made = new_data_key(passphrase=passphrase, use_keychain=use_keychain, scrypt_n=scrypt_n, demo=demo)
    return made.save(store_dir)


def passphrase_from_env() -> str | None:
    value = os.environ.get("CAREBOX_PASSPHRASE")
    if value:
        return value
    command = os.environ.get("CAREBOX_PASSCOMMAND")
    if command:
        try:
            out = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KeyProblem(f"CAREBOX_PASSCOMMAND failed ({exc.__class__.__name__}): fix the command") from None
        return out.stdout.decode("utf-8").rstrip("\r\n")
    return None


def unlock_data_key(store_dir: Path, ask: Callable[[str], str | None] | None = None) -> bytes:
    """Open the store's data key. ``ask(prompt)`` is called for a passphrase when needed,
    up to three times; it returns None to give up. Nothing is written on failure."""
    meta_path = store_dir / KEY_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyProblem(f"no store at {store_dir}: run `carebox import` or `carebox sync` to create one") from None
    except (OSError, ValueError) as exc:
        raise KeyProblem(f"cannot read {meta_path}: {exc.__class__.__name__}") from None
    holder = meta.get("holder")
    if holder == "keyring":
        import keyring  # imported on use: it costs ~0.3 s at start-up
        import keyring.errors

        try:
            secret = keyring.get_password(KEYRING_SERVICE, f"store:{meta['store_id']}")
        except keyring.errors.KeyringError as exc:
            raise KeyProblem(f"the keychain is not available ({exc.__class__.__name__}); unlock it and retry") from None
        if not secret:
            raise KeyProblem("the store's key is missing from the keychain: restore it, or the store cannot be read")
        return _unb64(secret)
    if holder != "passphrase":
        raise KeyProblem(f"{meta_path} is damaged (unknown key holder)")
    if meta.get("demo"):
        return _unwrap(meta, DEMO_PASSPHRASE)
    given = passphrase_from_env()
    if given is not None:
        try:
            return _unwrap(meta, given)
        except WrongPassphrase:
            raise WrongPassphrase("wrong passphrase in CAREBOX_PASSPHRASE / CAREBOX_PASSCOMMAND") from None
    if ask is None:
        raise KeyProblem("the store is locked: set CAREBOX_PASSPHRASE or CAREBOX_PASSCOMMAND, or run in a terminal")
    for attempt in range(TRIES):
        prompt = "Passphrase for the carebox store: " if attempt == 0 else "Wrong passphrase, try again: "
        answer = ask(prompt)
        if answer is None:
            break
        try:
            return _unwrap(meta, answer)
        except WrongPassphrase:
            continue
    raise WrongPassphrase(f"wrong passphrase ({TRIES} tries); nothing was changed")


def change_passphrase(store_dir: Path, data_key: bytes, new_passphrase: str, *, scrypt_n: int = SCRYPT_N) -> None:
    """Wrap the (already unlocked) data key with a new passphrase. The data itself is not
    re-encrypted; the old key.json is replaced atomically."""
    meta_path = store_dir / KEY_FILE
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("holder") != "passphrase" or meta.get("demo"):
        raise KeyProblem("this store's key is held by the keychain; there is no passphrase to change")
    if len(new_passphrase) < 8:
        raise KeyProblem("the new passphrase must have at least 8 characters; nothing was changed")
    new_meta = {k: v for k, v in meta.items() if k not in ("kdf", "n", "r", "p", "salt", "nonce", "wrapped")}
    new_meta.update(_wrap(data_key, new_passphrase, scrypt_n))
    if _unwrap(new_meta, new_passphrase) != data_key:  # pragma: no cover - defensive
        raise KeyProblem("re-wrapping the key failed; nothing was changed")
    _write_private(meta_path, json.dumps(new_meta, indent=1))


def check_passphrase(store_dir: Path, passphrase: str) -> bytes:
    """For the lock screen: the data key if the passphrase (or keychain) opens it, else WrongPassphrase."""
    info = key_info(store_dir)
    if info is None:
        raise KeyProblem(f"no store at {store_dir}")
    if info.holder == "keyring" or info.demo:
        return unlock_data_key(store_dir)
    meta = json.loads((store_dir / KEY_FILE).read_text(encoding="utf-8"))
    return _unwrap(meta, passphrase)


# --- account passwords (IMAP/SMTP): keychain first; never in the config -------------------------


def get_account_password(address: str, password_command: str | None = None) -> str | None:
    if password_command:
        try:
            out = subprocess.run(shlex.split(password_command), capture_output=True, timeout=60, check=True)
        except (OSError, subprocess.SubprocessError) as exc:
            raise KeyProblem(f"password_command failed ({exc.__class__.__name__}): fix it in [account]") from None
        return out.stdout.decode("utf-8").rstrip("\r\n")
    if not keychain_available():
        return None
    import keyring  # imported on use: it costs ~0.3 s at start-up
    import keyring.errors

    try:
        return keyring.get_password(ACCOUNT_SERVICE, address)
    except keyring.errors.KeyringError:
        return None


def set_account_password_in_keychain(address: str, password: str) -> bool:
    """True when stored in the keychain; False when there is none (the caller then stores it
    sealed inside the encrypted store)."""
    import keyring  # imported on use: it costs ~0.3 s at start-up
    import keyring.errors

    if not keychain_available():
        return False
    try:
        keyring.set_password(ACCOUNT_SERVICE, address, password)
    except keyring.errors.KeyringError:
        return False
    return True
