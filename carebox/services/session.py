"""Opening the store for a use case: find it, unlock its key, bring its deadlines up to date."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from carebox.config import Config
from carebox.domain.deadlines import Policy
from carebox.services.policy import policy_from_config
from carebox.store.crypto import Cipher
from carebox.store.keys import KeyProblem, create_data_key, key_info, passphrase_from_env, unlock_data_key
from carebox.store.rows import StoreError

if TYPE_CHECKING:  # the ORM is imported when a store is opened (``carebox open`` paints first)
    from carebox.store.peek import FirstPage
    from carebox.store.store import Store

Ask = Callable[[str], str | None]


@dataclass
class Session:
    """An unlocked store with the config and policy it is used under."""

    config: Config
    store: Store = field(repr=False)
    policy: Policy
    demo: bool = False
    demo_dir: Path | None = None
    extras: dict[str, object] = field(default_factory=dict)
    # ``carebox open`` paints before the ORM is imported: the Due view's first rows (read through
    # the sqlite3 driver, store.peek) and the function that opens the store (``open_store``) after
    # that first frame. Until then ``is_open`` is False, and reading ``store`` opens it at once.
    first_page: FirstPage | None = None
    opener: Callable[[], Store] | None = None

    @property
    def store_dir(self) -> Path:
        return self.store.directory

    @property
    def is_open(self) -> bool:
        return self.__dict__.get("_store") is not None

    def open_store(self) -> Store:
        """The store, opened now if it was left for after the first frame."""
        with _OPENING:
            store = self.__dict__.get("_store")
            if store is None:
                if self.opener is None:
                    raise StoreError("the store is not open")
                store = self.opener()
                self.__dict__["_store"] = store
                self.opener = None
            return store

    def close(self) -> None:
        with _OPENING:  # after an open in progress (the app quit while its store was opening)
            store = self.__dict__.get("_store")
            self.opener = None
            self.first_page = None
            if store is not None:
                store.close()


def _get_store(session: Session) -> Store:
    store = session.__dict__.get("_store")
    if store is None and session.opener is not None:  # read before the app's first frame was done
        return session.open_store()
    return store  # type: ignore[return-value] - None only in a demo whose store is being built


def _set_store(session: Session, store: Store | None) -> None:
    session.__dict__["_store"] = store


# ``store`` opens a deferred store on first use (see ``opener``); the dataclass's __init__ and
# ``dataclasses.replace`` set it through this property.
Session.store = property(_get_store, _set_store)  # type: ignore[assignment,method-assign]
_OPENING = threading.RLock()


def new_passphrase(ask: Ask | None) -> str:
    """A passphrase for a new store: from the environment, else typed twice (``ask``)."""
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
            data_key = create_data_key(directory, passphrase=new_passphrase(ask), use_keychain=False)
    elif data_key is None:
        data_key = unlock_data_key(directory, ask)
    from carebox.services.threads import ensure_policy
    from carebox.store.store import Store

    store = Store.open(directory, Cipher(data_key), professional=config.professional_address, create=True)
    policy = policy_from_config(config.policy)
    ensure_policy(store, policy)
    return Session(config=config, store=store, policy=policy, demo=bool(info and info.demo))


def defer_open(session: Session, *, data_key: bytes, limit: int, store_dir: Path | None = None) -> bool:
    """Leave the store of ``session`` for after the app's first frame: read the Due view's first
    ``limit`` rows through the sqlite3 driver (store.peek: SQLAlchemy is not imported yet) into
    ``session.first_page``, and set ``session.opener`` to open the store as ``open_session``
    does (the app calls it after that frame; ``session.store`` calls it if read sooner).
    False, with nothing set, when the store must be opened first (missing, a schema or deadlines
    to update, a key that does not open it): ``open_session`` then says or does what is needed."""
    from carebox.services.policy import POLICY_META, policy_fingerprint
    from carebox.store.peek import first_page

    config = session.config
    directory = (store_dir or config.store_dir()).expanduser()
    cipher = Cipher(data_key)
    policy = session.policy
    page = first_page(directory, cipher, limit, {POLICY_META: policy_fingerprint(policy)})
    if page is None:
        return False

    def opener() -> Store:
        from carebox.services.threads import ensure_policy
        from carebox.store.store import Store

        store = Store.open(directory, cipher, professional=config.professional_address)
        ensure_policy(store, policy)
        return store

    session.first_page = page
    session.opener = opener
    return True
