"""Safety use cases over a real store: the inspector through rethread, the queue fields, the
thread view explanation, the patient CSV import and the audit use cases."""

from __future__ import annotations

import dataclasses
import re
from concurrent.futures import Executor, Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from carebox.config import Config, IdentityConfig, PolicyConfig, TriageConfig
from carebox.domain.models import Address
from carebox.services.inbox import queue_json
from carebox.services.safety import (
    PatientError,
    PatientsCsvError,
    apply_patient,
    audit_lines,
    badge,
    delete_patient,
    import_patients_csv,
    make_patient,
    patient_from_form,
    patients,
    record,
    refresh_safety,
    remove_patient,
    safety_inspector,
    save_patient,
    thread_safety,
    verify_audit,
)
from carebox.services.threads import policy_from_config, rethread
from carebox.store import audit
from carebox.store.crypto import Cipher
from carebox.store.store import NewMessage, Store
from tests.factories import BASE, DOC, DOCTOR, message

CONFIG = Config(
    identity=IdentityConfig(physician_name="Dr. Maya Lindqvist", practice_name="Riverside Family Practice"),
    policy=PolicyConfig(response_hours=48, category_hours={"results": 24}),
    triage=TriageConfig(red_flags=("Brustschmerz",)),
)
POLICY = policy_from_config(CONFIG.policy)
NOW = BASE + timedelta(hours=1)

CSV = """name,emails,phone,consent_date,last_visit,next_visit
Anna Berg,anna.berg@mail.example;anna@work.example,+1 555 0101,2025-01-05,2026-10-01,
Olaf Svensson,olaf@mail.example,,,2026-09-01,
Old Patient,old@mail.example,,2020-01-01,2019-05-05,
"""

ANNA = Address("Anna Berg", "anna.berg@mail.example")
OLAF = Address("Olaf Svensson", "olaf@mail.example")
OLD = Address("Old Patient", "old@mail.example")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "store", Cipher(b"s" * 32), professional=DOCTOR, create=True)
    yield s
    s.close()


@pytest.fixture
def directory(store: Store, tmp_path: Path) -> Store:
    path = tmp_path / "patients.csv"
    path.write_text(CSV, encoding="utf-8")
    report = import_patients_csv(store, path, now=NOW)
    assert (report.added, report.updated, report.problems) == (3, 0, [])
    return store


def add(store: Store, msgid: str, sender: Address, body: str, *, subject: str = "Question", **kw: object) -> None:
    extra = {k: kw.pop(k) for k in ("reply_to", "auth_results") if k in kw}
    m = message(msgid, sender=sender, to=DOC, subject=subject, body=body, **kw)  # type: ignore[arg-type]
    if extra:
        m = NewMessage(raw=m.raw, parsed=dataclasses.replace(m.parsed, **extra), uid=m.uid)
    store.add_messages("INBOX", [m])


def sync(store: Store) -> set[str]:
    return rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)])


def by_msgid(store: Store) -> dict[str, dict]:
    items = queue_json(store, NOW, include_all=True)
    return {it["message_ids"][0]: it for it in items}


# --- the inspector through rethread -----------------------------------------------------------------


def test_queue_fields_urgent_sender_and_suggestion(directory: Store) -> None:
    store = directory
    add(store, "u1@x", ANNA, "Since an hour I have chest pain and my arm feels weak.", hours=-5)
    add(store, "r1@x", ANNA, "Could you renew my prescription for the inhaler?", subject="Refill", hours=-20)
    add(store, "n1@x", OLAF, "Is it okay to take ibuprofen?", hours=-10)
    add(store, "s1@x", Address("Stranger", "who@else.example"), "Hello, a question.", hours=-30)
    add(store, "o1@x", OLD, "A general question about vitamins.", hours=-40)
    add(store, "w1@x", ANNA, "Please answer here", reply_to=(Address("", "collect@other.example"),), hours=-50)
    add(store, "d1@x", Address("Brother", "bro@else.example"), "Seit heute Brustschmerzen", hours=-3)
    sync(store)
    q = by_msgid(store)
    assert (q["u1@x"]["urgent"], q["u1@x"]["suggested_tag"], q["u1@x"]["sender"]) == (
        True,
        "redirect:phone",
        "verified",
    )
    assert (q["r1@x"]["urgent"], q["r1@x"]["suggested_tag"]) == (False, "refill")
    assert (q["n1@x"]["sender"], q["n1@x"]["suggested_tag"]) == ("no_consent", None)
    assert q["s1@x"]["sender"] == "unknown"
    assert (q["o1@x"]["sender"], q["o1@x"]["suggested_tag"]) == ("verified", "free_advice")
    assert q["w1@x"]["sender"] == "warning"
    assert q["d1@x"]["urgent"] is True  # a phrase from triage.red_flags
    order = [it["message_ids"][0] for it in queue_json(store, NOW)]
    assert set(order[:2]) == {"u1@x", "d1@x"}  # urgent threads first, then by due time
    assert order[2] == "w1@x"


