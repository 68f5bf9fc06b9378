"""iter_mailbox: mbox and Maildir reading, flags, and one-line errors for bad paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from carebox.mail import mailbox as mailbox_module
from carebox.mail.mailbox import MailboxError, MailboxItem, iter_mailbox

MBOX = (
    b"From alice@a.example Mon Nov  3 09:00:00 2025\n"
    b"From: alice@a.example\nSubject: one\nStatus: RO\nX-Status: AF\n\n"
    b"First body.\n>From the escaped line.\n>>From a doubly escaped line.\n"
    b"A paragraph that mentions\nFrom here on, a line that starts with From but follows text.\n\n"
    b"From bob@b.example Mon Nov  3 10:00:00 2025\n"
    b"From: bob@b.example\nSubject: two\nX-Mozilla-Status: 0003\n\nSecond body.\n\n"
    b"From carol@c.example Mon Nov  3 11:00:00 2025\n"
    b"From: carol@c.example\nSubject: three\n\nThird body, no flags.\n"
)


def test_mbox_messages_in_order(tmp_path: Path) -> None:
    path = tmp_path / "inbox.mbox"
    path.write_bytes(MBOX)
    items = list(iter_mailbox(path))
    assert [item.label for item in items] == ["mbox:1", "mbox:2", "mbox:3"]
    assert all(isinstance(item, MailboxItem) for item in items)
    first, second, third = items
    assert first.raw == (
        b"From: alice@a.example\nSubject: one\nStatus: RO\nX-Status: AF\n\n"
        b"First body.\nFrom the escaped line.\n>From a doubly escaped line.\n"
        b"A paragraph that mentions\nFrom here on, a line that starts with From but follows text.\n"
    )
    assert first.flags == frozenset({"\\Seen", "\\Answered", "\\Flagged"})
    assert second.raw == b"From: bob@b.example\nSubject: two\nX-Mozilla-Status: 0003\n\nSecond body.\n"
    assert second.flags == frozenset({"\\Seen", "\\Answered"})
    assert third.raw.endswith(b"Third body, no flags.\n")
    assert third.flags == frozenset()


def test_mbox_with_crlf_and_envelope_without_blank_line(tmp_path: Path) -> None:
    data = (
        b"From a@a.example Mon Nov  3 09:00:00 2025\r\nSubject: one\r\n\r\nbody one\r\n\r\n"
        b"From b@b.example Tue Nov  4 09:00:00 2025\r\nSubject: two\r\n\r\nbody two\r\n"
        # a sloppy writer left out the blank line; the envelope line still separates
        b"From c@c.example Wed Nov  5 09:00:00 2025\r\nSubject: three\r\n\r\nbody three\r\n"
    )
    path = tmp_path / "crlf.mbox"
    path.write_bytes(data)
    raws = [item.raw for item in iter_mailbox(path)]
    assert raws == [
        b"Subject: one\r\n\r\nbody one\r\n",
        b"Subject: two\r\n\r\nbody two\r\n",
        b"Subject: three\r\n\r\nbody three\r\n",
    ]


def test_empty_mbox_has_no_messages(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbox"
    path.write_bytes(b"")
    assert list(iter_mailbox(path)) == []


def test_mbox_is_read_lazily(tmp_path: Path) -> None:
    path = tmp_path / "big.mbox"
    message = b"From x@x.example Mon Nov  3 09:00:00 2025\nSubject: s\n\n" + b"line of text\n" * 100 + b"\n"
    path.write_bytes(message * 2_000)
    items = iter_mailbox(path)
    first = next(items)
    assert first.label == "mbox:1"
    assert sum(1 for _ in items) == 1_999


def write_maildir(root: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True)
    (root / "new" / "1700000003.M3P1.host").write_bytes(b"Subject: new one\n\nfresh\n")
    (root / "cur" / "1700000001.M1P1.host:2,FS").write_bytes(b"Subject: seen flagged\n\nx\n")
    (root / "cur" / "1700000002.M2P1.host:2,RT").write_bytes(b"Subject: replied trashed\n\ny\n")
    (root / "cur" / "1700000004.M4P1.host:2,DP").write_bytes(b"Subject: draft passed\n\nz\n")
    (root / "cur" / "1700000005.M5P1.host").write_bytes(b"Subject: no info\n\nw\n")
    (root / "cur" / ".hidden").write_bytes(b"not a message")
    (root / "tmp" / "1700000006.M6P1.host").write_bytes(b"Subject: still being delivered\n\n")
    return root


def test_maildir(tmp_path: Path) -> None:
    root = write_maildir(tmp_path / "Maildir")
    items = list(iter_mailbox(root))
    assert [(item.label, item.flags) for item in items] == [
        ("maildir:new/1700000003.M3P1.host", frozenset()),
        ("maildir:cur/1700000001.M1P1.host:2,FS", frozenset({"\\Flagged", "\\Seen"})),
        ("maildir:cur/1700000002.M2P1.host:2,RT", frozenset({"\\Answered", "\\Deleted"})),
        ("maildir:cur/1700000004.M4P1.host:2,DP", frozenset({"\\Draft"})),
        ("maildir:cur/1700000005.M5P1.host", frozenset()),
    ]
    assert items[0].raw == b"Subject: new one\n\nfresh\n"


def test_maildir_message_moved_while_reading(tmp_path: Path) -> None:
    root = write_maildir(tmp_path / "Maildir")
    items = iter_mailbox(root)  # lists new/ and cur/ now
    # a mail client marks the new message read before we get to it
    os.rename(root / "new" / "1700000003.M3P1.host", root / "cur" / "1700000003.M3P1.host:2,S")
    found = [item for item in items if b"fresh" in item.raw]
    assert [(item.label, item.flags) for item in found] == [
        ("maildir:cur/1700000003.M3P1.host:2,S", frozenset({"\\Seen"}))
    ]


# --------------------------------------------------------------------------- errors


def assert_one_line(error: MailboxError, *words: str) -> None:
    text = str(error)
    assert "\n" not in text
    for word in words:
        assert word in text, text


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(MailboxError) as caught:
        iter_mailbox(tmp_path / "nope.mbox")
    assert_one_line(caught.value, "nope.mbox", "no such file")


def test_pdf_is_not_a_mailbox(tmp_path: Path) -> None:
    path = tmp_path / "letter.pdf"
    path.write_bytes(b"%PDF-1.4\n%fake\n")
    with pytest.raises(MailboxError) as caught:
        iter_mailbox(path)  # raised at once, before any iteration
    assert_one_line(caught.value, "letter.pdf", "neither an mbox", "Maildir")


def test_single_message_file_is_not_an_mbox(tmp_path: Path) -> None:
    path = tmp_path / "message.eml"
    path.write_bytes(b"From: a@b.example\nSubject: x\n\nbody\n")  # "From:" is not "From "
    with pytest.raises(MailboxError) as caught:
        iter_mailbox(path)
    assert_one_line(caught.value, "message.eml", "'From '")


def test_random_directory_is_not_a_maildir(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "cur").mkdir(parents=True)  # cur/ alone is not enough
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(MailboxError) as caught:
        iter_mailbox(folder)
    assert_one_line(caught.value, "photos", "cur/ and new/")


def deny(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``path`` unreadable: chmod, and for root (whom chmod does not stop) the same
    PermissionError the OS gives everyone else, raised where the module opens or lists it."""
    path.chmod(0)
    if os.geteuid() != 0:
        return
    real_open, real_scandir = open, os.scandir

    def guarded_open(file, *args, **kwargs):
        if Path(file) == path:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    def guarded_scandir(folder="."):
        if Path(folder) == path:
            raise PermissionError(13, "Permission denied", str(folder))
        return real_scandir(folder)

    monkeypatch.setattr(mailbox_module, "open", guarded_open, raising=False)
    monkeypatch.setattr(mailbox_module.os, "scandir", guarded_scandir)


def test_unreadable_mbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "locked.mbox"
    path.write_bytes(MBOX)
    deny(path, monkeypatch)
    with pytest.raises(MailboxError) as caught:
        iter_mailbox(path)
    assert_one_line(caught.value, "locked.mbox", "permission denied")


def test_unreadable_maildir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_maildir(tmp_path / "Maildir")
    deny(root, monkeypatch)
    try:
        with pytest.raises(MailboxError) as caught:
            iter_mailbox(root)
        assert_one_line(caught.value, "Maildir", "permission denied")
    finally:
        root.chmod(0o755)


def test_unreadable_message_in_maildir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_maildir(tmp_path / "Maildir")
    locked = root / "cur" / "1700000002.M2P1.host:2,RT"
    deny(locked, monkeypatch)
    items = iter_mailbox(root)
    assert next(items).label == "maildir:new/1700000003.M3P1.host"
    assert next(items).label == "maildir:cur/1700000001.M1P1.host:2,FS"
    with pytest.raises(MailboxError) as caught:
        next(items)
    assert_one_line(caught.value, "1700000002.M2P1.host", "permission denied")
