"""Reply drafts, kept sealed inside the encrypted store (never in a file), one per conversation.

They use the store's sealed name/value table under ``draft:THREAD_ID`` (the name holds an
opaque id only). A dedicated drafts service would be tidier; this keeps drafts encrypted
until one exists."""

from __future__ import annotations

from carebox.services.session import Session

PREFIX = "draft:"


def load(session: Session, thread_id: str) -> str | None:
    try:
        value = session.store.get_secret(PREFIX + thread_id)
    except Exception:
        return None
    return value or None


def save(session: Session, thread_id: str, text: str) -> None:
    session.store.set_secret(PREFIX + thread_id, text)


def clear(session: Session, thread_id: str) -> None:
    if load(session, thread_id) is not None:
        session.store.set_secret(PREFIX + thread_id, "")
