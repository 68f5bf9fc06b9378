"""The clinical safety inspector's share of threading new mail.

    .venv/bin/python bench/safety.py [-n 10000] [--patients 2000] [--runs 3] [--profile]
    .venv/bin/python bench/safety.py --mailbox bench/out/maildir-10000 --patients 0   # sync bench's mail

1. Builds (once, cached in bench/out/, git-ignored) an encrypted store of unthreaded mail and a
   patient directory of ``--patients`` patients. Generated mail (default): mostly from patients
   on file (some with their name written differently, a few with a Reply-To or a failed DKIM),
   the rest from unknown senders on hundreds of domains, lookalike and IDN domains; about 18%
   are the practice's replies (quoting the patient); a few carry red-flag phrases (some negated),
   scope and lab-result questions; bodies are 150-1200 words, like bench/sync_vs_mbsync.py's.
   With ``--mailbox``: a Maildir (bench/sync_vs_mbsync.py writes bench/out/maildir-N) parsed by
   carebox's own parser, for that bench's account and its default config.
2. For each run, on fresh copies of that store: times ``rethread`` without inspectors, then
   ``safety_inspector(...)`` + ``rethread`` with it (what a sync's threading does), then the same
   with the inspector's ``prefetch`` hook called the way refresh_threads would call it (it does
   not yet: see SafetyInspector.prefetch), so messages are read in windows. Then the inspector
   alone over every thread of a store threaded beforehand (no threading, no writes: the steadiest
   figure on a busy machine).
3. Prints the figures (best of the runs, CPU time and wall time), the inspector's share per
   message, the ratios, and a fingerprint of every thread's safety columns (urgent, sender
   status, suggestion, category, state, due time), so two versions of the code can be checked
   to decide the same things.

Target: the inspector's share under about 2 s for 10,000 messages (0.2 ms per message).
Prints figures only; no assertions.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import os
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from carebox.config import Config, IdentityConfig, PolicyConfig, TriageConfig  # noqa: E402
from carebox.domain.models import Address, ParsedMessage  # noqa: E402
from carebox.domain.safety import LISTED_PHRASES, DirectoryPatient  # noqa: E402
from carebox.services.safety import safety_inspector  # noqa: E402
from carebox.services.threads import policy_from_config, rethread  # noqa: E402
from carebox.store import patients as patient_store  # noqa: E402
from carebox.store.crypto import Cipher  # noqa: E402
from carebox.store.store import NewMessage, Store  # noqa: E402

OUT = ROOT / "bench" / "out"
GENERATOR = 1  # bump when the generated data changes (invalidates the cached store)
KEY = b"carebox safety bench key, fixed!"  # a bench store of invented data, not a secret
DOCTOR = "dr.lindqvist@riverside-practice.example"
CONFIG = Config(
    identity=IdentityConfig(
        physician_name="Dr. Maya Lindqvist",
        practice_name="Riverside Family Practice",
        personal_addresses=("maya.lindqvist@home.example",),
    ),
    policy=PolicyConfig(response_hours=48, category_hours={"results": 24}),
    triage=TriageConfig(red_flags=("Brustschmerz", "re:\\bcode (red|blue)\\b")),
)
POLICY = policy_from_config(CONFIG.policy)
NOW = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)

_FIRST = """
Anna Olaf Lena Maria Jonas Sofia Lukas Emma Noah Mia Elias Hanna Paul Lea Felix Clara Ben Ida Leon
Greta Zoë Björn Łukasz Søren Inès José Chloé Zeynep Aiko Priya Omar Fatima Ivan Olga Pieter Annelies
Sean Niamh Mateo Lucía Giulia Marco Nora Erik Astrid Tomasz Katarzyna Dmitri Yuki Wei
"""
FIRST = _FIRST.split()
_LAST = """
Berg Svensson Kowalski Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann
Koch Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange
Schmitt Werner Krause Meier Lehmann Åkesson Martínez Nguyen Wiśniewski O'Brien Rossi Dubois Jansen
Novak Horvat Popescu Yilmaz Tanaka Sato Kim Park Chen Singh Haddad Ivanova Petrov Larsen Nielsen
Virtanen
"""
LAST = _LAST.split()
_MAIL_DOMAINS = """
gmail.com gmail.com gmail.com web.de gmx.de gmx.net outlook.com hotmail.com yahoo.com icloud.com
t-online.de posteo.de mailbox.org proton.me freenet.de
"""
MAIL_DOMAINS = _MAIL_DOMAINS.split()
FAMILY_DOMAINS = [f"{w}-family.example" for w in ("berg", "svensson", "meyer", "novak", "tanaka", "rossi")] + [
    f"{w}.example" for w in ("stadtwerke-nord", "kanzlei-weber", "university", "hospital-east", "school-lake")
]
_WORDS = """
headache fever appointment results prescription refill dose pain week morning night better worse
blood pressure sugar tablets doctor thank you please could would appreciate question since yesterday
swelling cough allergy rash knee back stomach sleep tired dizzy insurance form letter referral
"""
WORDS = _WORDS.split()
SCOPE = (
    "Could you renew my prescription for the inhaler?",
    "I have a question about the invoice you sent.",
    "I would like to book an appointment next week.",
    "Are my blood test results back yet?",
    "Sorry, I first wrote to your personal email.",
)
NEGATED = ("no chest pain", "no fever", "not short of breath", "never fainted")


def _words(rng: random.Random, n: int) -> str:
    lines, line = [], []
    for _ in range(n):
        line.append(rng.choice(WORDS))
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\n".join(lines)


def directory(rng: random.Random, count: int) -> list[DirectoryPatient]:
    out: list[DirectoryPatient] = []
    seen: set[str] = set()
    for i in range(count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}".lower().replace("'", "")
        local = local.encode("ascii", "ignore").decode() or "patient"
        emails = []
        for k in range(1 if rng.random() < 0.85 else 2):
            domain = rng.choice(MAIL_DOMAINS if rng.random() < 0.85 else FAMILY_DOMAINS)
            e = f"{local}{i if k == 0 else f'{i}x'}@{domain}"
            if e not in seen:
                seen.add(e)
                emails.append(e)
        last_visit = date(2026, 10, 1) - timedelta(days=rng.randrange(0, 900))
        out.append(
            DirectoryPatient(
                id="",
                name=f"{first} {last}",
                emails=tuple(emails),
                phone=f"+1 555 01{i % 100:02d} {i:04d}",
                consent_date=date(2024, 1, 1) + timedelta(days=rng.randrange(0, 600)) if rng.random() < 0.8 else None,
                last_visit=last_visit,
                next_visit=date(2026, 11, 10) + timedelta(days=rng.randrange(0, 90)) if rng.random() < 0.2 else None,
            )
        )
    return out


def _lookalike(domain: str, rng: random.Random) -> str:
    name, _, tld = domain.rpartition(".")
    swaps = {"o": "0", "l": "1", "i": "l", "m": "rn", "a": "а"}  # the last one is Cyrillic а
    for ch in rng.sample(list(swaps), len(swaps)):
        if ch in name:
            return name.replace(ch, swaps[ch], 1) + "." + tld
    return name + "s." + tld


def messages(rng: random.Random, n: int, patients: list[DirectoryPatient]) -> list[tuple[str, NewMessage]]:
    """(folder, message) in date order: INBOX for patient mail, Sent for the practice's replies."""
    base = datetime(2026, 8, 1, 8, 0, tzinfo=UTC)
    step = (NOW - base) / n
    doc = Address("Dr. Maya Lindqvist", DOCTOR)
    unknown_domains = [f"{rng.choice(WORDS)}{k}.example" for k in range(400)] + MAIL_DOMAINS
    last_from: dict[str, tuple[str, str, str]] = {}  # sender address -> (message id, subject, body)
    recent: list[tuple[Address, str, str, str]] = []  # (sender, message id, subject, body) of patient mail
    out: list[tuple[str, NewMessage]] = []
    for i in range(n):
        when = base + step * i
        msgid = f"m{i}@bench.example"
        body = _words(rng, rng.randrange(150, 1200))
        if recent and rng.random() < 0.18:  # the practice answers a recent patient message
            sender, parent, subject, pbody = recent.pop(rng.randrange(len(recent)))
            quoted = "\n".join("> " + line for line in pbody.splitlines()[:6])
            text = f"Dear patient,\n\n{_words(rng, rng.randrange(20, 120))}\n\nOn Monday you wrote:\n{quoted}"
            parsed = ParsedMessage(msgid, (parent,), (parent,), "Re: " + subject, doc, (sender,), (), (), when, text)
            raw = b"From: bench\r\n\r\n" + msgid.encode()
            out.append(("Sent", NewMessage(raw, parsed, flags=frozenset({"\\Seen"}))))
            continue
        r = rng.random()
        reply_to: tuple[Address, ...] = ()
        auth = "mx.riverside-practice.example; spf=pass; dkim=pass; dmarc=pass"
        if r < 0.75:
            p = rng.choice(patients)
            addr = rng.choice(p.emails)
            first, _, last = p.name.partition(" ")
            name = rng.choice((p.name, p.name, f"{last}, {first}", "", p.name.upper()))
            if rng.random() < 0.02:
                reply_to = (Address("", f"collect{i}@elsewhere.example"),)
            if rng.random() < 0.01:
                auth = "mx.riverside-practice.example; spf=pass; dkim=fail; dmarc=fail"
        elif r < 0.92:
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            addr = f"{name.lower().replace(' ', '.').replace(chr(39), '')}{i}@{rng.choice(unknown_domains)}"
        elif r < 0.96:
            p = rng.choice(patients)
            local, _, domain = rng.choice(p.emails).partition("@")
            name, addr = p.name, f"{local}@{_lookalike(domain, rng)}"
        elif r < 0.98:
            name, addr = "Info", f"info{i}@xn--mller-kva.example"
        else:
            p = rng.choice(patients)
            name, addr = f"{rng.choice(FIRST)} {p.name.split()[-1]}", rng.choice(p.emails)  # a relative writes
        sender = Address(name, addr)
        parent = ""
        subject = f"Question about {rng.choice(WORDS)}"
        prev = last_from.get(addr)
        if prev and rng.random() < 0.5:
            parent, subject, pbody = prev
            subject = subject if subject.startswith("Re: ") else "Re: " + subject
            body += "\n\nOn Friday you wrote:\n" + "\n".join("> " + line for line in pbody.splitlines()[:4])
        x = rng.random()
        if x < 0.03:
            body = _words(rng, 30) + f"\nSince last night: {rng.choice(LISTED_PHRASES)}.\n" + body
        elif x < 0.05:
            body += f"\nI have {rng.choice(NEGATED)} though."
        elif x < 0.12:
            body = rng.choice(SCOPE) + "\n" + body
        parsed = ParsedMessage(
            msgid,
            (parent,) if parent else (),
            (parent,) if parent else (),
            subject,
            sender,
            (Address("Dr. Maya Lindqvist", DOCTOR),),
            (),
            reply_to,
            when,
            body,
            auth_results=auth,
        )
        last_from[addr] = (msgid, subject, body)
        recent.append((sender, msgid, subject, body))
        if len(recent) > 200:
            recent.pop(0)
        flags = frozenset({"\\Seen"}) if i % 3 else frozenset()
        out.append(("INBOX", NewMessage(b"From: bench\r\n\r\n" + msgid.encode(), parsed, flags=flags)))
    return out


