"""HTML mail to plain text with lxml (libxml2's HTML parser: linear on hostile input, never
fetches anything). Scripts, styles and the head are dropped; blocks go on their own lines; links
keep their text only; attributes (and so every URL) are never read."""

from __future__ import annotations

import re

import lxml.etree
import lxml.html

_BLOCK = frozenset(
    [
        "p",
        "div",
        "section",
        "article",
        "header",
        "footer",
        "main",
        "aside",
        "nav",
        "form",
        "fieldset",
        "address",
        "blockquote",
        "center",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "caption",
        "hr",
        "figure",
        "figcaption",
    ]
)
_PARAGRAPH = frozenset(["p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table", "blockquote", "pre", "hr", "dl"])
_HIDDEN = frozenset(
    ["script", "style", "head", "title", "template", "noscript", "iframe", "object", "embed", "svg", "math"]
)
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")
MAX_HTML_CHARS = 2_000_000


class _Writer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.trailing = 2  # newlines already at the end (the start counts as a paragraph break)

    def text(self, chunk: str | None, pre: bool) -> None:
        if not chunk:
            return
        if not pre:
            chunk = _SPACES.sub(" ", chunk)
            if self.trailing and chunk.startswith(" "):
                chunk = chunk[1:]
            if not chunk:
                return
        self.parts.append(chunk)
        stripped = chunk.rstrip(" \n")
        self.trailing = chunk.count("\n", len(stripped)) if stripped else self.trailing + chunk.count("\n")

    def newlines(self, count: int) -> None:
        while self.parts and self.parts[-1].endswith(" ") and self.trailing == 0:
            self.parts[-1] = self.parts[-1].rstrip(" ")
            if not self.parts[-1]:
                self.parts.pop()
        if count > self.trailing:
            self.parts.append("\n" * (count - self.trailing))
            self.trailing = count


_HIDDEN_BLOCKS = re.compile(r"<(script|style|head)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^<>]*>")


def _flat(html: str) -> str:
    """Last resort for documents libxml2 gives up on: drop tags, keep every word."""
    from html import unescape

    text = _TAG.sub(" ", _HIDDEN_BLOCKS.sub(" ", html))
    return _SPACES.sub(" ", unescape(text)).strip()


def html_to_text(html: str) -> str:
    if not html.strip():
        return ""
    html = html[:MAX_HTML_CHARS]
    parser = lxml.html.HTMLParser(no_network=True, recover=True, huge_tree=True)
    try:
        root = lxml.html.document_fromstring(html, parser=parser)
    except (lxml.etree.ParserError, ValueError):
        return _flat(html)
    if any(e.type_name == "ERR_RESOURCE_LIMIT" for e in parser.error_log):
        return _flat(html)  # libxml2 stopped early (nesting bomb): never hide the rest of the text
    out = _Writer()
    # Iterative walk (no recursion limit on deep nesting): (element, leaving?, in <pre>)
    stack: list[tuple[lxml.etree._Element, bool, bool]] = [(root, False, False)]
    while stack:
        el, leaving, pre = stack.pop()
        tag = el.tag.lower() if isinstance(el.tag, str) else ""
        if leaving:
            if tag in _PARAGRAPH:
                out.newlines(2)
            elif tag in _BLOCK or tag == "li":
                out.newlines(1)
            elif tag in ("td", "th"):
                out.text(" ", False)
            out.text(el.tail, pre)
            continue
        if not tag or tag in _HIDDEN:  # comments, processing instructions, hidden elements
            out.text(el.tail, pre)
            continue
        inner_pre = pre or tag == "pre"
        if tag == "br":
            out.newlines(1) if out.trailing < 1 else out.parts.append("\n")
            if out.parts and out.parts[-1] == "\n":
                out.trailing += 1 if out.trailing >= 1 else 0
            out.text(el.tail, pre)
            continue
        if tag in _PARAGRAPH:
            out.newlines(2)
        elif tag in _BLOCK:
            out.newlines(1)
        elif tag == "li":
            out.newlines(1)
            out.text("- ", True)
            out.trailing = 0
        stack.append((el, True, pre))
        for child in reversed(el):
            stack.append((child, False, inner_pre))
        out.text(el.text, inner_pre)
    text = "".join(out.parts)
    lines = [line.rstrip() for line in text.split("\n")]
    return "\n".join(lines).strip("\n").strip()
