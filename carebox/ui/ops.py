"""The UI's door to the services written alongside it (outbox, safety, sync, export).

Each service module is imported when present. A missing or broken one turns its feature into a
one-line notice ("sending is not available: ...") instead of breaking the app; ``problems()``
lists those lines for the status notice at start.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import ModuleType
from typing import Any

from carebox.domain.senders import badge as sender_badge
from carebox.services.session import Session

_cache: dict[str, ModuleType | None] = {}
_problems: dict[str, str] = {}


class Unavailable(Exception):
    """A feature whose service is not there (one line for the user)."""


def _load(name: str) -> ModuleType | None:
    if name in _cache:
        return _cache[name]
    module: ModuleType | None = None
    try:
        if importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
    except Exception as exc:  # a colleague's module failing to import must not stop the UI
        _problems[name] = f"{name.rsplit('.', 1)[-1]} service failed to load ({exc.__class__.__name__})"
    _cache[name] = module
    return module


def problems() -> list[str]:
    """Lines about services that failed to load (so far: they are imported when first used)."""
    return list(_problems.values())


def outbox() -> ModuleType | None:
    return _load("carebox.services.outbox")


def safety() -> ModuleType | None:
    return _load("carebox.services.safety")


def sync() -> ModuleType | None:
    return _load("carebox.services.sync")


def export() -> ModuleType | None:
    return _load("carebox.services.export")


def need_outbox() -> ModuleType:
    mod = outbox()
    if mod is None:
        raise Unavailable("sending is not available in this build (no outbox service)")
    return mod


def message(exc: BaseException) -> str:
    """One line for the user. Service errors are already worded without patient data; anything
    else is named by its class only (its text might hold data)."""
    known = (
        "OutboxError",
        "ExportError",
        "Unavailable",
        "KeyProblem",
        "WrongPassphrase",
        "TemplateError",
        "SyncError",
        "AccountProblem",
        "PatientError",
    )
    if type(exc).__name__ in known or (type(exc).__module__.startswith("carebox.") and str(exc)):
        return str(exc)  # carebox's own errors are one line without patient data
    return f"something went wrong ({type(exc).__name__}); nothing else was changed"


# --- audit ---------------------------------------------------------------------------------------


def record(session: Session, action: str, ref: str | Sequence[str] = "", now: datetime | None = None) -> None:
    """An audit entry with opaque ids, when the audit trail exists. Never raises: an audit
    problem must not block the physician's work (it shows in ``carebox audit verify``)."""
    mod = safety()
    if mod is None or not hasattr(mod, "record"):
        return
    with contextlib.suppress(Exception):  # see the docstring
        mod.record(session.store, action, ref, now)


# --- sending -------------------------------------------------------------------------------------


def render_template(session: Session, name: str, thread_id: str) -> str:
    return need_outbox().render_template(session, name, thread_id)


def recipient(session: Session, thread_id: str, now: datetime) -> str | None:
    """The address a reply to this conversation goes to (as the outbox decides it)."""
    mod = outbox()
    if mod is None:
        return None
    try:
        result = mod.preview_bulk(session, [thread_id], "-", kind="reply", now=now)
    except Exception:
        return None
    preview = result.previews.get(thread_id)
    return preview.recipient_addr if preview is not None else None


def template_text(session: Session, name: str) -> str | None:
    return session.config.templates.get(name)


def queue_reply(session: Session, thread_id: str, body: str, *, kind: str, now: datetime) -> str:
    entry = need_outbox().queue_reply(session, thread_id, body, kind=kind, now=now)
    record(session, "redirect" if kind.startswith("redirect") else "reply", [thread_id, entry], now)
    return entry


def mark_out_of_scope(
    session: Session, thread_id: str, category: str, *, now: datetime, body: str | None
) -> str | None:
    mod = outbox()
    if mod is None:
        if body:
            raise Unavailable("sending is not available in this build (no outbox service)")
        from carebox.services.threads import set_tag

        set_tag(session.store, session.policy, thread_id, category, at=now)
        entry = None
    else:
        entry = mod.mark_out_of_scope(session, thread_id, category, now=now, body=body)
    record(session, "tag", [thread_id, f"tag={category}"], now)
    return entry


def set_tag(session: Session, thread_id: str, tag: str | None, *, now: datetime) -> None:
    from carebox.services.threads import set_tag as _set_tag

    _set_tag(session.store, session.policy, thread_id, tag, at=now)
    record(session, "tag" if tag else "untag", [thread_id, f"tag={tag}"] if tag else thread_id, now)


def undo_entry(session: Session, entry_id: str, *, now: datetime) -> None:
    need_outbox().undo(session, entry_id, now=now)
    record(session, "outbox_discard", [entry_id, "undo"], now)


