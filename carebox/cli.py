"""The `carebox` command: the one place that wires real adapters together.

Every failure a user can cause or meet (config, key, store, mailbox file, server) ends in one
line on stderr and an exit code, never a traceback: a traceback can carry patient data.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2  # bad config or arguments


class UserError(Exception):
    """A problem worded for the user, with its exit code."""

    def __init__(self, message: str, code: int = EXIT_FAIL) -> None:
        super().__init__(message)
        self.code = code


def _now() -> datetime:
    fixed = os.environ.get("CAREBOX_NOW")  # a frozen clock for snapshot tests and demos
    if fixed:
        return datetime.fromisoformat(fixed).astimezone(UTC)
    return datetime.now(UTC)


def _ask(prompt: str) -> str | None:
    if not sys.stdin.isatty():
        return None
    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        return None


def _config(args: argparse.Namespace) -> Any:
    from carebox.config import load_config

    return load_config(args.config)


def _session(args: argparse.Namespace, *, create: bool = False) -> Any:
    from carebox.services.session import open_session

    return open_session(_config(args), ask=_ask, create=create)


# --- commands ----------------------------------------------------------------------------------


def _hold_gc() -> None:
    """Start-up of the UI: no cyclic garbage collection while the modules load (they make
    hundreds of thousands of long-lived objects; the collector's passes over them cost ~10% of
    the imports). ``_release_gc`` ends it."""
    gc.disable()


def _release_gc() -> None:
    """Move every object made so far out of the collector's way for good, and collect again."""
    gc.freeze()
    gc.enable()


def cmd_demo(args: argparse.Namespace) -> int:
    import tempfile

    if not args.no_ui:
        _hold_gc()

    root = Path(tempfile.mkdtemp(prefix="carebox-demo-"))  # here: services.demo would import the store before the fork
    try:
        if args.no_ui:
            from carebox.services.demo import build_demo_store, open_demo
            from carebox.services.inbox import status

            build_demo_store(root, _now())
            session = open_demo(root, keep=args.keep)
            try:
                print(json.dumps(status(session.store, _now()), indent=1))
            finally:
                session.close()
            return EXIT_OK
        wait = _build_demo_beside_ui_import(root)
        from carebox.services.demo import demo_session, open_demo_store
        from carebox.ui.screens.inbox import PAGE

        session = demo_session(root)
        prepare = None
        if wait is None:
            open_demo_store(session)
        else:  # the app starts now; its inbox shows when the child has built the store

            def prepare() -> None:
                wait()
                open_demo_store(session, first_page=PAGE)

        try:
            return _run_ui(session, prepare)
        finally:
            if wait is not None:  # quit before the store was ready: the child finishes first
                with contextlib.suppress(UserError):
                    wait()
            if session.store is not None:
                session.close()
            if args.keep:
                print(f"demo store kept at {session.config.store_dir()}")
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)


def _build_demo_beside_ui_import(root: Path) -> Callable[[], None] | None:
    """Build the demo store in a child process while this one imports the UI and starts the app
    (the machine has at least two cores: the inbox is painted sooner). Returns the function that
    waits for the child (raising UserError in one line if the build failed), or None when the
    store was built here (where fork is missing, or threads already run)."""
    import threading

    if not hasattr(os, "fork") or threading.active_count() > 1:
        from carebox.services.demo import build_demo_store

        build_demo_store(root, _now())
        return None
    now = _now()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: build, say how it went in one line, and leave without cleanup
        os.close(read_end)
        code = EXIT_FAIL
        try:
            from carebox.services.demo import build_demo_store

            _release_gc()
            build_demo_store(root, now)
            code = EXIT_OK
        except BaseException as exc:  # invented demo data only; still, the kind of failure is enough
            os.write(write_end, f"the demo store could not be built ({type(exc).__name__})".encode())
        finally:
            os._exit(code)
    os.close(write_end)

    done: list[str] = []  # the child's problem once waited for ("" when it went well)
    waiting = threading.Lock()

    def wait() -> None:
        with waiting:  # once, whoever asks first (the app's thread, or cmd_demo at exit)
            if not done:
                _, status = os.waitpid(pid, 0)
                with os.fdopen(read_end, "rb") as pipe:
                    problem = pipe.read().decode("utf-8", "replace")
                ok = os.waitstatus_to_exitcode(status) == 0
                done.append("" if ok else problem or "the demo store could not be built (its process was stopped)")
        if done[0]:
            raise UserError(done[0])

    try:
        import carebox.ui.app  # noqa: F401 - the import itself is the point: it overlaps the build
    except BaseException:
        wait()
        raise
    return wait


