"""Opening the store for a use case: find it, unlock its key, bring its deadlines up to date."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from carebox.config import Config
from carebox.domain.deadlines import Policy
from carebox.services.threads import ensure_policy, policy_from_config
from carebox.store.crypto import Cipher
from carebox.store.keys import KeyProblem, create_data_key, key_info, passphrase_from_env, unlock_data_key
from carebox.store.store import Store, StoreError

Ask = Callable[[str], str | None]


@dataclass
class Session:
    """An unlocked store with the config and policy it is used under."""

    config: Config
    store: Store
    policy: Policy
    demo: bool = False
    demo_dir: Path | None = None
    extras: dict[str, object] = field(default_factory=dict)

    @property
    def store_dir(self) -> Path:
        return self.store.directory

    def close(self) -> None:
        self.store.close()


def _new_passphrase(ask: Ask | None) -> str:
    given = passphrase_from_env()
    if given:
        return given
    if ask is None:
        raise KeyProblem("no keychain here: set CAREBOX_PASSPHRASE (or CAREBOX_PASSCOMMAND) to create the store")
    for _ in range(3):
        first = ask("New passphrase for the carebox store (no keychain on this machine): ")
        if not first:
            raise KeyProblem("a passphrase is needed to create the store; nothing was written")
        if len(first) < 8:
            continue
        again = ask("Repeat the passphrase: ")
        if again == first:
            return first
    raise KeyProblem("passphrases did not match or were shorter than 8 characters; nothing was written")


def open_session(
    config: Config,
    *,
    ask: Ask | None = None,
    create: bool = False,
    store_dir: Path | None = None,
    data_key: bytes | None = None,
) -> Session:
    """Unlock and open the store named by the config. With ``create`` a missing store is made
    (its key goes to the keychain, or is wrapped by a passphrase where there is none).
    ``data_key``: the store's key, already unlocked (``carebox open`` unwraps it beside the UI's
    imports); a wrong one fails on the first value read."""
    directory = (store_dir or config.store_dir()).expanduser()
    info = key_info(directory)
    if info is None:
        if not create:
            raise StoreError(f"no store at {directory}: run `carebox import PATH` or `carebox sync` to create one")
        from carebox.store.keys import keychain_available

        if keychain_available():
            data_key = create_data_key(directory, use_keychain=True)
        else:
            data_key = create_data_key(directory, passphrase=_new_passphrase(ask), use_keychain=False)
    elif data_key is None:
        data_key = unlock_data_key(directory, ask)
    store = Store.open(directory, Cipher(data_key), professional=config.professional_address, create=True)
    policy = policy_from_config(config.policy)
    ensure_policy(store, policy)
    return Session(config=config, store=store, policy=policy, demo=bool(info and info.demo))
