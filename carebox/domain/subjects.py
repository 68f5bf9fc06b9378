"""Subject normalisation for threading: reply/forward prefixes and list tags.

``normalize_subject`` gives the text the store hashes into ``MessageRef.subject_key``;
``has_reply_prefix`` gives ``MessageRef.reply_prefix``. Pure functions, no IO.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["FORWARD_PREFIXES", "REPLY_PREFIXES", "has_reply_prefix", "normalize_subject"]

# Casefolded, NFKC-normalised prefix words (the part before the colon).
REPLY_PREFIXES: frozenset[str] = frozenset({"re", "aw", "sv", "réf", "ref", "antw"})
FORWARD_PREFIXES: frozenset[str] = frozenset({"fwd", "fw", "wg", "tr"})

_WORDS = "|".join(sorted((re.escape(w) for w in REPLY_PREFIXES | FORWARD_PREFIXES), key=len, reverse=True))
# "Re:", "RE :", "Re[2]:", "Re(3):", "Re^2:" (after NFKC a full-width colon is a plain one).
_PREFIX = re.compile(rf"\s*({_WORDS})\s*(?:\[\d{{1,4}}\]|\(\d{{1,4}}\)|\^\d{{1,4}})?\s*:")
# "[list-name] " and similar tags in front of the subject; no nesting.
_TAG = re.compile(r"\s*\[[^\[\]]{0,100}\]")


def _prepare(s: str) -> str:
    return unicodedata.normalize("NFKC", s).casefold()


def _strip_leading(s: str, strip_list_tags: bool) -> tuple[str, bool]:
    """Remove the leading chain of prefixes (and list tags); report whether a reply prefix was seen."""
    pos = 0
    saw_reply = False
    while True:
        m = _PREFIX.match(s, pos)
        if m is not None:
            saw_reply = saw_reply or m.group(1) in REPLY_PREFIXES
            pos = m.end()
            continue
        if strip_list_tags:
            m = _TAG.match(s, pos)
            if m is not None:
                pos = m.end()
                continue
        return s[pos:], saw_reply


def normalize_subject(s: str, *, strip_list_tags: bool = True) -> str:
    """The subject without its leading reply/forward prefixes (``Re:``, ``AW:``, ``Fwd:``, ``WG:``,
    ``SV:``, ``TR:``, ``Réf:``, with counters like ``Re[2]:``, any case, repeated and mixed), without
    leading ``[list tags]`` (unless ``strip_list_tags`` is False), whitespace folded to single spaces,
    NFKC-normalised and casefolded. Returns ``""`` for an empty or prefix-only subject."""
    rest, _ = _strip_leading(_prepare(s), strip_list_tags)
    return " ".join(rest.split())


def has_reply_prefix(s: str) -> bool:
    """True when the leading prefix chain (list tags skipped) contains a reply prefix
    (``Re:``, ``AW:``, ``SV:``, ``Réf:``, ``Antw:``). A plain forward (``Fwd: x``) is not a reply;
    ``Fwd: Re: x`` is."""
    _, saw_reply = _strip_leading(_prepare(s), True)
    return saw_reply
