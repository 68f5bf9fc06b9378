"""Locking a running session (auto-lock) and unlocking it again.

Locking drops the data key: the store's Cipher forgets every key it derived, so nothing in the
process can open a sealed value until ``unlock`` builds a new Cipher from the passphrase (or the
keychain, for stores whose key lives there). Both are recorded in the audit trail (opaque refs
only) when the safety service is present.
"""

from __future__ import annotations

from datetime import datetime

from carebox.services.session import Session
from carebox.store.crypto import Cipher
from carebox.store.keys import KeyProblem, WrongPassphrase, check_passphrase, key_info

__all__ = ["KeyProblem", "WrongPassphrase", "is_locked", "lock", "needs_passphrase", "unlock"]

_FAILED = "lock.failed_unlocks"


def is_locked(session: Session) -> bool:
    return session.store.cipher.locked


def needs_passphrase(session: Session) -> bool:
    """True when unlocking asks for the passphrase; False when the key comes from the keychain
    (or a demo store), where the user confirms instead."""
    info = key_info(session.store_dir)
    return info is not None and info.holder == "passphrase" and not info.demo


def _record(session: Session, action: str, ref: str, now: datetime | None) -> bool:
    try:
        from carebox.services.safety import record
    except ImportError:  # the audit trail is not part of this build
        return False
    try:
        record(session.store, action, ref, now)
    except Exception:  # an audit problem must never keep the screen unlocked or locked
        return False
    return True


def lock(session: Session, *, reason: str = "auto", now: datetime | None = None) -> bool:
    """Drop the data key from memory. ``reason`` ("auto" or "manual") goes into the audit
    entry. Returns whether the audit trail recorded it (it is written before the key goes,
    since writing it needs the key). Locking twice is harmless."""
    if is_locked(session):
        return False
    recorded = _record(session, "lock", reason if reason in ("auto", "manual") else "auto", now)
    session.store.cipher.forget()
    session.extras[_FAILED] = 0
    return recorded


def unlock(session: Session, passphrase: str = "", *, now: datetime | None = None) -> bool:
    """Take the key back. Raises WrongPassphrase (nothing changes) or KeyProblem (one line).
    Returns whether the audit trail recorded it. Failed tries are counted and recorded with
    the unlock (they cannot be recorded while locked: the trail's MAC needs the key)."""
    if not is_locked(session):
        return False
    try:
        key = check_passphrase(session.store_dir, passphrase)
    except WrongPassphrase:
        session.extras[_FAILED] = int(session.extras.get(_FAILED, 0) or 0) + 1  # type: ignore[call-overload]
        raise
    session.store.cipher = Cipher(key)
    failed = int(session.extras.get(_FAILED, 0) or 0)  # type: ignore[call-overload]
    session.extras[_FAILED] = 0
    return _record(session, "unlock", f"failed={failed}", now)