def test_answered_thread_is_no_longer_urgent_and_quotes_do_not_flag(directory: Store) -> None:
    store = directory
    add(store, "u1@x", ANNA, "I have chest pain", uid=1)
    sync(store)
    assert by_msgid(store)["u1@x"]["urgent"] is True
    store.add_messages(
        "INBOX",
        [message("a1@x", sender=DOC, to=ANNA, body="Please call now.", hours=1, in_reply_to="u1@x", uid=2)],
    )
    sync(store)
    item = by_msgid(store)["u1@x"]
    assert (item["urgent"], item["state"], item["sender"]) == (False, "answered", "verified")
    store.add_messages(
        "INBOX",
        [
            message(
                "f1@x", sender=ANNA, to=DOC, body="Thanks, better now.\n> I have chest pain", hours=2,
                in_reply_to="a1@x", uid=3,
            )
        ],
    )  # fmt: skip
    sync(store)
    item = by_msgid(store)["u1@x"]
    assert (item["urgent"], item["state"]) == (False, "waiting")


def test_results_question_gets_the_results_window(directory: Store) -> None:
    store = directory
    add(store, "lab@x", ANNA, "Are my blood test results back yet?")
    add(store, "other@x", ANNA, "Is swimming fine for my back?", subject="Swimming", hours=0.5)
    sync(store)
    q = by_msgid(store)
    assert datetime.fromisoformat(q["lab@x"]["due"]) == BASE + timedelta(hours=24)
    assert datetime.fromisoformat(q["other@x"]["due"]) == BASE + timedelta(hours=48.5)


def test_personal_account_suggestion(directory: Store) -> None:
    add(directory, "p1@x", ANNA, "I first wrote to your personal email but got no answer.")
    sync(directory)
    assert by_msgid(directory)["p1@x"]["suggested_tag"] == "personal_account"
    cfg = Config(identity=IdentityConfig(practice_name="Riverside Family Practice"))
    safety = thread_safety(directory, directory.all_thread_ids()[0], cfg, NOW)
    assert safety.suggested_template == "professional_address"


def test_directory_import_refreshes_existing_threads(store: Store, tmp_path: Path) -> None:
    add(store, "a@x", ANNA, "hello")
    sync(store)
    assert by_msgid(store)["a@x"]["sender"] == "unknown"
    path = tmp_path / "p.csv"
    path.write_text(CSV, encoding="utf-8")
    import_patients_csv(store, path, policy=POLICY, config=CONFIG, now=NOW)
    assert by_msgid(store)["a@x"]["sender"] == "verified"


def test_patient_edit_refreshes_that_patients_threads(directory: Store) -> None:
    add(directory, "n1@x", OLAF, "a question")
    sync(directory)
    olaf = next(p for p in patients(directory) if p.name == "Olaf Svensson")
    edited = make_patient(
        olaf.name, olaf.emails, consent_date="2026-11-01", last_visit="2026-09-01", patient_id=olaf.id
    )
    save_patient(directory, edited, policy=POLICY, config=CONFIG, now=NOW)
    assert by_msgid(directory)["n1@x"]["sender"] == "verified"
    assert delete_patient(directory, olaf.id, policy=POLICY, config=CONFIG, now=NOW)
    assert by_msgid(directory)["n1@x"]["sender"] == "unknown"
    anna = next(p for p in patients(directory) if p.name == "Anna Berg")
    with pytest.raises(PatientError, match="already on file"):
        save_patient(directory, make_patient("Someone", [anna.emails[0]]))
    actions = [e.action for e in audit.entries(directory)]
    assert actions == ["patients_import", "patient_edit", "patient_delete"]


