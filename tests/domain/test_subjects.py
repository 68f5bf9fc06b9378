import pytest

from carebox.domain.subjects import has_reply_prefix, normalize_subject


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Blood test results", "blood test results"),
        ("Re: Blood test results", "blood test results"),
        ("RE: RE: re: Blood test results", "blood test results"),
        ("Re:Re:Blood test", "blood test"),
        ("Fwd: Re: Blood test", "blood test"),
        ("FW: blood test", "blood test"),
        ("AW: WG: Befund", "befund"),
        ("SV: Svar", "svar"),
        ("TR : RE : Résultats", "résultats"),
        ("Réf: Résultats", "résultats"),
        ("RÉF : Résultats", "résultats"),
        ("Re[2]: Re(3): Re^4: x", "x"),
        ("Re： full-width colon", "full-width colon"),
        ("[patients] Re: [patients] Question", "question"),
        ("  Re:\t  lots   of\n  space  ", "lots of space"),
        ("Re:", ""),
        ("", ""),
        ("Report: labs", "report: labs"),  # "Re" inside a word is not a prefix
        ("Trouble sleeping", "trouble sleeping"),
        ("Regarding: x", "regarding: x"),
        ("Question about Re: x", "question about re: x"),  # only leading prefixes go
        ("STRASSE", "strasse"),
        ("Straße", "strasse"),  # casefolded, not just lowered
    ],
)
def test_normalize_subject(raw, expected):
    assert normalize_subject(raw) == expected


def test_list_tags_can_be_kept():
    assert normalize_subject("[ext] Re: x", strip_list_tags=False) == "[ext] re: x"
    assert normalize_subject("Re: [ext] x", strip_list_tags=False) == "[ext] x"


def test_same_key_for_reply_variants():
    keys = {normalize_subject(s) for s in ["Knee pain", "Re: Knee pain", "AW: Re: KNEE  PAIN", "Fwd: knee pain"]}
    assert keys == {"knee pain"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Re: x", True),
        ("RE : x", True),
        ("AW: x", True),
        ("SV: x", True),
        ("Réf: x", True),
        ("[list] Re: x", True),
        ("Fwd: Re: x", True),
        ("Fwd: x", False),
        ("WG: x", False),
        ("x", False),
        ("Report: x", False),
        ("x Re: y", False),
        ("", False),
    ],
)
def test_has_reply_prefix(raw, expected):
    assert has_reply_prefix(raw) is expected
