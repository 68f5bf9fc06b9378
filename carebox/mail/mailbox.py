"""Reading local mailbox files (mbox or Maildir) for ``carebox import PATH``.

:func:`iter_mailbox` checks the path at once (raising :class:`MailboxError` with one line for
the user) and returns an iterator of :class:`MailboxItem`. Nothing is written, and the whole
mailbox is never held in memory: an mbox is memory-mapped and cut at its ``From `` lines, a
Maildir is read one file at a time. Labels are opaque positions ("mbox:17",
"maildir:cur/NAME"), never message content.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["MailboxError", "MailboxItem", "iter_mailbox"]

# Maildir info flags (the letters after ":2,") as IMAP system flags. "P" (passed) has none.
_MAILDIR_FLAGS = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged", "D": "\\Draft", "T": "\\Deleted"}
# mbox "Status:" / "X-Status:" letters (mutt, Pine, Python's mailbox module).
_STATUS_FLAGS = {"R": "\\Seen"}
_X_STATUS_FLAGS = {"A": "\\Answered", "F": "\\Flagged", "T": "\\Draft", "D": "\\Deleted"}
# Thunderbird's X-Mozilla-Status bits.
_MOZILLA_FLAGS = {0x0001: "\\Seen", 0x0002: "\\Answered", 0x0004: "\\Flagged", 0x0008: "\\Deleted"}

# A message starts at a "From " line that is the first line, follows a blank line, or looks
# like an envelope line ("From sender Mon Jan  1 00:00:00 2024") even without the blank line.
_ENVELOPE = re.compile(
    rb"From \S*\s+(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\s+(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    rb"\s+\d{1,2}\s+\d{1,2}:\d{2}"
)
_ESCAPED_FROM = re.compile(rb"^>(>*From )", re.MULTILINE)
_STATUS = re.compile(rb"^(X-Status|Status|X-Mozilla-Status):[ \t]*([^\r\n]*)", re.MULTILINE | re.IGNORECASE)


class MailboxError(Exception):
    """A mailbox path that cannot be read. ``str(error)`` is one line for the user."""


@dataclass(frozen=True, slots=True)
class MailboxItem:
    label: str  # opaque position: "mbox:17" (1-based) or "maildir:cur/NAME"
    raw: bytes = field(repr=False)
    flags: frozenset[str] = frozenset()  # IMAP system flags: \Seen \Answered \Flagged \Draft \Deleted


def iter_mailbox(path: Path) -> Iterator[MailboxItem]:
    """The messages of the mbox file or Maildir folder at ``path``, in order.

    Raises :class:`MailboxError` right away when the path is missing, unreadable, or neither
    an mbox file nor a Maildir (a folder with ``cur/`` and ``new/``), and while iterating
    when a message file becomes unreadable.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise MailboxError(f"{path}: no such file or folder; check the path") from None
    except PermissionError:
        raise MailboxError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise MailboxError(f"{path}: cannot be read ({_reason(exc)})") from None
    if path.is_dir():
        return _iter_maildir(path)
    if not path.is_file():
        raise MailboxError(f"{path}: not a regular file; give an mbox file or a Maildir folder")
    return _iter_mbox(path, info.st_size)


def _reason(exc: OSError) -> str:
    return os.strerror(exc.errno) if exc.errno else type(exc).__name__


def _not_a_mailbox(path: Path, what: str) -> MailboxError:
    return MailboxError(
        f"{path}: {what}, so neither an mbox file (starting with a 'From ' line) "
        "nor a Maildir folder (with cur/ and new/ inside)"
    )


# --------------------------------------------------------------------------- mbox


def _iter_mbox(path: Path, size: int) -> Iterator[MailboxItem]:
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the generator below
    except PermissionError:
        raise MailboxError(f"{path}: permission denied; check the file's permissions") from None
    except OSError as exc:
        raise MailboxError(f"{path}: cannot be read ({_reason(exc)})") from None
    try:
        head = handle.read(5)
    except OSError as exc:
        handle.close()
        raise MailboxError(f"{path}: cannot be read ({_reason(exc)})") from None
    if head and head != b"From ":
        handle.close()
        raise _not_a_mailbox(path, "the file does not start with 'From '")
    if size == 0 or not head:
        handle.close()
        return iter(())
    try:
        data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as exc:
        handle.close()
        raise MailboxError(f"{path}: cannot be read ({exc.__class__.__name__})") from None
    return _mbox_messages(handle, data)


def _separators(data: mmap.mmap) -> Iterator[int]:
    """Offsets of the "From " lines that start messages."""
    if data[:5] == b"From ":
        yield 0
    pos = 0
    while True:
        pos = data.find(b"\nFrom ", pos)
        if pos < 0:
            return
        pos += 1
        after_blank = pos <= 1 or data[pos - 2 : pos] == b"\n\n" or data[pos - 3 : pos] == b"\n\r\n"
        if after_blank or _ENVELOPE.match(data, pos):
            yield pos


_RELEASE_STEP = 64 * 1024 * 1024  # hand read pages of a big mbox back every 64 MiB


