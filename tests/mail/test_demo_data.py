"""The bundled demo practice: enough invented conversations, all parseable, all .example."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from carebox.demo.generate import (
    BROKEN_MESSAGE_ID,
    FIXED_NOW,
    HOSTILE_SUBJECT,
    MBOX_PATH,
    PATIENTS_CSV_PATH,
    PRACTICE_ADDRESS,
    demo_messages,
    mbox_bytes,
    patients_csv,
)
from carebox.domain.models import ParsedMessage
from carebox.mail.mailbox import iter_mailbox
from carebox.mail.parse import parse_message

NOW = datetime(2026, 2, 10, 13, 37, tzinfo=UTC)


@pytest.fixture(scope="module")
def parsed() -> list[ParsedMessage]:
    return [parse_message(raw) for raw in demo_messages(NOW)]


def root_of(message: ParsedMessage) -> str:
    if message.references:
        return message.references[0]
    if message.in_reply_to:
        return message.in_reply_to[0]
    return message.message_id


def threads(messages: list[ParsedMessage]) -> dict[str, list[ParsedMessage]]:
    by_root: dict[str, list[ParsedMessage]] = defaultdict(list)
    for message in messages:
        by_root[root_of(message)].append(message)
    return by_root


def test_at_least_sixty_conversations(parsed: list[ParsedMessage]) -> None:
    assert len({root_of(m) for m in parsed}) >= 60
    assert len({m.message_id for m in parsed}) == len(parsed)  # every message has its own id
    assert all(m.message_id for m in parsed)


def test_every_message_parses_and_only_the_broken_one_is_malformed(parsed: list[ParsedMessage]) -> None:
    malformed = [m for m in parsed if m.malformed]
    assert [m.message_id for m in malformed] == [BROKEN_MESSAGE_ID]
    broken = malformed[0]
    assert broken.body.startswith("Hi Dr. Lindqvist")  # best effort still shows the text
    assert all(m.body.strip() for m in parsed)
    assert all(m.date is not None and m.sender.addr for m in parsed)


def test_all_addresses_and_ids_are_example(parsed: list[ParsedMessage]) -> None:
    for message in parsed:
        for address in (message.sender, *message.to, *message.cc, *message.reply_to):
            assert address.addr.endswith(".example"), address
        for message_id in (message.message_id, *message.in_reply_to, *message.references):
            assert message_id.endswith(".example"), message_id
    raw = b"".join(demo_messages(NOW))
    for word in (b"@gmail", b".com>", b".org>", b"http://", b".net>"):
        assert word not in raw


def test_dates_follow_now(parsed: list[ParsedMessage]) -> None:
    assert all(m.date <= NOW for m in parsed)
    later = [parse_message(raw).date for raw in demo_messages(NOW + timedelta(days=30))]
    assert [d - timedelta(days=30) for d in later] == [m.date for m in parsed]
    assert demo_messages(NOW) == demo_messages(NOW)  # deterministic
    with pytest.raises(ValueError, match="aware"):
        demo_messages(datetime(2026, 1, 1))  # naive: refused


@pytest.mark.parametrize("window_hours", [24, 48])
def test_a_mix_of_due_soon_overdue_and_answered(parsed: list[ParsedMessage], window_hours: int) -> None:
    window = timedelta(hours=window_hours)
    due_soon = overdue = answered = 0
    for messages in threads(parsed).values():
        last = max(messages, key=lambda m: m.date)
        if last.sender.addr == PRACTICE_ADDRESS:
            answered += 1
            continue
        due = last.date + window  # the last patient message; earlier ones were answered
        if NOW < due <= NOW + timedelta(hours=8):
            due_soon += 1
        elif NOW - timedelta(hours=24) <= due < NOW:
            overdue += 1
    assert due_soon >= 3
    assert overdue >= 3
    assert answered >= 5


def test_special_messages(parsed: list[ParsedMessage]) -> None:
    by_subject = {m.subject: m for m in parsed}
    assert HOSTILE_SUBJECT in by_subject
    assert "\x1b]0;pwned\x07" in HOSTILE_SUBJECT and "[@click=app.quit]x[/]" in HOSTILE_SUBJECT
    assert any("chest tightness" in m.subject.lower() for m in parsed)
    html = by_subject["Question about my MRI appointment"]
    assert "<" not in html.body and "tracker" not in html.body and "Dear Dr. Lindqvist" in html.body
    raw_html = next(raw for raw in demo_messages(NOW) if b"Question about my MRI" in raw)
    assert b"text/html" in raw_html and b"text/plain" not in raw_html
    letter = by_subject["Hospital discharge letter attached"]
    assert [(a.filename, a.content_type) for a in letter.attachments] == [
        ("Discharge_letter_St_Annes.pdf", "application/pdf")
    ]
    assert letter.attachments[0].data.startswith(b"%PDF-")
    assert any("personal email" in m.body for m in parsed)
    assert any("not a patient" in m.body for m in parsed)
    replies = [m for m in parsed if m.sender.addr == PRACTICE_ADDRESS]
    assert len(replies) >= 10
    assert all(m.in_reply_to and m.references and m.subject.startswith("Re: ") for m in replies)
    longest = max(threads(parsed).values(), key=len)
    assert len(longest) >= 4


def test_patients_csv_matches_the_mail(parsed: list[ParsedMessage]) -> None:
    rows = list(csv.DictReader(io.StringIO(patients_csv(NOW))))
    assert list(rows[0]) == ["name", "emails", "phone", "consent_date", "last_visit", "next_visit"]
    emails = {e for row in rows for e in row["emails"].split(";")}
    assert all(e.endswith(".example") for e in emails)
    assert sum(1 for row in rows if not row["consent_date"]) >= 2
    assert any(";" in row["emails"] for row in rows)  # a patient with two addresses
    senders = {m.sender.addr for m in parsed if m.sender.addr != PRACTICE_ADDRESS}
    strangers = senders - emails
    # the unknown address, the never-seen asker and the phishing sender are not patients
    assert len(strangers) == 3
    assert len(senders & emails) >= 50
    for row in rows:
        for column in ("consent_date", "last_visit"):
            if row[column]:
                assert datetime.fromisoformat(row[column]).date() <= NOW.date()


def test_committed_files_are_up_to_date() -> None:
    assert MBOX_PATH.read_bytes() == mbox_bytes(FIXED_NOW), "run: python -m carebox.demo.generate"
    assert PATIENTS_CSV_PATH.read_text(encoding="utf-8") == patients_csv(FIXED_NOW)


def test_committed_mbox_imports_the_same_messages() -> None:
    from_file = [item.raw for item in iter_mailbox(MBOX_PATH)]
    in_memory = [raw.replace(b"\r\n", b"\n") for raw in demo_messages(FIXED_NOW)]
    assert from_file == in_memory  # includes a body line starting with "From " (escaped in the file)
    assert b"\n>From " in MBOX_PATH.read_bytes()
