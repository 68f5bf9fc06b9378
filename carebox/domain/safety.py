"""Clinical safety checks: red flags, who is writing, and what is in scope. Pure: no IO, the
clock is passed in.

* Red flags: built-in phrases and patterns (plus extras from the config) matched on a
  normalised text (NFKC, case-folded, typographic apostrophes and invisible characters
  removed, whitespace collapsed). Matching is deliberately generous: a listed phrase is never
  missed, and a negated mention ("no chest pain") still counts; it is only marked ``negated``
  for display.
* Sender checks: verified / unknown / no_consent / warning, with the reasons for a warning
  (display name naming another patient or the practice, lookalike or internationalised domain,
  Reply-To different from From, failed authentication).
* Scope: appointment, billing and refill requests, questions from patients without a visit in
  the window, lab-result questions (a category with its own response window), and mail that
  went through the physician's personal account.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import re
import threading
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any

from carebox.domain.models import Address
from carebox.domain.sanitize import clean_line
from carebox.domain.senders import SenderStatus

__all__ = [
    "LISTED_PHRASES",
    "PRACTICE_TITLES",
    "RED_FLAG_RULES",
    "AtomIndex",
    "DirectoryPatient",
    "LookalikeIndex",
    "PatientDirectory",
    "Practice",
    "Prefilter",
    "RedFlagHit",
    "RedFlagMatcher",
    "RedFlagRule",
    "ReplyTarget",
    "SenderCheck",
    "SenderChecker",
    "SenderFacts",
    "SenderStatus",
    "SenderWarning",
    "Suggestion",
    "TextView",
    "check_sender",
    "compile_phrase",
    "damerau_distance",
    "domain_lookalike",
    "domain_skeleton",
    "idn_to_unicode",
    "mentions_personal_account",
    "merge_status",
    "need_branches",
    "normalize_text",
    "normalize_words",
    "pattern_need",
    "red_flags",
    "reply_target",
    "result_category",
    "scope_category",
    "skeleton",
    "strip_quoted",
    "suggest_tag",
    "urgent_banner",
    "visit_in_window",
    "within_distance",
]

# --- text normalisation ---------------------------------------------------------------------------

_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "`": "'", "\u00b4": "'", "\u2032": "'"})
_INVISIBLE: dict[int, str | None] = {c: None for c in (0x00AD, 0x200C, 0x200D, 0x2060, 0xFEFF)}
_INVISIBLE[0x200B] = " "  # a zero-width space still separates words
_DASHES = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2212"})
# The three maps in one: their keys are disjoint and no output is another map's key.
_ONE_FORM = {**_INVISIBLE, **_APOSTROPHES, **_DASHES}
# The ASCII characters str.split() splits at, besides the space and the newline.
_ASCII_SPACES = "\t\r\x0b\x0c\x1c\x1d\x1e\x1f"


def normalize_text(text: str) -> str:
    """The form every pattern is matched against: NFKC, case-folded, one kind of apostrophe and
    dash, no invisible characters, every run of whitespace (newlines too) one space.

    ``str.split()`` splits on exactly the characters regular expressions call ``\\s`` (tests
    check every code point). ASCII text takes a shortcut: NFKC leaves it as it is, the only
    mapped character in it is the backtick, and case-folding it is lower-casing. When its only
    whitespace is spaces and newlines (most mail), newlines become spaces and runs of spaces are
    halved until none is left, without splitting the text into words: each step is a search for
    a character or two (memchr speed) and a copy."""
    if text.isascii():
        norm = text.lower()
        if "`" in norm:
            norm = norm.replace("`", "'")
        if "\n" in norm:
            norm = norm.replace("\n", " ")
        if any(c in norm for c in _ASCII_SPACES):
            return " ".join(norm.split())
        while "  " in norm:
            norm = norm.replace("  ", " ")
        if norm[:1] == " " or norm[-1:] == " ":
            norm = norm.strip(" ")
        return norm
    return " ".join(normalize_words(text))


def normalize_words(text: str) -> list[str]:
    """``normalize_text(text).split()``, computed directly."""
    if text.isascii():
        return text.lower().replace("`", "'").split()
    return unicodedata.normalize("NFKC", text).translate(_ONE_FORM).casefold().split()


def strip_quoted(body: str) -> str:
    """The body without lines quoted from earlier mail (``> ...``): a red flag the practice already
    answered, or words of its own reply, must not flag the patient's next message. A quoted line
    (spaces or tabs, then ``>``) is emptied; its newline stays. Lines are split at "\\n" only."""
    if ">" not in body:
        return body
    return "\n".join("" if line.lstrip(" \t").startswith(">") else line for line in body.split("\n"))


# --- literal prefilters ----------------------------------------------------------------------------
#
# Most texts contain none of the red-flag, scope or result phrases, and running every pattern over
# every text is what made the checks slow. Each pattern gets a *need*: a condition on literal
# strings that every match of the pattern contains, derived from the pattern's own syntax tree
# (like RE2's prefilter). A text that fails the need cannot match, so the pattern is not run; a
# text that passes runs the unchanged pattern. The need is only ever a necessary condition, so
# the results are exactly those of running every pattern (tests compare both on the corpus and
# on generated text). Needs are checked against the distinct words of the text (a literal without
# whitespace occurs in the text exactly when it occurs in one of its words: ``AtomIndex``).
#
# A need is None (no condition), an atom (a string that must occur), or ("and" | "or", needs).

_Need = None | str | tuple[str, tuple["_Need", ...]]

try:  # the standard parser of regular expressions; without it every pattern just runs
    from re import _compiler as _sre_compile  # type: ignore[attr-defined]
    from re import _constants as _sre_c  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - CPython 3.11+ has them
    _sre_c = _sre_parse = _sre_compile = None

_EXACT_MAX = 32  # at most this many alternative strings are tracked exactly for one piece


class _Unsupported(Exception):
    pass


def _and(needs: Iterable[_Need]) -> _Need:
    out: list[_Need] = []
    for n in needs:
        if n is None:
            continue
        if isinstance(n, tuple) and n[0] == "and":
            out.extend(n[1])
        elif n not in out:
            out.append(n)
    if not out:
        return None
    # The cheapest rejection first: long atoms are rarer than short ones.
    out.sort(key=lambda n: -len(n) if isinstance(n, str) else 0)
    return out[0] if len(out) == 1 else ("and", tuple(out))


def _or(needs: Iterable[_Need]) -> _Need:
    out: list[_Need] = []
    for n in needs:
        if n is None:
            return None  # one way to match that needs nothing: the whole needs nothing
        if isinstance(n, tuple) and n[0] == "or":
            out.extend(n[1])
        elif n not in out:
            out.append(n)
    if not out:
        return None
    # Absorption: a choice that implies another choice adds nothing to "one of them holds"
    # ("results from my" implies "results from"; an atom implies any atom inside it).
    sets = [_atom_set(n) for n in out]
    keep = [
        n
        for i, n in enumerate(out)
        if sets[i] is None
        or not any(j != i and sets[j] is not None and _implies(sets[i], sets[j], i < j) for j in range(len(out)))
    ]
    return keep[0] if len(keep) == 1 else ("or", tuple(keep))


def _atom_set(need: _Need) -> frozenset[str] | None:
    """The atoms of an atom or of an "and" of atoms (None for anything else)."""
    if isinstance(need, str):
        return frozenset({need})
    if isinstance(need, tuple) and need[0] == "and" and all(isinstance(n, str) for n in need[1]):
        return frozenset(need[1])  # type: ignore[arg-type]
    return None


def _implies(x: frozenset[str], y: frozenset[str], x_first: bool) -> bool:
    """Whether "all of x occur" implies "all of y occur" (every y is inside some x). Of two that
    imply each other, the earlier is kept."""
    if not all(any(b in a for a in x) for b in y):
        return False
    mutual = all(any(a in b for b in y) for a in x)
    return not (mutual and x_first)


def _atom(text: str) -> _Need:
    parts = text.split()  # a literal with spaces: each of its words must occur
    if not parts:
        return None
    return parts[0] if len(parts) == 1 and parts[0] == text else _and(parts)


def _any_of(strings: Iterable[str]) -> _Need:
    strings = list(strings)
    if not strings or "" in strings:
        return None
    return _or(_atom(x) for x in strings)


def _analyse_seq(items: Iterable[tuple[Any, Any]]) -> tuple[frozenset[str] | None, _Need]:
    """(every string the sequence can match, when few and known; what every match contains)."""
    needs: list[_Need] = []
    prod: set[str] = {""}
    exact = True
    for op, av in items:
        e, n = _analyse_item(op, av)
        if e is not None:
            joined = {a + b for a in prod for b in e}
            if len(joined) <= _EXACT_MAX:
                prod = joined
                continue
            needs.append(_any_of(prod))
            prod, exact = set(e), False
            continue
        exact = False
        needs.append(_any_of(prod))
        needs.append(n)
        prod = {""}
    needs.append(_any_of(prod))
    return (frozenset(prod) if exact else None), _and(needs)


_ANALYSIS = threading.local()  # .memo: id of a parse-tree node -> its result, during one _analysis


def _analyse_item(op: Any, av: Any) -> tuple[frozenset[str] | None, _Need]:
    memo: dict[int, tuple[frozenset[str] | None, _Need]] | None = getattr(_ANALYSIS, "memo", None)
    if memo is None or not isinstance(av, (tuple, list)):
        return _analyse_node(op, av)
    found = memo.get(id(av))
    if found is None:
        found = memo[id(av)] = _analyse_node(op, av)
    return found


def _analyse_node(op: Any, av: Any) -> tuple[frozenset[str] | None, _Need]:
    c = _sre_c
    if op is c.LITERAL:
        return frozenset({chr(av)}), _atom(chr(av))
    if op is c.IN:
        chars: set[str] = set()
        for iop, iav in av:
            if iop is c.LITERAL:
                chars.add(chr(iav))
            elif iop is c.RANGE and iav[1] - iav[0] < 16:
                chars.update(chr(x) for x in range(iav[0], iav[1] + 1))
            else:  # NEGATE, a category (\w, \s, \d), a big range: anything
                return None, None
        return (frozenset(chars), _any_of(chars)) if len(chars) <= _EXACT_MAX else (None, None)
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return frozenset({""}), None  # zero width: it restricts matches, adds no characters
    if op is c.SUBPATTERN:
        _group, add_flags, _del_flags, sub = av
        if add_flags & (re.IGNORECASE | re.LOCALE):
            raise _Unsupported
        return _analyse_seq(sub)
    if op is c.ATOMIC_GROUP:
        return _analyse_seq(av)
    if op is c.BRANCH:
        results = [_analyse_seq(alt) for alt in av[1]]
        exacts = [e for e, _ in results]
        union: frozenset[str] | None = None
        if all(e is not None for e in exacts):
            union = frozenset().union(*exacts)  # type: ignore[arg-type]
            if len(union) > _EXACT_MAX:
                union = None
        return union, _or(_any_of(e) if e is not None else n for e, n in results)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", c.MAX_REPEAT)):
        lo, hi, sub = av
        e, n = _analyse_seq(sub)
        if e is not None and hi is not c.MAXREPEAT and hi <= 3:
            out: set[str] = set()
            power: set[str] = {""}
            for k in range(hi + 1):
                if k >= lo:
                    out |= power
                power = {a + b for a in power for b in e}
                if len(out) > _EXACT_MAX or len(power) > _EXACT_MAX:
                    break
            else:
                return frozenset(out), _any_of(out)
        if lo == 0:
            return None, None
        return None, (_any_of(e) if e is not None else n)
    if op in (c.ANY, c.NOT_LITERAL, c.CATEGORY, c.GROUPREF, c.GROUPREF_EXISTS):
        return None, None
    raise _Unsupported


def pattern_need(pattern: re.Pattern[str]) -> _Need:
    """What every match of ``pattern`` contains (None: no condition known). Case-insensitive
    patterns, and anything the analysis does not know, get None: they always run."""
    if not isinstance(pattern.pattern, str):
        return None
    return _analysis(pattern.pattern, pattern.flags)[0]


def _atoms_of(need: _Need) -> set[str]:
    if need is None:
        return set()
    if isinstance(need, str):
        return {need}
    return set().union(*(_atoms_of(n) for n in need[1]))


_CNF_MAX = 16  # clauses one nested condition may expand to; beyond that, the set of all its atoms


def _cnf(need: _Need) -> list[frozenset[str]]:
    """Clauses (sets of atoms, one of each set must occur) implied by ``need``: exact up to
    ``_CNF_MAX`` clauses ("a or (b and c)" is "(a or b) and (a or c)"), else the one clause of all
    its atoms (the condition cannot hold without one of them): weaker, never stronger."""
    if need is None:
        return []
    if isinstance(need, str):
        return [frozenset({need})]
    op, kids = need
    if op == "and":
        return _absorb(c for k in kids for c in _cnf(k))
    clauses: list[frozenset[str]] = [frozenset()]
    for k in kids:
        clauses = [a | b for a in clauses for b in _cnf(k)]
        if len(clauses) > _CNF_MAX:
            return [frozenset(_atoms_of(need))]
    return _absorb(clauses)


def _absorb(clauses: Iterable[frozenset[str]]) -> list[frozenset[str]]:
    """Distinct clauses without those containing another one (implied by it), smallest first."""
    out: list[frozenset[str]] = []
    for c in sorted(set(clauses), key=lambda c: (len(c), sorted(c))):
        if not any(o <= c for o in out):
            out.append(c)
    return out


def need_branches(need: _Need) -> list[list[frozenset[str]]] | None:
    """The need as "for some branch, every clause has an atom that occurs" (None: no condition):
    the top "or" gives the branches, each branch's "and" the clauses (``_cnf``). Exact for the
    shapes patterns have unless a nested condition is too big to expand; then weaker, never
    stronger, so it stays necessary."""
    if need is None:
        return None
    alternatives = need[1] if isinstance(need, tuple) and need[0] == "or" else (need,)
    return [_cnf(alt) for alt in alternatives]


_EMPTY: frozenset[str] = frozenset()
WORD_CACHE = 200_000  # words whose atoms an AtomIndex keeps


class AtomIndex:
    """Which of a fixed set of atoms occur in a text, found word by word: an atom holds no
    whitespace, so it occurs in a text exactly when it occurs inside one of the text's
    whitespace-separated words. The atoms inside each distinct word are cached (words repeat
    across messages far more than texts do)."""

    def __init__(self, atoms: Iterable[str]) -> None:
        self.atoms = frozenset(atoms)
        if any(a.split() != [a] for a in self.atoms):
            raise ValueError("atoms cannot be empty or hold whitespace")
        self._lengths = sorted({len(a) for a in self.atoms})
        self._words: dict[str, frozenset[str]] = {}

    def _scan(self, word: str) -> frozenset[str]:
        n = len(word)
        if n > 64:
            found = {a for a in self.atoms if a in word}
        else:
            atoms = self.atoms
            found = set()
            for size in self._lengths:
                if size > n:
                    break
                for i in range(n - size + 1):
                    piece = word[i : i + size]
                    if piece in atoms:
                        found.add(piece)
        return frozenset(found) if found else _EMPTY

    def atoms_in(self, words: Iterable[str]) -> set[str]:
        """The atoms inside any of ``words`` (distinct words: a set, ideally)."""
        cache = self._words
        if not isinstance(words, (set, frozenset)):
            words = set(words)
        found = list(map(cache.get, words))  # the words seen before: looked up in C
        if None in found:
            found = [f for f in found if f is not None]
            for w in words:
                if w not in cache:  # new (or dropped with the cache below: found again, harmless)
                    got = self._scan(w)
                    found.append(got)
                    if len(w) <= 64:
                        if len(cache) >= WORD_CACHE:
                            cache.clear()
                        cache[w] = got
        return set().union(*filter(None, found))


_ALTERNATIVES_MAX = 64  # leading alternatives a pattern is split into
# Start positions are tried one by one (about 1.5 us each in Python) until more than
# _CANDIDATES_MAX were tried *and* they came more often than one per _CANDIDATE_SPACING characters;
# then an ordinary search (about 45 ns a character) is cheaper for the rest of the text. Long texts
# with a few candidates per line (words like "blood", "test", "cough") stay with the candidates:
# a fixed cap of 48 sent them to the ordinary search, 4x dearer there.
_CANDIDATES_MAX = 48
_CANDIDATE_SPACING = 32
WARM_UP = 200  # texts a prefilter is asked about before its pattern is analysed (see Prefilter)
POSSIBLE_CACHE = 4096  # answers of TextView.possible kept per prefilter (see Prefilter._possible)


@dataclass(frozen=True, slots=True)
class _Alternative:
    """One leading alternative of a pattern (``a|b`` at its start, nested ones expanded): what
    its matches need, and the literal strings every one of its matches starts with (None:
    unknown), each with its first word (what an ``AtomIndex`` can tell is present)."""

    branches: list[list[frozenset[str]]] | None
    atoms: frozenset[str]
    prefixes: tuple[str, ...] | None
    heads: tuple[str | None, ...]
    word_start: bool  # it starts with (?<!\w): no word character right before a match
    gate: frozenset[str] | None  # one of these occurs whenever the need holds (None: no need)
    # The alternative without its leading assertions, compiled when first needed (None: none
    # made): it matches wherever the alternative does, and more rarely than its prefixes occur;
    # the regular expression engine finds its next match in C, at the speed of a search for its
    # first literal, where the prefix positions would be tried one by one in Python.
    finder: _Finder | None = None


def _gate(branches: list[list[frozenset[str]]] | None) -> frozenset[str] | None:
    """Atoms one of which occurs whenever the need holds: the most selective clause of each
    branch (longest shortest atom, then fewest atoms), joined. None when there is no need."""
    if branches is None:
        return None
    best = (min(branch, key=lambda c: (-min(map(len, c)), len(c))) for branch in branches if branch)
    return frozenset().union(*best)


def _leading_alternatives(items: Sequence[tuple[Any, Any]]) -> list[list[tuple[Any, Any]]]:
    """The sequence split at its first real item (after zero-width assertions) while that is a
    group or an alternation: ``(?<!\\w)(?:a|b)c`` -> ``(?<!\\w)ac``, ``(?<!\\w)bc``. Any match of
    the sequence is a match of one of them."""
    c = _sre_c
    todo = [list(items)]
    done: list[list[tuple[Any, Any]]] = []
    while todo:
        seq = todo.pop()
        k = next((i for i, (op, _) in enumerate(seq) if op not in (c.AT, c.ASSERT, c.ASSERT_NOT)), None)
        if k is None:
            done.append(seq)
            continue
        op, av = seq[k]
        if op is c.SUBPATTERN and not av[1] and not av[2]:
            todo.append(seq[:k] + list(av[3]) + seq[k + 1 :])
        elif op is c.BRANCH and len(todo) + len(done) + len(av[1]) <= _ALTERNATIVES_MAX:
            todo.extend(seq[:k] + list(alt) + seq[k + 1 :] for alt in av[1])
        else:
            done.append(seq)
    return done


def _prefixes(items: Sequence[tuple[Any, Any]]) -> tuple[str, ...] | None:
    """Strings every match of the sequence starts with (None: unknown, or one may be empty):
    few and short (each is searched for in the text), and none starting with another (its
    occurrences would be a subset of the other's)."""
    prod: set[str] = {""}
    for op, av in items:
        e, _ = _analyse_item(op, av)
        if e is None:
            break
        joined = {a + b for a in prod for b in e}
        # longer while that adds no strings; more strings only while some are under 4 characters
        if len(joined) > len(prod) and (len(joined) > 8 or min(map(len, prod)) >= 4):
            break
        prod = joined
    if "" in prod:
        return None
    return tuple(sorted(f for f in prod if not any(g != f and f.startswith(g) for g in prod)))


def _after_non_word(items: Sequence[tuple[Any, Any]]) -> bool:
    """Whether the sequence starts with the assertion ``(?<!\\w)`` (before any other item)."""
    c = _sre_c
    for op, av in items:
        if op is c.ASSERT_NOT and av[0] == -1 and list(av[1]) == [(c.IN, [(c.CATEGORY, c.CATEGORY_WORD)])]:
            return True
        if op not in (c.AT, c.ASSERT, c.ASSERT_NOT):
            return False
    return False


def _refers_to_groups(node: Any) -> bool:
    """Whether a parse tree (a SubPattern, or an item's argument) holds a group reference (\\1,
    (?(1)...)): the alternatives of such a pattern get no finder (see ``_finder``)."""
    c = _sre_c
    if isinstance(node, _sre_parse.SubPattern):
        node = node.data
    if not isinstance(node, (tuple, list)):
        return False
    for item in node:
        if isinstance(item, tuple) and len(item) == 2 and item[0] in (c.GROUPREF, c.GROUPREF_EXISTS):
            return True
        if isinstance(item, (tuple, list, _sre_parse.SubPattern)) and _refers_to_groups(item):
            return True
    return False


class _Finder:
    """A part of a parsed pattern, compiled when first asked for (compiling every alternative of
    every pattern up front would cost more than most texts ever need: most fail their gate)."""

    __slots__ = ("_compiled", "flags", "items", "state")

    def __init__(self, state: Any, items: list[tuple[Any, Any]], flags: int) -> None:
        self.state, self.items, self.flags = state, items, flags
        self._compiled: re.Pattern[str] | None = None

    def pattern(self) -> re.Pattern[str]:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _sre_compile.compile(_sre_parse.SubPattern(self.state, self.items), self.flags)
        return compiled


def _finder(state: Any, seq: Sequence[tuple[Any, Any]], flags: int) -> _Finder | None:
    """The sequence without its leading zero-width assertions, to compile, when what follows them
    starts with a literal character (the engine then searches for its literal prefix, in C).

    It matches at every position the sequence matches at (dropping assertions only allows more),
    so a pattern's next match starts at a match of one of its possible alternatives' finders,
    where the pattern itself is then run. That needs every match of the pattern to be a match
    of one of its leading alternatives, which a group reference can break (an alternative has
    lost the group it refers to): the caller makes no finder for such a pattern."""
    k = 0
    while k < len(seq) and seq[k][0] in (_sre_c.AT, _sre_c.ASSERT, _sre_c.ASSERT_NOT):
        k += 1
    rest = list(seq[k:])
    if not rest or rest[0][0] is not _sre_c.LITERAL:
        return None
    return _Finder(state, rest, flags)


@lru_cache(maxsize=512)
def _analysis(source: str, flags: int) -> tuple[_Need, tuple[_Alternative, ...] | None]:
    """(need, leading alternatives) of a pattern, computed once per process; (None, None) when
    the analysis does not apply (case-insensitive, or anything it does not know)."""
    if _sre_parse is None or flags & (re.IGNORECASE | re.LOCALE):
        return None, None
    _ANALYSIS.memo = {}  # the tree below stays alive meanwhile, so node ids are unique
    try:
        tree = _sre_parse.parse(source, flags)
        if tree.state.flags & (re.IGNORECASE | re.LOCALE):
            return None, None
        need = _analyse_seq(tree)[1]
        finders = _sre_compile is not None and not _refers_to_groups(tree)
        alts = []
        for seq in _leading_alternatives(tree.data):
            alt_need = _analyse_seq(seq)[1]
            prefixes = _prefixes(seq)
            heads = tuple((f.split() or [None])[0] for f in prefixes) if prefixes else ()
            branches = need_branches(alt_need)
            alts.append(
                _Alternative(
                    branches,
                    frozenset(_atoms_of(alt_need)),
                    prefixes,
                    heads,
                    _after_non_word(seq),
                    _gate(branches),
                    _finder(tree.state, seq, flags) if finders else None,
                )
            )
        return need, tuple(alts)
    except Exception:  # anything unexpected: no prefilter, the pattern always runs
        return None, None
    finally:
        _ANALYSIS.memo = None


class Prefilter:
    """A compiled pattern with what its matches need and where they can start: ``search(view)``
    returns exactly ``pattern.search(view.norm)`` and ``finditer(view)`` exactly the matches of
    ``pattern.finditer(view.norm)``, but the pattern does not run on a text without the literals
    its matches need, and on the others it is tried only where a match can start (where a
    possible alternative's finder matches, or at each occurrence of a literal every match of a
    possible alternative starts with)."""

    __slots__ = (
        "_analysed",
        "_checked",
        "_possible",
        "_uses",
        "alternatives",
        "atoms",
        "branches",
        "gate",
        "need",
        "pattern",
    )

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self._checked: AtomIndex | None = None  # the last index seen to hold every atom of this one
        # The analysis costs 5-20 ms a pattern, more than running the pattern on a few hundred
        # texts: it is made once the filter has been asked about WARM_UP texts (until then every
        # text is "possible" and the pattern just runs: the same matches either way).
        self._analysed = False
        self._uses = 0
        # the possible alternatives for a set of this filter's atoms present in a text (they
        # decide that answer alone; texts share those sets far more often than their words)
        self._possible: dict[frozenset[str], list[_Alternative]] = {}
        self.need: _Need = None
        self.alternatives: tuple[_Alternative, ...] | None = None
        self.branches: list[list[frozenset[str]]] | None = None
        self.atoms: frozenset[str] = frozenset()
        self.gate: frozenset[str] | None = None

    def ready(self) -> bool:
        """Whether the analysis is there to use (counting this question towards the warm-up)."""
        if self._analysed:
            return True
        self._uses += 1
        if self._uses <= WARM_UP:
            return False
        self.analysed()
        return True

    def analysed(self) -> Prefilter:
        """This filter, its analysis made (once)."""
        if self._analysed:
            return self
        self._analysed = True
        pattern = self.pattern
        if isinstance(pattern.pattern, str):
            self.need, self.alternatives = _analysis(pattern.pattern, pattern.flags)
        else:  # pragma: no cover - carebox only has str patterns
            self.need, self.alternatives = None, None
        self.branches = need_branches(self.need)
        atoms = set(_atoms_of(self.need))
        for alt in self.alternatives or ():
            atoms |= alt.atoms | {h for h in alt.heads if h is not None}
        self.atoms: frozenset[str] = frozenset(atoms)
        # One of these occurs in any text the pattern can match (None: no such set known).
        gates = [_gate(self.branches)] if self.alternatives is None else [a.gate for a in self.alternatives]
        self.gate = None if any(g is None for g in gates) else frozenset().union(*gates)  # type: ignore[arg-type]
        return self

    def search(self, view: TextView) -> re.Match[str] | None:
        return next(self.finditer(view), None)

    def finditer(self, view: TextView) -> Iterator[re.Match[str]]:
        alts = view.possible(self)
        if alts is None:
            return self.pattern.finditer(view.norm)
        return self._matches(view, alts)

    def _matches(self, view: TextView, alts: list[_Alternative]) -> Iterator[re.Match[str]]:
        if not alts:
            return
        norm, pattern = view.norm, self.pattern
        if any(a.prefixes is None for a in alts):
            yield from pattern.finditer(norm)
            return
        # Every match starts where a possible alternative can match: at a match of its finder
        # (found by the engine), else at an occurrence of one of its prefixes. Those positions
        # are tried in order (a merge of one stream per finder or prefix), like finditer would.
        heap: list[tuple[int, int, Any, bool]] = []  # (position, tie-break, finder or prefix, word start)
        for alt in alts:
            if alt.finder is not None:
                finder = alt.finder.pattern()
                found = finder.search(norm)
                if found is not None:
                    heap.append((found.start(), len(heap), finder, alt.word_start))
                continue
            for f, head in zip(alt.prefixes or (), alt.heads, strict=True):
                if head is None or view.has(head, self):
                    i = norm.find(f)
                    if i >= 0:
                        heap.append((i, len(heap), f, alt.word_start))
        heapq.heapify(heap)
        end = tried = 0
        last = -1
        while heap:
            s, n, source, word_start = heap[0]
            start = s + 1 if s >= end else end  # positions inside the last match are not tried
            if source.__class__ is str:
                nxt = norm.find(source, start)
            else:
                found = source.search(norm, start)
                nxt = -1 if found is None else found.start()
            if nxt >= 0:
                heapq.heapreplace(heap, (nxt, n, source, word_start))
            else:
                heapq.heappop(heap)
            if s < end or s == last:
                continue
            if word_start and s and (norm[s - 1].isalnum() or norm[s - 1] == "_"):
                continue  # inside a word: that alternative's (?<!\w) fails here (\w is exactly this test)
            last = s
            tried += 1
            if tried > _CANDIDATES_MAX and s < tried * _CANDIDATE_SPACING:  # dense: an ordinary search from here on
                yield from pattern.finditer(norm, s)
                return
            m = pattern.match(norm, s)
            if m is not None:
                yield m
                # like finditer: the next match starts where this one ended (one further after an empty one)
                end = m.end() if m.end() > m.start() else m.end() + 1


def _holds_in(branches: list[list[frozenset[str]]] | None, present: set[str] | frozenset[str]) -> bool:
    if branches is None:
        return True
    for branch in branches:
        for clause in branch:
            if clause.isdisjoint(present):
                break
        else:
            return True
    return False


class TextView:
    """A normalised text, with the atoms of an ``AtomIndex`` found in it once and shared by
    every pattern checked against it."""

    __slots__ = ("_index", "_present", "_words", "norm")

    def __init__(self, norm: str, index: AtomIndex | None = None, words: Sequence[str] | None = None) -> None:
        """``words``: ``norm.split()`` when the caller has it (else split when the atoms are
        first asked for). Without an ``index``, the built-in one, made when first needed."""
        self.norm = norm
        self._index = index
        self._words = words
        self._present: set[str] | None = None

    @property
    def index(self) -> AtomIndex:
        if self._index is None:
            self._index = _builtin_index()
        return self._index

    @classmethod
    def of(cls, text: str, index: AtomIndex | None = None) -> TextView:
        """The view of a text not yet normalised."""
        return cls(normalize_text(text), index)

    def present(self) -> set[str]:
        """The atoms of the index that occur in the text."""
        if self._present is None:
            words = self._words if self._words is not None else self.norm.split()
            self._present = self.index.atoms_in(set(words))
        return self._present

    def _indexed(self, pf: Prefilter) -> bool:
        """Whether this view's index holds every atom of ``pf`` (else atoms are looked up in the text)."""
        if pf._checked is self.index:
            return True
        if pf.atoms <= self.index.atoms:
            pf._checked = self.index
            return True
        return False

    def has(self, atom: str, pf: Prefilter) -> bool:
        """Whether ``atom`` (one of ``pf``'s) occurs in the text."""
        return atom in self.present() if self._indexed(pf) else atom in self.norm

    def holds(self, branches: list[list[frozenset[str]]] | None, pf: Prefilter) -> bool:
        """Whether a need in branch form (of ``pf``) holds in the text."""
        if branches is None:
            return True
        if not self._indexed(pf):
            norm = self.norm
            return any(all(any(a in norm for a in clause) for clause in branch) for branch in branches)
        return _holds_in(branches, self.present())

    def possible(self, pf: Prefilter) -> list[_Alternative] | None:
        """The leading alternatives of ``pf``'s pattern whose needs hold in the text ([]: no
        match is possible; None: no analysis, the pattern has to run).

        Called for every pattern on every text, and most answers are a failed gate: that case
        takes no other call than one ``isdisjoint`` once the text's atoms are known."""
        if not pf._analysed and not pf.ready():
            return None
        index = self._index
        if (index is None or pf._checked is not index) and not self._indexed(pf):
            if pf.alternatives is None:
                return None if self.holds(pf.branches, pf) else []
            return [a for a in pf.alternatives if self.holds(a.branches, pf)]
        present = self._present
        if present is None:
            present = self.present()
        gate = pf.gate
        if gate is not None and present.isdisjoint(gate):
            return []
        if pf.alternatives is None:
            return None if _holds_in(pf.branches, present) else []
        key = pf.atoms.intersection(present)  # every atom the answer depends on is one of pf.atoms
        known = pf._possible.get(key)
        if known is None:
            if len(pf._possible) >= POSSIBLE_CACHE:
                pf._possible.clear()
            known = pf._possible[key] = [
                a
                for a in pf.alternatives
                if a.gate is None or (not key.isdisjoint(a.gate) and _holds_in(a.branches, key))
            ]
        return known

    def may_match(self, pf: Prefilter) -> bool:
        """False when no match of ``pf``'s pattern can be in the text."""
        return self.possible(pf) != []


# --- red flags -------------------------------------------------------------------------------------

# Between two words: spaces or a hyphen (the text is normalised, so one space normally).
_W = r"[\s\-]+"
_POSS = r"(?:my|his|her|their|the|our|your|a)"
_CANT = r"(?:can'?t|cannot|can not|could ?n'?t|could not|unable to|not able to)"


def _spaced(pattern: str) -> str:
    """Patterns are written with plain spaces: " ?" means an optional space or hyphen, " " one or
    more spaces or hyphens."""
    return pattern.replace(" ?", "[\\s\\-]?").replace(" ", _W)


@dataclass(frozen=True, slots=True)
class RedFlagRule:
    id: str
    label: str  # shown in the URGENT banner; never patient text
    patterns: tuple[str, ...]  # regular expressions over normalise_text() output, with spaces as " "

    def compiled(self) -> re.Pattern[str]:
        body = "|".join(f"(?:{p})" for p in self.patterns)
        return re.compile(rf"(?<!\w)(?:{_spaced(body)})(?!\w)")


RED_FLAG_RULES: tuple[RedFlagRule, ...] = (
    RedFlagRule(
        "chest_pain",
        "chest pain",
        (
            r"chest (?:pains?|tight(?:ness)?|pressure|hurts?|hurting|aches?|aching|discomfort|heaviness|squeezing)",
            rf"(?:pains?|tightness|pressure|aches?|aching|squeezing|heaviness|crushing|burning) in {_POSS} chest",
            rf"(?:{_POSS} )?chest (?:is|feels?|felt|has been|keeps|was) (?:\w+ )?"
            r"(?:tight|hurting|heavy|painful|sore|crushing|squeezing|pounding)",
            r"(?:tight|crushing|heavy|painful|sore) chest",
            r"heart attack",
        ),
    ),
    RedFlagRule(
        "breathing",
        "trouble breathing",
        (
            r"(?:trouble|difficulty|difficulties|problems?|struggling|struggle|hard time|labou?red) "
            r"(?:with )?breath(?:e|ing)?",
            rf"{_CANT} (?:\w+ )?breathe?",
            r"(?:hard|difficult|impossible|painful) to breathe?",
            r"short(?:ness)? of breath",
            r"breathless(?:ness)?",
            r"out of breath",
            r"gasping(?: for (?:air|breath))?",
            rf"{_CANT} catch {_POSS} breath",
            r"(?:not|stopped|isn'?t|is not|wasn'?t) breathing",
            r"lips (?:are |is |turning |turned |went |look |looking )?(?:blue|grey|gray)",
            r"blue lips",
            r"choking",
        ),
    ),
    RedFlagRule(
        "suicidal",
        "suicidal thoughts",
        (
            r"suicid(?:e|al|ality)",
            r"(?:want|wanted|wanting|wants|going|plan|planning|ready) to die",
            r"wish (?:i|he|she) (?:was|were) dead",
            r"kill(?:ing)? (?:my ?self|him ?self|her ?self)",
            r"end(?:ing)? (?:my|his|her) (?:own )?life",
            r"take (?:my|his|her) (?:own )?life",
            r"end (?:it|things) all",
            r"no (?:reason|point) (?:to|in) (?:live|living|go(?:ing)? on)",
            r"better off dead",
            r"(?:don'?t|do not|no longer) want to (?:live|be alive|wake up|be here)",
        ),
    ),
    RedFlagRule(
        "self_harm",
        "self-harm",
        (
            r"self ?-?harm(?:ing|ed)?",
            r"(?:hurt|hurting|harm|harming|cut|cutting|burn|burning)(?: of)? (?:my ?self|him ?self|her ?self)",
        ),
    ),
    RedFlagRule(
        "overdose",
        "overdose or poisoning",
        (
            r"over ?-?dos(?:e|es|ed|ing)",
            r"too many (?:of (?:my|his|her|their|the|these|those) )?(?:\w+ )?(?:pills|tablets|capsules|doses)",
            r"swallowed (?:a|the|some|all|\d+) (?:\w+ )?(?:pills|tablets|bottle|battery|batteries|bleach|detergent)",
            r"poison(?:ed|ing)?",
        ),
    ),
    RedFlagRule(
        "stroke",
        "stroke signs",
        (
            r"strokes?",
            r"face (?:is |was |started |seems |looks )?(?:droop(?:s|ing|ed|y)?|sagging|drooping)",
            r"droop(?:ing|y|ed)? (?:face|mouth|eyelid|side|smile)",
            rf"one side of {_POSS} face",
            r"slurr(?:ed|ing|s)? (?:speech|words|talking)",
            r"slurr(?:ed|ing)",
            r"speech (?:is |was |became |sounds )?(?:slurred|garbled|strange)",
            r"arms? weakness",
            rf"weak(?:ness)? (?:in|of) (?:{_POSS} )?(?:one )?(?:left |right )?(?:arm|leg|side|hand)s?",
            rf"{_CANT} (?:lift|raise|move) (?:{_POSS} )?(?:left |right )?arms?",
            r"sudden(?:ly)? (?:\w+ )?numb(?:ness)?",
            r"numb(?:ness)? (?:on|in) one side",
            r"sudden(?:ly)? (?:confusion|confused|vision loss|loss of vision|blind|"
            r"trouble (?:speaking|seeing|walking))",
        ),
    ),
    RedFlagRule(
        "headache",
        "worst headache of their life",
        (
            r"worst headaches?(?: (?:of|in) (?:my|his|her) life| ever)?",
            r"thunderclap headaches?",
            r"sudden(?:,)? severe headaches?",
        ),
    ),
    RedFlagRule(
        "bleeding",
        "severe bleeding",
        (
            r"(?:severe|heavy|heavily|uncontrolled|uncontrollable|profuse|massive|a lot of|lots of|serious) "
            r"bleed(?:ing)?",
            r"bleed(?:ing|s)? (?:heavily|a lot|badly|profusely|everywhere|non ?-?stop)",
            r"(?:won'?t|will not|doesn'?t|does not|can'?t|cannot|couldn'?t) stop (?:the )?bleeding",
            r"bleeding (?:won'?t|will not|doesn'?t|does not|didn'?t|did not|has not|hasn'?t) stop(?:ped)?",
            r"blood (?:everywhere|won'?t stop|is pouring|pouring)",
            r"pregnan(?:t|cy)[^.!?]{0,60}bleed(?:ing)?",
            r"bleed(?:ing)?[^.!?]{0,60}pregnan(?:t|cy)",
        ),
    ),
    RedFlagRule(
        "blood_cough_vomit",
        "coughing or vomiting blood",
        (
            r"(?:cough(?:s|ed|ing)?|vomit(?:s|ed|ing)?|throw(?:s|ing)? up|threw up|spit(?:s|ting)? up|"
            r"puk(?:e|es|ed|ing)|spitting)(?: up)? (?:some |a lot of |lots of |bright red |dark |fresh )?blood",
            r"blood in (?:my |his |her |the )?(?:vomit|sputum|phlegm|spit)",
            r"bloody (?:vomit|sputum|phlegm|cough)",
            r"black (?:tarry )?stools?",
        ),
    ),
    RedFlagRule(
        "fainting",
        "fainting or loss of consciousness",
        (
            r"faint(?:ed|ing|s)",
            r"(?:feel|feels|feeling|felt) faint",
            r"pass(?:ed|es|ing)? out",
            r"(?:lost|losing|loss of) consciousness",
            r"unconscious",
            r"unresponsive",
            r"black(?:ed|ing)? out",
            r"collaps(?:e|ed|es|ing)",
            rf"{_CANT} wake (?:him|her|them|up)",
        ),
    ),
    RedFlagRule(
        "seizure",
        "seizure",
        (
            r"seizures?",
            r"convuls(?:ion|ions|ing|ed)",
            r"(?:epileptic|grand mal) (?:fit|attack)s?",
            r"(?:having|had) a fit",
        ),
    ),
    RedFlagRule(
        "anaphylaxis",
        "anaphylaxis or throat swelling",
        (
            r"anaphyla(?:xis|ctic)",
            r"throat (?:is |feels |started |was )?(?:swell(?:ing|ed|s)?|swollen|closing(?: up)?|tight(?:ening)?)",
            rf"swell(?:ing)? (?:of|in) (?:{_POSS} )?(?:throat|tongue|lips?|face)",
            r"(?:tongue|lips?|face|throat) (?:is |are |has |have |started |starting )?(?:swell(?:ing|ed)?|swollen)",
            r"swollen (?:throat|tongue|lips?)",
            r"epi ?-?pen",
            r"severe allergic reaction",
        ),
    ),
    RedFlagRule(
        "infant_fever",
        "high fever in an infant",
        (
            r"(?:baby|infant|newborn|neonate|(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven) "
            r"(?:days?|weeks?|months?) old)[^.!?]{0,80}(?:fever|temperature|febrile|3[89](?:[.,]\d)? ?°? ?c\b)",
            r"(?:fever|temperature|febrile)[^.!?]{0,80}(?:baby|infant|newborn|neonate|"
            r"(?:\d+|one|two|three|four|five|six|seven|eight|nine|ten|eleven) (?:days?|weeks?|months?) old)",
        ),
    ),
    RedFlagRule(
        "very_high_fever",
        "very high fever",
        (
            r"(?:fever|temperature|temp)[^.!?]{0,25}?(?:4[0-2](?:[.,]\d)? ?°? ?c?|10[4-8](?:[.,]\d)? ?°? ?f?)(?!\d)",
            r"high fever",
        ),
    ),
    RedFlagRule(
        "meningitis",
        "stiff neck or non-fading rash",
        (
            r"stiff neck",
            r"neck (?:is )?stiff",
            r"rash (?:that )?(?:doesn'?t|does not|won'?t|will not|didn'?t|did not) fade",
            r"(?:purple|non ?-?blanching) (?:rash|spots)",
        ),
    ),
    RedFlagRule(
        "severe_pain",
        "severe abdominal pain or head injury",
        (
            r"(?:severe|excruciating|unbearable|agonizing|agonising) (?:stomach|abdominal|belly|tummy) (?:pain|ache)",
            r"head (?:injury|trauma)",
            rf"(?:hit|banged|bumped) {_POSS} head",
        ),
    ),
)

# The phrases the practice lists and that must always be caught (tests check each).
LISTED_PHRASES: tuple[str, ...] = (
    "chest pain",
    "chest tightness",
    "chest pressure",
    "my chest hurts",
    "pain in my chest",
    "trouble breathing",
    "difficulty breathing",
    "shortness of breath",
    "short of breath",
    "can't breathe",
    "cannot breathe",
    "suicidal thoughts",
    "suicide",
    "want to die",
    "kill myself",
    "self-harm",
    "self harm",
    "hurt myself",
    "overdose",
    "took too many pills",
    "stroke",
    "face drooping",
    "slurred speech",
    "arm weakness",
    "sudden numbness",
    "worst headache of my life",
    "severe bleeding",
    "bleeding won't stop",
    "coughing blood",
    "coughing up blood",
    "vomiting blood",
    "fainted",
    "fainting",
    "passed out",
    "lost consciousness",
    "seizure",
    "convulsions",
    "anaphylaxis",
    "throat swelling",
    "throat is closing",
    "high fever",
    "baby has a fever",
    "stiff neck",
    "unresponsive",
)


@dataclass(frozen=True, slots=True)
class RedFlagHit:
    rule: str  # rule id, or "config" for an extra from triage.red_flags
    label: str  # what the banner names: the rule's label or the configured phrase
    text: str  # the matched words (normalised)
    negated: bool = False  # preceded by "no", "not", "denies"...: still urgent, shown as such


_NEGATION = re.compile(
    r"(?<!\w)(?:no|not|never|without|denies|denied|nor|don'?t have|do not have|haven'?t had|hasn'?t had)"
    r"(?: [\w'-]+){0,2} ?$"
)


def compile_phrase(phrase: str) -> re.Pattern[str]:
    """A configured red flag as a pattern. ``re:`` starts a regular expression (matched against the
    normalised text); anything else is a phrase: words in order, case-insensitive, spaces or
    hyphens between them, each word also matching its plural (-s, -es, -e, -n, -en). Raises ``ValueError`` (one line)
    for an empty phrase or a bad expression."""
    if phrase.startswith("re:"):
        expr = phrase[3:]
        if not expr.strip():
            raise ValueError("red flag 're:' needs a regular expression after it")
        try:
            return re.compile(expr)
        except re.error as exc:
            raise ValueError(f"red flag {phrase!r} is not a valid regular expression: {exc}") from None
    words = normalize_text(phrase).replace("-", " ").split()
    if not words:
        raise ValueError("a red flag phrase cannot be empty")
    body = _W.join(re.escape(w) + "(?:s|es|e|n|en)?" for w in words)
    return re.compile(rf"(?<!\w){body}(?!\w)")


class RedFlagMatcher:
    """The built-in rules plus configured extras, compiled once, each with the literals a match
    needs (a rule whose literals are not in the text is not run: same hits, much less work)."""

    def __init__(self, extra: Iterable[str] = (), rules: Sequence[RedFlagRule] = RED_FLAG_RULES) -> None:
        self._rules = [(r.id, r.label, r.compiled()) for r in rules]
        self._rules += [("config", p[3:] if p.startswith("re:") else p, compile_phrase(p)) for p in extra]
        self._filters = [Prefilter(pattern) for _, _, pattern in self._rules]
        self._index: AtomIndex | None = None  # made with the filters' analyses, after the warm-up
        self._views = 0

    @property
    def index(self) -> AtomIndex:
        """The atoms of every rule and of the scope checks (analysing the rules when needed)."""
        if self._index is None:
            builtin = _builtin_index()
            atoms = frozenset().union(*(f.analysed().atoms for f in self._filters))
            self._index = builtin if atoms <= builtin.atoms else AtomIndex(atoms | builtin.atoms)
        return self._index

    def prepare(self) -> None:
        """Make every pattern analysis now (this matcher's and the scope checks'), ahead of a big
        job, instead of after the warm-up within it."""
        _ = self.index
        scope, results, personal = _checks()
        for _cat, pf in scope:
            pf.analysed()
        results.analysed()
        personal.analysed()

    def view(self, text: str) -> TextView:
        """The view of a text (not yet normalised) for this matcher and the scope checks."""
        if self._index is None:
            self._views += 1
            if self._views <= WARM_UP:  # the filters run their patterns plainly meanwhile
                return TextView.of(text)
        return TextView.of(text, self.index)

    def find(self, text: str) -> list[RedFlagHit]:
        """Every rule that matches, once each (the first match), in rule order."""
        return self.find_in(self.view(text))

    def find_in(self, view: TextView) -> list[RedFlagHit]:
        """``find`` over the view of a text (``matcher.view(text)``)."""
        norm = view.norm
        hits: list[RedFlagHit] = []
        index = view._index
        present = view.present() if index is not None else None
        for (rule, label, _pattern), pf in zip(self._rules, self._filters, strict=True):
            # most rules fail their gate on most texts: that test first, without a call
            # (``possible`` would answer [] the same way)
            gate = pf.gate
            if present is not None and gate is not None and pf._checked is index and present.isdisjoint(gate):
                continue
            alts = view.possible(pf)
            if alts == []:
                continue
            matches = pf.finditer(view) if alts is None else pf._matches(view, alts)  # = pattern.finditer(norm)
            m = next(matches, None)
            if m is None:
                continue
            negated = all(
                _NEGATION.search(norm[max(0, x.start() - 40) : x.start()]) for x in itertools.chain((m,), matches)
            )
            hits.append(RedFlagHit(rule, label, m.group(0), negated))
        return hits

    def urgent(self, text: str) -> bool:
        return bool(self.find(text))


@lru_cache(maxsize=8)
def _default_matcher(extra: tuple[str, ...]) -> RedFlagMatcher:
    return RedFlagMatcher(extra)


def red_flags(text: str, extra: Sequence[str] = ()) -> list[RedFlagHit]:
    return _default_matcher(tuple(extra)).find(text)


# --- confusables, IDN and lookalikes -------------------------------------------------------------

_HOMOGLYPHS = str.maketrans(
    {
        # Cyrillic
        "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p",
        "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d",
        "ԛ": "q", "ԝ": "w", "һ": "h", "ӏ": "l", "ɡ": "g", "ь": "b", "п": "n", "г": "r",
        # Greek
        "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
        "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w", "ϲ": "c", "ϳ": "j",
        # Latin lookalikes and digits
        "ı": "i", "ɩ": "i", "ǀ": "l", "ℓ": "l", "ʟ": "l", "ɑ": "a", "ɒ": "a", "ꞵ": "b", "ɢ": "g",
        "0": "o", "1": "l", "|": "l", "!": "l", "$": "s", "@": "a",
    }
)  # fmt: skip
_MULTI = (("rn", "m"), ("vv", "w"), ("ii", "u"))


# Capitals that look like Latin capitals but fold to letters that do not (Greek Ν -> ν).
_UPPER_HOMOGLYPHS = str.maketrans(
    {
        "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
        "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X", "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H",
        "О": "O", "Р": "P", "С": "C", "Т": "T", "Х": "X", "Ѕ": "S", "І": "I", "Ј": "J",
    }
)  # fmt: skip


def skeleton(text: str) -> str:
    """A confusables skeleton (after UTS #39, with a small map): NFKC, case-folded, accents
    removed, common Cyrillic/Greek/digit lookalikes mapped to Latin, "rn" read as "m".

    ASCII text takes a shortcut: both normalisations leave it as it is, it has no combining
    characters, case-folding it is lower-casing, and only the last map has ASCII keys."""
    if text.isascii():
        s = text.lower().translate(_HOMOGLYPHS)
    else:
        text = unicodedata.normalize("NFKC", text).translate(_UPPER_HOMOGLYPHS)
        s = unicodedata.normalize("NFKD", text.casefold())
        s = "".join(c for c in s if not unicodedata.combining(c)).translate(_INVISIBLE).translate(_HOMOGLYPHS)
    for a, b in _MULTI:
        s = s.replace(a, b)
    return s


def idn_to_unicode(domain: str) -> tuple[str, bool]:
    """(the domain in Unicode, whether it is internationalised). Labels starting ``xn--`` are
    decoded from punycode; one that fails to decode is kept as it is (and still counts as IDN)."""
    domain = domain.strip().rstrip(".").lower()
    labels = []
    idn = False
    for label in domain.split("."):
        if label.startswith("xn--"):
            idn = True
            with contextlib.suppress(UnicodeError, ValueError):
                label = label[4:].encode("ascii").decode("punycode")
        elif not label.isascii():
            idn = True
        labels.append(label)
    return ".".join(labels), idn


def _script(ch: str) -> str:
    if ch.isascii():
        return "latin" if ch.isalpha() else ""
    try:
        name = unicodedata.name(ch)
    except ValueError:
        return "other"
    for script in ("LATIN", "CYRILLIC", "GREEK", "ARMENIAN", "HEBREW", "ARABIC", "CJK", "HIRAGANA", "KATAKANA"):
        if name.startswith(script):
            return script.lower()
    return "other" if ch.isalpha() else ""


def mixed_script(label: str) -> bool:
    scripts = {s for s in map(_script, label) if s}
    return len(scripts) > 1


def damerau_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal-string-alignment edit distance (insert, delete, substitute, swap neighbours);
    returns ``limit + 1`` as soon as the distance is known to exceed ``limit``."""
    if a == b:
        return 0
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        if min(cur) > limit:
            return limit + 1
        prev2, prev = prev, cur
    return prev[len(b)]


def within_distance(a: str, b: str, limit: int) -> int:
    """``min(damerau_distance(a, b, limit), limit + 1)``, faster: only the cells within ``limit`` of
    the diagonal are computed (an alignment costing at most ``limit`` never leaves that band),
    and one edit is checked directly."""
    if a == b:
        return 0
    la, lb = len(a), len(b)
    big = limit + 1
    if abs(la - lb) > limit:
        return big
    if limit == 1:
        return 1 if _one_edit(a, b) else 2
    prev2: list[int] = []
    prev = [j if j <= limit else big for j in range(lb + 1)]
    for i in range(1, la + 1):
        cur = [big] * (lb + 1)
        if i <= limit:
            cur[0] = i
        row_min = cur[0]
        ai = a[i - 1]
        for j in range(max(1, i - limit), min(lb, i + limit) + 1):
            v = prev[j - 1] + (ai != b[j - 1])
            if prev[j] + 1 < v:
                v = prev[j] + 1
            if cur[j - 1] + 1 < v:
                v = cur[j - 1] + 1
            if i > 1 and j > 1 and ai == b[j - 2] and a[i - 2] == b[j - 1] and prev2[j - 2] + 1 < v:
                v = prev2[j - 2] + 1
            cur[j] = v if v < big else big
            if v < row_min:
                row_min = v
        if row_min > limit:
            return big
        prev2, prev = prev, cur
    return min(prev[lb], big)


def _one_edit(a: str, b: str) -> bool:
    """Whether two different strings are one substitution, insertion, deletion or swap of
    neighbours apart."""
    if len(a) > len(b):
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    if len(a) == len(b):
        return a[i + 1 :] == b[i + 1 :] or (
            i + 1 < len(a) and a[i] == b[i + 1] and a[i + 1] == b[i] and a[i + 2 :] == b[i + 2 :]
        )
    return len(b) == len(a) + 1 and a[i:] == b[i + 1 :]


# Genuine, widely used mail domains: never a lookalike themselves, and targets a lookalike may copy.
COMMON_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.co.uk", "yahoo.de", "yahoo.fr", "ymail.com",
        "outlook.com", "hotmail.com", "hotmail.co.uk", "hotmail.de", "hotmail.fr", "live.com", "msn.com",
        "icloud.com", "me.com", "mac.com", "aol.com", "mail.com", "email.com", "gmx.com", "gmx.de", "gmx.net",
        "gmx.at", "gmx.ch", "web.de", "t-online.de", "freenet.de", "posteo.de", "mailbox.org", "proton.me",
        "protonmail.com", "pm.me", "yandex.com", "yandex.ru", "mail.ru", "zoho.com", "fastmail.com", "orange.fr",
        "free.fr", "laposte.net", "sfr.fr", "wanadoo.fr", "libero.it", "virgilio.it", "bluewin.ch", "comcast.net",
        "verizon.net", "att.net", "sbcglobal.net", "btinternet.com", "sky.com", "virginmedia.com",
    }
)  # fmt: skip


@lru_cache(maxsize=65536)
def domain_skeleton(domain: str) -> str:
    """The skeleton of a domain after punycode decoding (cached: domains repeat)."""
    return skeleton(idn_to_unicode(domain)[0])


@lru_cache(maxsize=65536)
def _local_skeleton(local: str) -> str:
    return skeleton(local)


def _edit_limit(length: int) -> int:
    return 0 if length < 6 else (1 if length < 12 else 2)


class LookalikeIndex:
    """The known domains (plus the common mail providers) indexed for ``domain_lookalike``:
    skeleton -> the first domain with it (in sorted order), and skeletons by length (only
    lengths within the edit limit of 2 can be one or two edits away). Answers are cached per
    domain: mail from one domain is checked once per index."""

    def __init__(self, known: Iterable[str]) -> None:
        self.known = frozenset(k.strip().rstrip(".").lower() for k in known if k)
        self._first: dict[str, str] = {}
        self._by_len: dict[int, list[tuple[int, str, str]]] = {}  # len -> [(sorted position, skeleton, domain)]
        for pos, k in enumerate(sorted(self.known | COMMON_MAIL_DOMAINS)):
            k_sk = domain_skeleton(k)
            self._first.setdefault(k_sk, k)
            self._by_len.setdefault(len(k_sk), []).append((pos, k_sk, k))
        self._answers: dict[str, str | None] = {}

    def find(self, domain: str) -> str | None:
        domain = domain.strip().rstrip(".").lower()
        if not domain or domain in self.known or domain in COMMON_MAIL_DOMAINS:
            return None
        if domain in self._answers:
            return self._answers[domain]
        sk = domain_skeleton(domain)
        found = self._first.get(sk)
        if found is None:
            best: tuple[int, int, str] | None = None  # (distance, sorted position, domain)
            n = len(sk)
            for length in range(max(0, n - 2), n + 3):
                limit = _edit_limit(min(length, n))
                if not limit or abs(length - n) > limit:
                    continue
                for pos, k_sk, k in self._by_len.get(length, ()):
                    d = within_distance(sk, k_sk, limit)
                    if d <= limit and (best is None or (d, pos) < best[:2]):
                        best = (d, pos, k)
            found = best[2] if best else None
        if len(self._answers) < 65536:
            self._answers[domain] = found
        return found


@lru_cache(maxsize=16)
def _lookalike_index(known: frozenset[str]) -> LookalikeIndex:
    return LookalikeIndex(known)


def domain_lookalike(domain: str, known: Iterable[str]) -> str | None:
    """The known domain that ``domain`` imitates, or None. A domain that is itself known (or a
    common mail provider) imitates nothing. Imitation: the same confusables skeleton (homoglyphs,
    punycode, accents), or a small edit distance (one edit from 6 characters, two from 12). Of
    several, a same-skeleton domain wins, then the nearest, then the first in sorted order."""
    return _lookalike_index(frozenset(known)).find(domain)


# --- the patient directory and the sender ----------------------------------------------------------

# Words that are titles or noise in a display name, not part of a person's name.
PRACTICE_TITLES = frozenset(
    {"dr", "doctor", "prof", "professor", "med", "mr", "mrs", "ms", "miss", "mx", "md", "phd", "frau", "herr"}
)
_NAME_NOISE = frozenset({"via", "the", "and", "und", "of", "von", "van", "de", "der", "la", "le"})
_EMAIL_IN_TEXT = re.compile(r"[^\s@<>\"'(),;:]+@[^\s@<>\"'(),;:]+\.[^\s@<>\"'(),;:]+")
_ADDR = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


@lru_cache(maxsize=8192)
@lru_cache(maxsize=8192)  # a sender check asks for the physician's and a display name's several times
def _name_tokens(name: str) -> tuple[str, ...]:
    words = re.findall(r"\w+", skeleton(clean_line(name)))
    return tuple(w for w in words if len(w) > 1 and w not in PRACTICE_TITLES and w not in _NAME_NOISE)


def name_key(name: str) -> frozenset[str]:
    """Order-free key of a person's name ("Berg, Anna" == "Anna Berg"); empty if under two words."""
    toks = frozenset(_name_tokens(name))
    return toks if len(toks) >= 2 else frozenset()


def email_domain(addr: str) -> str:
    return addr.rpartition("@")[2].strip().lower() if "@" in addr else ""


@dataclass(frozen=True, slots=True)
class DirectoryPatient:
    id: str
    name: str
    emails: tuple[str, ...]
    phone: str = ""
    consent_date: date | None = None
    last_visit: date | None = None
    next_visit: date | None = None

    @property
    def has_consent(self) -> bool:
        return self.consent_date is not None


@dataclass(frozen=True, slots=True)
class Practice:
    """Who the practice is, for display-name checks and the professional-address rule."""

    address: str = ""  # the professional address
    physician_name: str = ""
    practice_name: str = ""
    personal_addresses: tuple[str, ...] = ()  # the physician's personal aliases (never used to reply)
    domains: tuple[str, ...] = ()  # extra domains of the practice

    def known_domains(self) -> set[str]:
        out = {email_domain(self.address)} | {d.lower() for d in self.domains}
        out |= {email_domain(a) for a in self.personal_addresses}
        return {d for d in out if d}


class PatientDirectory:
    """The decrypted directory, indexed for the checks. Built once per inspection run."""

    def __init__(self, patients: Iterable[DirectoryPatient]) -> None:
        self.patients: dict[str, DirectoryPatient] = {}
        self.by_email: dict[str, DirectoryPatient] = {}
        self.by_name: dict[frozenset[str], list[DirectoryPatient]] = {}
        self.domains: set[str] = set()
        self.by_domain: dict[str, list[str]] = {}  # domain skeleton -> addresses on file there
        for p in patients:
            self.patients[p.id] = p
            for e in p.emails:
                self.by_email[e.lower()] = p
                self.domains.add(email_domain(e))
                self.by_domain.setdefault(domain_skeleton(email_domain(e)), []).append(e.lower())
            key = name_key(p.name)
            if key:
                self.by_name.setdefault(key, []).append(p)
        self.domains.discard("")
        self._max_name = max((len(k) for k in self.by_name), default=0)
        self._locals: dict[str, _LocalIndex] = {}

    def __len__(self) -> int:
        return len(self.patients)

    def lookalike_address(self, domain: str, local: str) -> str | None:
        """The first address on file (in directory order) at a domain with the skeleton of
        ``domain`` whose local part looks like ``local``: the same confusables skeleton, or, from
        6 characters, one edit away."""
        key = domain_skeleton(domain)
        index = self._locals.get(key)
        if index is None:
            index = self._locals[key] = _LocalIndex(self.by_domain.get(key, ()))
        return index.find(local)

    def patient_for(self, addr: str) -> DirectoryPatient | None:
        return self.by_email.get(addr.strip().lower())

    def named_in(self, display: str) -> list[DirectoryPatient]:
        """Patients whose full name (every word of it, any order) appears in ``display``."""
        toks = _name_tokens(display)
        if len(toks) < 2:
            return []
        found: dict[str, DirectoryPatient] = {}
        n = len(toks)
        for size in range(2, min(n, self._max_name) + 1):
            for start in range(n - size + 1):
                for p in self.by_name.get(frozenset(toks[start : start + size]), ()):
                    found[p.id] = p
        return list(found.values())


class _LocalIndex:
    """The addresses on file at one domain, indexed by local part: skeleton -> first position,
    and every local part of 6 characters or more under itself and each one-character deletion
    (two strings one edit apart always share such a variant; each candidate is then checked
    with ``damerau_distance`` itself)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.locals = [a.rpartition("@")[0] for a in self.addresses]
        self.by_skeleton: dict[str, int] = {}
        self.by_variant: dict[str, list[int]] = {}
        for pos, local in enumerate(self.locals):
            self.by_skeleton.setdefault(_local_skeleton(local), pos)
            if len(local) >= 6:
                for v in _deletions(local):
                    self.by_variant.setdefault(v, []).append(pos)

    def find(self, local: str) -> str | None:
        if not self.addresses:
            return None
        best = self.by_skeleton.get(_local_skeleton(local))
        for v in _deletions(local):
            for pos in self.by_variant.get(v, ()):
                if (best is None or pos < best) and within_distance(self.locals[pos], local, 1) <= 1:
                    best = pos
        return None if best is None else self.addresses[best]


def _deletions(word: str) -> set[str]:
    """The word and every string one character shorter than it."""
    return {word, *(word[:i] + word[i + 1 :] for i in range(len(word)))}


_SEVERITY = {SenderStatus.VERIFIED: 0, SenderStatus.NO_CONSENT: 1, SenderStatus.UNKNOWN: 2, SenderStatus.WARNING: 3}


def merge_status(statuses: Iterable[SenderStatus]) -> SenderStatus | None:
    """The most severe of several statuses (warning > unknown > no_consent > verified)."""
    return max(statuses, key=_SEVERITY.__getitem__, default=None)


@dataclass(frozen=True, slots=True)
class SenderWarning:
    code: str  # display_name_patient, display_name_practice, display_name_address, lookalike_domain,
    #            lookalike_address, idn_domain, mixed_script, reply_to, auth_failed
    text: str  # one line for the thread view (may name a patient: show it, never store it in clear)


@dataclass(frozen=True, slots=True)
class SenderFacts:
    """What the checks look at in one incoming message."""

    sender: Address
    reply_to: tuple[Address, ...] = ()
    auth_results: str = ""
    recipients: tuple[Address, ...] = ()  # To and Cc


@dataclass(frozen=True, slots=True)
class SenderCheck:
    status: SenderStatus
    patient: DirectoryPatient | None  # the directory entry owning the From address
    warnings: tuple[SenderWarning, ...] = ()

    def lines(self) -> list[str]:
        """The explanation for the thread view, one line each."""
        p = self.patient
        if p is not None and p.has_consent:
            head = f"The address is on file for {clean_line(p.name, 80)}; email consent given {p.consent_date}."
        elif p is not None:
            head = (
                f"The address is on file for {clean_line(p.name, 80)}, but no email consent is on file: "
                "reply with the consent template."
            )
        else:
            head = "The sender's address is not in the patient directory."
        return [head, *(w.text for w in self.warnings)]


_AUTH_FAIL = re.compile(r"(?:^|[;\s(])(spf|dkim|dmarc|arc)\s*=\s*(fail|permerror)\b", re.IGNORECASE)


def auth_failures(auth_results: str) -> list[str]:
    """Mechanisms that failed in an Authentication-Results header ("dkim", "dmarc"...)."""
    return sorted({m.group(1).lower() for m in _AUTH_FAIL.finditer(auth_results or "")})


def check_sender(
    facts: SenderFacts,
    directory: PatientDirectory,
    practice: Practice,
    *,
    lookalikes: LookalikeIndex | None = None,
    memo: dict[tuple[str, str, str], list[SenderWarning]] | None = None,
) -> SenderCheck:
    """The sender status of one incoming message, with the reasons for a warning. Names and
    addresses with CR/LF or control characters are cleaned before any comparison. It reads the
    sender, the Reply-To and the authentication results of ``facts`` (``SenderChecker`` caches on
    exactly those). ``lookalikes``: the index of ``directory.domains | practice.known_domains()``
    when the caller keeps one; ``memo``: a dict kept by the caller for one directory and practice,
    where the display-name and domain checks are kept per name and address."""
    addr = clean_line(facts.sender.addr).lower()
    display = clean_line(facts.sender.name)
    patient = directory.patient_for(addr) if addr else None
    warnings: list[SenderWarning] = []
    from_practice = addr in _own_addresses(practice)

    # Display name naming someone else.
    if display and not from_practice:
        key = ("display", display, addr)
        part = memo.get(key) if memo is not None else None
        if part is None:
            part = _display_warnings(display, addr, patient, directory, practice)
            if memo is not None:
                memo[key] = part
        warnings += part

    # Lookalike or internationalised domain, lookalike address.
    if not from_practice and patient is None and email_domain(addr):
        key = ("domain", addr, "")
        part = memo.get(key) if memo is not None else None
        if part is None:
            if lookalikes is None:
                lookalikes = _lookalike_index(frozenset(directory.domains | practice.known_domains()))
            part = _domain_warnings(addr, directory, lookalikes)
            if memo is not None:
                memo[key] = part
        warnings += part

    # Reply-To pointing elsewhere.
    for rt in facts.reply_to:
        r = clean_line(rt.addr).lower()
        if r and r != addr:
            same_patient = patient is not None and directory.patient_for(r) is patient
            if not same_patient:
                warnings.append(
                    SenderWarning(
                        "reply_to",
                        f"Replies are requested to {clean_line(r, 80)}, which is not the sender's address {addr}.",
                    )
                )
                break

    failed = auth_failures(facts.auth_results)
    if failed:
        warnings.append(
            SenderWarning(
                "auth_failed",
                f"The mail server recorded an authentication failure ({', '.join(failed)}): the sender may be forged.",
            )
        )

    if warnings:
        status = SenderStatus.WARNING
    elif patient is None:
        status = SenderStatus.UNKNOWN
    elif not patient.has_consent:
        status = SenderStatus.NO_CONSENT
    else:
        status = SenderStatus.VERIFIED
    return SenderCheck(status, patient, tuple(warnings))


@lru_cache(maxsize=64)
def _own_addresses(practice: Practice) -> frozenset[str]:
    return frozenset({practice.address.lower(), *(a.lower() for a in practice.personal_addresses)} - {""})


def _display_warnings(
    display: str, addr: str, patient: DirectoryPatient | None, directory: PatientDirectory, practice: Practice
) -> list[SenderWarning]:
    """A display name naming another patient, the physician or the practice, or showing another address."""
    warnings: list[SenderWarning] = []
    named = directory.named_in(display)
    owner_key = name_key(patient.name) if patient else frozenset()
    others = [p for p in named if patient is None or (p.id != patient.id and name_key(p.name) != owner_key)]
    if others and not (patient and owner_key and owner_key <= set(_name_tokens(display))):
        who = ", ".join(clean_line(p.name, 60) for p in others[:3])
        warnings.append(
            SenderWarning(
                "display_name_patient",
                f"The display name names {who}, but the address "
                + ("belongs to another patient." if patient else "is not on file for them."),
            )
        )
    toks = set(_name_tokens(display))
    raw_toks = set(re.findall(r"\w+", skeleton(display)))
    doc_key = set(_name_tokens(practice.physician_name))
    practice_key = set(_name_tokens(practice.practice_name))
    surname = _name_tokens(practice.physician_name)[-1:] if doc_key else ()
    titled = bool(raw_toks & {"dr", "doctor", "prof", "professor"})
    names_doctor = bool(doc_key) and (doc_key <= toks or (bool(surname) and surname[0] in toks and titled))
    names_practice = len(practice_key) >= 2 and practice_key <= toks
    if names_doctor or names_practice:
        warnings.append(
            SenderWarning(
                "display_name_practice",
                "The display name names "
                + ("the physician" if names_doctor else "the practice")
                + ", but the mail does not come from the practice's address.",
            )
        )
    shown = {m.group(0).lower().strip(".") for m in _EMAIL_IN_TEXT.finditer(display)}
    if any(s != addr for s in shown):
        warnings.append(
            SenderWarning("display_name_address", "The display name shows an email address other than the real sender.")
        )
    return warnings


def _domain_warnings(addr: str, directory: PatientDirectory, lookalikes: LookalikeIndex) -> list[SenderWarning]:
    """A lookalike or internationalised domain, or a lookalike address (for an address not on file)."""
    domain = email_domain(addr)
    uni, idn = idn_to_unicode(domain)
    target = lookalikes.find(domain)
    if target is not None:
        kind = "internationalised domain" if idn else "domain"
        return [
            SenderWarning(
                "idn_domain" if idn else "lookalike_domain",
                f"The sender's {kind} {clean_line(uni, 80)} looks like {target} but is not the same.",
            )
        ]
    if idn and any(mixed_script(label) for label in uni.split(".")):
        return [SenderWarning("mixed_script", f"The sender's domain {clean_line(uni, 80)} mixes alphabets.")]
    known_addr = directory.lookalike_address(domain, addr.rpartition("@")[0])
    if known_addr is not None:
        return [
            SenderWarning(
                "lookalike_address",
                f"The sender's address looks like {known_addr}, which is on file, but is not the same.",
            )
        ]
    return []


class SenderChecker:
    """``check_sender`` for one directory and practice (one inspection run), computing what
    repeats once: the lookalike index of the known domains, and the answer per sender (the same
    From, Reply-To and authentication results always get the same answer)."""

    def __init__(self, directory: PatientDirectory, practice: Practice) -> None:
        self.directory = directory
        self.practice = practice
        self.lookalikes = LookalikeIndex(directory.domains | practice.known_domains())
        self._answers: dict[tuple[Address, tuple[Address, ...], str], SenderCheck] = {}
        self._parts: dict[tuple[str, str, str], list[SenderWarning]] = {}  # per display name / address

    def check(self, facts: SenderFacts) -> SenderCheck:
        key = (facts.sender, facts.reply_to, facts.auth_results)  # everything check_sender reads
        found = self._answers.get(key)
        if found is None:
            if len(self._answers) >= 100_000:
                self._answers.clear()
                self._parts.clear()
            found = check_sender(facts, self.directory, self.practice, lookalikes=self.lookalikes, memo=self._parts)
            self._answers[key] = found
        return found


@dataclass(frozen=True, slots=True)
class ReplyTarget:
    """Where a reply goes. ``address`` is the verified address when there is one; replying to any
    other address needs the confirmation from ``confirmation(chosen)``."""

    address: str  # default recipient: the verified address, else the sender's address
    verified: bool  # address is on file for a patient
    requested: str  # where the mail asks replies to go (Reply-To, else From)
    patient_addresses: tuple[str, ...] = ()  # every address on file for that patient

    @property
    def needs_confirmation(self) -> bool:
        """True when the default reply would not go to a verified address, or the sender asks for
        replies elsewhere."""
        return not self.verified or self.requested != self.address

    def confirmation(self, chosen: str) -> str | None:
        """The question to ask before sending to ``chosen``, naming both addresses; None when
        ``chosen`` is the verified address (or another address on file for the same patient)."""
        chosen = clean_line(chosen).lower()
        if self.verified and (chosen == self.address or chosen in self.patient_addresses):
            return None
        if self.verified:
            return (
                f"Send to {chosen} instead of the verified address {self.address}? {chosen} is not on file "
                "for this patient."
            )
        return f"Send to {chosen}? It is not a verified address: no patient in the directory has it."


def reply_target(facts: SenderFacts, directory: PatientDirectory) -> ReplyTarget:
    addr = clean_line(facts.sender.addr).lower()
    patient = directory.patient_for(addr) if addr else None
    requested = next((clean_line(r.addr).lower() for r in facts.reply_to if r.addr), addr)
    if patient is not None:
        emails = tuple(e.lower() for e in patient.emails)
        return ReplyTarget(addr, True, requested, emails)
    return ReplyTarget(addr, False, requested)


# --- scope -----------------------------------------------------------------------------------------

_SCOPE_PATTERNS: tuple[tuple[str, str], ...] = (
    (
        "refill",
        r"refills?|re ?-?fill(?:ed|ing)?|repeat (?:prescription|script|rx)|"
        r"(?:renew|renewal of|extend|new|another|more) (?:my |the |a )?(?:prescription|script|rx)|"
        r"prescription (?:renewal|refill|repeat|extension)|"
        r"run(?:ning)?(?: out)? (?:out )?of (?:my )?(?:medication|medicine|meds|pills|tablets|inhaler|insulin)|"
        r"ran out of (?:my )?(?:medication|medicine|meds|pills|tablets|inhaler|insulin)|"
        r"(?:re)?order (?:my |more )?(?:medication|medicine|meds|pills|tablets)",
    ),
    (
        "billing",
        r"invoices?|billing|billed|(?:the|my|your|a|this|that|our|last) bill|bills|payments?|pay (?:for|my|the|by)|"
        r"refunds?|receipts?|insurance (?:claim|company|form|reimbursement)|reimburse(?:ment|d)?|"
        r"(?:over)?charged|charges? (?:for|on)|co ?-?pay|fees?",
    ),
    (
        "appointment",
        r"(?:book|booking|schedule|scheduling|reschedule|rescheduling|cancel|cancelling|canceling|move|change|make|"
        r"need|want|like|get|request|arrange)(?: an?| my| the| another| a new| next)? "
        r"(?:appointment|appt|consultation|check ?-?up|slot)s?|"
        r"appointments? (?:available|availability|request)|(?:next|earliest) (?:available|free) "
        r"(?:appointment|slot|date|time)|(?:free|available) (?:slots?|appointments?)",
    ),
)
_SCOPE = [(cat, re.compile(rf"(?<!\w)(?:{_spaced(p)})(?!\w)")) for cat, p in _SCOPE_PATTERNS]
_RESULTS = re.compile(
    r"(?<!\w)(?:(?:lab|labs|laboratory|blood|test|tests|scan|x ?-?ray|mri|ct|biopsy|pathology|urine|swab|ecg|ekg)"
    r"(?: work| test| tests)? (?:results?|report|values)|results? (?:of|from|for) (?:my |the )?"
    r"(?:blood|lab|test|tests|scan|biopsy|x ?-?ray|mri))(?!\w)"
)
_PERSONAL = re.compile(
    r"(?<!\w)(?:your (?:personal|private|own|home|other) (?:e ?-?mail|address|account|inbox|mailbox|gmail)|"
    r"your (?:gmail|hotmail|yahoo|icloud|gmx) (?:address|account)?|"
    r"(?:wrote|writing|write|sent|emailed|e-mailed|mailed) (?:it |this |that |them |the \w+ )?(?:to )?you "
    r"(?:at|on|via|through) (?:your )?"
    r"(?:personal|private|gmail|home|other))(?!\w)"
)


@lru_cache(maxsize=1)
def _checks() -> tuple[list[tuple[str, Prefilter]], Prefilter, Prefilter]:
    """(scope patterns, results pattern, personal-account pattern), analysed on first use."""
    return [(cat, Prefilter(pattern)) for cat, pattern in _SCOPE], Prefilter(_RESULTS), Prefilter(_PERSONAL)


@lru_cache(maxsize=1)
def _builtin_index() -> AtomIndex:
    """The atoms of the built-in red-flag rules and of the scope, result and personal-account checks."""
    patterns = [r.compiled() for r in RED_FLAG_RULES] + [p for _, p in _SCOPE] + [_RESULTS, _PERSONAL]
    return AtomIndex(frozenset().union(*(Prefilter(p).analysed().atoms for p in patterns)))


def _view(text: str, normalized: TextView | None) -> TextView:
    return normalized if normalized is not None else TextView.of(text)


def scope_category(
    text: str, categories: Iterable[str] | None = None, *, normalized: TextView | None = None
) -> str | None:
    """An out-of-scope category suggested by keywords (refill, billing, appointment) or None.
    With ``categories`` only those ids are suggested. ``normalized``: the view of the same text
    (``TextView.of(text)``, ``RedFlagMatcher.view(text)``), to share that work between checks."""
    view = _view(text, normalized)
    allowed = None if categories is None else set(categories)
    for cat, pattern in _checks()[0]:
        if (allowed is None or cat in allowed) and pattern.search(view):
            return cat
    return None


def result_category(text: str, *, normalized: TextView | None = None) -> str | None:
    """ "results" when the message asks about test results (a category with its own window)."""
    return "results" if _checks()[1].search(_view(text, normalized)) else None


def mentions_personal_account(text: str, *, normalized: TextView | None = None) -> bool:
    return bool(_checks()[2].search(_view(text, normalized)))


def visit_in_window(patient: DirectoryPatient, now: datetime | date, window_days: int) -> bool:
    """True when the patient had a visit in the last ``window_days`` days or has one booked in the
    next ``window_days`` days."""
    today = now.date() if isinstance(now, datetime) else now
    span = timedelta(days=window_days)
    return any(v is not None and today - span <= v <= today + span for v in (patient.last_visit, patient.next_visit))


@dataclass(frozen=True, slots=True)
class Suggestion:
    tag: str | None  # the suggested tag: "redirect:phone", an out-of-scope category id, or None
    template: str | None  # the suggested reply template: phone, consent, professional_address, or None
    reason: str = ""  # one line for the thread view


def suggest_tag(
    *,
    urgent: bool,
    status: SenderStatus | None,
    text: str,
    patient: DirectoryPatient | None,
    now: datetime,
    window_days: int,
    personal_route: bool,
    categories: Mapping[str, str] | Iterable[str] | None = None,
    normalized: TextView | None = None,
) -> Suggestion:
    """What to propose for a thread, first match wins: an urgent thread -> phone redirect; mail that
    went through the physician's personal account -> "personal_account" with the professional
    address template; an appointment, billing or refill request -> that category; a known patient
    with no visit in the window -> "free_advice". No consent on file suggests the consent template.
    ``normalized``: the view of ``text`` when the caller has it already (see ``scope_category``)."""
    allowed = None if categories is None else set(categories)

    def ok(cat: str) -> bool:
        return allowed is None or cat in allowed

    consent = "consent" if status is SenderStatus.NO_CONSENT else None
    if urgent:
        return Suggestion("redirect:phone", "phone", "Red flags found: call the patient or redirect to a phone call.")
    if personal_route and ok("personal_account"):
        return Suggestion(
            "personal_account",
            "professional_address",
            "The mail went through the physician's personal account: ask the patient to use the practice address.",
        )
    cat = scope_category(text, allowed, normalized=normalized)
    if cat is not None:
        return Suggestion(cat, consent, f"Looks like a {cat} request: out of scope for email.")
    if patient is not None and not visit_in_window(patient, now, window_days) and ok("free_advice"):
        return Suggestion(
            "free_advice", consent, f"No visit in the last or next {window_days} days: out of scope for email."
        )
    return Suggestion(None, consent, "")


def urgent_banner(hits: Sequence[RedFlagHit]) -> str:
    """The URGENT banner text for a thread with red flags ("" when none)."""
    if not hits:
        return ""
    labels = list(dict.fromkeys(h.label for h in hits))
    shown = ", ".join(labels[:4]) + (f" (+{len(labels) - 4} more)" if len(labels) > 4 else "")
    negated = " Some mentions may be negated; check the message." if all(h.negated for h in hits) else ""
    return (
        f"URGENT: possible emergency ({shown}). Suggested: phone redirect; its template tells the patient "
        f"to call emergency services now if symptoms are severe.{negated}"
    )
