"""Reply templates with ``{placeholder}`` fields, and names for salutations.

Only bare names are allowed in fields: no attribute or index access (``{a.b}``, ``{a[0]}``),
no conversions or format specs (``{a!r}``, ``{a:>10}``), no positional ``{}``. ``{{`` and ``}}``
are literal braces. Values are inserted as they are, never expanded again.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

__all__ = ["TemplateError", "first_name", "placeholders", "render"]

_FORMATTER = string.Formatter()


class TemplateError(ValueError):
    """A template that cannot be rendered; ``name`` is the offending placeholder, if any."""

    def __init__(self, message: str, name: str | None = None) -> None:
        super().__init__(message)
        self.name = name


def _parse(template: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pairs, validated."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise TemplateError(f"template is malformed: {exc} (write {{{{ and }}}} for literal braces)") from None
    out: list[tuple[str, str | None]] = []
    for literal, name, spec, conversion in parts:
        if name is None:
            out.append((literal, None))
            continue
        shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if not name:
            raise TemplateError(f"template has an empty placeholder {shown}: put a name inside the braces")
        if not name.isidentifier():
            raise TemplateError(f"placeholder {shown} is not allowed: use a plain name like {{first_name}}", name)
        if conversion or spec:
            raise TemplateError(f"placeholder {shown} is not allowed: write just {{{name}}}", name)
        out.append((literal, name))
    return out


def placeholders(template: str) -> set[str]:
    """The placeholder names a template uses. Raises ``TemplateError`` if it is malformed."""
    return {name for _, name in _parse(template) if name is not None}


def render(template: str, values: Mapping[str, str]) -> str:
    """Fill the template's placeholders from ``values``.

    Raises ``TemplateError`` (with ``.name``) for a placeholder that has no value, and for a
    malformed template.
    """
    pieces: list[str] = []
    for literal, name in _parse(template):
        pieces.append(literal)
        if name is None:
            continue
        try:
            value = values[name]
        except KeyError:
            known = ", ".join(sorted(values)) or "none"
            raise TemplateError(f"unknown placeholder {{{name}}} (known: {known})", name) from None
        pieces.append(value if isinstance(value, str) else str(value))
    return "".join(pieces)


# Titles and honorifics dropped in front of a name (casefolded, without the trailing dot).
_TITLES = frozenset(
    {
        "dr", "prof", "professor", "doctor", "mr", "mrs", "ms", "miss", "mx", "sir", "dame",
        "herr", "frau", "hr", "fr", "med", "dipl", "ing", "mag", "priv", "doz", "univ", "rer", "nat",
        "mme", "mlle", "m", "dott", "dott.ssa", "dottssa", "sig", "sig.ra", "sra", "srta", "sr",
        "rev", "pr", "dipl.-ing", "dr.-ing",
    }
)  # fmt: skip
# Name suffixes that may follow a comma ("Smith, Jr.") and are not a first name.
_SUFFIXES = frozenset({"jr", "sr", "ii", "iii", "iv", "md", "phd", "dds", "do", "rn", "msc", "bsc", "ma", "ba"})


def _bare(word: str) -> str:
    return word.rstrip(".,").casefold()


def _strip_titles(words: list[str]) -> tuple[list[str], bool]:
    dropped = False
    while words and _bare(words[0]) in _TITLES:
        words = words[1:]
        dropped = True
    return words, dropped


def first_name(full_name: str) -> str:
    """The first name for a salutation, or "" when none can be told.

    Handles "First Last", "Last, First" (suffixes like "Smith, Jr." are not taken as first
    names), leading titles ("Dr.", "Prof. Dr. med.", "Frau"), surrounding quotes and
    parenthesised comments. A title followed by a single word ("Dr. Meier") is a surname: "".
    A bare address or a lone initial gives "".
    """
    name = full_name.strip().strip("\"'").strip()
    # Drop "(comments)".
    while "(" in name and ")" in name[name.index("(") :]:
        start = name.index("(")
        end = name.index(")", start)
        name = (name[:start] + " " + name[end + 1 :]).strip()
    if not name or "@" in name:
        return ""
    if "," in name:
        last, _, rest = name.partition(",")
        rest_words = rest.split()
        if rest_words and not all(_bare(w) in _SUFFIXES for w in rest_words):
            words, _ = _strip_titles(rest_words)
            return _usable(words[0]) if words else ""
        name = last
    words, dropped = _strip_titles(name.split())
    if not words or (dropped and len(words) == 1):
        return ""
    return _usable(words[0])


def _usable(word: str) -> str:
    word = word.strip(".,;:")
    if len(word) <= 1:  # an initial ("J.") makes a poor salutation
        return ""
    return word