def _run_ui(session: Any, prepare: Callable[[], None] | None = None, preparing: str = "") -> int:
    from carebox.ui.app import CareboxApp

    _release_gc()
    app = CareboxApp(session, clock=_now, prepare=prepare, preparing=preparing)
    app.run()
    if app.prepare_error is not None:
        raise app.prepare_error
    return EXIT_OK


def cmd_open(args: argparse.Namespace) -> int:
    _hold_gc()
    session, prepare = _open_for_ui(args)
    try:
        return _run_ui(session, prepare, preparing="Unlocking the mailbox...")
    finally:
        session.close()


def _scripted() -> bool:
    """A passphrase for the store comes from the environment (no prompt)."""
    return bool(os.environ.get("CAREBOX_PASSPHRASE") or os.environ.get("CAREBOX_PASSCOMMAND"))


def _key_beside(directory: Path) -> Callable[[], bytes | None] | None:
    """Start unlocking the store's key in a thread, so that its scrypt (n=2^17; it releases the
    GIL) or keychain lookup runs beside the imports that follow. Returns the function that waits
    for the key (re-raising a failure in this thread), or None when nothing was started: there
    is no store, or a passphrase must be typed (the prompt comes first, nothing runs behind it)."""
    from carebox.store.keys import key_info

    info = key_info(directory)
    if info is None:
        return None
    if info.holder == "passphrase" and not info.demo and not _scripted():
        return None
    from carebox.services.background import in_thread
    from carebox.store import keys  # cryptography only: the thread imports nothing more

    return in_thread(lambda: keys.unlock_data_key(directory), "carebox-key").result


def _open_for_ui(args: argparse.Namespace) -> tuple[Any, Callable[[], None] | None]:
    """(session, prepare) for the app. The key is unlocked in a thread beside the config's and
    the UI's imports (see ``_key_beside``) and, while the app starts, ``prepare`` (in the app's thread) waits for
    it and reads the inbox's first page through the sqlite3 driver: the app paints that page and
    opens the store (which imports SQLAlchemy and SQLModel, about half a second) after that first
    frame. Where the first page cannot be read so (a schema or deadlines to update, say), prepare
    opens the store itself. A passphrase to type is asked for here, before the app starts."""
    from carebox.paths import store_dir_hint

    # The key's thread starts before the config is validated (pydantic: ~0.2 s), from the store
    # folder its raw TOML names; the validated config must agree, or the thread starts again.
    hint = store_dir_hint(args.config)
    wait = None
    with contextlib.suppress(Exception):  # an unreadable key file: said below, in one line
        wait = _key_beside(hint) if hint is not None else None
    config = _config(args)
    directory = config.store_dir().expanduser()
    if hint is None or os.path.abspath(hint) != os.path.abspath(directory):
        wait = _key_beside(directory)
    import carebox.ui.app  # noqa: F401 - the import itself is the point: it overlaps the unlock
    from carebox.services.policy import policy_from_config
    from carebox.services.session import Session, defer_open, open_session
    from carebox.store.keys import key_info, unlock_data_key
    from carebox.ui.screens.inbox import PAGE

    info = key_info(directory)
    if info is None:  # no store: open_session says so in one line
        return open_session(config, ask=_ask, store_dir=directory), None
    if wait is None:  # a passphrase to type (three tries), before the app takes the terminal
        key = unlock_data_key(directory, _ask)
        wait = lambda: key  # noqa: E731
    session = Session(config=config, store=None, policy=policy_from_config(config.policy), demo=info.demo)  # type: ignore[arg-type]

    def prepare() -> None:
        data_key = wait()
        if data_key is None or not defer_open(session, data_key=data_key, limit=PAGE, store_dir=directory):
            session.store = open_session(config, ask=None, store_dir=directory, data_key=data_key).store

    return session, prepare


def cmd_import(args: argparse.Namespace) -> int:
    from carebox.services.importer import import_path

    path = Path(args.path)
    from carebox.mail.mailbox import iter_mailbox

    # Check the file before creating or unlocking anything: a typo must write nothing.
    probe = iter_mailbox(path)
    next(probe, None)
    session = _session(args, create=True)
    try:
        from carebox.services.safety import safety_inspector

        inspector = safety_inspector(session.store, session.config, _now())
        report = import_path(session.store, path, session.policy, inspectors=[inspector])
    finally:
        session.close()
    print(report.line())
    return EXIT_OK


