"""Turning untrusted mail into rich Text: sanitised, never parsed as markup."""

from __future__ import annotations

from datetime import datetime

from rich.text import Text

from carebox.domain.ranking import format_countdown
from carebox.domain.sanitize import clean_line, clean_text
from carebox.services.inbox import StoredMessage


def safe_line(value: str, max_len: int | None = None, style: str = "") -> Text:
    return Text(clean_line(value, max_len), style=style, no_wrap=True, overflow="ellipsis")


def safe_block(value: str, style: str = "") -> Text:
    return Text(clean_text(value), style=style)


def countdown(due_at: datetime | None, now: datetime, state: str) -> Text:
    if due_at is None:
        return Text(state.replace("_", " "), style="dim")
    label = format_countdown(due_at, now)
    return Text(label, style="bold red" if due_at <= now else "")


def message_text(msg: StoredMessage, own_label: str = "You") -> Text:
    out = Text()
    who = msg.sender.name or msg.sender.addr
    header = f"{own_label if msg.outgoing else clean_line(who)} <{clean_line(msg.sender.addr)}>"
    out.append(header, style="bold")
    out.append(f"  {msg.date:%a %d %b %Y %H:%M} UTC\n", style="dim")
    out.append("Subject: ", style="dim")
    out.append(clean_line(msg.subject) + "\n")
    if msg.malformed:
        out.append("[this message could not be fully read; shown as far as possible]\n", style="italic")
    if msg.deleted_on_server:
        out.append("[deleted on the server; kept here as part of the record]\n", style="italic")
    out.append("\n")
    out.append(clean_text(msg.body).rstrip() + "\n")
    for _aid, name, size in msg.attachments:
        out.append(f"\u2398 {clean_line(name)} ({size:,} bytes)\n", style="dim")
    return out