def template(n: int, n_patients: int) -> Path:
    """bench/out/safety-store-N-P: the unthreaded store, built once."""
    target = OUT / f"safety-store-{n}-{n_patients}-v{GENERATOR}"
    if (target / "done").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    rng = random.Random(20261102)
    patients = directory(rng, n_patients)
    store = Store.open(target, Cipher(KEY), professional=DOCTOR, create=True)
    try:
        patient_store.save_patients(store, patients)
        msgs = messages(rng, n, patients)
        for folder in ("INBOX", "Sent"):
            items = [m for f, m in msgs if f == folder]
            for k in range(0, len(items), 500):
                store.add_messages(folder, items[k : k + 500], role=folder.lower() if folder == "Sent" else "inbox")
    finally:
        store.close()
    (target / "done").touch()
    print(f"built {target.name}: {n} messages, {n_patients} patients in {time.perf_counter() - started:.1f} s")
    return target


SYNC_DOCTOR = "doctor@practice.example"  # the account bench/sync_vs_mbsync.py syncs into


def template_from_maildir(maildir: Path, n_patients: int) -> Path:
    """bench/out/safety-store-<maildir>-P: a Maildir (INBOX in cur/, Sent in .Sent/cur/, such as
    bench/sync_vs_mbsync.py's bench/out/maildir-N) parsed by carebox's parser into an unthreaded
    store for that bench's account, with P generated patients on file."""
    from carebox.mail.parse import parse_message

    target = OUT / f"safety-store-{maildir.name}-{n_patients}-v{GENERATOR}"
    if (target / "done").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    store = Store.open(target, Cipher(KEY), professional=SYNC_DOCTOR, create=True)
    count = 0
    try:
        patient_store.save_patients(store, directory(random.Random(20261102), n_patients))
        for folder, sub in (("INBOX", "cur"), ("Sent", ".Sent/cur")):
            files = sorted((maildir / sub).glob("*")) if (maildir / sub).is_dir() else []
            for k in range(0, len(files), 500):
                batch = []
                for uid, f in enumerate(files[k : k + 500], k + 1):
                    raw = f.read_bytes()
                    flags = frozenset({"\\Seen"}) if f.name.rpartition(":2,")[2].count("S") else frozenset()
                    batch.append(NewMessage(raw, parse_message(raw), uid=uid, flags=flags))
                store.add_messages(folder, batch, role="sent" if folder == "Sent" else "inbox")
                count += len(batch)
    finally:
        store.close()
    (target / "done").touch()
    print(f"built {target.name}: {count} messages, {n_patients} patients in {time.perf_counter() - started:.1f} s")
    return target


