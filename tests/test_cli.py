"""The scriptable commands end to end: import, queue, status, demo, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carebox.cli import main

CONFIG = """
[account]
address = "dr.lindqvist@riverside-practice.example"
username = "dr.lindqvist"
[account.imap]
host = "imap.riverside-practice.example"
[account.smtp]
host = "smtp.riverside-practice.example"
[store]
path = "{store}"
"""

MBOX = Path(__file__).resolve().parents[1] / "carebox" / "demo" / "practice.mbox"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "carebox.toml"
    path.write_text(CONFIG.format(store=tmp_path / "store"))
    return path


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_then_queue_and_status(config: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CAREBOX_NOW", "2025-11-03T15:00:00+00:00")  # the bundled mbox's "now"
    code, out, err = run(capsys, "--config", str(config), "import", str(MBOX))
    assert code == 0, err
    assert "read 93 messages: 93 added" in out
    assert "1 malformed" in out
    # Importing again adds nothing.
    code, out, _ = run(capsys, "--config", str(config), "import", str(MBOX))
    assert "0 added, 93 already in the store" in out

    code, out, _ = run(capsys, "--config", str(config), "queue", "--json")
    assert code == 0
    queue = json.loads(out)
    assert len(queue) >= 40
    first = queue[0]
    for key in (
        "thread_id",
        "message_ids",
        "due",
        "seconds_overdue",
        "patient_name",
        "patient_address",
        "subject",
        "message_count",
        "tags",
        "flags",
        "urgent",
        "suggested_tag",
        "sender",
    ):
        assert key in first
    # Ranked: urgent first, then by due time (most overdue on top).
    urgent = [q for q in queue if q["urgent"]]
    assert queue[: len(urgent)] == urgent
    rest = queue[len(urgent) :]
    dues = [q["due"] for q in rest]
    assert dues == sorted(dues)
    assert any(q["seconds_overdue"] > 0 for q in rest)
    assert all(q["message_ids"] for q in queue)

    code, out, _ = run(capsys, "--config", str(config), "queue", "--json", "--all")
    assert len(json.loads(out)) > len(queue)

    code, out, _ = run(capsys, "--config", str(config), "status", "--json")
    info = json.loads(out)
    assert info["messages"] == 93 and info["due"] == len(queue)
    assert info["overdue"] == sum(1 for q in queue if q["seconds_overdue"] > 0)

    code, out, _ = run(capsys, "--config", str(config), "queue")
    assert code == 0 and len(out.splitlines()) == len(queue)
    assert "\x1b" not in out  # hostile subjects are cleaned for the terminal


@pytest.mark.parametrize("target", ["missing.mbox", "a_directory", "not_mail.pdf"])
def test_unreadable_import_is_one_line_and_writes_nothing(config: Path, tmp_path: Path, capsys, target) -> None:
    (tmp_path / "a_directory").mkdir()
    (tmp_path / "not_mail.pdf").write_bytes(b"%PDF-1.4\n" + bytes(range(256)) * 10)
    code, _out, err = run(capsys, "--config", str(config), "import", str(tmp_path / target))
    assert code == 1
    assert err.startswith("carebox: ") and err.count("\n") == 1
    assert "Traceback" not in err
    assert not (tmp_path / "store").exists()


def test_queue_without_a_store_is_one_line(config: Path, capsys) -> None:
    code, _, err = run(capsys, "--config", str(config), "queue")
    assert code == 1
    assert "no store" in err and err.count("\n") == 1


def test_wrong_passphrase_is_one_line_and_changes_nothing(
    config: Path, tmp_path: Path, capsys, monkeypatch, no_keychain
) -> None:
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "the right passphrase")
    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    files = {p: p.read_bytes() for p in (tmp_path / "store").iterdir() if p.is_file()}
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "a wrong passphrase")
    code, _, err = run(capsys, "--config", str(config), "status")
    assert code == 1
    assert "wrong passphrase" in err and err.count("\n") == 1
    assert {p: p.read_bytes() for p in (tmp_path / "store").iterdir() if p.is_file()} == files


def test_broken_mime_is_kept_raw_and_flagged(config: Path, tmp_path: Path, capsys) -> None:
    broken = (
        b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n"
        b"From: Broken Sender <broken@mail.example>\nTo: dr.lindqvist@riverside-practice.example\n"
        b'Subject: broken\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary="nope"\n\n'
        b"--wrong\nContent-Transfer-Encoding: base64\n\n!!!not base64\n"
    )
    path = tmp_path / "broken.mbox"
    path.write_bytes(broken)
    code, out, err = run(capsys, "--config", str(config), "import", str(path))
    assert code == 0, err
    assert "1 added" in out and "1 malformed" in out


def test_demo_builds_an_encrypted_store(capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, err = run(capsys, "demo", "--no-ui")
    assert code == 0, err
    info = json.loads(out)
    assert info["threads"] >= 60
    assert info["due"] > 0 and info["overdue"] > 0
    # The throwaway store is removed afterwards.
    assert not list(tmp_path.glob("carebox-demo-*"))


def test_no_patient_data_in_any_file_carebox_writes(config: Path, tmp_path: Path, capsys) -> None:
    """Import through the real parser and store, use the read commands, then look at every file
    under the test's folders (store, config and data dirs) except the input mailbox itself."""
    markers = ["Zqxmarkersubject", "Zqxmarkerbody", "Zqxmarkername", "zqxmarker@mail.example"]
    mbox = tmp_path / "in.mbox"
    mbox.write_bytes(
        b"From zqxmarker@mail.example Mon Nov  3 10:00:00 2025\n"
        b"From: Zqxmarkername Patient <zqxmarker@mail.example>\n"
        b"To: dr.lindqvist@riverside-practice.example\nSubject: Zqxmarkersubject\n"
        b"Message-ID: <zqxmarker.1@mail.example>\nDate: Mon, 03 Nov 2025 10:00:00 +0000\n\n"
        b"Zqxmarkerbody text\n"
    )
    assert run(capsys, "--config", str(config), "import", str(mbox))[0] == 0
    _code, out, _ = run(capsys, "--config", str(config), "queue", "--json")
    assert "Zqxmarkersubject" in out  # shown to the user on request...
    run(capsys, "--config", str(config), "status")
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p not in (mbox, config)]
    assert any(p.name == "carebox.db" for p in written)
    for p in written:
        data = p.read_bytes()
        for marker in markers:
            assert marker.encode() not in data, f"{marker} in {p.relative_to(tmp_path)}"  # ...never stored in clear


