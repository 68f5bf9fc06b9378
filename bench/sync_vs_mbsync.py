"""carebox sync vs mbsync on the same 10,000-message mailbox in a private Dovecot (IMAPS on 127.0.0.1).

    .venv/bin/python bench/sync_vs_mbsync.py [-n 10000] [--parse auto|process|thread] [--runs 3]
        [--initial-runs 1] [--breakdown] [--floor] [--skip-mbsync] [--profile FILE]

1. Builds the mailbox: synthetic practice mail (plain, HTML alternatives, PDF attachments; 2-40 KB,
   replies threaded) written as Maildir files once into bench/out/ (git-ignored) and copied into a
   fresh Dovecot user for each tool. Dovecot indexes it before anything is timed.
2. Times, each as a whole process, wall clock (and prints a fingerprint of the threads each initial
   sync decided, keyed by folder and UID, to check that two versions decide the same):
   * carebox: ``python -m carebox --config CFG sync`` into a new store (key from CAREBOX_PASSPHRASE,
     no keychain; account password from password_command), then the same command with nothing new
     (the no-change re-sync), ``--runs`` times;
   * mbsync (Debian isync; this script installs nothing): a pull of INBOX and Sent into a new Maildir
     with its default ``FSync yes`` and with ``FSync no``, then a no-change re-run.
3. Prints the figures and the ratios against the targets: initial sync at most 0.5x mbsync's wall time;
   no-change re-sync under 0.6 s. Beside each initial sync: the CPU time of the tool and how busy
   the whole machine was meanwhile (the server's share included): a machine figure far above the
   tool's means something else was running and the run is not comparable. (carebox's CPU figure
   leaves out its worker processes: they are children of its forkserver, which is not waited for.)
   On a shared machine, use ``--initial-runs 3`` (medians).

Needs root and dovecot-imapd (like the integration tests). Prints figures only; no assertions.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import pwd
import random
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers.dovecot import Dovecot, dovecot_available  # noqa: E402

OUT = ROOT / "bench" / "out"
DOCTOR = "doctor@practice.example"
WORDS = [
    "headache",
    "fever",
    "appointment",
    "results",
    "prescription",
    "refill",
    "dose",
    "pain",
    "week",
    "morning",
    "night",
    "better",
    "worse",
    "blood",
    "pressure",
    "sugar",
    "tablets",
    "doctor",
    "thank",
    "you",
    "please",
    "could",
    "would",
    "appreciate",
    "question",
    "since",
    "yesterday",
    "swelling",
    "cough",
    "allergy",
    "rash",
    "knee",
    "back",
    "stomach",
    "sleep",
    "tired",
    "dizzy",
    "insurance",
    "form",
    "letter",
    "referral",
]


# ---- the mailbox ---------------------------------------------------------------------------------------


def _text(rng: random.Random, n_words: int) -> str:
    lines, line = [], []
    for _ in range(n_words):
        line.append(rng.choice(WORDS))
        if len(line) >= 12:
            lines.append(" ".join(line))
            line = []
    lines.append(" ".join(line))
    return "\r\n".join(lines)


def generate(n: int, seed: int = 1):
    """Deterministic patient mail: 65% plain text, 23% text+HTML, 12% with a PDF attachment."""
    rng = random.Random(seed)
    base = datetime(2025, 1, 6, 8, 0, tzinfo=UTC)
    for i in range(n):
        p = rng.randrange(1, 1500)
        date = base + timedelta(minutes=17 * i)
        msgid = f"m{i}.{seed}@patients.example"
        parent = f"m{i - rng.randrange(1, 50)}.{seed}@patients.example" if i > 50 and rng.random() < 0.4 else ""
        head = [
            f"Message-ID: <{msgid}>",
            f"From: Patient {p} <patient{p}@patients.example>",
            f"To: Dr. Anna Berg <{DOCTOR}>",
            f"Subject: {'Re: ' if parent else ''}Question {p % 300} about {rng.choice(WORDS)}",
            f"Date: {format_datetime(date)}",
            "MIME-Version: 1.0",
        ]
        if parent:
            head += [f"In-Reply-To: <{parent}>", f"References: <{parent}>"]
        body = _text(rng, rng.randrange(150, 1200))
        r = rng.random()
        if r < 0.12:
            blob = base64.encodebytes(rng.randbytes(rng.randrange(8_000, 30_000))).decode().replace("\n", "\r\n")
            head.append('Content-Type: multipart/mixed; boundary="b1"')
            parts = [
                "--b1",
                "Content-Type: text/plain; charset=utf-8",
                "",
                body,
                "--b1",
                'Content-Type: application/pdf; name="results.pdf"',
                "Content-Transfer-Encoding: base64",
                'Content-Disposition: attachment; filename="results.pdf"',
                "",
                blob,
                "--b1--",
                "",
            ]
            raw = "\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts)
        elif r < 0.35:
            html = "<html><body><p>" + body.replace("\r\n", "</p><p>") + "</p></body></html>"
            head.append('Content-Type: multipart/alternative; boundary="b2"')
            parts = [
                "--b2",
                "Content-Type: text/plain; charset=utf-8",
                "",
                body,
                "--b2",
                "Content-Type: text/html; charset=utf-8",
                "",
                html,
                "--b2--",
                "",
            ]
            raw = "\r\n".join(head) + "\r\n\r\n" + "\r\n".join(parts)
        else:
            head.append("Content-Type: text/plain; charset=utf-8")
            raw = "\r\n".join(head) + "\r\n\r\n" + body + "\r\n"
        yield raw.encode()


def cached_maildir(n: int) -> Path:
    """bench/out/maildir-N: a Maildir (INBOX + empty .Sent) written once, reused by later runs."""
    target = OUT / f"maildir-{n}"
    if (target / "done").exists():
        return target
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    for sub in ("cur", "new", "tmp", ".Sent/cur", ".Sent/new", ".Sent/tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    (target / ".Sent" / "maildirfolder").touch()
    now = int(time.time())
    for i, raw in enumerate(generate(n)):
        flags = "S" if i % 3 else ""
        (target / "cur" / f"{now - n + i}.M{i}P1.bench:2,{flags}").write_bytes(raw)
    (target / "done").touch()
    print(f"wrote {n} messages to {target} in {time.perf_counter() - started:.1f} s")
    return target


def mailbox_user(dc: Dovecot, maildir: Path, name: str) -> tuple[str, str]:
    password = f"pw-{name}"
    dc.add_user(name, password)
    home = dc.home(name)
    shutil.copytree(maildir, home / "Maildir")
    pw = pwd.getpwnam("dovecot")
    for dirpath, _dirs, files in os.walk(home):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(dirpath, f), pw.pw_uid, pw.pw_gid)
    os.remove(home / "Maildir" / "done")
    for folder in ("INBOX", "Sent"):  # index now, so neither tool pays for it
        dc.status(name, folder)
    return name, password


# ---- the tools ----------------------------------------------------------------------------------------


def _machine_cpu() -> float:
    """CPU seconds all CPUs of this machine have been busy since boot (Linux /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


@dataclass
class Run:
    seconds: float
    out: str
    cpu: float  # CPU seconds of the command and its children
    machine: float  # CPU seconds the whole machine was busy meanwhile (the server and other programs too)
    phases: dict[str, float] | None = None  # carebox: start, download, threading+exit (from its progress lines)

    def note(self) -> str:
        return f"cpu {self.cpu:.1f} s, machine busy {self.machine:.1f} cpu-s"


def timed_run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Runs ``cmd`` to its end; the time each stdout line arrived splits a carebox sync into phases:
    start (process start, key, store, login, until "downloading N messages"), download (until the
    last "N of N"), then threading, safety checks and exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _machine_cpu()
    with tempfile.TemporaryFile(mode="w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=cwd)
        assert proc.stdout is not None
        lines: list[tuple[float, str]] = [(time.perf_counter() - started, line) for line in proc.stdout]
        rc = proc.wait(timeout=1800)
        elapsed = time.perf_counter() - started
        busy = _machine_cpu() - busy
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"{cmd[0]} failed ({rc}): {err.read().strip()[-600:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    phases = None
    begun = [t for t, line in lines if " downloading " in line]
    ended = [t for t, line in lines if " of " in line and line.split(": ", 1)[-1].split(" of ")[0].strip().isdigit()]
    if begun and ended:
        phases = {"start": begun[0], "download": ended[-1] - begun[0], "threading+exit": elapsed - ended[-1]}
    return Run(elapsed, "".join(line for _, line in lines).strip(), cpu, busy, phases)


def phases_text(runs: list[Run]) -> str:
    with_phases = [r.phases for r in runs if r.phases]
    if not with_phases:
        return ""
    names = list(with_phases[0])
    return "  phases (medians): " + ", ".join(
        f"{n} {statistics.median(p[n] for p in with_phases):.2f} s" for n in names
    )


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> tuple[float, str]:
    run = timed_run(cmd, env, cwd)
    return run.seconds, run.out


def median_run(runs: list[Run]) -> Run:
    return sorted(runs, key=lambda r: r.seconds)[(len(runs) - 1) // 2]


def runs_text(runs: list[Run]) -> str:
    if len(runs) == 1:
        return runs[0].note()
    return "runs: " + ", ".join(f"{r.seconds:.2f}" for r in runs) + f"; median's {median_run(runs).note()}"


FLOOR_CODE = """
import asyncio, sys
from pathlib import Path
from carebox.mail.imap import ImapClient, ImapSettings
from carebox.services.sync import BATCH

async def main(port, user, password, ca):
    settings = ImapSettings(host="127.0.0.1", port=int(port), username=user, password=password, ca_file=Path(ca))
    n = size = 0
    async with ImapClient(settings) as imap:
        for folder in ("INBOX", "Sent"):
            await imap.select(folder)
            async for batch in imap.fetch_batches(await imap.search_uids("ALL"), BATCH):
                n += len(batch)
                size += sum(len(m.raw) for m in batch)
    print(f"{n} messages, {size / 1e6:.0f} MB")

asyncio.run(main(*sys.argv[1:5]))
"""


def thread_fingerprint(store_dir: Path) -> str:
    """A digest of every conversation's clear decision columns (urgent, sender status, suggested
    tag, category, state, due time), each keyed by its messages' (folder, UID) set: row ids are
    random per store, so this is what two syncs, or two versions of carebox, can compare."""
    conn = sqlite3.connect(f"file:{store_dir / 'carebox.db'}?mode=ro", uri=True)
    try:
        members: dict[str, list[tuple[int, int]]] = {}
        for tid, fid, uid in conn.execute("SELECT thread_id, folder_id, uid FROM message"):
            members.setdefault(tid, []).append((fid, uid))
        columns = "id, urgent, sender_status, suggested_tag, category, state, due_at"
        rows = sorted(
            (tuple(sorted(members.get(r[0], []))), *r[1:])
            for r in conn.execute(f"SELECT {columns} FROM thread")  # noqa: S608 - constant text
        )
    finally:
        conn.close()
    urgent = sum(1 for r in rows if r[1])
    return f"{hashlib.sha256(repr(rows).encode()).hexdigest()[:16]} ({len(rows)} threads, {urgent} urgent)"


def carebox_env(work: Path, parse: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAREBOX_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed carebox has its bytecode cached
    env.update(
        CAREBOX_PASSPHRASE="bench passphrase, not a secret",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        XDG_CONFIG_HOME=str(work / "xdg-config"),
        XDG_DATA_HOME=str(work / "xdg-data"),
    )
    if parse != "auto":
        env["CAREBOX_SYNC_PARSE"] = parse
    return env


def carebox_config(work: Path, dc: Dovecot, user: str, password: str) -> Path:
    (work / "pw").write_text(password)
    cfg = work / "carebox.toml"
    cfg.write_text(
        f"""[account]
address = "{DOCTOR}"
username = "{user}"
password_command = "cat {work / "pw"}"

[account.imap]
host = "127.0.0.1"
port = {dc.imaps_port}
ca_file = "{dc.ca_file}"

[account.smtp]
host = "127.0.0.1"
port = 465

[store]
path = "{work / "store"}"
"""
    )
    return cfg


def mbsync_config(work: Path, dc: Dovecot, user: str, password: str, fsync: bool) -> Path:
    (work / "pw").write_text(password)
    local = work / "mail"
    local.mkdir(exist_ok=True)
    rc = work / "mbsyncrc"
    rc.write_text(
        f"""FSync {"yes" if fsync else "no"}

IMAPAccount bench
Host localhost
Port {dc.imaps_port}
User {user}
PassCmd "cat {work / "pw"}"
SSLType IMAPS
CertificateFile {dc.ca_file}

IMAPStore bench-far
Account bench

MaildirStore bench-near
Path {local}/
Inbox {local}/INBOX
SubFolders Verbatim

Channel bench
Far :bench-far:
Near :bench-near:
Patterns INBOX Sent
Create Near
Sync Pull
SyncState *
"""
    )
    return rc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="messages in the mailbox")
    ap.add_argument("--parse", choices=["auto", "process", "thread"], default="auto")
    ap.add_argument("--runs", type=int, default=3, help="no-change re-syncs to time (median is reported)")
    ap.add_argument(
        "--initial-runs",
        type=int,
        default=1,
        help="initial syncs to time per tool, each into a new store or Maildir (median is reported)",
    )
    ap.add_argument("--skip-mbsync", action="store_true")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="write a cProfile of carebox's first initial sync to FILE (the main thread of the main process only)",
    )
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also time the download alone through carebox's IMAP client, nothing parsed or stored (diagnostic)",
    )
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also time the initial sync with the safety inspector switched off (diagnostic, not a carebox mode)",
    )
    args = ap.parse_args()
    if not dovecot_available():
        print("needs root and dovecot-imapd (/usr/sbin/dovecot): nothing measured")
        return 1
    mbsync = shutil.which("mbsync")
    if mbsync is None and not args.skip_mbsync:
        print("mbsync is not installed (Debian package isync): carebox is timed alone, no ratios")
    OUT.mkdir(parents=True, exist_ok=True)
    maildir = cached_maildir(args.n)
    size_mb = sum(p.stat().st_size for p in (maildir / "cur").iterdir()) / 1e6
    print(f"mailbox: {args.n} messages, {size_mb:.0f} MB; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")

    results: dict[str, float] = {}
    n_initial = max(1, args.initial_runs)
    with Dovecot() as dc, tempfile.TemporaryDirectory(prefix="carebox-bench-") as tmp:
        tmp_path = Path(tmp)
        # carebox: each initial sync into a new store (the server's mailbox is not changed by a sync)
        user, password = mailbox_user(dc, maildir, "carebox")
        runs: list[Run] = []
        for i in range(n_initial):
            work = tmp_path / f"carebox-{i}"
            work.mkdir()
            cfg = carebox_config(work, dc, user, password)
            env = carebox_env(work, args.parse)
            if i == 0:
                timed([sys.executable, "-c", "import carebox.cli"], env=env, cwd=ROOT)  # write bytecode caches
            cmd = [sys.executable, "-m", "carebox", "--config", str(cfg), "sync"]
            if args.profile and i == 0:  # python -m cProfile never writes: `python -m carebox` leaves by os._exit
                code = (
                    "import cProfile, sys; from carebox.cli import main; out = sys.argv.pop(1); "
                    "cProfile.run('main(sys.argv[1:])', out)"
                )
                cmd = [sys.executable, "-c", code, args.profile, *cmd[3:]]
            runs.append(timed_run(cmd, env=env, cwd=ROOT))
        results["carebox initial"] = median_run(runs).seconds
        print(
            f"carebox initial sync:        {results['carebox initial']:6.2f} s   {runs[-1].out.splitlines()[-1]}\n"
            f"  ({runs_text(runs)})"
        )
        if phases_text(runs):
            print(phases_text(runs))
        prints = [thread_fingerprint(tmp_path / f"carebox-{i}" / "store") for i in range(n_initial)]
        agree = "the same in every run" if len(set(prints)) == 1 else "DIFFERENT between runs"
        print(f"  threads' decisions (fingerprint): {', '.join(prints)}  ({agree})")
        cmd = [sys.executable, "-m", "carebox", "--config", str(cfg), "sync"]
        times = []
        for _ in range(max(1, args.runs)):
            t, out = timed(cmd, env=env, cwd=ROOT)
            times.append(t)
        results["carebox resync"] = statistics.median(times)
        print(
            f"carebox no-change re-sync:   {results['carebox resync']:6.2f} s   "
            f"(runs: {', '.join(f'{t:.2f}' for t in times)}) {out.splitlines()[-1]}"
        )
        t, _ = timed([sys.executable, "-c", "pass"], env=env)
        print(f"  (python start alone:       {t:6.2f} s)")
        if args.breakdown:
            # the same command in a process whose sync passes no thread inspector: how much of the
            # initial sync is the clinical safety checks (services/safety.py) rather than the sync
            user, password = mailbox_user(dc, maildir, "carebox-nosafety")
            code = (
                "import sys; import carebox.services.sync as s; s._inspectors = lambda session: []; "
                "from carebox.cli import main; sys.exit(main(sys.argv[1:]))"
            )
            runs = []
            for i in range(n_initial):
                work = tmp_path / f"carebox-nosafety-{i}"
                work.mkdir()
                cfg = carebox_config(work, dc, user, password)
                runs.append(
                    timed_run(
                        [sys.executable, "-c", code, "--config", str(cfg), "sync"],
                        env=carebox_env(work, args.parse),
                        cwd=ROOT,
                    )
                )
            results["carebox initial nosafety"] = median_run(runs).seconds
            print(
                f"  diagnostic, same sync without the safety inspector: {results['carebox initial nosafety']:6.2f} s"
                f"  ({runs_text(runs)})"
            )
            if phases_text(runs):
                print("  " + phases_text(runs))

        if args.floor:
            # what no design of carebox can go below: its IMAP client (aioimaplib) fetching every
            # message of both folders as a sync does, in batches, and dropping them
            user, password = mailbox_user(dc, maildir, "carebox-floor")
            runs = []
            for _ in range(n_initial):
                cmd = [sys.executable, "-c", FLOOR_CODE, str(dc.imaps_port), user, password, str(dc.ca_file)]
                runs.append(timed_run(cmd, env=carebox_env(tmp_path, args.parse), cwd=ROOT))
            results["carebox download floor"] = median_run(runs).seconds
            print(
                f"  diagnostic, the download alone (IMAP client, nothing parsed or stored): "
                f"{results['carebox download floor']:6.2f} s  ({runs_text(runs)}; {runs[-1].out})"
            )

        # mbsync, same mailbox contents, its own user; each initial sync into a new Maildir
        if mbsync and not args.skip_mbsync:
            for fsync in (True, False):
                label = "fsync" if fsync else "nofsync"
                user, password = mailbox_user(dc, maildir, f"mbsync-{label}")
                runs = []
                for i in range(n_initial):
                    mwork = tmp_path / f"mbsync-{label}-{i}"
                    mwork.mkdir()
                    rc = mbsync_config(mwork, dc, user, password, fsync)
                    runs.append(timed_run([mbsync, "-q", "-c", str(rc), "bench"]))
                results[f"mbsync initial {label}"] = median_run(runs).seconds
                times = [timed([mbsync, "-q", "-c", str(rc), "bench"])[0] for _ in range(max(1, args.runs))]
                results[f"mbsync resync {label}"] = statistics.median(times)
                inbox = mwork / "mail" / "INBOX"
                got = sum(1 for sub in ("cur", "new") for _ in (inbox / sub).iterdir())
                print(
                    f"mbsync FSync {'yes' if fsync else 'no '} initial:     {results[f'mbsync initial {label}']:6.2f} s"
                    f"   re-sync {results[f'mbsync resync {label}']:.2f} s   ({got} messages; {runs_text(runs)})"
                )

    print()
    ci, cr = results["carebox initial"], results["carebox resync"]
    if "mbsync initial fsync" in results:
        for label, name in (("fsync", "FSync yes, its default"), ("nofsync", "FSync no")):
            mi = results[f"mbsync initial {label}"]
            print(f"initial sync  carebox/mbsync ({name}): {ci / mi:5.2f}x  (target <= 0.5x)")
            if "carebox initial nosafety" in results:
                print(f"  without the safety inspector (diagnostic): {results['carebox initial nosafety'] / mi:5.2f}x")
            if "carebox download floor" in results:
                print(f"  the download alone (diagnostic):           {results['carebox download floor'] / mi:5.2f}x")
        mr = results["mbsync resync fsync"]
        print(f"re-sync       carebox/mbsync: {cr / mr:5.1f}x")
    print(f"no-change re-sync as a whole process: {cr:.2f} s  (target < 0.6 s) -> {'met' if cr < 0.6 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