def preview_bulk(session: Session, thread_ids: Sequence[str], template: str, *, kind: str, now: datetime) -> Any:
    return need_outbox().preview_bulk(session, thread_ids, template, kind=kind, now=now)


def queue_bulk(
    session: Session, thread_ids: Sequence[str], template: str, *, kind: str, now: datetime, tag: str | None
) -> Any:
    result = need_outbox().queue_bulk(session, thread_ids, template, kind=kind, now=now, tag=tag)
    if result.queued:
        record(session, "bulk_reply", [f"n={len(result.queued)}", *list(result.queued.values())[:20]], now)
    return result


def outbox_entries(session: Session) -> list[Any]:
    mod = outbox()
    return mod.list_entries(session.store) if mod is not None else []


def retry(session: Session, entry_id: str, *, now: datetime) -> None:
    need_outbox().retry(session, entry_id, now=now)


def discard(session: Session, entry_id: str, *, now: datetime) -> None:
    need_outbox().discard(session, entry_id, now=now)
    record(session, "outbox_discard", entry_id, now)


def can_send(session: Session) -> bool:
    return outbox() is not None and (session.demo or session.config.account is not None)


async def flush(session: Session, *, now: datetime) -> str | None:
    """Send what is due (after the undo window). None when sending is not set up here."""
    mod = outbox()
    if mod is None or not can_send(session):
        return None
    report = await mod.flush(session, now=now)
    return report.line()


# --- safety ----------------------------------------------------------------------------------------


def badge(sender_status: str) -> tuple[str, str]:
    """(text, style) of a row's sender badge (no import of the safety service: the first rows
    are painted before it loads)."""
    return sender_badge(sender_status)


def need_safety() -> ModuleType:
    mod = safety()
    if mod is None or not hasattr(mod, "apply_patient"):
        raise Unavailable("the patient directory is not available in this build (no safety service)")
    return mod


def patients(session: Session) -> list[Any]:
    """The directory, decrypted, sorted by name (DirectoryPatient records)."""
    return list(need_safety().patients(session.store))


def save_patient(session: Session, fields: Mapping[str, str], patient_id: str, *, now: datetime) -> Any:
    """Validate the form's fields and save (add when ``patient_id`` is empty): the service
    records it in the audit trail and recomputes that patient's conversations. Returns the
    service's PatientChange; raises its PatientError (one line naming the field)."""
    mod = need_safety()
    record = mod.patient_from_form(**fields, patient_id=patient_id)
    return mod.apply_patient(session.store, record, policy=session.policy, config=session.config, now=now)


def delete_patient(session: Session, patient_id: str, *, now: datetime) -> Any:
    """Delete one patient (audited; its conversations recomputed). None when not on file."""
    return need_safety().remove_patient(
        session.store, patient_id, policy=session.policy, config=session.config, now=now
    )


def thread_safety(session: Session, thread_id: str, now: datetime) -> Any:
    mod = safety()
    if mod is None or not hasattr(mod, "thread_safety"):
        return None
    return mod.thread_safety(session.store, thread_id, session.config, now)


# --- sync ------------------------------------------------------------------------------------------


def sync_line(session: Session) -> str:
    """Sync state for the status bar when no background sync runs."""
    if session.demo:
        return "demo: no mail server"
    if session.config.account is None:
        return "sync: not set up (no [account] in the config)"
    return "sync: off (s syncs now)" if sync() is not None else "sync: not available"


async def sync_now(session: Session, *, now: datetime) -> str:
    """One sync (``carebox sync``) when no background sync runs."""
    if session.demo:
        return "the demo has no mail server to sync with"
    if session.config.account is None:
        return "no [account] in the config: add it to sync with your mailbox"
    mod = sync()
    if mod is None or not hasattr(mod, "sync_once"):
        raise Unavailable("sync is not available in this build (no sync service)")
    report = await mod.sync_once(session)
    record(session, "sync", "", now)
    return str(report.line())


# --- export ----------------------------------------------------------------------------------------


def export_thread(session: Session, thread_id: str, folder: str, *, now: datetime) -> list[str]:
    mod = export()
    if mod is None:
        raise Unavailable("export is not available in this build")
    from pathlib import Path

    ident = session.config.identity
    paths = mod.export_thread(
        session.store,
        thread_id,
        Path(folder),
        now,
        practice_name=ident.practice_name,
        physician_name=ident.physician_name,
        tz=session.policy.tz,
    )
    return [str(p) for p in paths]


# --- reading -----------------------------------------------------------------------------------------


def thread_rows(session: Session, thread_ids: Sequence[str]) -> list[Any]:
    """Decrypted inbox rows for these ids."""
    from carebox.services import inbox

    return inbox.rows(session.store, thread_ids)


def attachment(session: Session, attachment_id: str) -> tuple[str, bytes]:
    """(file name, bytes) of a stored attachment."""
    from carebox.services import inbox

    return inbox.attachment(session.store, attachment_id)