def test_passphrase_change_is_audited(config: Path, capsys, monkeypatch, no_keychain) -> None:
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "first passphrase")
    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    monkeypatch.setenv("CAREBOX_NEW_PASSPHRASE", "second passphrase")
    code, out, err = run(capsys, "--config", str(config), "passphrase")
    assert code == 0, err
    monkeypatch.delenv("CAREBOX_NEW_PASSPHRASE")
    assert run(capsys, "--config", str(config), "status")[0] == 1  # the old one no longer opens it
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "second passphrase")
    code, out, _ = run(capsys, "--config", str(config), "audit", "show")
    assert code == 0 and "key_change" in out
    assert run(capsys, "--config", str(config), "audit", "verify")[0] == 0


@pytest.mark.parametrize("keychain", [True, False], ids=["keychain", "passphrase"])
def test_open_unlocks_beside_the_ui_import_and_runs_the_ui(
    config: Path, capsys, monkeypatch, request, keychain: bool
) -> None:
    import carebox.cli as cli

    if not keychain:
        request.getfixturevalue("no_keychain")
        monkeypatch.setenv("CAREBOX_PASSPHRASE", "the right passphrase")
    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    seen: list[object] = []

    def fake_ui(session, prepare=None, preparing="") -> int:  # the app itself is tested in tests/ui
        assert prepare is not None and not session.is_open
        prepare()  # the app runs it in a thread while it starts
        # the first page was read without the ORM, the store is left for after the first frame
        assert session.first_page is not None and len(session.first_page.rows) >= 40
        assert not session.is_open
        seen.append(session.store.all_thread_ids())  # opened on first use
        return 0

    monkeypatch.setattr(cli, "_run_ui", fake_ui)
    code, _, err = run(capsys, "--config", str(config), "open")
    assert code == 0, err
    assert len(seen) == 1 and len(seen[0]) >= 60  # the store was open and readable in the UI's thread


def test_open_with_a_wrong_scripted_passphrase_is_one_line(
    config: Path, tmp_path: Path, capsys, monkeypatch, no_keychain
) -> None:
    import carebox.cli as cli

    monkeypatch.setenv("CAREBOX_PASSPHRASE", "the right passphrase")
    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "a wrong passphrase")
    sessions: list[object] = []

    def fake_ui(session, prepare=None, preparing="") -> int:  # the app raises prepare's error after it exits
        sessions.append(session)
        assert prepare is not None
        prepare()
        pytest.fail("prepare opened a store with a wrong passphrase")

    monkeypatch.setattr(cli, "_run_ui", fake_ui)
    files = {p: p.read_bytes() for p in (tmp_path / "store").iterdir() if p.is_file()}
    code, _, err = run(capsys, "--config", str(config), "open")
    assert code == 1
    assert "wrong passphrase" in err and err.count("\n") == 1 and "Traceback" not in err
    assert {p: p.read_bytes() for p in (tmp_path / "store").iterdir() if p.is_file()} == files
    assert len(sessions) == 1 and not sessions[0].is_open and sessions[0].first_page is None


def test_open_without_a_store_is_one_line(config: Path, capsys) -> None:
    code, _, err = run(capsys, "--config", str(config), "open")
    assert code == 1
    assert "no store" in err and err.count("\n") == 1


def test_a_demo_build_failing_in_its_child_process_is_one_line(tmp_path: Path, monkeypatch) -> None:
    import threading

    import carebox.cli as cli

    monkeypatch.setattr(threading, "active_count", lambda: 1)  # take the fork path under pytest too
    (tmp_path / "store").write_text("a file where the store's folder goes")
    wait = cli._build_demo_beside_ui_import(tmp_path)
    assert wait is not None
    with pytest.raises(cli.UserError) as caught:
        wait()
    assert str(caught.value) == "the demo store could not be built (FileExistsError)"