def cmd_queue(args: argparse.Namespace) -> int:
    from carebox.services.inbox import queue_json

    session = _session(args)
    try:
        now = _now()
        items = queue_json(session.store, now, include_all=args.all)
    finally:
        session.close()
    if args.json:
        print(json.dumps(items, indent=1, ensure_ascii=False))
        return EXIT_OK
    from carebox.domain.ranking import format_countdown
    from carebox.domain.sanitize import clean_line

    for it in items:
        due = datetime.fromisoformat(it["due"]) if it["due"] else None
        when = format_countdown(due, now) if due else it["state"]
        mark = "URGENT " if it["urgent"] else ""
        print(
            f"{mark}{when:<16} {clean_line(it['patient_name'] or it['patient_address'], 28):<28} "
            f"{clean_line(it['subject'], 60)} ({it['message_count']})"
        )
    if not items:
        print("nothing is waiting for a reply")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from carebox.services.inbox import status

    session = _session(args)
    try:
        info = status(session.store, _now())
    finally:
        session.close()
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    for name, n in info["folders"].items():
        print(f"{name}: {n} messages")
    print(f"threads: {info['threads']}  due: {info['due']}  overdue: {info['overdue']}")
    print(f"outbox waiting: {info['outbox_waiting']}  uncertain: {info['outbox_uncertain']}")
    print(f"last sync: {info['last_sync'] or 'never'}")
    return EXIT_OK


def cmd_login(args: argparse.Namespace) -> int:
    from carebox.store.keys import set_account_password_in_keychain

    cfg = _config(args)
    if cfg.account is None:
        raise UserError("no [account] in the config: copy it from carebox.toml.example", EXIT_USAGE)
    password = os.environ.get("CAREBOX_ACCOUNT_PASSWORD") or _ask(f"Password for {cfg.account.username}: ")
    if not password:
        raise UserError("no password given; nothing was stored")
    if set_account_password_in_keychain(cfg.account.address, password):
        print("password stored in the system keychain")
        return EXIT_OK
    session = _session(args, create=True)
    try:
        session.store.set_secret(f"account:{cfg.account.address}", password)
    finally:
        session.close()
    print("no keychain here: password stored sealed inside the encrypted store")
    return EXIT_OK


def cmd_patients(args: argparse.Namespace) -> int:
    from carebox.services.safety import PatientsCsvError, import_patients_csv

    path = Path(args.file)
    if not path.is_file():  # check before creating or unlocking anything
        raise UserError(f"{path} does not exist or is not a file: check the path", EXIT_USAGE)
    session = _session(args, create=True)
    try:
        report = import_patients_csv(session.store, path, policy=session.policy, config=session.config, now=_now())
    except PatientsCsvError as exc:
        raise UserError(str(exc), EXIT_USAGE) from None
    finally:
        session.close()
    head, *problems = report.lines()
    print(head)
    for line in problems:
        print(line, file=sys.stderr)
    return EXIT_FAIL if problems else EXIT_OK


def cmd_audit(args: argparse.Namespace) -> int:
    from carebox.services.safety import audit_lines, verify_audit

    session = _session(args)
    try:
        if args.audit_command == "verify":
            check = verify_audit(session.store)
        else:
            lines = audit_lines(session.store, args.limit)
    finally:
        session.close()
    if args.audit_command == "verify":
        print(check.line())
        for problem in check.problems:
            print(f"  {problem}")
        return EXIT_OK if check.ok else EXIT_FAIL
    for line in lines:
        print(line)
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    from carebox.services.export import ExportError, export_thread

    session = _session(args)
    try:
        ident = session.config.identity
        paths = export_thread(
            session.store,
            args.thread,
            Path(args.out),
            _now(),
            practice_name=ident.practice_name,
            physician_name=ident.physician_name,
            tz=session.policy.tz,
        )
    except ExportError as exc:
        raise UserError(str(exc)) from None
    finally:
        session.close()
    for path in paths:
        print(path)
    return EXIT_OK


def _age(delta: Any) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 48 * 3600:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