def fingerprint(d: Path) -> tuple[str, dict[str, int]]:
    """A digest of every thread's safety columns, keyed by its first message (thread ids are
    random per run), and a few counts."""
    conn = sqlite3.connect(d / "carebox.db")
    try:
        first = dict(conn.execute("SELECT thread_id, min(id) FROM message GROUP BY thread_id"))
        rows = sorted(
            (first[r[0]], *r[1:])
            for r in conn.execute(
                "SELECT id, urgent, sender_status, suggested_tag, category, state, due_at FROM thread"
            )
        )
    finally:
        conn.close()
    digest = hashlib.sha256(repr(rows).encode()).hexdigest()[:16]
    counts = {
        "threads": len(rows),
        "urgent": sum(1 for r in rows if r[1]),
        "warning": sum(1 for r in rows if r[2] == "warning"),
        "unknown": sum(1 for r in rows if r[2] == "unknown"),
        "suggested": sum(1 for r in rows if r[3]),
        "results": sum(1 for r in rows if r[4] == "results"),
    }
    return digest, counts


CONFIGS = {"current": CONFIG}  # --mailbox: the default config, like the sync bench's account

MODES = {
    "without": "rethread without inspector:",
    "with": "with inspector, as wired now:",
    "prefetch": "with inspector + prefetch hook:",
}


