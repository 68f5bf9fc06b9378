"""The FETCH fast path reads exactly what the general tokenizer reads, and steps aside otherwise."""

from __future__ import annotations

import pytest

from carebox.mail.imap import _fast_fetch_item, _fetch_attributes, _tokenize


def general(group):
    toks = _tokenize(group)
    return int(toks[0]), _fetch_attributes(toks)


BODY = bytearray(b"Subject: hi\r\n\r\nbody\r\n")
N = len(BODY)
DATE = b'"06-Jan-2025 08:00:00 +0000"'


@pytest.mark.parametrize(
    "group",
    [
        [b"7 FETCH (UID 42 FLAGS (\\Seen) INTERNALDATE %s RFC822.SIZE 22 BODY[] {%d}" % (DATE, N), BODY, b")"],
        [b"1 FETCH (UID 1 FLAGS () INTERNALDATE %s RFC822.SIZE 22 BODY[] {%d}" % (DATE, N), BODY, b")"],
        [
            b'3 FETCH (UID 9 FLAGS (\\Seen \\Answered $Forwarded my-label.x) INTERNALDATE " 6-Jan-2025 08:00:00 -0500" '
            b"RFC822.SIZE 22 BODY[] {%d}" % N,
            BODY,
            b")",
        ],
        [b"12 FETCH (UID 3000 RFC822.SIZE 1234)"],
    ],
)
def test_fast_path_equals_tokenizer(group):
    fast = _fast_fetch_item(group)
    assert fast is not None
    assert fast == general(group)


@pytest.mark.parametrize(
    "group",
    [
        # another order, a NIL flag, literal8, a wrong literal size, lower case, an escaped date
        [b'7 FETCH (FLAGS (\\Seen) UID 42 INTERNALDATE "x" RFC822.SIZE 22 BODY[] {%d}' % N, BODY, b")"],
        [b'7 FETCH (UID 42 FLAGS (NIL) INTERNALDATE "x" RFC822.SIZE 22 BODY[] {%d}' % N, BODY, b")"],
        [b'7 FETCH (UID 42 FLAGS () INTERNALDATE "x" RFC822.SIZE 22 BODY[] ~{%d}' % N, BODY, b")"],
        [b'7 FETCH (UID 42 FLAGS () INTERNALDATE "x" RFC822.SIZE 22 BODY[] {%d}' % (N + 1), BODY, b")"],
        [b'7 fetch (uid 42 flags () internaldate "x" rfc822.size 22 body[] {%d}' % N, BODY, b")"],
        [b'7 FETCH (UID 42 FLAGS () INTERNALDATE "a\\"b" RFC822.SIZE 22 BODY[] {%d}' % N, BODY, b")"],
        [b'7 FETCH (UID 42 FLAGS () INTERNALDATE "x" RFC822.SIZE 22 BODY[] {%d}' % N, BODY, b" MODSEQ (5))"],
        [b"12 FETCH (UID 3000 RFC822.SIZE 1234 MODSEQ (4))"],
        [b"12 FETCH (UID 3000 FLAGS (\\Seen))"],
    ],
)
def test_other_shapes_use_the_tokenizer(group):
    assert _fast_fetch_item(group) is None