def test_ui_edit_add_and_remove_refresh_just_the_threads_of_that_patient(directory: Store) -> None:
    add(directory, "n1@x", OLAF, "a question")
    add(directory, "a1@x", ANNA, "another question")
    add(directory, "z1@x", Address("Zoe New", "zoe@mail.example"), "first mail")
    sync(directory)
    ids = {k: v["thread_id"] for k, v in by_msgid(directory).items()}
    assert by_msgid(directory)["z1@x"]["sender"] == "unknown"
    zoe = patient_from_form("Zoe New", " zoe@mail.example , zoe@work.example;zoe@home.example")
    assert zoe.emails == ("zoe@mail.example", "zoe@work.example", "zoe@home.example")
    change = apply_patient(directory, zoe, policy=POLICY, config=CONFIG, now=NOW)
    assert change.added and change.patient is not None and change.patient.id
    assert change.thread_ids == (ids["z1@x"],)
    assert by_msgid(directory)["z1@x"]["sender"] == "no_consent"
    olaf = next(p for p in patients(directory) if p.name == "Olaf Svensson")
    edited = patient_from_form(olaf.name, ", ".join(olaf.emails), consent_date="01.11.2026", patient_id=olaf.id)
    change = apply_patient(directory, edited, policy=POLICY, config=CONFIG, now=NOW)
    assert not change.added and change.thread_ids == (ids["n1@x"],)
    assert by_msgid(directory)["n1@x"]["sender"] == "verified"
    # an edit that moves the patient to another address refreshes the old address's threads too
    moved = patient_from_form(olaf.name, "olaf@new.example", consent_date="2026-11-01", patient_id=olaf.id)
    assert apply_patient(directory, moved, policy=POLICY, config=CONFIG, now=NOW).thread_ids == (ids["n1@x"],)
    # (the old address now mails under the name of a patient on file with another address)
    assert by_msgid(directory)["n1@x"]["sender"] == "warning"
    assert by_msgid(directory)["a1@x"]["sender"] == "verified"  # untouched
    assert remove_patient(directory, "not-on-file", policy=POLICY, config=CONFIG, now=NOW) is None
    zoe_id = next(p.id for p in patients(directory) if p.name == "Zoe New")
    change = remove_patient(directory, zoe_id, policy=POLICY, config=CONFIG, now=NOW)
    assert change is not None and change.patient is None and change.thread_ids == (ids["z1@x"],)
    assert by_msgid(directory)["z1@x"]["sender"] == "unknown"
    entries = [(e.action, e.ref) for e in audit.entries(directory)][1:]
    olaf_id = olaf.id
    assert entries == [
        ("patient_add", zoe_id),
        ("patient_edit", olaf_id),
        ("patient_edit", olaf_id),
        ("patient_delete", zoe_id),
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": " "}, "name: missing"),
        (
            {"emails": "a@x.example, not-an-address"},
            "emails: address 2 is not an email address (separate several with ',' or ';')",
        ),
        ({"emails": " , "}, "emails: at least one address is needed"),
        ({"phone": "call me"}, "phone: use digits"),
        ({"consent_date": "2026-13-01"}, "consent_date: expected a date like 2026-03-31"),
        ({"next_visit": "tomorrow"}, "next_visit: expected a date"),
    ],
)
def test_form_errors_are_one_line_naming_the_field_never_the_value(fields: dict, message: str) -> None:
    values = {"name": "Zoe", "emails": "zoe@mail.example", **fields}
    with pytest.raises(PatientError) as info:
        patient_from_form(**values)
    assert str(info.value).startswith(message)
    assert "\n" not in str(info.value) and "not-an-address" not in str(info.value) and "tomorrow" not in str(info.value)


def test_ui_edit_that_takes_another_patients_address_writes_nothing(directory: Store) -> None:
    before = patients(directory)
    entries = len(audit.entries(directory))
    with pytest.raises(PatientError, match="already on file"):
        apply_patient(directory, patient_from_form("Someone", "olaf@mail.example"), policy=POLICY, now=NOW)
    assert patients(directory) == before and len(audit.entries(directory)) == entries


# --- the thread view ----------------------------------------------------------------------------------