def _mbox_messages(handle, data: mmap.mmap) -> Iterator[MailboxItem]:
    released = 0
    can_release = hasattr(mmap, "MADV_DONTNEED") and hasattr(data, "madvise")
    try:
        number = 0
        start: int | None = None
        for pos in _separators(data):
            if start is not None:
                number += 1
                yield _mbox_item(data, start, pos, number)
                done = start - start % mmap.PAGESIZE
                if can_release and done - released >= _RELEASE_STEP:
                    data.madvise(mmap.MADV_DONTNEED, released, done - released)
                    released = done
            start = pos
        if start is not None:
            number += 1
            yield _mbox_item(data, start, len(data), number)
    finally:
        data.close()
        handle.close()


def _mbox_item(data: mmap.mmap, start: int, end: int, number: int) -> MailboxItem:
    line_end = data.find(b"\n", start, end)
    body_start = end if line_end < 0 else line_end + 1
    raw = data[body_start:end]
    # the blank line the mbox writer put between messages is not part of the message
    if raw.endswith(b"\r\n\r\n"):
        raw = raw[:-2]
    elif raw.endswith(b"\n\n"):
        raw = raw[:-1]
    if b">From " in raw:
        raw = _ESCAPED_FROM.sub(rb"\1", raw)  # mboxrd: one ">" less on ">From " lines
    return MailboxItem(label=f"mbox:{number}", raw=raw, flags=_status_flags(raw))


def _status_flags(raw: bytes) -> frozenset[str]:
    ends = [i for i in (raw.find(b"\n\n"), raw.find(b"\n\r\n")) if i >= 0]
    head = raw[: min(ends)] if ends else raw[:65536]
    if b"status:" not in head.lower():
        return frozenset()
    flags: set[str] = set()
    for status in _STATUS.finditer(head):
        name = status.group(1).lower()
        value = status.group(2).strip().decode("ascii", "replace")
        if name == b"status":
            flags.update(flag for letter, flag in _STATUS_FLAGS.items() if letter in value)
        elif name == b"x-status":
            flags.update(flag for letter, flag in _X_STATUS_FLAGS.items() if letter in value)
        else:
            try:
                bits = int(value[:8], 16)
            except ValueError:
                continue
            flags.update(flag for bit, flag in _MOZILLA_FLAGS.items() if bits & bit)
    return frozenset(flags)


# --------------------------------------------------------------------------- Maildir


def _iter_maildir(path: Path) -> Iterator[MailboxItem]:
    try:
        entries = {entry.name for entry in os.scandir(path)}
    except PermissionError:
        raise MailboxError(f"{path}: permission denied; check the folder's permissions") from None
    except OSError as exc:
        raise MailboxError(f"{path}: cannot be read ({_reason(exc)})") from None
    if not {"cur", "new"} <= entries or not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise _not_a_mailbox(path, "the folder has no cur/ and new/ inside")
    # new/ before cur/: a message that a mail client moves meanwhile is still found in cur/
    listing = [(sub, _list_messages(path, sub)) for sub in ("new", "cur")]
    return _maildir_messages(path, listing)


def _list_messages(path: Path, sub: str) -> list[str]:
    folder = path / sub
    try:
        names = [entry.name for entry in os.scandir(folder) if not entry.name.startswith(".")]
    except PermissionError:
        raise MailboxError(f"{folder}: permission denied; check the folder's permissions") from None
    except OSError as exc:
        raise MailboxError(f"{folder}: cannot be read ({_reason(exc)})") from None
    return sorted(names)


def _maildir_messages(path: Path, listing: list[tuple[str, list[str]]]) -> Iterator[MailboxItem]:
    done: set[str] = set()
    for sub, names in listing:
        for name in names:
            unique = _unique_part(name)
            if unique in done:
                continue
            item = _read_maildir_file(path, sub, name)
            if item is None and sub == "new":  # moved to cur/ since we listed it
                item = _find_moved(path, unique)
            if item is None:
                continue
            done.add(unique)
            yield item


def _unique_part(name: str) -> str:
    for separator in (":2,", "!2,", ";2,"):
        if separator in name:
            return name.split(separator, 1)[0]
    return name


def _read_maildir_file(path: Path, sub: str, name: str) -> MailboxItem | None:
    file = path / sub / name
    label = f"maildir:{sub}/{name}"
    try:
        with open(file, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        return None
    except PermissionError:
        raise MailboxError(f"{file}: permission denied; check the file's permissions") from None
    except OSError as exc:
        if exc.errno == errno.EISDIR:
            return None
        raise MailboxError(f"{file}: cannot be read ({_reason(exc)})") from None
    return MailboxItem(label=label, raw=raw, flags=_maildir_flags(name) if sub == "cur" else frozenset())


def _find_moved(path: Path, unique: str) -> MailboxItem | None:
    for name in _list_messages(path, "cur"):
        if _unique_part(name) == unique:
            return _read_maildir_file(path, "cur", name)
    return None


def _maildir_flags(name: str) -> frozenset[str]:
    for separator in (":2,", "!2,", ";2,"):
        if separator in name:
            letters = name.rsplit(separator, 1)[1]
            return frozenset(flag for letter, flag in _MAILDIR_FLAGS.items() if letter in letters)
    return frozenset()