def test_a_failed_open_leaves_the_garbage_collector_on(config: Path, capsys) -> None:
    import gc

    assert run(capsys, "--config", str(config), "open")[0] == 1  # no store: fails after holding the collector
    assert gc.isenabled()


def test_key_beside_unlocks_the_key_in_a_thread(tmp_path: Path, monkeypatch, request) -> None:
    import carebox.cli as cli
    from carebox.store.keys import create_data_key

    key = create_data_key(tmp_path / "a")  # the (test) keychain holds it
    unlocking = cli._key_beside(tmp_path / "a")
    assert unlocking is not None and unlocking() == key
    assert cli._key_beside(tmp_path / "missing") is None  # opening a store that is not there: nothing started

    request.getfixturevalue("no_keychain")
    key_c = create_data_key(tmp_path / "c", passphrase="the right passphrase", scrypt_n=2**12)
    # an existing passphrase store without a scripted passphrase: the prompt comes first, no thread
    assert cli._key_beside(tmp_path / "c") is None
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "the right passphrase")
    scripted = cli._key_beside(tmp_path / "c")
    assert scripted is not None and scripted() == key_c
    # a wrong scripted passphrase fails in the caller's thread, in one line
    monkeypatch.setenv("CAREBOX_PASSPHRASE", "a wrong passphrase")
    wrong = cli._key_beside(tmp_path / "c")
    assert wrong is not None
    with pytest.raises(Exception, match="wrong passphrase"):
        wrong()


def test_first_sync_without_a_password_or_passphrase_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys, monkeypatch, request
) -> None:
    """No server is reached: the account has no password (a new store cannot hold one), or no
    passphrase can be had on a headless machine; both are said before anything is written."""
    path = tmp_path / "carebox.toml"
    path.write_text(
        CONFIG.replace("[account.imap]", 'password_command = "true"\n[account.imap]').format(store=tmp_path / "store")
    )
    code, _, err = run(capsys, "--config", str(path), "sync")
    assert code == 1 and err.startswith("carebox: no password for the mail account") and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["sync.lock"]

    request.getfixturevalue("no_keychain")
    monkeypatch.setattr("carebox.cli._ask", lambda prompt: None)  # no terminal
    code, _, err = run(capsys, "--config", str(path), "sync")
    assert code == 1 and "a passphrase is needed" in err and err.count("\n") == 1
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["sync.lock"]


def test_open_reads_its_first_page_before_the_orm_is_imported(config: Path, capsys, monkeypatch, no_keychain) -> None:
    """In a fresh interpreter: `carebox open` up to its first page (the key, the UI's modules,
    prepare) imports neither SQLAlchemy nor SQLModel: they load after the first frame."""
    import subprocess
    import sys

    monkeypatch.setenv("CAREBOX_PASSPHRASE", "the right passphrase")
    assert run(capsys, "--config", str(config), "status")[0] == 1  # no store yet
    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    assert run(capsys, "--config", str(config), "status")[0] == 0  # opened once: its policy is on file
    code = (
        "import argparse, sys\n"
        "import carebox.cli as cli\n"
        f"session, prepare = cli._open_for_ui(argparse.Namespace(config={str(config)!r}))\n"
        "prepare()\n"
        "orm = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'sqlmodel'))\n"
        "print(len(session.first_page.rows), session.first_page.total, session.is_open, orm)\n"
        "print(len(session.store.all_thread_ids()), session.is_open, 'sqlalchemy' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    first, second = out.stdout.splitlines()
    rows, total, is_open, orm = first.split(" ", 3)
    assert int(rows) >= 40 and int(total) >= int(rows) and is_open == "False" and orm == "[]"
    threads, is_open, imported = second.split()
    assert int(threads) >= 60 and is_open == "True" and imported == "True"


def test_open_with_a_changed_policy_opens_the_store_before_painting(config: Path, capsys, monkeypatch) -> None:
    """The stored deadlines were computed under another response window: no first page is read
    through the driver (its order would be stale); prepare opens the store, which computes them again."""
    import carebox.cli as cli
    from carebox.services.inbox import status

    assert run(capsys, "--config", str(config), "import", str(MBOX))[0] == 0
    assert run(capsys, "--config", str(config), "status")[0] == 0
    config.write_text(config.read_text() + "[policy]\nresponse_hours = 4\n")
    seen: list[object] = []

    def fake_ui(session, prepare=None, preparing="") -> int:
        prepare()
        seen.append((session.first_page, session.is_open, status(session.store, cli._now())["overdue"]))
        return 0

    monkeypatch.setattr(cli, "_run_ui", fake_ui)
    assert run(capsys, "--config", str(config), "open")[0] == 0
    first_page, is_open, overdue = seen[0]  # type: ignore[misc]
    assert first_page is None and is_open and overdue > 0
