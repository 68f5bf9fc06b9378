"""Export of a conversation: PDF, text and FHIR bundle, private files, an audit note."""

from __future__ import annotations

import json
import re
import stat
import zlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carebox.domain.deadlines import Policy
from carebox.domain.models import Address
from carebox.services.export import ExportError, export_thread, find_font
from carebox.services.threads import rethread
from carebox.store import audit
from carebox.store.crypto import Cipher
from carebox.store.store import Store
from tests.factories import DOC, DOCTOR, message

NOW = datetime(2026, 11, 3, 10, 30, tzinfo=UTC)
ANNA = Address("Anna Berg", "anna.berg@mail.example")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "store", Cipher(b"e" * 32), professional=DOCTOR, create=True)
    s.add_messages(
        "INBOX",
        [
            message(
                "q1@mail.example", sender=ANNA, to=DOC, subject="Knee", body="My knee hurts.\x1b[2J\tStill.", uid=1
            ),
            message(
                "a1@practice.example",
                sender=DOC,
                to=ANNA,
                subject="Re: Knee",
                body="Please rest it. Crème, naïve, Grüße; 漢字",
                hours=2,
                in_reply_to="q1@mail.example",
                uid=2,
            ),
        ],
    )
    rethread(s, Policy())
    yield s
    s.close()


def only_thread(store: Store) -> str:
    (tid,) = store.all_thread_ids()
    return tid


def pdf_text(data: bytes) -> bytes:
    """The decompressed content streams of a PDF written with a core font."""
    out = b""
    for m in re.finditer(rb"(?<!end)stream\r?\n", data):
        rest = data[m.end() :]
        try:  # the zlib stream ends by itself: no guessing where its bytes stop (one may be a CR)
            out += zlib.decompressobj().decompress(rest)
        except zlib.error:  # not compressed
            out += rest[: rest.find(b"endstream")]
    return out


def test_export_writes_three_private_files_and_audits(store: Store, tmp_path: Path) -> None:
    tid = only_thread(store)
    out = tmp_path / "record" / "nested"
    paths = export_thread(store, tid, out, NOW, practice_name="Riverside", physician_name="Dr. M")
    assert [p.name for p in paths] == [
        f"carebox-{tid}-20261103-103000.pdf",
        f"carebox-{tid}-20261103-103000.txt",
        f"carebox-{tid}-20261103-103000.fhir.json",
    ]
    for p in paths:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
        assert "Anna" not in p.name
    assert not list(out.glob(".carebox-export-*"))  # no temp files left
    (entry,) = audit.entries(store)
    assert (entry.action, entry.ref, entry.at) == ("export", tid, NOW)


def test_text_export(store: Store, tmp_path: Path) -> None:
    _, txt, _ = export_thread(store, only_thread(store), tmp_path, NOW, font=None)
    text = txt.read_text(encoding="utf-8")
    assert "Patient: Anna Berg <anna.berg@mail.example>" in text
    assert "[1] 2026-11-02 09:00 (UTC) - from the patient" in text
    assert "[2] 2026-11-02 11:00 (UTC) - from the practice" in text
    assert "My knee hurts." in text and "Grüße; 漢字" in text
    assert "\x1b" not in text  # escape sequences from mail are stripped
    assert text.index("My knee hurts.") < text.index("Please rest it.")


def test_fhir_bundle(store: Store, tmp_path: Path) -> None:
    *_, fhir = export_thread(store, only_thread(store), tmp_path, NOW, font=None)
    bundle = json.loads(fhir.read_text(encoding="utf-8"))
    assert bundle["resourceType"] == "Bundle" and bundle["type"] == "collection"
    assert bundle["timestamp"] == "2026-11-03T10:30:00Z"
    first, second = (e["resource"] for e in bundle["entry"])
    for e in bundle["entry"]:
        assert e["fullUrl"] == f"urn:uuid:{e['resource']['id']}"
    assert first["resourceType"] == second["resourceType"] == "Communication"
    assert first["status"] == "completed"
    assert first["sent"] == "2026-11-02T09:00:00Z" and second["sent"] == "2026-11-02T11:00:00Z"
    assert first["payload"][0]["contentString"].startswith("My knee hurts.")
    assert "漢字" in second["payload"][0]["contentString"]
    assert first["sender"]["display"] == "Anna Berg <anna.berg@mail.example>"
    assert first["identifier"][0]["value"] == "<q1@mail.example>"
    assert second["inResponseTo"] == [{"reference": f"urn:uuid:{first['id']}"}]
    assert "received" in first and "received" not in second


def test_pdf_with_core_font_holds_the_text(store: Store, tmp_path: Path) -> None:
    pdf, *_ = export_thread(store, only_thread(store), tmp_path, NOW, font=None)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    content = pdf_text(data)
    assert b"My knee hurts." in content and b"Please rest it." in content
    assert b"Anna Berg" in content


def test_pdf_with_unicode_font(store: Store, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    font = find_font()
    if font is None:  # Debian's fonts-dejavu-core is on CI's image; elsewhere the core-font path is tested
        pytest.skip("no DejaVu Sans on this machine")
    store.add_messages(
        "INBOX", [message("q2@mail.example", sender=ANNA, to=DOC, body="emoji \U0001f600 marker77", hours=5, uid=3)]
    )
    rethread(store, Policy())
    for tid in store.all_thread_ids():
        pdf, *_ = export_thread(store, tid, tmp_path / tid, NOW, font=font)
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF-") and b"/FontFile2" in data  # the TTF is embedded
    assert "marker77" not in caplog.text and "\U0001f600" not in caplog.text  # nothing of the mail in logs


def test_errors_are_one_line(store: Store, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="no conversation"):
        export_thread(store, "nope", tmp_path, NOW)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ExportError, match=r"cannot create the folder|is not a folder"):
        export_thread(store, only_thread(store), blocker, NOW)
    assert audit.entries(store) == []