def cmd_outbox(args: argparse.Namespace) -> int:
    from carebox.domain.sanitize import clean_line
    from carebox.services import outbox

    action = args.outbox_command or "list"
    now = _now()
    session = _session(args)
    try:
        if action == "send":
            import asyncio

            report = asyncio.run(outbox.flush(session, now=now))
            print(report.line())
            return EXIT_FAIL if (report.stopped or report.busy) else EXIT_OK
        if action in ("retry", "discard"):
            entry_id = outbox.find_entry(session.store, args.id)
            if action == "retry":
                outbox.retry(session, entry_id, now=now)
                print(f"{entry_id}: queued again; it goes out with the next `carebox outbox send`")
            else:
                outbox.discard(session, entry_id, now=now)
                print(f"{entry_id}: discarded")
            return EXIT_OK
        entries = outbox.list_entries(session.store, None) if args.all else outbox.list_entries(session.store)
    finally:
        session.close()
    if not entries:
        print("the outbox is empty" if args.all else "nothing waiting in the outbox (--all shows sent replies too)")
        return EXIT_OK
    print(f"{'ID':<10}{'STATE':<11}{'KIND':<16}{'TRIES':>5}  {'AGE':<8}{'TO':<38}SUBJECT")
    for e in entries:
        state = e.state
        if state == "queued" and e.next_attempt is not None and e.next_attempt > now:
            state = f"queued, next try in {_age(e.next_attempt - now)}"
        to = f"{e.recipient_name} <{e.recipient_addr}>" if e.recipient_name else e.recipient_addr
        print(
            f"{e.id[:8]:<10}{e.state:<11}{e.kind:<16}{e.attempts:>5}  {_age(e.age(now)):<8}"
            f"{clean_line(to, 36):<38}{clean_line(e.subject, 50)}"
        )
        if state != e.state:
            print(f"{'':<10}{state}")
        if e.error and e.state in ("failed", "uncertain", "queued"):
            print(f"{'':<10}why: {clean_line(e.error, 110)}")
    return EXIT_OK


