"""Export a conversation for the medical record: PDF, plain text and a FHIR R4 Bundle of
Communication resources, written to a folder the physician chooses (files 0600), with an audit
entry.

File names carry the opaque thread id and the export time only, never a patient's name. Mail
text is cleaned of control and escape sequences. Attachments are listed (name, type, size), not
embedded. Nothing of the content reaches a log: characters the PDF font lacks are replaced
before fpdf2 sees them (it would log them), and its logger is muted while writing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from carebox.domain.models import Address
from carebox.domain.sanitize import clean_line, clean_text
from carebox.services.safety import record
from carebox.store.store import Store, StoredMessage, ThreadRow

FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/local/share/fonts/DejaVuSans.ttf",
    "/Library/Fonts/DejaVuSans.ttf",
)
AUTO = "auto"


class ExportError(Exception):
    """An export problem, worded as one line for the user."""


@dataclass(frozen=True)
class _Msg:
    number: int
    when: str
    iso: str
    outgoing: bool
    sender: str
    to: str
    subject: str
    body: str
    attachments: tuple[str, ...]
    message_id: str


@dataclass(frozen=True)
class _Doc:
    thread_id: str
    title: str
    header: tuple[str, ...]
    messages: tuple[_Msg, ...]


def _who(a: Address) -> str:
    name, addr = clean_line(a.name), clean_line(a.addr)
    return f"{name} <{addr}>" if name and addr else (addr or name or "(unknown)")


def _size(n: int) -> str:
    return f"{n} B" if n < 1024 else (f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB")


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _document(
    row: ThreadRow, msgs: list[StoredMessage], now: datetime, tz: tzinfo, practice: str, physician: str
) -> _Doc:
    zone = "UTC" if tz is UTC else (getattr(tz, "key", None) or str(tz))
    stamp = "%Y-%m-%d %H:%M"
    header = [
        *([f"Practice: {clean_line(practice)}"] if practice else []),
        *([f"Physician: {clean_line(physician)}"] if physician else []),
        f"Patient: {_who(Address(row.patient_name, row.patient_addr))}",
        f"Subject: {clean_line(row.subject)}",
        f"Conversation: {row.id}, {len(msgs)} messages, {msgs[0].date.astimezone(tz).strftime(stamp)} to "
        f"{msgs[-1].date.astimezone(tz).strftime(stamp)} ({zone})",
        f"Exported: {now.astimezone(tz).strftime(stamp)} ({zone}) by carebox",
    ]
    out = []
    for i, m in enumerate(msgs, 1):
        out.append(
            _Msg(
                number=i,
                when=f"{m.date.astimezone(tz).strftime(stamp)} ({zone})",
                iso=_iso(m.date),
                outgoing=m.outgoing,
                sender=_who(m.sender),
                to=", ".join(_who(a) for a in m.to) or "(none)",
                subject=clean_line(m.subject),
                body=clean_text(m.body).replace("\t", "    ").rstrip(),
                attachments=tuple(f"{clean_line(name)} ({_size(size)})" for _, name, size in m.attachments),
                message_id=clean_line(m.message_id),
            )
        )
    return _Doc(row.id, "Conversation for the medical record", tuple(header), tuple(out))


def _text(doc: _Doc) -> str:
    lines = [doc.title, "=" * len(doc.title), *doc.header, ""]
    for m in doc.messages:
        lines += [
            "-" * 72,
            f"[{m.number}] {m.when} - {'from the practice' if m.outgoing else 'from the patient'}",
            f"From: {m.sender}",
            f"To: {m.to}",
            f"Subject: {m.subject}",
        ]
        if m.attachments:
            lines.append(f"Attachments (not included): {'; '.join(m.attachments)}")
        lines += ["", m.body, ""]
    return "\n".join(lines) + "\n"


def _fhir(doc: _Doc, row: ThreadRow, now: datetime) -> dict[str, Any]:
    patient_display = _who(Address(row.patient_name, row.patient_addr))
    entries = []
    previous: str | None = None
    for m in doc.messages:
        rid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"carebox:{row.id}:{m.number}:{m.iso}"))
        payload: list[dict[str, Any]] = [{"contentString": m.body}]
        payload += [{"contentAttachment": {"title": a}} for a in m.attachments]
        resource: dict[str, Any] = {
            "resourceType": "Communication",
            "id": rid,
            "status": "completed",
            "medium": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode",
                            "code": "EMAILWRIT",
                            "display": "email",
                        }
                    ]
                }
            ],
            "subject": {"display": patient_display},
            "topic": {"text": m.subject},
            "sent": m.iso,
            "sender": {"display": m.sender},
            "recipient": [{"display": m.to}],
            "payload": payload,
        }
        if not m.outgoing:
            resource["received"] = m.iso
        if m.message_id:
            resource["identifier"] = [{"system": "urn:ietf:rfc:5322", "value": f"<{m.message_id}>"}]
        if previous is not None:
            resource["inResponseTo"] = [{"reference": f"urn:uuid:{previous}"}]
        entries.append({"fullUrl": f"urn:uuid:{rid}", "resource": resource})
        previous = rid
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"carebox:{row.id}:{_iso(now)}")),
        "type": "collection",
        "timestamp": _iso(now),
        "entry": entries,
    }


def find_font() -> Path | None:
    for candidate in FONT_CANDIDATES:
        p = Path(candidate)
        if p.is_file():
            return p
    return None


@contextlib.contextmanager
def _quiet_fpdf() -> Iterator[None]:
    loggers = [logging.getLogger("fpdf"), logging.getLogger("fontTools")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _pdf(doc: _Doc, font: Path | None, now: datetime) -> bytes:
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    footer_text = f"carebox export - conversation {doc.thread_id} - page "

    class _Pdf(FPDF):
        def footer(self) -> None:
            self.set_y(-12)
            self.set_font(family, "", 8)
            self.cell(0, 5, f"{footer_text}{self.page_no()}/{{nb}}", align="C")

    with _quiet_fpdf():
        pdf = _Pdf(format="A4")
        pdf.set_creation_date(now)
        pdf.set_auto_page_break(True, margin=15)
        if font is not None:
            from fontTools.ttLib import TTFont

            pdf.add_font("body", "", str(font))
            bold = font.with_name(font.stem + "-Bold" + font.suffix)
            pdf.add_font("body", "B", str(bold if bold.is_file() else font))
            have = set(TTFont(str(font), lazy=True).getBestCmap())
            replacement = "\ufffd" if 0xFFFD in have else "?"

            def fit(s: str) -> str:
                return "".join(c if ord(c) in have or c == "\n" else replacement for c in s)

            family = "body"
        else:

            def fit(s: str) -> str:
                return s.encode("latin-1", "replace").decode("latin-1")

            family = "helvetica"
        pdf.add_page()

        def para(text: str, size: float = 10, style: str = "", h: float = 5) -> None:
            pdf.set_font(family, style, size)
            pdf.multi_cell(0, h, fit(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT, align="L")

        para(doc.title, 15, "B", 8)
        for line in doc.header:
            para(line, 9)
        for m in doc.messages:
            pdf.ln(3)
            y = pdf.get_y()
            pdf.line(pdf.l_margin, y, pdf.w - pdf.r_margin, y)
            pdf.ln(2)
            para(f"[{m.number}] {m.when} - {'from the practice' if m.outgoing else 'from the patient'}", 10, "B")
            para(f"From: {m.sender}", 9)
            para(f"To: {m.to}", 9)
            para(f"Subject: {m.subject}", 9)
            if m.attachments:
                para(f"Attachments (not included): {'; '.join(m.attachments)}", 9)
            pdf.ln(1)
            para(m.body or "(no text)", 10)
        return bytes(pdf.output())


def _write_private(path: Path, data: bytes) -> None:
    """Write atomically with mode 0600 (mkstemp creates 0600; the rename keeps it)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".carebox-export-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def export_thread(
    store: Store,
    thread_id: str,
    out_dir: Path,
    now: datetime,
    *,
    practice_name: str = "",
    physician_name: str = "",
    tz: tzinfo = UTC,
    font: Path | str | None = AUTO,
) -> list[Path]:
    """Write ``carebox-THREAD-YYYYmmdd-HHMMSS.{pdf,txt,fhir.json}`` into ``out_dir`` (created 0700
    if missing) and record an ``export`` audit entry. ``font``: a TTF for the PDF (Unicode), None
    for the built-in Helvetica (Latin-1 only; other characters become '?'), or "auto" (DejaVu
    Sans when installed). Raises ``ExportError`` (one line)."""
    rows = store.thread_rows([thread_id])
    if not rows:
        raise ExportError(f"no conversation {thread_id!r}: take the id from `carebox queue --json --all`")
    (row,) = rows
    msgs = store.thread_messages(thread_id)
    if not msgs:
        raise ExportError(f"conversation {thread_id} has no messages to export")
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ExportError(f"cannot create the folder {out_dir}: {exc.strerror or exc.__class__.__name__}") from None
    if not out_dir.is_dir():
        raise ExportError(f"{out_dir} is not a folder: choose a folder for the export")
    doc = _document(row, msgs, now, tz, practice_name, physician_name)
    chosen = find_font() if font == AUTO else (Path(font) if font else None)
    base = f"carebox-{thread_id}-{now.astimezone(UTC).strftime('%Y%m%d-%H%M%S')}"
    outputs = [
        (out_dir / f"{base}.pdf", _pdf(doc, chosen, now)),
        (out_dir / f"{base}.txt", _text(doc).encode("utf-8")),
        (out_dir / f"{base}.fhir.json", json.dumps(_fhir(doc, row, now), indent=1, ensure_ascii=False).encode()),
    ]
    written = []
    try:
        for path, data in outputs:
            _write_private(path, data)
            written.append(path)
    except OSError as exc:
        raise ExportError(f"cannot write to {out_dir}: {exc.strerror or exc.__class__.__name__}") from None
    record(store, "export", thread_id, now)
    return written
