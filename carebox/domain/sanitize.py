"""Make untrusted mail text safe to show in a terminal.

``clean_text`` removes whole terminal escape sequences (7-bit and 8-bit C1 forms), then
replaces every remaining lone control character with U+FFFD (visible, so hidden tricks show),
removes bidi overrides/isolates and the LRM/RLM marks, and turns CR LF and lone CR into LF.
Tab and LF are kept. Lone surrogates (from surrogateescape decoding) become U+FFFD as well,
so the result always encodes as UTF-8. Ordinary Unicode (accents, CJK, emoji) is untouched.

String sequences (OSC, DCS, SOS, PM, APC) are removed only up to their terminator (BEL, ST =
ESC \\ or U+009C) on the same line; an unterminated one loses just its introducer, so an attacker
cannot make the rest of a message disappear.
"""

from __future__ import annotations

import re

__all__ = ["REPLACEMENT", "clean_line", "clean_text"]

REPLACEMENT = "\ufffd"

# Whole escape sequences, removed entirely.
_SEQUENCE = re.compile(
    r"""
      (?:\x1b\[|\x9b) [\x30-\x3f]* [\x20-\x2f]* [\x40-\x7e]             # CSI ... final
    | (?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f]) [^\x07\x1b\x9c\n]*         # OSC/DCS/SOS/PM/APC body
      (?:\x07|\x1b\\|\x9c)                                               # ... BEL or ST
    | \x1b [\x20-\x2f]* [\x30-\x7e]                                      # ESC (intermediates) final
    """,
    re.VERBOSE,
)
# Lone controls left over: C0 except TAB and LF, DEL, C1, lone surrogates.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
# Bidi embedding/override/isolate controls and LRM/RLM: dropped.
_BIDI = dict.fromkeys([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F])
# Anything that needs work at all (fast path for clean text).
_SPECIAL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")


def clean_text(s: str) -> str:
    """Untrusted text made safe to display; keeps LF and TAB (see the module doc)."""
    if not _SPECIAL.search(s):
        return s
    s = s.replace("\r\n", "\n").replace("\r", "\n")
    s = _SEQUENCE.sub("", s)
    s = _CONTROL.sub(REPLACEMENT, s)
    return s.translate(_BIDI)


def clean_line(s: str, max_len: int | None = None) -> str:
    """``clean_text`` on one line: every run of whitespace (newlines and tabs included) becomes a
    single space, ends stripped; longer than ``max_len`` characters -> cut and ended with "…".
    ``max_len`` counts code points, not terminal cells."""
    if max_len is not None and max_len < 1:
        raise ValueError(f"max_len must be at least 1, got {max_len}")
    line = _WHITESPACE.sub(" ", clean_text(s)).strip()
    if max_len is not None and len(line) > max_len:
        line = line[: max_len - 1].rstrip() + "…"
    return line