def _sync_progress() -> tuple[Callable[[Any], None], Callable[[], None]]:
    """A progress display for `carebox sync`: a bar on a terminal, a few plain lines otherwise."""
    if sys.stdout.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            transient=True,
        )
        tasks: dict[str, Any] = {}

        def show(p: Any) -> None:
            if p.phase == "downloading" and p.total:
                if p.folder not in tasks:
                    if not bar.live.is_started:
                        bar.start()
                    tasks[p.folder] = bar.add_task(p.folder, total=p.total)
                bar.update(tasks[p.folder], completed=p.done)

        def stop() -> None:
            if bar.live.is_started:
                bar.stop()

        return show, stop

    last: dict[str, int] = {}

    def plain(p: Any) -> None:
        if p.phase != "downloading" or not p.total:
            return
        step = max(p.total // 10, 1)
        if p.folder not in last:
            print(f"{p.folder}: downloading {p.total} messages", flush=True)
            last[p.folder] = 0
        elif p.done == p.total or p.done - last[p.folder] >= step:
            print(f"{p.folder}: {p.done} of {p.total}", flush=True)
            last[p.folder] = p.done

    return plain, lambda: None


def cmd_sync(args: argparse.Namespace) -> int:
    import asyncio

    from carebox import syncsettings
    from carebox.services.synclock import SyncLock

    report = None
    remembered = syncsettings.recall(args.config)  # the config validated by an earlier sync, unchanged
    if remembered is not None:  # no change: answered without the store, and without pydantic
        from carebox.services.sync import quick_check

        with SyncLock(remembered.store_dir):
            report = asyncio.run(quick_check(remembered, remembered.store_dir))  # type: ignore[arg-type]
    if report is None:
        digest = syncsettings.stamp(args.config)  # before validating (see syncsettings.stamp)
        cfg = _config(args)
        if cfg.account is None:
            raise UserError("no [account] in the config: copy it from carebox.toml.example and fill it in", EXIT_USAGE)
        with SyncLock(cfg.store_dir()):  # a second `carebox sync` says so and exits (SyncBusy)
            directory = cfg.store_dir().expanduser()
            if not (directory / "key.json").exists():  # keys.KEY_FILE (not imported: cryptography, ~20 ms)
                report = _first_sync(cfg, directory)
            else:
                from carebox.services.sync import quick_check, sync_once

                report = None if remembered is not None else asyncio.run(quick_check(cfg, directory))
                if report is None:  # something to do: the key is unlocked beside the ORM's import
                    unlocking = _key_beside(directory)  # None: a passphrase to type (asked in open_session)
                    import carebox.services.threads  # noqa: F401 - the import is the point: it overlaps the scrypt
                    from carebox.services.session import open_session

                    key = unlocking() if unlocking is not None else None
                    session = open_session(cfg, ask=_ask, create=True, store_dir=directory, data_key=key)
                    show, stop = _sync_progress()
                    try:
                        report = asyncio.run(sync_once(session, progress=show, lock=False))
                    finally:
                        stop()
                        session.close()
            syncsettings.remember(cfg, directory, digest)
    print(report.line())
    for notice in report.notices:
        print(f"carebox: {notice}", file=sys.stderr)
    return EXIT_OK


def _first_sync(cfg: Any, directory: Path) -> Any:
    """The first `carebox sync` (no store yet), under the sync lock. Three things overlap: the
    new key is made in a thread (its scrypt releases the GIL), the store's modules (the ORM,
    ~0.5 s) load in another, and the event loop connects, logs in and asks about the first
    folder (``services.sync.sync_new_store``). The key and the store are written only after
    the login succeeded: a refused login, a server that is down or a certificate that is not
    trusted leaves no store behind. A new passphrase that must be typed is asked for first."""
    import asyncio

    from carebox.services.background import in_thread
    from carebox.services.sync import sync_new_store
    from carebox.store import keys

    typed = None
    if not _scripted() and not keys.keychain_available():
        from carebox.services.session import new_passphrase

        typed = new_passphrase(_ask)  # before anything runs behind the prompt

    def make_key() -> Any:
        if typed is not None:
            return keys.new_data_key(passphrase=typed, use_keychain=False)
        if keys.keychain_available():
            return keys.new_data_key(use_keychain=True)
        return keys.new_data_key(passphrase=keys.passphrase_from_env(), use_keychain=False)

    made = in_thread(make_key, "carebox-key")

    def ready() -> None:
        import carebox.services.session  # the store's modules load while the key is made
        import carebox.services.threads  # noqa: F401

        made.result()

    def make_store() -> Any:
        from carebox.services.session import open_session

        data_key = made.result().save(directory)
        return open_session(cfg, ask=None, create=True, store_dir=directory, data_key=data_key)

    show, stop = _sync_progress()
    try:
        return asyncio.run(sync_new_store(cfg, make_store, ready=ready, new_key=made, progress=show))
    finally:
        stop()


def cmd_passphrase(args: argparse.Namespace) -> int:
    """Change the passphrase that wraps the store's key (headless machines)."""
    from carebox.services.safety import record
    from carebox.store.keys import change_passphrase

    session = _session(args)
    try:
        new = os.environ.get("CAREBOX_NEW_PASSPHRASE") or _ask("New passphrase: ")
        if not new:
            raise UserError("no new passphrase given; nothing was changed")
        if "CAREBOX_NEW_PASSPHRASE" not in os.environ and _ask("Repeat the new passphrase: ") != new:
            raise UserError("the passphrases did not match; nothing was changed")
        change_passphrase(session.store_dir, session.store.cipher.data_key(), new)
        record(session.store, "key_change", "passphrase")
    finally:
        session.close()
    print("passphrase changed")
    return EXIT_OK


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "passphrase": cmd_passphrase,
    "demo": cmd_demo,
    "open": cmd_open,
    "import": cmd_import,
    "queue": cmd_queue,
    "status": cmd_status,
    "login": cmd_login,
    "patients": cmd_patients,
    "audit": cmd_audit,
    "export": cmd_export,
    "outbox": cmd_outbox,
    "sync": cmd_sync,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="carebox", description="A terminal inbox for physicians.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $CAREBOX_CONFIG, then the user config)")
    sub = parser.add_subparsers(dest="command")
    p = sub.add_parser("demo", help="open a throwaway encrypted store with a sample practice mailbox")
    p.add_argument("--keep", action="store_true", help="keep the demo store afterwards (its path is printed)")
    p.add_argument("--no-ui", action="store_true", help="build the demo store and print its status only")
    sub.add_parser("open", help="open the inbox (the default)")
    p = sub.add_parser("import", help="load an mbox file or a Maildir into the store")
    p.add_argument("path")
    p = sub.add_parser("queue", help="the ranked queue, as the inbox orders it")
    p.add_argument("--json", action="store_true")
    p.add_argument("--all", action="store_true", help="include answered, redirected and out-of-scope threads")
    p = sub.add_parser("status", help="counts per folder, due, overdue, outbox, last sync")
    p.add_argument("--json", action="store_true")
    sub.add_parser("login", help="store the mail account's password in the keychain")
    sub.add_parser("passphrase", help="change the passphrase that protects the store's key")
    p = sub.add_parser("patients", help="the patient directory")
    psub = p.add_subparsers(dest="patients_command", required=True)
    pi = psub.add_parser("import", help="load patients from a CSV (name,emails,phone,consent_date,last_visit,...)")
    pi.add_argument("file", metavar="FILE.csv")
    p = sub.add_parser("audit", help="the audit trail of actions (opaque ids only)")
    asub = p.add_subparsers(dest="audit_command", required=True)
    asub.add_parser("verify", help="check that no entry was edited, removed or reordered")
    a = asub.add_parser("show", help="list the entries, oldest first")
    a.add_argument("--limit", type=int, metavar="N", help="only the newest N entries")
    p = sub.add_parser("export", help="write a conversation as PDF, text and FHIR JSON for the medical record")
    p.add_argument("thread", metavar="THREAD", help="the thread id (from `carebox queue --json --all`)")
    p.add_argument("--out", metavar="DIR", required=True, help="folder to write to (created if missing)")
    p = sub.add_parser("outbox", help="replies waiting to be sent, and their states")
    p.add_argument("--all", action="store_true", help="include filed and discarded entries")
    osub = p.add_subparsers(dest="outbox_command")
    osub.add_parser("list", help="list the entries (the default)")
    osub.add_parser("send", help="send what is due now and file it in Sent")
    o = osub.add_parser("retry", help="queue an uncertain or failed entry again (your decision)")
    o.add_argument("id", metavar="ID", help="the entry id, or its first characters")
    o = osub.add_parser("discard", help="give up a queued, uncertain or failed entry")
    o.add_argument("id", metavar="ID", help="the entry id, or its first characters")
    sub.add_parser("sync", help="download new mail and flag changes from the server, send local flag changes")
    return parser


