"""The sender's status on a thread (from the patient directory) and the badge the inbox shows for
it. A module of its own: the inbox paints its first rows before the safety checks are imported."""

from __future__ import annotations

from enum import StrEnum


class SenderStatus(StrEnum):
    VERIFIED = "verified"  # the address belongs to a patient with consent on file
    NO_CONSENT = "no_consent"  # a patient's address, but no email consent on file
    UNKNOWN = "unknown"  # the address is not in the directory
    WARNING = "warning"  # something about the sender needs checking before replying


# sender_status column value -> (badge text, style name). The UI picks colours per style.
BADGES: dict[str, tuple[str, str]] = {
    SenderStatus.VERIFIED.value: ("verified", "ok"),
    SenderStatus.NO_CONSENT.value: ("no consent", "caution"),
    SenderStatus.UNKNOWN.value: ("unknown", "caution"),
    SenderStatus.WARNING.value: ("check sender", "danger"),
    "": ("", ""),
}


def badge(sender_status: str) -> tuple[str, str]:
    """(text, style) of the sender badge for a thread row's ``sender_status``."""
    return BADGES.get(sender_status, ("", ""))