def test_thread_safety_explains_a_warning(directory: Store) -> None:
    add(
        directory,
        "w@x",
        Address("Anna\r\nBerg", "anna.berg@mail.example"),
        "My throat is swelling after the new tablets",
        reply_to=(Address("", "collect@other.example"),),
        auth_results="mx; dkim=fail header.d=mail.example",
    )
    sync(directory)
    (tid,) = directory.all_thread_ids()
    s = thread_safety(directory, tid, CONFIG, NOW)
    assert s.status is not None and s.status.value == "warning"
    assert s.badge == ("check sender", "danger") == badge("warning")
    assert s.urgent and s.banner.startswith("URGENT") and "throat swelling" in s.banner
    assert (s.suggested_tag, s.suggested_template) == ("redirect:phone", "phone")
    text = "\n".join(s.sender_lines)
    assert "on file for Anna Berg" in text and "collect@other.example" in text and "dkim" in text
    assert all("\r" not in line and "\n" not in line for line in s.sender_lines)
    assert s.reply is not None and s.reply.address == "anna.berg@mail.example" and s.reply.needs_confirmation
    question = s.reply.confirmation("collect@other.example")
    assert question and "anna.berg@mail.example" in question and "collect@other.example" in question


def test_thread_safety_no_consent_offers_the_consent_template(directory: Store) -> None:
    add(directory, "n@x", OLAF, "Is ibuprofen fine?")
    sync(directory)
    (tid,) = directory.all_thread_ids()
    s = thread_safety(directory, tid, CONFIG, NOW)
    assert (s.status.value if s.status else None, s.suggested_template, s.urgent, s.banner) == (
        "no_consent",
        "consent",
        False,
        "",
    )
    assert "no email consent" in s.sender_lines[0]


def test_display_name_of_the_physician_from_outside(directory: Store) -> None:
    add(directory, "f@x", Address("Dr. Maya Lindqvist", "maya.lindqvist@freemail.example"), "Please pay this invoice")
    sync(directory)
    (tid,) = directory.all_thread_ids()
    s = thread_safety(directory, tid, CONFIG, NOW)
    assert s.badge[0] == "check sender"
    assert any("names the physician" in line for line in s.sender_lines)


def test_refresh_safety_all(directory: Store) -> None:
    add(directory, "a@x", ANNA, "hello")
    rethread(directory, POLICY)  # threaded without the inspector
    assert by_msgid(directory)["a@x"]["sender"] is None
    assert refresh_safety(directory, POLICY, CONFIG, NOW) == 1
    assert by_msgid(directory)["a@x"]["sender"] == "verified"


# --- patient CSV import -------------------------------------------------------------------------------


