"""Turning untrusted mail into rich Text: sanitised, never parsed as markup.

Every string that came from mail (names, addresses, subjects, bodies, file names) reaches the
screen through these functions: ``clean_line``/``clean_text`` remove escape sequences, control
characters and bidi overrides, and the result is a ``rich.text.Text``, which Textual shows
literally (no ``[markup]``, no ``[@click=...]`` actions, no links).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from rich.text import Text

from carebox.domain.ranking import format_countdown
from carebox.domain.sanitize import clean_line, clean_text
from carebox.services.inbox import StoredMessage

SOON_SECONDS = 6 * 3600  # a countdown below this is shown in the caution colour


@dataclass(frozen=True)
class Palette:
    """Concrete colours from the current theme, for styles inside Text (cells, banners)."""

    alarm: str = "red"
    caution: str = "yellow"
    ok: str = "green"
    selected: str = "blue"
    muted: str = "grey50"

    @classmethod
    def from_variables(cls, variables: Mapping[str, str]) -> Palette:
        def pick(*names: str, default: str) -> str:
            for name in names:
                value = variables.get(name, "")
                if value and not value.startswith("auto"):
                    return value
            return default

        return cls(
            alarm=pick("alarm", "text-error", "error", default="red"),
            caution=pick("caution", "text-warning", "warning", default="yellow"),
            ok=pick("ok", "text-success", "success", default="green"),
            selected=pick("selected", "text-primary", "primary", default="blue"),
            muted=pick("text-muted", "foreground-muted", default="grey50"),
        )


def safe_line(value: str, max_len: int | None = None, style: str = "") -> Text:
    return Text(clean_line(value or "", max_len), style=style, no_wrap=True, overflow="ellipsis")


def safe_block(value: str, style: str = "") -> Text:
    return Text(clean_text(value or ""), style=style)


def countdown(due_at: datetime | None, now: datetime, state: str, palette: Palette = Palette()) -> Text:
    """ "due in 5h" / "overdue 3h" (alarm colour, bold) / the state for threads not waiting."""
    if state != "waiting":
        return Text(state.replace("_", " "), style=palette.muted)
    if due_at is None:
        return Text("due now", style=f"bold {palette.alarm}")
    label = format_countdown(due_at, now)
    if due_at <= now:
        return Text(label, style=f"bold {palette.alarm}")
    if (due_at - now).total_seconds() < SOON_SECONDS:
        return Text(label, style=palette.caution)
    return Text(label)


BADGE_STYLE = {"ok": "ok", "caution": "caution", "danger": "alarm"}


def badge_text(label: str, kind: str, palette: Palette = Palette()) -> Text:
    if not label:
        return Text("")
    colour = getattr(palette, BADGE_STYLE.get(kind, ""), "") if kind in BADGE_STYLE else ""
    style = f"bold {colour}" if kind == "danger" else colour
    return Text(label, style=style, no_wrap=True)


def patient_label(name: str, addr: str, max_len: int = 30) -> Text:
    return safe_line(name or addr or "(no sender)", max_len)


def tag_label(
    tag: str | None, suggested: str | None, categories: Mapping[str, str], palette: Palette, width: int = 14
) -> Text:
    """The tag as set (a category's label, "→ phone"), else the suggestion in muted italics
    ("Billing?")."""
    if tag:
        if tag.startswith("redirect:"):
            return Text(f"→ {tag.split(':', 1)[1]}", no_wrap=True)
        return Text(clean_line(categories.get(tag, tag), width), no_wrap=True)
    if suggested:
        name = suggested.split(":", 1)[1] if suggested.startswith("redirect:") else categories.get(suggested, suggested)
        return Text(f"{clean_line(name, width - 1)}?", style=f"italic {palette.muted}", no_wrap=True)
    return Text("")


def message_text(msg: StoredMessage, own_label: str = "You", palette: Palette = Palette()) -> Text:
    out = Text()
    who = msg.sender.name or msg.sender.addr
    out.append(own_label if msg.outgoing else clean_line(who), style="bold")
    out.append(f" <{clean_line(msg.sender.addr)}>", style=palette.muted)
    out.append(f"  {msg.date:%a %d %b %Y %H:%M} UTC\n", style=palette.muted)
    out.append("Subject: ", style=palette.muted)
    out.append(clean_line(msg.subject) + "\n")
    if msg.malformed:
        out.append("[this message could not be fully read; shown as far as possible]\n", style="italic")
    if msg.deleted_on_server:
        out.append("[deleted on the server; kept here as part of the record]\n", style="italic")
    out.append("\n")
    out.append(clean_text(msg.body).rstrip() + "\n")
    return out


def size_label(size: int) -> str:
    for unit, step in (("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= step:
            return f"{size / step:.1f} {unit}"
    return f"{size} bytes"


def quote(body: str, author: str, date: datetime | None) -> str:
    """The attribution line and the quoted message for the composer (plain text, cleaned)."""
    who = clean_line(author) or "the patient"
    head = f"On {date:%a %d %b %Y %H:%M}, {who} wrote:" if date is not None else f"{who} wrote:"
    lines = []
    for line in clean_text(body).rstrip().split("\n") if body.strip() else []:
        line = line.rstrip()
        lines.append(">" if not line else (">" + line if line.startswith(">") else "> " + line))
    return "\n".join([head, *lines]) + "\n"
