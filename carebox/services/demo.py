"""`carebox demo`: a throwaway encrypted store filled with the bundled sample practice mailbox.

The demo key is wrapped with a fixed demo passphrase (the data is invented), so no keychain or
prompt is needed. Replies made in the demo go to a local outbox file, never to a server."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from carebox.config import AccountConfig, Config, IdentityConfig, ServerConfig, StoreConfig
from carebox.services.policy import POLICY_META, policy_fingerprint, policy_from_config
from carebox.services.session import Session, defer_open
from carebox.store.crypto import Cipher
from carebox.store.keys import DEMO_PASSPHRASE, create_data_key, unlock_data_key

# The store, the import and the safety checks (the ORM: about half a second of imports) are
# imported where used: the app paints the demo's inbox before they load (see open_demo_store).

DEMO_ADDRESS = "dr.lindqvist@riverside-practice.example"
DEMO_OUTBOX = "demo-outbox.mbox"
DEMO_SCRYPT_N = 2**10  # the demo passphrase is public and its data invented: the wrap is a formality (~1 ms)


def demo_config(store_dir: Path) -> Config:
    return Config(
        account=AccountConfig(
            address=DEMO_ADDRESS,
            username="dr.lindqvist",
            imap=ServerConfig(host="demo.invalid"),
            smtp=ServerConfig(host="demo.invalid"),
        ),
        identity=IdentityConfig(
            physician_name="Dr. Maya Lindqvist",
            practice_name="Riverside Family Practice",
            phone="+1 555 0100 200",
            booking="https://riverside-practice.example/book or call +1 555 0100 200",
        ),
        store=StoreConfig(path=store_dir),
    )


def build_demo_store(root: Path, now: datetime) -> None:
    """Fill ``root`` with the demo: an encrypted store of the sample practice mailbox and its
    patient directory, dated relative to ``now``. Closes the store when done, so another process
    may build it while this one starts the UI (see cli.cmd_demo)."""
    from carebox.demo.generate import demo_messages, patients_csv
    from carebox.mail.mailbox import MailboxItem
    from carebox.services.importer import import_items
    from carebox.services.safety import import_patients_csv, safety_inspector
    from carebox.store.store import Store

    store_dir = root / "store"
    config = demo_config(store_dir)
    key = create_data_key(store_dir, passphrase=DEMO_PASSPHRASE, use_keychain=False, scrypt_n=DEMO_SCRYPT_N, demo=True)
    store = Store.open(store_dir, Cipher(key), professional=DEMO_ADDRESS, create=True)
    try:
        policy = policy_from_config(config.policy)
        items = [MailboxItem(f"demo:{i}", raw, frozenset()) for i, raw in enumerate(demo_messages(now))]
        # The directory's visit dates are relative to now, like the messages (invented data only).
        directory = root / "patients.csv"
        directory.write_text(patients_csv(now), encoding="utf-8")
        import_patients_csv(store, directory, now=now)
        import_items(store, items, policy, folder="INBOX", inspectors=[safety_inspector(store, config, now)])
        store.set_meta(POLICY_META, policy_fingerprint(policy))
    finally:
        store.close()


def demo_session(root: Path) -> Session:
    """The demo's session before its store is open (``open_demo_store`` opens it): the app can
    start on it while another process is still building the store."""
    config = demo_config(root / "store")
    session = Session(
        config=config,
        store=None,  # type: ignore[arg-type] - set by open_demo_store before anything reads it
        policy=policy_from_config(config.policy),
        demo=True,
        demo_dir=root,
    )
    session.extras["demo_outbox"] = root / DEMO_OUTBOX
    return session


def open_demo_store(session: Session, *, first_page: int = 0) -> None:
    """Open the demo store built in the session's folder (its key is wrapped by the demo
    passphrase). ``first_page``: read that many rows of the Due view only, and leave the store
    for after the app's first frame (``services.session.defer_open``)."""
    store_dir = session.config.store_dir()
    key = unlock_data_key(store_dir)
    if first_page and defer_open(session, data_key=key, limit=first_page, store_dir=store_dir):
        return
    from carebox.store.store import Store

    session.store = Store.open(store_dir, Cipher(key), professional=DEMO_ADDRESS)


def open_demo(root: Path, *, keep: bool = False) -> Session:
    """Open the demo store built in ``root``."""
    session = demo_session(root)
    open_demo_store(session)
    if keep:
        print(f"demo store kept at {session.config.store_dir()}")
    return session