def one_run(src: Path, work: Path, mode: str, *, profile: bool = False) -> tuple[float, float, Path]:
    """One timed rethread on a fresh copy of the store. ``prefetch`` stands in for the hook
    services.threads.refresh_threads does not call yet: it hands the inspector the threads
    it is about to inspect (the dict it passes to store.thread_facts just before its loop)."""
    d = work / mode
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    store = Store.open(d, Cipher(KEY), professional=DOCTOR if CONFIGS["current"] is CONFIG else SYNC_DOCTOR)
    prof = cProfile.Profile() if profile else None
    try:
        started, cpu = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        inspectors = [safety_inspector(store, CONFIGS["current"], NOW)] if mode != "without" else []
        if mode == "prefetch":
            facts = store.thread_facts

            def thread_facts(by_thread: Any) -> Any:
                if isinstance(by_thread, dict):
                    inspectors[0].prefetch(store, by_thread)
                return facts(by_thread)

            store.thread_facts = thread_facts  # type: ignore[method-assign]
        rethread(store, POLICY, inspectors)
        if prof:
            prof.disable()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    finally:
        store.close()
    if prof:
        s = io.StringIO()
        stats = pstats.Stats(prof, stream=s).sort_stats(os.environ.get("SORT", "tottime"))
        stats.print_stats(int(os.environ.get("TOP", "25")))
        print(s.getvalue())
    return elapsed, cpu, d


