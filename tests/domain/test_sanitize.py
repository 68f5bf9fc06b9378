import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carebox.domain.sanitize import REPLACEMENT, clean_line, clean_text

ESC = "\x1b"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x1b]0;pwned\x07b", "ab"),  # OSC window title, BEL-terminated
        ("a\x1b]0;pwned\x1b\\b", "ab"),  # OSC, ST-terminated
        ("a\x1b]8;;http://evil/\x07link\x1b]8;;\x07b", "alinkb"),  # OSC 8 hyperlink
        ("a\x9d0;pwned\x9cb", "ab"),  # 8-bit OSC ... ST
        ("a\x9d0;pwned\x07b", "ab"),
        ("x\x1b[2Jy", "xy"),  # clear screen
        ("x\x1b[1;31mred\x1b[0my", "xredy"),  # SGR
        ("x\x1b[?1049hy", "xy"),  # private mode
        ("x\x1b[38;2;1;2;3my", "xy"),
        ("x\x9b2Jy", "xy"),  # 8-bit CSI
        ("x\x1bP1$r0m\x1b\\y", "xy"),  # DCS
        ("x\x1b_apc\x1b\\y", "xy"),  # APC
        ("x\x1b^pm\x07y", "xy"),  # PM
        ("x\x1bXsos\x1b\\y", "xy"),  # SOS
        ("x\x90dcs\x9cy", "xy"),  # 8-bit DCS
        ("x\x1bcy", "xy"),  # RIS (full reset), a two-character sequence
        ("x\x1b(By", "xy"),  # designate charset
        ("x\x1b#8y", "xy"),  # DEC screen alignment test
        ("x\x1b7y\x1b8", "xy"),  # save/restore cursor
    ],
)
def test_escape_sequences_removed_entirely(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("a\x00b", f"a{REPLACEMENT}b"),  # NUL
        ("a\x07b", f"a{REPLACEMENT}b"),  # lone BEL
        ("a\x08b", f"a{REPLACEMENT}b"),  # backspace (overstrike tricks)
        ("a\x7fb", f"a{REPLACEMENT}b"),  # DEL
        ("a\x85b", f"a{REPLACEMENT}b"),  # C1 NEL
        ("a\x9cb", f"a{REPLACEMENT}b"),  # lone ST
        ("a\x1bb" + ESC, f"a{REPLACEMENT}"),  # ESC b is a (two-character) sequence; the last ESC is lone
        ("a\x0b\x0cb", f"a{REPLACEMENT}{REPLACEMENT}b"),
        ("a\udc9bb", f"a{REPLACEMENT}b"),  # lone surrogate from surrogateescape
    ],
)
def test_lone_controls_become_visible_placeholders(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    "char",
    ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068", "\u2069", "\u200e", "\u200f"],
)
def test_bidi_controls_removed(char):
    assert clean_text(f"invoice{char}fdp.exe") == "invoicefdp.exe"


def test_line_endings_normalised_and_tabs_kept():
    assert clean_text("a\r\nb\rc\n\td") == "a\nb\nc\n\td"


def test_unterminated_string_sequence_does_not_swallow_the_message():
    out = clean_text("Hello\x1b]0;title\nThe rest of the message")
    assert out == "Hello0;title\nThe rest of the message"
    assert ESC not in out
    # A terminator further down does not stretch the sequence over line breaks.
    out = clean_text("Hello\x1b]0;x\nDiagnosis: fine\x07 end")
    assert out == f"Hello0;x\nDiagnosis: fine{REPLACEMENT} end"


def test_malformed_csi_leaves_no_escape():
    assert clean_text("a\x1b[12") == "a12"
    assert clean_text("a\x9b12") == f"a{REPLACEMENT}12"


def test_removal_cannot_assemble_a_new_sequence():
    out = clean_text("\x1b\x1b[2J]0;pwned\x07")
    assert ESC not in out and "\x07" not in out


@pytest.mark.parametrize(
    "text",
    [
        "Grüße, Crème brûlée, Ærø",
        "患者の検査結果",
        "Здравствуйте",
        "مرحبا",
        "👩‍⚕️ ok 👍🏽",
        "a\tb\nc",
        "",
        "[b]markup[/b]",
    ],
)
def test_ordinary_text_untouched(text):
    assert clean_text(text) == text


FORBIDDEN = {chr(c) for c in [*range(0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]} | set(
    "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
)
hostile = st.text(
    alphabet=st.one_of(
        st.sampled_from([*sorted(FORBIDDEN), "[", "]", "\\", ";", "0", "2", "J", "m", "P", "\r", "\n", "\t", "é"]),
        st.characters(),
    ),
    max_size=60,
)


@given(hostile)
@settings(max_examples=300, deadline=None)
def test_clean_text_output_is_safe_and_stable(s):
    out = clean_text(s)
    assert not (set(out) & FORBIDDEN)
    assert "\r" not in out
    out.encode("utf-8")  # no lone surrogates left
    assert clean_text(out) == out  # idempotent


@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Cf"))))
@settings(max_examples=100, deadline=None)
def test_text_without_controls_is_unchanged(s):
    assert clean_text(s) == s


def test_clean_line():
    assert clean_line("  Re:\tresults\r\n  from \x1b[31mlab\x1b[0m  ") == "Re: results from lab"
    assert clean_line("a\u202eb") == "ab"
    assert clean_line("") == ""


def test_clean_line_truncates_with_ellipsis():
    assert clean_line("abcdefghij", max_len=5) == "abcd…"
    assert clean_line("abcde", max_len=5) == "abcde"
    assert clean_line("abc   def", max_len=5) == "abc…"
    assert clean_line("abcdef", max_len=1) == "…"
    with pytest.raises(ValueError):
        clean_line("abc", max_len=0)


@given(hostile, st.integers(1, 30))
@settings(max_examples=100, deadline=None)
def test_clean_line_is_one_safe_line(s, n):
    out = clean_line(s, n)
    assert "\n" not in out and "\t" not in out
    assert len(out) <= n
    assert not (set(out) & FORBIDDEN)
