"""Clinical safety checks (pure): red flags, sender status, lookalikes, scope."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from carebox.domain import safety
from carebox.domain.models import Address
from carebox.domain.safety import (
    _NEGATION,
    COMMON_MAIL_DOMAINS,
    LISTED_PHRASES,
    RED_FLAG_RULES,
    AtomIndex,
    DirectoryPatient,
    PatientDirectory,
    Practice,
    Prefilter,
    RedFlagMatcher,
    SenderChecker,
    SenderFacts,
    SenderStatus,
    TextView,
    check_sender,
    compile_phrase,
    damerau_distance,
    domain_lookalike,
    domain_skeleton,
    idn_to_unicode,
    mentions_personal_account,
    merge_status,
    need_branches,
    normalize_text,
    normalize_words,
    pattern_need,
    red_flags,
    reply_target,
    result_category,
    scope_category,
    skeleton,
    strip_quoted,
    suggest_tag,
    urgent_banner,
    visit_in_window,
    within_distance,
)

CORPUS = Path(__file__).resolve().parents[1] / "data" / "redflags_corpus.json"
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

ANNA = DirectoryPatient("p1", "Anna Berg", ("anna.berg@mail.example", "anna@work.example"), "", date(2025, 1, 5))
OLAF = DirectoryPatient("p2", "Olaf Svensson", ("olaf@mail.example",), "", None)
LENA = DirectoryPatient("p3", "Lena Kowalski", ("lena.kowalski@gmail.com",), "", date(2024, 3, 1))
DIRECTORY = PatientDirectory([ANNA, OLAF, LENA])
PRACTICE = Practice(
    address="dr.lindqvist@riverside-practice.example",
    physician_name="Dr. Maya Lindqvist",
    practice_name="Riverside Family Practice",
    personal_addresses=("maya.lindqvist@home.example",),
)


def check(name: str, addr: str, **kw: object) -> tuple[SenderStatus, list[str]]:
    result = check_sender(SenderFacts(Address(name, addr), **kw), DIRECTORY, PRACTICE)  # type: ignore[arg-type]
    return result.status, [w.code for w in result.warnings]


# --- red flags --------------------------------------------------------------------------------------


def _variants(phrase: str) -> list[str]:
    return [
        phrase,
        phrase.upper(),
        phrase.title(),
        f"Dear doctor, since last night: {phrase}. What should I do?",
        f"Subject line\n\n{phrase}!!",
        phrase.replace(" ", "\n", 1),
        phrase.replace(" ", "  \t"),
        phrase.replace("'", "\u2019"),
    ]


@pytest.mark.parametrize("phrase", LISTED_PHRASES)
def test_every_listed_phrase_is_caught_in_every_variant(phrase: str) -> None:
    matcher = RedFlagMatcher()
    for text in _variants(phrase):
        assert matcher.find(text), f"missed {text!r}"


@pytest.mark.parametrize("phrase", LISTED_PHRASES)
def test_listed_phrases_are_caught_even_when_negated(phrase: str) -> None:
    """Never miss a listed phrase: a negated mention still flags (marked negated for display)."""
    hits = RedFlagMatcher().find(f"I have no {phrase}")
    assert hits


def test_negation_is_marked_but_still_urgent() -> None:
    (hit,) = red_flags("I have no chest pain at all")
    assert hit.rule == "chest_pain" and hit.negated
    (hit,) = red_flags("Since noon I have chest pain")
    assert not hit.negated
    assert "may be negated" in urgent_banner([red_flags("no chest pain")[0]])


def test_variations_plurals_and_phrasing() -> None:
    for text, rule in [
        ("my chest hurts when I walk", "chest_pain"),
        ("chest pains at night", "chest_pain"),
        ("a crushing pain in my chest", "chest_pain"),
        ("I cant breathe", "breathing"),
        ("she's having difficulties breathing", "breathing"),
        ("he had seizures", "seizure"),
        ("selfharm", "self_harm"),
        ("thoughts of killing myself", "suicidal"),
        ("slurring his words", "stroke"),
        ("baby is 3 months old with a temperature of 38.9 °C", "infant_fever"),
        ("temp 104 F this morning", "very_high_fever"),
        ("thunderclap headache", "headache"),
        ("threw up blood", "blood_cough_vomit"),
        ("she collapsed in the kitchen", "fainting"),
        ("epi-pen used, lips swollen", "anaphylaxis"),
        ("over\u00addose", "overdose"),  # soft hyphen inside the word
        ("chest\u200bpain", "chest_pain"),  # zero-width space
    ]:
        rules = {h.rule for h in red_flags(text)}
        assert rule in rules, (text, rules)


def test_word_boundaries_avoid_obvious_false_hits() -> None:
    assert red_flags("the pharmacy is on Chestnut Street, thanks") == []
    assert red_flags("restroke") == []
    assert red_flags("I have a sore knee") == []


def test_config_extras_phrase_and_pattern() -> None:
    m = RedFlagMatcher(["Brustschmerz", "re:\\bcode (red|blue)\\b"])
    assert [h.label for h in m.find("starke Brustschmerzen seit heute")] == ["Brustschmerz"]
    assert [h.rule for h in m.find("this is a CODE BLUE")] == ["config"]
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_phrase("re:(unclosed")
    with pytest.raises(ValueError, match="cannot be empty"):
        compile_phrase("   ")


def test_quoted_lines_do_not_flag() -> None:
    body = "Thanks, all better now.\n> I have chest pain\n  > since this morning"
    assert red_flags(strip_quoted(body)) == []
    assert red_flags(body)


def test_corpus_precision_recall() -> None:
    data = json.loads(CORPUS.read_text(encoding="utf-8"))["messages"]
    assert len(data) >= 40
    assert sum(1 for x in data if x["urgent"]) >= 15 and sum(1 for x in data if not x["urgent"]) >= 15
    matcher = RedFlagMatcher()
    tp = fp = fn = tn = 0
    for x in data:
        hits = matcher.find(x["subject"] + "\n" + strip_quoted(x["body"]))
        rules = {h.rule for h in hits}
        if x["urgent"]:
            assert set(x["rules"]) <= rules, (x["body"], rules)
        got = bool(hits)
        tp += got and x["urgent"]
        fp += got and not x["urgent"]
        fn += (not got) and x["urgent"]
        tn += (not got) and not x["urgent"]
        assert scope_category(x["subject"] + "\n" + x["body"]) == x["scope"], x["body"]
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(
        f"\nred flags on {len(data)} messages: precision {precision:.3f} recall {recall:.3f} (tp={tp} fp={fp} fn={fn})"
    )
    assert recall == 1.0
    assert precision >= 0.85


# --- normalisation and confusables ------------------------------------------------------------------


def test_normalize_text() -> None:
    assert normalize_text("Can\u2019t\nBREATHE\u200b ") == "can't breathe"


def test_skeleton_maps_homoglyphs() -> None:
    assert skeleton("gmаil.com") == skeleton("gmail.com")  # Cyrillic а
    assert skeleton("rnicrosoft") == skeleton("microsoft")
    assert skeleton("paypa1") == skeleton("paypal")
    assert skeleton("Bérg") == "berg"
    assert skeleton("ΑΝΝΑ") == skeleton("anna")  # Greek capitals


def test_idn_decoding() -> None:
    assert idn_to_unicode("xn--gmil-63d.com") == ("gmаil.com", True)
    assert idn_to_unicode("MAIL.Example.") == ("mail.example", False)
    assert idn_to_unicode("xn--zz-broken.com")[1] is True  # undecodable stays IDN


def test_damerau_distance() -> None:
    assert damerau_distance("gmail", "gmial") == 1  # swap
    assert damerau_distance("kitten", "sitting") == 3
    assert damerau_distance("abc", "abcdefgh", limit=2) == 3


def test_domain_lookalike() -> None:
    known = {"riverside-practice.example", "mail.example"}
    assert domain_lookalike("riverside-practlce.example", known) == "riverside-practice.example"
    assert domain_lookalike("riverside-practice.example", known) is None
    assert domain_lookalike("gmai1.com", known) == "gmail.com"
    assert domain_lookalike("xn--gmil-63d.com", known) == "gmail.com"
    assert domain_lookalike("outlook.com", known) is None  # a real provider imitates nothing
    assert domain_lookalike("university.example", known) is None
    assert domain_lookalike("gmx.at", {"gmx.de"}) is None


# --- sender checks ----------------------------------------------------------------------------------


def test_verified_no_consent_unknown() -> None:
    assert check("Anna Berg", "Anna.Berg@mail.example") == (SenderStatus.VERIFIED, [])
    assert check("", "anna@work.example") == (SenderStatus.VERIFIED, [])
    assert check("Olaf Svensson", "olaf@mail.example") == (SenderStatus.NO_CONSENT, [])
    assert check("Somebody", "somebody@else.example") == (SenderStatus.UNKNOWN, [])


def test_display_name_naming_another_patient() -> None:
    # Olaf's address, Anna's name
    assert check("Anna Berg", "olaf@mail.example") == (SenderStatus.WARNING, ["display_name_patient"])
    # unknown address with a patient's name, order and case swapped
    assert check("BERG, anna", "anna.b@elsewhere.example") == (SenderStatus.WARNING, ["display_name_patient"])
    # the owner's own name is fine, even with extra words
    assert check("Anna Berg (mobile)", "anna@work.example") == (SenderStatus.VERIFIED, [])


def test_display_name_naming_the_practice_or_physician() -> None:
    assert check("Dr. Maya Lindqvist", "maya@freemail.example")[1] == ["display_name_practice"]
    assert check("Dr Lindqvist", "x@freemail.example")[1] == ["display_name_practice"]
    assert check("Riverside Family Practice", "billing@freemail.example")[1] == ["display_name_practice"]
    assert check("Maya Lindqvist", PRACTICE.address) == (SenderStatus.UNKNOWN, [])  # the practice itself


def test_display_name_showing_another_address() -> None:
    assert check("anna.berg@mail.example", "evil@bad.example")[1] == ["display_name_address"]
    assert check("anna.berg@mail.example", "anna.berg@mail.example") == (SenderStatus.VERIFIED, [])


def test_cr_lf_and_controls_in_names_break_nothing() -> None:
    status, codes = check("Anna\r\nBerg", "olaf@mail.example")
    assert (status, codes) == (SenderStatus.WARNING, ["display_name_patient"])
    status, codes = check("Anna Berg\r\nBcc: x@y.example", "anna.berg@mail.example")
    assert status is SenderStatus.WARNING and codes == ["display_name_address"]
    result = check_sender(SenderFacts(Address("A\x1b]0;title\x07\r\nB", "olaf@mail.example\r\n")), DIRECTORY, PRACTICE)
    assert result.status is SenderStatus.NO_CONSENT
    assert all("\r" not in line and "\n" not in line and "\x1b" not in line for line in result.lines())


def test_lookalike_and_idn_domains() -> None:
    assert check("Anna", "anna.berg@rnail.example") == (SenderStatus.WARNING, ["lookalike_domain"])
    assert check("", "office@riverside-practise.example") == (SenderStatus.WARNING, ["lookalike_domain"])
    assert check("", "lena.kowalski@xn--gmil-63d.com") == (SenderStatus.WARNING, ["idn_domain"])
    assert check("", "lena.kowalski@gmаil.com") == (SenderStatus.WARNING, ["idn_domain"])  # raw Unicode
    # an IDN that resembles nothing known but mixes alphabets
    assert check("", "x@xn--pple-43d.example") == (SenderStatus.WARNING, ["mixed_script"])  # аpple
    # a genuine IDN that resembles nothing: just unknown
    assert check("", "info@xn--mller-kva.example") == (SenderStatus.UNKNOWN, [])  # müller


def test_lookalike_address_on_a_known_domain() -> None:
    assert check("", "lena.kovvalski@gmail.com") == (SenderStatus.WARNING, ["lookalike_address"])
    assert check("", "lena.kowalsky@gmail.com") == (SenderStatus.WARNING, ["lookalike_address"])
    assert check("", "peter.meier@gmail.com") == (SenderStatus.UNKNOWN, [])


def test_reply_to_and_authentication() -> None:
    reply_to = (Address("", "collect@other.example"),)
    assert check("Anna Berg", "anna.berg@mail.example", reply_to=reply_to)[1] == ["reply_to"]
    same = (Address("", "ANNA.BERG@mail.example"),)
    assert check("Anna Berg", "anna.berg@mail.example", reply_to=same)[0] is SenderStatus.VERIFIED
    other_own = (Address("", "anna@work.example"),)  # another address on file for Anna
    assert check("Anna Berg", "anna.berg@mail.example", reply_to=other_own)[0] is SenderStatus.VERIFIED
    fail = "mx.example; spf=pass smtp.mailfrom=mail.example; dkim=fail header.d=mail.example; dmarc=fail"
    assert check("Anna Berg", "anna.berg@mail.example", auth_results=fail)[1] == ["auth_failed"]
    ok = "mx.example; spf=pass; dkim=pass header.d=fail.example; dmarc=pass"
    assert check("Anna Berg", "anna.berg@mail.example", auth_results=ok)[0] is SenderStatus.VERIFIED


def test_merge_status() -> None:
    assert merge_status([SenderStatus.VERIFIED, SenderStatus.WARNING]) is SenderStatus.WARNING
    assert merge_status([SenderStatus.NO_CONSENT, SenderStatus.UNKNOWN]) is SenderStatus.UNKNOWN
    assert merge_status([]) is None


def test_reply_target_rule() -> None:
    facts = SenderFacts(Address("Anna Berg", "anna.berg@mail.example"), reply_to=(Address("", "x@other.example"),))
    t = reply_target(facts, DIRECTORY)
    assert (t.address, t.verified, t.requested, t.needs_confirmation) == (
        "anna.berg@mail.example",
        True,
        "x@other.example",
        True,
    )
    assert t.confirmation("anna.berg@mail.example") is None
    assert t.confirmation("anna@work.example") is None  # also on file for her
    question = t.confirmation("x@other.example")
    assert question and "x@other.example" in question and "anna.berg@mail.example" in question
    plain = reply_target(SenderFacts(Address("", "anna.berg@mail.example")), DIRECTORY)
    assert not plain.needs_confirmation
    unknown = reply_target(SenderFacts(Address("", "who@else.example")), DIRECTORY)
    assert unknown.needs_confirmation and "not a verified address" in (unknown.confirmation(unknown.address) or "")


# --- scope -----------------------------------------------------------------------------------------


def test_scope_keywords() -> None:
    assert scope_category("Could you renew my prescription?") == "refill"
    assert scope_category("I ran out of my inhaler") == "refill"
    assert scope_category("Question about the invoice") == "billing"
    assert scope_category("I'd like to book an appointment") == "appointment"
    assert scope_category("My husband Bill says hello") is None
    assert scope_category("At my last appointment you said the mole is fine") is None
    assert scope_category("Please renew my prescription", categories=["billing"]) is None


def test_results_and_personal_account() -> None:
    assert result_category("Are my blood test results back?") == "results"
    assert result_category("Any news on the lab results?") == "results"
    assert result_category("Thanks for the visit") is None
    assert mentions_personal_account("Sorry, I first wrote to your personal email")
    assert mentions_personal_account("I sent it to you on your gmail")
    assert not mentions_personal_account("my personal opinion")


def test_visit_window() -> None:
    p = DirectoryPatient("x", "A B", ("a@b.example",), last_visit=date(2026, 1, 10))
    assert visit_in_window(p, NOW, 365)
    assert not visit_in_window(p, NOW, 200)
    q = DirectoryPatient("y", "C D", ("c@d.example",), next_visit=date(2026, 12, 1))
    assert visit_in_window(q, NOW, 60)
    assert not visit_in_window(DirectoryPatient("z", "E F", ("e@f.example",)), NOW, 365)


def test_suggestions_in_order() -> None:
    anna = DirectoryPatient("p1", "Anna Berg", ("a@b.example",), consent_date=date(2025, 1, 1), last_visit=NOW.date())
    stale = DirectoryPatient("p9", "Old Patient", ("o@p.example",), consent_date=date(2020, 1, 1))
    kw = {"now": NOW, "window_days": 365, "categories": None}
    s = suggest_tag(urgent=True, status=None, text="refill", patient=anna, personal_route=True, **kw)  # type: ignore[arg-type]
    assert (s.tag, s.template) == ("redirect:phone", "phone")
    s = suggest_tag(urgent=False, status=None, text="refill", patient=anna, personal_route=True, **kw)  # type: ignore[arg-type]
    assert (s.tag, s.template) == ("personal_account", "professional_address")
    s = suggest_tag(urgent=False, status=None, text="refill please", patient=anna, personal_route=False, **kw)  # type: ignore[arg-type]
    assert s.tag == "refill"
    s = suggest_tag(urgent=False, status=None, text="a question", patient=stale, personal_route=False, **kw)  # type: ignore[arg-type]
    assert s.tag == "free_advice"
    s = suggest_tag(
        urgent=False,
        status=SenderStatus.NO_CONSENT,
        text="a question",
        patient=anna,
        personal_route=False,
        **kw,  # type: ignore[arg-type]
    )
    assert (s.tag, s.template) == (None, "consent")
    s = suggest_tag(
        urgent=False,
        status=None,
        text="a question",
        patient=stale,
        personal_route=False,
        now=NOW,
        window_days=365,
        categories={"billing": "Billing"},
    )
    assert s.tag is None  # free_advice is not a configured category


def test_urgent_banner_names_labels_not_patient_text() -> None:
    banner = urgent_banner(red_flags("Anna here: chest pain and I passed out"))
    assert banner.startswith("URGENT") and "chest pain" in banner and "Anna" not in banner
    assert "emergency services" in banner
    assert urgent_banner([]) == ""


# --- the fast paths decide exactly like the straightforward code -------------------------------------
#
# The references below are the code as it was before the prefilters and shortcuts (every pattern
# run over every text, the regex-based normalisation): the fast versions must agree with them on
# everything, not just on the corpus.

_REF_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'", "\u2032": "'"})
_REF_INVISIBLE: dict[int, str | None] = {c: None for c in (0x00AD, 0x200C, 0x200D, 0x2060, 0xFEFF)}
_REF_INVISIBLE[0x200B] = " "
_REF_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2212"})
_REF_SPACES = re.compile(r"\s+")
_REF_QUOTED = re.compile(r"^[ \t]*>.*$", re.MULTILINE)


def ref_normalize(text: str) -> str:
    text = (
        unicodedata.normalize("NFKC", text).translate(_REF_INVISIBLE).translate(_REF_APOSTROPHES).translate(_REF_DASHES)
    )
    return _REF_SPACES.sub(" ", text.casefold()).strip()


def ref_strip_quoted(body: str) -> str:
    return _REF_QUOTED.sub("", body)


def ref_find(text: str, extra: tuple[str, ...] = ()) -> list[tuple[str, str, str, bool]]:
    rules = [(r.id, r.label, r.compiled()) for r in RED_FLAG_RULES]
    rules += [("config", p[3:] if p.startswith("re:") else p, compile_phrase(p)) for p in extra]
    norm = ref_normalize(text)
    hits = []
    for rule, label, pattern in rules:
        m = pattern.search(norm)
        if m is None:
            continue
        negated = all(_NEGATION.search(norm[max(0, x.start() - 40) : x.start()]) for x in pattern.finditer(norm))
        hits.append((rule, label, m.group(0), negated))
    return hits


def ref_domain_lookalike(domain: str, known: set[str] | frozenset[str]) -> str | None:
    domain = domain.strip().rstrip(".").lower()
    known_set = {k.strip().rstrip(".").lower() for k in known if k}
    if not domain or domain in known_set or domain in COMMON_MAIL_DOMAINS:
        return None
    sk = domain_skeleton(domain)
    best: tuple[int, str] | None = None
    for k in sorted(known_set | COMMON_MAIL_DOMAINS):
        k_sk = domain_skeleton(k)
        if k_sk == sk:
            return k
        limit = 0 if min(len(k_sk), len(sk)) < 6 else (1 if min(len(k_sk), len(sk)) < 12 else 2)
        if limit:
            d = damerau_distance(sk, k_sk, limit)
            if d <= limit and (best is None or d < best[0]):
                best = (d, k)
    return best[1] if best else None


EXTRAS = ("Brustschmerz", "re:\\bcode (red|blue)\\b", "Atemnot", "re:(?i)Kollaps", "re:blut(?:ung)?")
FAST = RedFlagMatcher(EXTRAS)


def fast_find(text: str) -> list[tuple[str, str, str, bool]]:
    return [(h.rule, h.label, h.text, h.negated) for h in FAST.find(text)]


def _corpus_texts() -> list[str]:
    data = json.loads(CORPUS.read_text(encoding="utf-8"))["messages"]
    texts = [x["subject"] + "\n" + strip_quoted(x["body"]) for x in data]
    texts += [x["subject"] + "\n" + x["body"] for x in data]
    texts += [v for phrase in LISTED_PHRASES for v in (*_variants(phrase), f"I have no {phrase}")]
    return texts


def test_fast_matcher_equals_reference_on_corpus_and_listed_phrases() -> None:
    texts = _corpus_texts()
    flagged = 0
    for text in texts:
        expected = ref_find(text, EXTRAS)
        assert fast_find(text) == expected, text
        flagged += bool(expected)
    assert flagged > len(texts) // 2  # the comparison covers hits, not just empty lists


def test_regex_whitespace_is_str_split_whitespace() -> None:
    """normalize_text collapses whitespace with str.split(): the same set as the regex \\s."""
    space = re.compile(r"\s")
    assert [c for c in range(0x110000) if bool(space.fullmatch(chr(c))) != chr(c).isspace()] == []


# Words from the rules, near misses, and characters the normalisation rewrites.
_RULE_WORDS = """
my his her the a no not never denies can't cant cannot won't don't unable to of in up on it all
pain pains chest tight heart attack breath breathing breathe lips blue choking gasping air
suicidal die dead kill killing myself himself self-harm cut cutting overdose dosing pills tablets
swallowed bleach stroke face droop drooping slurred slurring speech weak weakness arm leg numb
sudden suddenly worst headache thunderclap severe heavy bleeding bleed blood stop stopped pouring
pregnant cough coughing vomit vomiting threw puke black tarry stool faint fainted passed out
lost consciousness unconscious collapsed wake seizure fit convulsions anaphylaxis throat swelling
swollen tongue epi pen epipen allergic reaction baby infant 3 weeks months old fever temperature
temp 38.5 39 40 41,5 104 °c f high stiff neck rash fade purple spots abdominal stomach hit head
refill renew prescription invoice bill billing pay appointment book slot lab test results report
scan x-ray your personal private gmail email wrote sent you at code red brustschmerzen kollaps
"""
_PIECES = sorted(
    {
        *(w for phrase in LISTED_PHRASES for w in phrase.split()),
        *_RULE_WORDS.split(),
        "\u2019", "\u00ad", "\u200b", "\u2013", "\u00a0", "Ǆ", "ﬁ", "İ", "ß", "\u0301", ">", "> ", ".", "!", "?",
        "-", "\t", "\n", "\r\n", "  ", ",", "'",
    }
)  # fmt: skip
_SEPARATORS = st.sampled_from([" ", " ", " ", "\n", "-", ". ", "\u2019", "  ", "\t", ""])
_TEXTS = st.lists(st.tuples(st.one_of(st.sampled_from(_PIECES), st.text(max_size=4)), _SEPARATORS), max_size=40).map(
    lambda parts: "".join(a + b for a, b in parts)
)


@settings(max_examples=400, deadline=None)
@given(_TEXTS)
def test_fast_matcher_equals_reference_on_generated_text(text: str) -> None:
    assert fast_find(text) == ref_find(text, EXTRAS)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_TEXTS, st.text(), st.text(alphabet=" \t>\n\ra\u2028")))
@example("ok\n \t> quoted\n>b\r\n  >c\r\nd > e\n\t>")
@example(" Dear  patient,\n\n\n" + " " * 9 + "see`you\x1c\x1fthen \n")  # runs of every length, ASCII separators
@example("\n\n  \n")
def test_fast_normalisation_and_quote_stripping_equal_the_reference(text: str) -> None:
    assert normalize_text(text) == ref_normalize(text)
    assert normalize_words(text) == ref_normalize(text).split()
    assert normalize_text(text.encode("ascii", "replace").decode()) == ref_normalize(
        text.encode("ascii", "replace").decode()
    )
    assert strip_quoted(text) == ref_strip_quoted(text)


@settings(max_examples=300, deadline=None)
@given(_TEXTS, st.sampled_from(sorted({"refill", "billing", "appointment"})))
def test_fast_scope_result_and_personal_checks_equal_the_patterns(text: str, only: str) -> None:
    norm = ref_normalize(text)
    expected_scope = next((cat for cat, pattern in safety._SCOPE if pattern.search(norm)), None)
    assert scope_category(text) == expected_scope
    only_expected = only if any(c == only and p.search(norm) for c, p in safety._SCOPE) else None
    assert scope_category(text, [only]) == only_expected
    assert result_category(text) == ("results" if safety._RESULTS.search(norm) else None)
    assert mentions_personal_account(text) == bool(safety._PERSONAL.search(norm))
    view = TextView.of(text)
    assert scope_category("ignored", normalized=view) == expected_scope


# Random regular expressions (the shapes configured "re:" red flags can take) over a small alphabet:
# whenever a pattern matches a text, the need derived for it must hold in that text.
_REGEX_ATOMS = st.sampled_from(
    ["a", "b", "c", "ab", "abc", " ", "-", "[ab]", "[a-c]", "[^a]", ".", r"\w", r"\s", r"\d", r"\b", "^", "$", "x"]
)


def _regex(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(children, children).map("".join),
        st.tuples(children, children).map(lambda t: f"{t[0]}|{t[1]}"),
        children.map(lambda x: f"(?:{x})"),
        children.map(lambda x: f"({x})"),
        st.tuples(children, st.sampled_from(["?", "*", "+", "{2}", "{0,2}", "{1,3}", "+?", "??", "{2,}"])).map(
            lambda t: f"(?:{t[0]}){t[1]}"
        ),
        children.map(lambda x: f"(?={x})"),
        children.map(lambda x: f"(?!{x})"),
        children.map(lambda x: f"(?<!{x[:1] or 'a'})"),
        children.map(lambda x: f"(?i:{x})"),
        children.map(lambda x: f"(?>{x})"),
        children.map(lambda x: f"({x})\\1"),  # a group reference: no finders for that pattern
        st.tuples(children, children).map(lambda t: f"(?:({t[0]})|{t[1]})(?(1)a|b)"),
    )


@settings(max_examples=600, deadline=None)
@given(
    st.recursive(_REGEX_ATOMS, _regex, max_leaves=12),
    st.one_of(st.text(alphabet="abcx -\n1A", max_size=40), st.text(alphabet="abcx -1", min_size=100, max_size=300)),
)
def test_prefilter_finds_exactly_the_matches_of_the_pattern(expr: str, text: str) -> None:
    try:
        pattern = re.compile(expr)
    except re.error:
        return
    pf = Prefilter(pattern).analysed()
    expected = [(m.span(), m.group(0), m.groups()) for m in pattern.finditer(text)]
    for index in (AtomIndex(pf.atoms), AtomIndex(["zzz"])):  # atoms found word by word, or looked up directly
        view = TextView(text, index)
        if expected:
            assert view.may_match(pf), (expr, text, pf.need)
        assert [(m.span(), m.group(0), m.groups()) for m in pf.finditer(view)] == expected, (expr, text)
        first = pf.search(view)
        assert (first and first.span()) == (expected and expected[0][0]) or (first is None and not expected)


def test_pattern_need_of_the_rules_is_selective() -> None:
    """Every built-in rule and check has a need (else it would run on every text), and plain text
    without those words rules them all out."""
    patterns = [r.compiled() for r in RED_FLAG_RULES] + [p for _, p in safety._SCOPE]
    patterns += [safety._RESULTS, safety._PERSONAL, compile_phrase("Brustschmerz")]
    view = RedFlagMatcher(["Brustschmerz"]).view("thank you for the quick reply, see you next week")
    for pattern in patterns:
        pf = Prefilter(pattern).analysed()
        assert pf.branches is not None, pattern.pattern
        assert not view.may_match(pf), pattern.pattern
    assert pattern_need(re.compile("(?i)chest pain")) is None  # case-insensitive: always runs
    assert pattern_need(re.compile(r"\w+")) is None


def test_atom_index_finds_exactly_the_atoms_in_the_text() -> None:
    """Atoms are found word by word (and cached per word): the same answer as searching the text."""
    rng = random.Random(7)
    atoms = sorted({a for piece in _PIECES for a in piece.split()} | {"ai", "ough", "38.", "-ray", "zz", "a"})
    index = AtomIndex(atoms)
    long_word = "x" * 70 + "chest" + "y" * 10  # past the per-word cache
    for _ in range(60):
        text = " ".join(rng.choice(_PIECES) for _ in range(rng.randrange(5, 400))) + " " + long_word
        norm = normalize_text(text)
        for _ in range(2):  # cold, then from the cache
            assert index.atoms_in(set(norm.split())) == {a for a in atoms if a in norm}
    with pytest.raises(ValueError, match="whitespace"):
        AtomIndex(["chest pain"])


@pytest.mark.parametrize("limit", [1, 3, 50])
def test_atom_index_with_a_small_word_cache_finds_the_same_atoms(monkeypatch: pytest.MonkeyPatch, limit: int) -> None:
    """The per-word cache is dropped when full, also in the middle of a text: no atom is lost."""
    monkeypatch.setattr(safety, "WORD_CACHE", limit)
    rng = random.Random(11)
    atoms = sorted({a for piece in _PIECES for a in piece.split()})
    index = AtomIndex(atoms)
    for _ in range(40):
        norm = normalize_text(" ".join(rng.choice(_PIECES) for _ in range(rng.randrange(1, 120))))
        assert index.atoms_in(set(norm.split())) == {a for a in atoms if a in norm}
        assert len(index._words) <= limit


def _holds(need: object, present: set[str] | frozenset[str]) -> bool:
    if need is None:
        return True
    if isinstance(need, str):
        return need in present
    op, kids = need  # type: ignore[misc]
    return (all if op == "and" else any)(_holds(k, present) for k in kids)


_NEEDS = st.recursive(
    st.sampled_from("abcdefgh"),
    lambda kids: st.one_of(
        st.lists(kids, min_size=1, max_size=4).map(safety._and),
        st.lists(kids, min_size=1, max_size=4).map(safety._or),
    ),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_NEEDS, st.frozensets(st.sampled_from("abcdefgh")))
def test_need_branches_hold_whenever_the_need_holds(need: object, present: frozenset[str]) -> None:
    """The branch form of a need is implied by it, and equal to it while small enough to expand."""
    branches = need_branches(need)  # type: ignore[arg-type]
    got = branches is None or any(all(c & present for c in br) for br in branches)
    if _holds(need, present):
        assert got
    if _leaves(need) <= 6:  # at most 3 x 3 clauses from any nested condition: expanded exactly
        assert got == _holds(need, present)


def _leaves(need: object) -> int:
    return 1 if isinstance(need, str) else sum(_leaves(k) for k in need[1])  # type: ignore[index]


_DOMAINS = st.one_of(
    st.sampled_from(sorted(COMMON_MAIL_DOMAINS)),
    st.sampled_from(["mail.example", "rnail.example", "mai1.example", "riverside-practice.example", "web.de"]),
    st.sampled_from(["anna-berg.example", "anna-berq.example", "gmx.at", "gmx.de", "gmai1.com", "yahoo.co"]),
    st.text(alphabet="abcdeilmnorstuvw01-.аоеі", min_size=1, max_size=22),
)
_EDIT = st.tuples(st.integers(0, 30), st.sampled_from(["", "0", "1", "rn", "а", "x", "-", "ab"]), st.booleans())


def _edited(domain: str, edits: list[tuple[int, str, bool]]) -> str:
    for i, typo, replace in edits:  # replace one character by the typo, or insert the typo
        i = min(i, len(domain))
        domain = domain[:i] + typo + domain[i + 1 if replace else i :]
    return domain


@settings(max_examples=200, deadline=None)
@given(st.lists(_DOMAINS, max_size=8), _DOMAINS, st.lists(st.lists(_EDIT, min_size=1, max_size=2), max_size=4))
@example(["rnail.example", "mail.example"], "mai1.example", [])  # two known, one skeleton
@example(["gmx.de", "gmx.at"], "gmx.dt", [])  # equally near: the first in sorted order
def test_domain_lookalike_equals_the_reference(
    known: list[str], domain: str, edits: list[list[tuple[int, str, bool]]]
) -> None:
    pool = [*known, domain, "gmail.com", "riverside-practice.example"]
    candidates = [domain] + [_edited(pool[n % len(pool)], e) for n, e in enumerate(edits)]
    for c in candidates:
        assert domain_lookalike(c, set(known)) == ref_domain_lookalike(c, set(known)), (c, known)


def test_sender_checker_answers_like_check_sender_and_keys_on_what_it_reads() -> None:
    checker = SenderChecker(DIRECTORY, PRACTICE)
    fail = "mx.example; dkim=fail header.d=mail.example"
    other = (Address("", "collect@other.example"),)
    facts = [
        SenderFacts(Address("Anna Berg", "anna.berg@mail.example")),
        SenderFacts(Address("Anna Berg", "anna.berg@mail.example"), reply_to=other),
        SenderFacts(Address("Anna Berg", "anna.berg@mail.example"), auth_results=fail),
        SenderFacts(Address("Anna Berg", "olaf@mail.example")),
        SenderFacts(Address("", "olaf@mail.example")),
        SenderFacts(Address("Dr Lindqvist", "x@freemail.example")),
        SenderFacts(Address("", "lena.kowalski@xn--gmil-63d.com")),
        SenderFacts(Address("", "anna.berg@rnail.example")),
        SenderFacts(Address("", "lena.kovvalski@gmail.com")),
        SenderFacts(Address("", "x@xn--pple-43d.example")),
        SenderFacts(Address("anna.berg@mail.example", "evil@bad.example")),
        SenderFacts(Address("Somebody", "somebody@else.example"), recipients=(Address("", "a@b.example"),)),
    ]
    for f in facts * 2:
        assert checker.check(f) == check_sender(f, DIRECTORY, PRACTICE), f
    statuses = [checker.check(f).status for f in facts[:3]]
    assert statuses == [SenderStatus.VERIFIED, SenderStatus.WARNING, SenderStatus.WARNING]
    assert checker.check(facts[0]) is checker.check(SenderFacts(Address("Anna Berg", "anna.berg@mail.example")))


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="abcrnm.-", max_size=14),
    st.text(alphabet="abcrnm.-", max_size=14),
    st.integers(1, 3),
)
@example("abcdef", "abdcef", 1)  # a swap
@example("gmail.com", "gmial.com", 2)
@example("xaaaaz", "aaaayw", 1)
def test_within_distance_is_the_distance_up_to_the_limit(a: str, b: str, limit: int) -> None:
    assert within_distance(a, b, limit) == min(damerau_distance(a, b, limit), limit + 1)
    assert within_distance(a, a[1:] + a[:1], limit) == min(damerau_distance(a, a[1:] + a[:1], limit), limit + 1)


def ref_lookalike_address(directory: PatientDirectory, domain: str, local: str) -> str | None:
    for known_addr in directory.by_domain.get(domain_skeleton(domain), ()):
        k_local = known_addr.rpartition("@")[0]
        same_look = skeleton(k_local) == skeleton(local)
        one_typo = len(k_local) >= 6 and damerau_distance(k_local, local, 1) <= 1
        if same_look or one_typo:
            return known_addr
    return None


_LOCALS = st.text(alphabet="abelnor.10", min_size=1, max_size=9)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LOCALS, min_size=1, max_size=12), _LOCALS, st.sampled_from(["gmail.com", "gmai1.com", "web.de"]))
@example(["lena.kowalski", "lena.kovvalski"], "lena.kowalsky", "gmail.com")
def test_lookalike_address_equals_the_reference(locals_: list[str], local: str, domain: str) -> None:
    patients = [DirectoryPatient(f"p{i}", f"P{i} X", (f"{x}@gmail.com",)) for i, x in enumerate(locals_)]
    directory = PatientDirectory(patients)
    for q in (local, *locals_[:3], *(x[:-1] + "l" for x in locals_[:3]), *(x + "o" for x in locals_[:2])):
        assert directory.lookalike_address(domain, q) == ref_lookalike_address(directory, domain, q), q


@pytest.mark.parametrize("failing", [0, 47, 48, 49, 120])
def test_prefilter_with_many_candidate_starts_finds_the_same_matches(failing: int) -> None:
    """Past the budget of starts tried one by one, an ordinary search takes over exactly there."""
    pattern = re.compile(r"(?<!\w)(?:ab|cd)e?(?!\w)")
    text = "xab " * failing + "ab cde xcd ab"
    pf = Prefilter(pattern).analysed()
    for view in (TextView(text, AtomIndex(pf.atoms)), TextView(text, AtomIndex(["zzz"]))):
        assert [m.span() for m in pf.finditer(view)] == [m.span() for m in pattern.finditer(text)]


def test_the_analysis_waits_for_the_warm_up_and_changes_no_result() -> None:
    """A matcher runs its patterns plainly on its first WARM_UP texts and analyses them after: the
    hits are the same on both sides of that point (and the analysis is really made then)."""
    texts = [
        "I have crushing chest pain since this morning",
        "thank you for the quick reply, see you next week",
        "my chest feels tight and I can't breathe",
        "could you refill my lisinopril",
        "I do not have chest pain anymore",
    ]
    cold = RedFlagMatcher(["Brustschmerz"])
    first = [cold.find(t) for t in texts]
    assert first[0] and first[2] and not first[1]
    assert not any(f._analysed for f in cold._filters)  # the first texts ran the patterns plainly
    for i in range(safety.WARM_UP):
        cold.find(texts[i % len(texts)])
    assert all(f._analysed for f in cold._filters) and cold._index is not None
    assert [cold.find(t) for t in texts] == first
    warm = RedFlagMatcher(["Brustschmerz"])
    _ = warm.index  # analysed at once
    assert [warm.find_in(warm.view(t)) for t in texts] == first


def test_prepare_makes_every_analysis_at_once() -> None:
    matcher = RedFlagMatcher(["Brustschmerz"])
    matcher.prepare()
    assert all(f._analysed for f in matcher._filters) and matcher._index is not None
    scope, results, personal = safety._checks()
    assert all(pf._analysed for _, pf in scope) and results._analysed and personal._analysed


def test_a_prepared_matcher_equals_the_reference_on_the_corpus() -> None:
    """With its analysis and atom index made (as in a sync's worker), the matcher rejects most
    rules by their gate without running them: never a rule that matches."""
    matcher = RedFlagMatcher(EXTRAS)
    matcher.prepare()
    texts = _corpus_texts()
    flagged = 0
    for text in texts:
        view = matcher.view(text)
        assert view._index is matcher.index  # the gate shortcut applies to this view
        got = [(h.rule, h.label, h.text, h.negated) for h in matcher.find_in(view)]
        expected = ref_find(text, EXTRAS)
        assert got == expected, text
        flagged += bool(expected)
    assert flagged > len(texts) // 2


class _CountingPattern:
    """A compiled pattern that counts how its matches are looked for."""

    def __init__(self, expr: str) -> None:
        self.real = re.compile(expr)
        self.pattern, self.flags, self.groups = self.real.pattern, self.real.flags, self.real.groups
        self.searches = 0
        self.calls = 0  # match() calls

    def match(self, text: str, pos: int = 0) -> re.Match[str] | None:
        self.calls += 1
        return self.real.match(text, pos)

    def finditer(self, text: str, pos: int = 0) -> Iterator[re.Match[str]]:
        self.searches += 1
        return self.real.finditer(text, pos)


@pytest.mark.parametrize(
    ("text", "searches"),
    [
        # sparse: more than _CANDIDATES_MAX starts, far apart: tried one by one to the end
        ("ab and then some more filler words here " * 120 + "cde", 0),
        # dense: an ordinary search takes over
        ("ab " * 200 + "cde xab abe", 1),
    ],
    ids=["sparse", "dense"],
)
def test_many_candidate_starts_sparse_or_dense_find_the_same_matches(text: str, searches: int) -> None:
    pattern = _CountingPattern(r"(?<!\w)(?:ab|cd)e?(?!\w)")
    pf = Prefilter(pattern).analysed()  # type: ignore[arg-type]
    view = TextView(text, AtomIndex(pf.atoms))
    assert text.count("ab") > safety._CANDIDATES_MAX
    assert [m.span() for m in pf.finditer(view)] == [m.span() for m in pattern.real.finditer(text)]
    assert pattern.searches == searches


def test_finders_search_the_alternatives_in_the_engine() -> None:
    """A leading alternative that starts with a literal (after its assertions) gets a finder, and
    the pattern itself is tried only where a possible alternative's finder matches: a text full of
    the results pattern's prefixes ("blood", "test") that never continue into a match costs no
    pattern.match at all, and a real match is still found, at the same place."""
    for rule in RED_FLAG_RULES:
        pf = Prefilter(rule.compiled()).analysed()
        assert pf.alternatives and sum(a.finder is not None for a in pf.alternatives) >= len(pf.alternatives) // 2
    pattern = _CountingPattern(safety._RESULTS.pattern)
    pf = Prefilter(pattern).analysed()  # type: ignore[arg-type]
    assert all(a.finder is not None for a in pf.alternatives or ())
    text = "blood pressure and test dates, the results were sent; bloodtest results " * 40
    view = TextView(text, AtomIndex(pf.atoms))
    assert pf.search(view) is None and pattern.calls == 0
    text += "and my blood test results came back"
    view = TextView(text, AtomIndex(pf.atoms))
    assert [m.span() for m in pf.finditer(view)] == [m.span() for m in pattern.real.finditer(text)] != []
    assert pattern.calls == 1


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        (r"(?<!\w)(ab|cd)\1(?!\w)", "abab xcdcd cdcd abcd"),
        (r"(?<!\w)(?:(ab)|cd)x(?(1)y|z)", "abxz cdxy abxy cdxz"),
        (r"(?<!\w)(?P<w>ab|cd) (?P=w)", "ab cd cd cd ab ab"),
    ],
)
def test_patterns_with_group_references_find_the_same_matches(expr: str, text: str) -> None:
    """An alternative split off such a pattern has lost the group it refers to: those patterns get
    no finders, and their matches are found as before."""
    pattern = re.compile(expr)
    pf = Prefilter(pattern).analysed()
    assert pf.alternatives and all(a.finder is None for a in pf.alternatives)
    expected = [m.span() for m in pattern.finditer(text)]
    assert expected
    for index in (AtomIndex(pf.atoms), AtomIndex(["zzz"])):
        assert [m.span() for m in pf.finditer(TextView(text, index))] == expected


def test_possible_alternatives_are_kept_per_set_of_atoms_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """A prefilter keeps its possible alternatives per set of its atoms in the text: the answers
    are those computed afresh, with the kept answers reused or dropped when there are too many."""
    texts = _corpus_texts()
    for limit in (safety.POSSIBLE_CACHE, 1):
        monkeypatch.setattr(safety, "POSSIBLE_CACHE", limit)
        matcher = RedFlagMatcher(EXTRAS)
        matcher.prepare()
        for text in texts * 2:
            view = matcher.view(text)
            for pf in matcher._filters:
                got = view.possible(pf)
                fresh = [a for a in pf.alternatives or () if view.holds(a.branches, pf)]
                assert got == (fresh if pf.alternatives is not None else got), text
        sizes = [len(pf._possible) for pf in matcher._filters]
        assert max(sizes) <= limit and (limit == 1 or max(sizes) > 1)


def ref_skeleton(text: str) -> str:
    """skeleton() without its ASCII shortcut."""
    text = unicodedata.normalize("NFKC", text).translate(safety._UPPER_HOMOGLYPHS)
    s = unicodedata.normalize("NFKD", text.casefold())
    s = "".join(c for c in s if not unicodedata.combining(c)).translate(safety._INVISIBLE)
    s = s.translate(safety._HOMOGLYPHS)
    for a, b in safety._MULTI:
        s = s.replace(a, b)
    return s


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(alphabet=st.characters(max_codepoint=127)), st.text(), st.sampled_from(_PIECES)))
@example("Dr. RN 01|!$@ Ǆ\x00\t")
def test_skeleton_shortcut_equals_the_reference(text: str) -> None:
    assert skeleton(text) == ref_skeleton(text)
    assert skeleton(text.upper()) == ref_skeleton(text.upper())