def test_csv_bad_rows_by_line_number_good_rows_load(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text(
        "\ufeffName,Emails,Phone,Consent_Date,Last_Visit,Next_Visit\n"  # BOM and capitals (Excel)
        "Good One,good1@mail.example,,2025-01-01,,\n"
        ",nobody@mail.example,,,,\n"
        "No Mail,,,,,\n"
        "Bad Mail,not-an-address,,,,\n"
        "Bad Date,bd@mail.example,,31/02/2025,,\n"
        "\n"
        '"Quoted, Name",quoted@mail.example;q2@mail.example,+49 (30) 123-45,01.02.2025,,2027-01-01\n'
        "Dup Mail,q2@mail.example,,,,\n"
        "Bad Phone,bp@mail.example,call me,,,\n"
        "Too,many@mail.example,,,,,extra\n",
        encoding="utf-8",
    )
    report = import_patients_csv(store, path, now=NOW)
    assert (report.added, report.updated) == (2, 0)
    assert report.problems == [
        (3, "name: missing"),
        (4, "emails: at least one address is needed"),
        (5, "emails: address 1 is not an email address (separate several with ';')"),
        (6, "consent_date: expected a date like 2026-03-31 (or 31.03.2026)"),
        (9, "emails: address 1 is also on line 8; an address belongs to one patient"),
        (10, "phone: use digits, spaces and + ( ) - / . only"),
        (11, "7 fields but the header names 6: quote fields with commas"),
    ]
    lines = report.lines()
    assert lines[0] == "patients: 2 added, 0 updated, 7 rows skipped" and lines[1].startswith("line 3:")
    quoted = next(p for p in patients(store) if p.name == "Quoted, Name")
    assert quoted.emails == ("quoted@mail.example", "q2@mail.example")
    assert str(quoted.consent_date) == "2025-02-01" and str(quoted.next_visit) == "2027-01-01"
    assert not any("mail.example" in e.ref or " " in e.ref for e in audit.entries(store))


def test_csv_reimport_updates_instead_of_duplicating(directory: Store, tmp_path: Path) -> None:
    path = tmp_path / "again.csv"
    path.write_text(CSV.replace("+1 555 0101", "+1 555 0199"), encoding="utf-8")
    report = import_patients_csv(directory, path, now=NOW)
    assert (report.added, report.updated, report.problems) == (0, 3, [])
    assert len(patients(directory)) == 3
    assert next(p for p in patients(directory) if p.name == "Anna Berg").phone == "+1 555 0199"


def test_csv_row_joining_two_known_patients_is_refused(directory: Store, tmp_path: Path) -> None:
    path = tmp_path / "merge.csv"
    path.write_text("name,emails\nMerged,anna@work.example;olaf@mail.example\n", encoding="utf-8")
    report = import_patients_csv(directory, path, now=NOW)
    assert report.problems == [(2, "emails: the addresses belong to different patients already on file")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "is empty"),
        (b"name;emails;phone\nA;a@b.example;1\n", "use ','"),
        (b"fullname,mail\n", "lacks the column(s) name, emails"),
        (b"name,emails\n\xff\xfe,bad\n", "not UTF-8"),
    ],
)
def test_csv_unusable_file_is_one_line(store: Store, tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(content)
    with pytest.raises(PatientsCsvError, match=re.escape(message)):
        import_patients_csv(store, path, now=NOW)
    assert patients(store) == []


def test_csv_missing_file(store: Store, tmp_path: Path) -> None:
    with pytest.raises(PatientsCsvError, match="does not exist"):
        import_patients_csv(store, tmp_path / "missing.csv", now=NOW)


# --- audit use cases -----------------------------------------------------------------------------------


def test_record_accepts_opaque_ids_only(store: Store) -> None:
    record(store, "view", "0123abcd", NOW)
    record(store, "reply", ["t1", "o2"], NOW + timedelta(seconds=1))
    record(store, "lock", now=NOW + timedelta(seconds=2))
    for bad in ("anna@mail.example", "Re: chest pain", "/home/doc/export", "x" * 201):
        with pytest.raises(ValueError, match="opaque"):
            record(store, "view", bad, NOW)
    with pytest.raises(ValueError, match="unknown audit action"):
        record(store, "peek", "t1", NOW)
    assert verify_audit(store).ok
    assert audit_lines(store) == [
        "     1  2026-11-02 10:00:00Z  view            0123abcd",
        "     2  2026-11-02 10:00:01Z  reply           t1,o2",
        "     3  2026-11-02 10:00:02Z  lock            ",
    ]
    assert audit_lines(store, limit=1) == ["     3  2026-11-02 10:00:02Z  lock            "]


def test_inspector_without_incoming_mail(store: Store) -> None:
    store.add_messages("INBOX", [message("out@x", sender=DOC, to=ANNA, body="Your results are fine.")])
    sync(store)
    (item,) = queue_json(store, NOW, include_all=True)
    assert (item["sender"], item["urgent"], item["suggested_tag"]) == (None, False, None)


def test_now_defaults(store: Store) -> None:
    inspector = safety_inspector(store)
    assert abs(inspector.now - datetime.now(UTC)) < timedelta(minutes=1)


# --- the CLI commands ------------------------------------------------------------------------------------


def test_cli_patients_audit_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from carebox.cli import main

    cfg = tmp_path / "carebox.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path / "store"}"\n', encoding="utf-8")
    monkeypatch.setenv("CAREBOX_NOW", "2026-11-02T10:00:00+00:00")
    csv_path = tmp_path / "p.csv"
    csv_path.write_text(CSV + "Broken,,,,,\n", encoding="utf-8")
    assert main(["--config", str(cfg), "patients", "import", str(tmp_path / "nope.csv")]) == 2
    assert not (tmp_path / "store").exists()  # a typo creates nothing
    assert "nope.csv does not exist" in capsys.readouterr().err
    assert main(["--config", str(cfg), "patients", "import", str(csv_path)]) == 1  # one row skipped
    out = capsys.readouterr()
    assert out.out.strip() == "patients: 3 added, 0 updated, 1 rows skipped"
    assert out.err.strip() == "line 5: emails: at least one address is needed"

    assert main(["--config", str(cfg), "export", "nosuchthread", "--out", str(tmp_path / "out")]) == 1
    assert "no conversation" in capsys.readouterr().err
    assert main(["--config", str(cfg), "audit", "verify"]) == 0
    assert capsys.readouterr().out.startswith("audit trail intact: 1 entries")
    assert main(["--config", str(cfg), "audit", "show"]) == 0
    assert "patients_import added=3,updated=0" in capsys.readouterr().out

    import sqlite3

    conn = sqlite3.connect(tmp_path / "store" / "carebox.db")
    with conn:
        conn.execute("UPDATE audit SET action='view'")
    conn.close()
    assert main(["--config", str(cfg), "audit", "verify"]) == 1
    assert "entry 1 fails its MAC" in capsys.readouterr().out


def test_mail_through_the_physicians_personal_alias(directory: Store) -> None:
    from carebox.domain.safety import Practice
    from carebox.services.safety import SafetyInspector, SafetySettings

    alias = Address("Maya", "maya.private@home.example")
    store = directory
    store.add_messages("INBOX", [message("al@x", sender=ANNA, to=alias, body="Quick question about my knee.")])
    settings = SafetySettings(practice=Practice(address=DOCTOR, personal_addresses=(alias.addr,)))
    inspector = SafetyInspector.load(store, settings, NOW)
    rethread(store, POLICY, [inspector])
    assert by_msgid(store)["al@x"]["suggested_tag"] == "personal_account"
    (tid,) = store.all_thread_ids()
    assert inspector.assess(store, tid).suggested_template == "professional_address"


# --- speed paths: same answers -----------------------------------------------------------------------


def _threads(store: Store) -> dict[str, list]:
    ids = store.all_thread_ids()
    keys = store.thread_message_keys(ids)
    refs = {r.key: r for r in store.refs_of_threads(ids)}
    return {tid: [refs[k] for k in keys[tid]] for tid in ids}


def test_prefetch_reads_ahead_in_windows_with_the_same_answers(
    directory: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from carebox.services import safety as service
    from carebox.store import patients as patient_store

    store = directory
    senders = [ANNA, OLAF, OLD, Address("Stranger", "who@else.example"), Address("Anna Berg", "anna@rnail.example")]
    bodies = ["I have chest pain", "renew my prescription", "hello", "are my blood test results back?", "thanks"]
    for i in range(40):
        add(store, f"p{i}@x", senders[i % 5], bodies[i % 5] + f" ({i})", hours=-i)
        if i % 3 == 0:  # some threads answered: only their sender is read
            store.add_messages(
                "INBOX", [message(f"a{i}@x", sender=DOC, to=senders[i % 5], hours=-i + 0.5, in_reply_to=f"p{i}@x")]
            )
    rethread(store, POLICY)
    by_thread = _threads(store)
    plain = service.safety_inspector(store, CONFIG, NOW)
    expected = {tid: plain(store, tid, refs, {}) for tid, refs in by_thread.items()}
    assert sum(1 for x in expected.values() if x["urgent"]) == 5  # 8 with chest pain, 3 of them answered
    assert {x["sender_status"] for x in expected.values()} == {"verified", "no_consent", "unknown", "warning"}

    calls: list[tuple[int, bool]] = []
    real = patient_store.load_messages

    def counting(store: Store, ids: list[str], *, bodies: bool = True) -> dict:
        calls.append((len(ids), bodies))
        return real(store, ids, bodies=bodies)

    monkeypatch.setattr(patient_store, "load_messages", counting)
    monkeypatch.setattr(service, "PREFETCH_MESSAGES", 10)
    ahead = service.safety_inspector(store, CONFIG, NOW)
    ahead.prefetch(store, by_thread)
    got = {tid: ahead(store, tid, refs, {}) for tid, refs in by_thread.items()}
    assert got == expected
    assert len(calls) < len(by_thread) // 2  # windows, not one query per thread
    assert all(n <= 10 + 3 for n, _ in calls) and {b for _, b in calls} == {True, False}
    calls.clear()
    assert {tid: ahead(store, tid, refs, {}) for tid, refs in by_thread.items()} == expected
    assert calls == []  # the same messages again: answered from memory


def test_worker_processes_share_a_big_refresh_with_the_same_answers(
    directory: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor

    from carebox.services import safety as service
    from carebox.services.safety_checks import SafetyChecks

    store = directory
    senders = [ANNA, OLAF, OLD, Address("Stranger", "who@else.example"), Address("Anna Berg", "anna@rnail.example")]
    bodies = ["I have chest pain", "renew my prescription", "hello", "are my blood test results back?", "thanks"]
    for i in range(60):
        add(store, f"p{i}@x", senders[i % 5], bodies[i % 5] + f" ({i})", hours=-i)
        if i % 3 == 0:
            store.add_messages(
                "INBOX", [message(f"a{i}@x", sender=DOC, to=senders[i % 5], hours=-i + 0.5, in_reply_to=f"p{i}@x")]
            )
        if i % 4 == 1:  # a second unanswered message in some threads
            add(store, f"q{i}@x", senders[i % 5], "it got worse, chest pain", hours=-i + 0.2, in_reply_to=f"p{i}@x")
    rethread(store, POLICY)
    by_thread = _threads(store)
    plain = service.safety_inspector(store, CONFIG, NOW)
    expected = {tid: plain(store, tid, refs, {}) for tid, refs in by_thread.items()}

    here: list[int] = []
    real_answer = SafetyChecks.answer

    def counting(self: SafetyChecks, msgs: object, pending: bool) -> dict:
        here.append(1)
        return real_answer(self, msgs, pending)  # type: ignore[arg-type]

    monkeypatch.setattr(SafetyChecks, "answer", counting)  # only in this process, not in the worker
    monkeypatch.setattr(service, "PARALLEL_MIN", 10)
    monkeypatch.setattr(service, "PREFETCH_MESSAGES", 8)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        shared = service.safety_inspector(store, CONFIG, NOW)
        shared.executor = pool
        shared.prefetch(store, by_thread)
        answered_here = len(here)
        got = {tid: shared(store, tid, refs, {}) for tid, refs in by_thread.items()}
    assert got == expected
    assert 0 < answered_here < len(by_thread)  # both sides answered some threads
    assert len(here) == answered_here  # everything was answered during prefetch

    class Broken(Executor):
        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise RuntimeError("cannot schedule new futures after shutdown")

    fallback = service.safety_inspector(store, CONFIG, NOW)
    fallback.executor = Broken()
    fallback.prefetch(store, by_thread)
    assert {tid: fallback(store, tid, refs, {}) for tid, refs in by_thread.items()} == expected


def test_rethread_overlap_writes_the_same_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    from carebox.services import threads as threads_service

    monkeypatch.setattr(threads_service, "OVERLAP_MIN", 5)
    senders = [ANNA, OLAF, OLD, Address("Stranger", "who@else.example")]

    def fill(store: Store) -> None:
        for i in range(30):
            add(store, f"p{i}@x", senders[i % 4], "I have chest pain" if i % 5 == 0 else f"question {i}", hours=-i)
            if i % 3 == 0:
                add(store, f"r{i}@x", senders[i % 4], "and more", hours=-i + 0.1, in_reply_to=f"p{i}@x")

    def snapshot(d: Path) -> list[tuple]:
        conn = sqlite3.connect(d / "carebox.db")
        try:
            members: dict[str, list] = {}
            for tid, date in conn.execute("SELECT thread_id, date FROM message"):
                members.setdefault(tid, []).append(date)  # unique per message here
            assert None not in members
            return sorted(
                (tuple(sorted(members[r[0]])), repr(r[1:]))
                for r in conn.execute("SELECT id, urgent, sender_status, suggested_tag, state, due_at FROM thread")
            )
        finally:
            conn.close()

    def run(overlap: bool) -> list[tuple]:
        d = tmp_path / f"s{overlap}"
        store = Store.open(d, Cipher(b"s" * 32), professional=DOCTOR, create=True)
        try:
            fill(store)
            events: list[str] = []
            real_assign, real_write = store.assign_threads, store.write_threads

            def assign(a: dict) -> None:
                real_assign(a)
                events.append("assigned")

            def write(*a: object, **k: object) -> None:
                events.append("write")
                real_write(*a, **k)  # type: ignore[arg-type]

            store.assign_threads = assign  # type: ignore[method-assign]
            store.write_threads = write  # type: ignore[method-assign]
            ids = rethread(store, POLICY, [safety_inspector(store, CONFIG, NOW)], overlap=overlap)
            assert events == ["assigned", "write"]  # the UPDATE is committed before the summaries
            assert len(ids) == 30
        finally:
            store.close()
        return snapshot(d)

    assert run(False) == run(True)


def test_an_inspector_knows_when_the_directory_changed_under_it(directory: Store) -> None:
    store = directory
    inspector = safety_inspector(store, CONFIG, NOW)
    assert not inspector.directory_changed(store)
    save_patient(store, make_patient("New Patient", "new@mail.example"), now=NOW)
    assert inspector.directory_changed(store)
    assert not safety_inspector(store, CONFIG, NOW).directory_changed(store)


class _Inline(Executor):
    """Runs each call at once (deterministic early answers for the test)."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        fut: Future = Future()
        fut.set_result(fn(*args, **kwargs))
        return fut


class _LateFuture(Future):
    """Running until its result is asked for (a window the worker is still computing)."""

    def __init__(self, compute) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.set_running_or_notify_cancel()
        self._compute = compute

    def result(self, timeout=None):  # type: ignore[no-untyped-def]
        if not super().done():
            self.set_result(self._compute())
        return super().result(timeout)


class _Late(Executor):
    """Every window is taken by the worker at once and finishes only when its answers are asked for."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        return _LateFuture(lambda: fn(*args, **kwargs))


@pytest.mark.parametrize("fault", [False, True])
@pytest.mark.parametrize("late", [False, True])
def test_early_inspection_gives_the_answers_threading_would(
    directory: Store, monkeypatch: pytest.MonkeyPatch, fault: bool, late: bool
) -> None:
    """Threads inspected while a download goes on (EarlyInspection: provisional threads, parsed
    messages) get the answers plain threading gives afterwards, also threads that gained a message
    after they were inspected early (their early answer is for other messages and is not used).
    With ``late`` the worker is still computing every early window when threading begins: threading
    inspects the other threads meanwhile and takes those answers in when it needs them (none is
    computed twice). With ``fault`` the early answers are planted wrong: the comparison must see it."""
    from carebox.services import safety as service
    from carebox.services import safety_checks
    from carebox.services.threads import ProvisionalThreads

    store = directory
    senders = [ANNA, OLAF, OLD, Address("Stranger", "who@else.example"), Address("Anna Berg", "anna@rnail.example")]
    bodies = ["I have chest pain", "renew my prescription", "hello", "are my blood test results back?", "thanks"]
    batches: list[list[NewMessage]] = [[] for _ in range(8)]
    for i in range(36):
        b = i // 6
        batches[b].append(
            message(f"p{i}@x", sender=senders[i % 5], to=DOC, body=bodies[i % 5] + f" ({i})", hours=-60 + i)
        )
        if i % 3 == 0:  # answered in the same batch: only the sender is checked
            batches[b].append(message(f"a{i}@x", sender=DOC, to=senders[i % 5], hours=-59.5 + i, in_reply_to=f"p{i}@x"))
        if i % 4 == 1:  # the patient writes again two batches later: the early answer is stale
            batches[b + 2].append(
                message(
                    f"q{i}@x",
                    sender=senders[i % 5],
                    to=DOC,
                    body="it got worse, chest pain",
                    hours=-58 + i,
                    in_reply_to=f"p{i}@x",
                )
            )
    if fault:
        real = safety_checks.evaluate_window

        def wrong(*args: object) -> list[dict]:
            return [{**x, "urgent": not x["urgent"]} for x in real(*args)]  # type: ignore[arg-type]

        monkeypatch.setattr(safety_checks, "evaluate_window", wrong)

    inspector = service.safety_inspector(store, CONFIG, NOW)
    early = inspector.early = service.EarlyInspection(inspector, _Late() if late else _Inline(), settle=1)
    running: list[set] = []
    real_settle = early.settle

    def settle(*, wait: bool = True) -> set:
        running.append(real_settle(wait=wait))
        return running[-1]

    monkeypatch.setattr(early, "settle", settle)
    provisional = ProvisionalThreads()
    for batch in batches:
        tids = provisional.assign([m.parsed for m in batch])
        result = store.add_messages("INBOX", batch)
        assert len(result.placed) == len(batch)
        early.add(
            (mid, tids[i], when, store.is_outgoing(batch[i].parsed), batch[i].parsed) for i, mid, when in result.placed
        )
    early.finish()
    rethread(store, POLICY, [inspector])
    assert early.answered >= 20 and early.sent == early.answered
    assert len(running) == 1 and (len(running[0]) >= 20 if late else not running[0])
    assert not set(inspector._plan) & running[0]  # what the worker was computing is not computed again

    ids = store.all_thread_ids()
    facts = store.thread_facts(ids)
    got = {t: (f.urgent, f.sender_status, f.suggested_tag, f.category) for t, f in facts.items()}
    fresh = service.safety_inspector(store, CONFIG, NOW)
    want = {}
    for tid, refs in _threads(store).items():
        out = fresh(store, tid, refs, {})
        want[tid] = (out["urgent"], out["sender_status"], out["suggested_tag"], out.get("category"))
    assert sum(1 for x in want.values() if x[0]) >= 8  # urgent threads, stale early answers among them
    if fault:
        assert got != want
    else:
        assert got == want