def inspector_alone(src: Path, work: Path, runs: int) -> dict[str, float]:
    """The inspector by itself over every thread of a store threaded beforehand (no threading,
    no writes): best CPU time of ``runs``, as wired (one read per thread) and with prefetch."""
    from carebox.services.threads import policy_from_config  # noqa: F401 (same import cost either way)

    d = work / "alone"
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(src, d)
    store = Store.open(d, Cipher(KEY), professional=DOCTOR if CONFIGS["current"] is CONFIG else SYNC_DOCTOR)
    best = {"with": float("inf"), "prefetch": float("inf")}
    try:
        rethread(store, POLICY, [])
        ids = store.all_thread_ids()
        keys = store.thread_message_keys(ids)
        refs = {r.key: r for r in store.refs_of_threads(ids)}
        by_thread = {t: [refs[k] for k in keys[t]] for t in ids}
        for _ in range(runs):
            for mode in best:
                cpu = time.process_time()
                inspector = safety_inspector(store, CONFIGS["current"], NOW)
                if mode == "prefetch":
                    inspector.prefetch(store, by_thread)
                for tid, trefs in by_thread.items():
                    inspector(store, tid, trefs, {})
                best[mode] = min(best[mode], time.process_time() - cpu)
    finally:
        store.close()
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-n", type=int, default=10_000, help="messages in the store (default 10000)")
    ap.add_argument("--patients", type=int, default=2_000, help="patients in the directory (default 2000)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each kind (default 3)")
    ap.add_argument("--profile", action="store_true", help="also print a cProfile of one inspected run")
    ap.add_argument(
        "--mailbox",
        metavar="MAILDIR",
        type=Path,
        help="thread this Maildir's messages instead of generated ones (e.g. bench/out/maildir-10000, written\n"
        "by bench/sync_vs_mbsync.py: the same mail as that bench; use --patients 0 for its empty directory)",
    )
    args = ap.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if args.mailbox is not None:
        src = template_from_maildir(args.mailbox, args.patients)
        CONFIGS["current"] = Config()
        args.n = sum(
            1 for sub in ("cur", ".Sent/cur") if (args.mailbox / sub).is_dir() for _ in (args.mailbox / sub).iterdir()
        )
    else:
        src = template(args.n, args.patients)
    runs: dict[str, list[tuple[float, float]]] = {m: [] for m in MODES}
    digests: dict[str, tuple[str, dict[str, int]]] = {}
    with tempfile.TemporaryDirectory(dir=OUT, prefix="safety-run-") as tmp:
        work = Path(tmp)
        for _ in range(args.runs):
            for mode in MODES:
                wall, cpu, d = one_run(src, work, mode)
                runs[mode].append((wall, cpu))
                if mode != "without":
                    digests[mode] = fingerprint(d)
        alone = inspector_alone(src, work, args.runs)
        if args.profile:
            one_run(src, work, "with", profile=True)
    print(f"{args.n} messages, {args.patients} patients, {args.runs} runs of each")
    print("(best of the runs: CPU time of this process, and wall time; on a busy machine CPU time is steadier)")
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    for k, label in MODES.items():
        w, c = best[k]
        each = ", ".join(f"{x:.2f}" for _, x in runs[k])
        print(f"  {label:32} {c:6.2f} s CPU {w:6.2f} s wall   (CPU, every run: {each})")
    for k in ("with", "prefetch"):
        for i, what in ((1, "CPU "), (0, "wall")):
            share = best[k][i] - best["without"][i]
            print(
                f"  inspector's share, {k:8} ({what}): {share:5.2f} s = {share / args.n * 1000:.3f} ms per message; "
                f"with/without {best[k][i] / best['without'][i]:.2f}x; "
                f"share/target {share / (0.2e-3 * args.n):.2f}x"
            )
    for k, t in alone.items():
        print(
            f"  inspector alone over the same threads, {k:8}: {t:5.2f} s CPU = {t / args.n * 1000:.3f} ms per message; "
            f"/target {t / (0.2e-3 * args.n):.2f}x"
        )
    for k, (digest, counts) in digests.items():
        print(f"  decisions ({k}): {digest}  {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