def _known_errors() -> tuple[type[BaseException], ...]:
    from carebox.config import ConfigError
    from carebox.store.crypto import DecryptError, Locked
    from carebox.store.keys import KeyProblem
    from carebox.store.migrations import SchemaTooNew
    from carebox.store.store import StoreError

    errors: list[type[BaseException]] = [
        ConfigError,
        KeyProblem,
        StoreError,
        SchemaTooNew,
        DecryptError,
        Locked,
        UserError,
    ]
    try:
        from carebox.services.outbox import OutboxError

        errors.append(OutboxError)
    except ImportError:  # pragma: no cover
        pass
    try:
        from carebox.mail.mailbox import MailboxError

        errors.append(MailboxError)
    except ImportError:  # pragma: no cover
        pass
    from carebox.mail.imap import ImapError
    from carebox.services.accounts import AccountProblem
    from carebox.services.synclock import SyncBusy

    errors += [ImapError, SyncBusy, AccountProblem]
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # nothing carebox writes is readable by others
    parser = build_parser()
    args = parser.parse_args(argv)
    command = COMMANDS[args.command or "open"]
    if not args.command:
        args.command = "open"
    try:
        return command(args)
    except KeyboardInterrupt:
        print("carebox: interrupted; nothing was lost", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the interpreter's flush at exit
        return EXIT_OK
    except Exception as exc:
        if isinstance(exc, _known_errors()):
            from carebox.config import ConfigError  # imported here: pydantic is not needed before

            code = EXIT_USAGE if isinstance(exc, ConfigError) else getattr(exc, "code", EXIT_FAIL)
            print(f"carebox: {exc}", file=sys.stderr)
            return code
        # Unknown: say what kind of failure without its text (which might hold patient data).
        print(
            f"carebox: unexpected error ({type(exc).__name__}); nothing was lost. "
            "Please report it with the command you ran.",
            file=sys.stderr,
        )
        if os.environ.get("CAREBOX_DEBUG") == "1":
            raise
        return EXIT_FAIL
    finally:
        gc.enable()  # a command that failed before the UI started leaves no collector off behind it


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
