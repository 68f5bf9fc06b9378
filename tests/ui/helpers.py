"""Test stores for the UI: a small practice inbox built with the factories, deterministic
content, a passphrase-wrapped key (so the lock screen can be unlocked) and a frozen clock."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from carebox.config import (
    AccountConfig,
    Config,
    IdentityConfig,
    PolicyConfig,
    ServerConfig,
    StoreConfig,
    TriageConfig,
    UiConfig,
)
from carebox.domain.models import Address, Attachment
from carebox.services.safety import make_patient, safety_inspector, save_patient
from carebox.services.session import Session
from carebox.services.threads import policy_from_config, rethread
from carebox.store.crypto import Cipher
from carebox.store.keys import create_data_key
from carebox.store.store import NewMessage, Store
from tests.factories import BASE, DOC, DOCTOR, message, patient

NOW = BASE + timedelta(hours=30)  # Tuesday 2026-11-03 15:00 UTC
PASSPHRASE = "correct horse battery"
HOSTILE_SUBJECT = "[@click=app.quit]x[/] \x1b]0;pwned\x07 \x1b[2J"
HOSTILE_NAME = "[/]\x1b]52;c;cHduZWQ=\x07 Eve \u202eevil"
HOSTILE_BODY = (
    "[bold]not bold[/bold] [/] [@click=app.quit]click me[/]\n"
    "\x1b]0;pwned\x07title\n\x1b]8;;http://evil.example\x07link\x1b]8;;\x07\n"
    "\x9b2J c1 csi \x07bell \u202eoverride\u202c end"
)


def clock() -> datetime:
    return NOW


def with_attachment(msg: NewMessage, name: str, data: bytes) -> NewMessage:
    parsed = dataclasses.replace(msg.parsed, attachments=(Attachment(name, "application/pdf", len(data), data),))
    return dataclasses.replace(msg, parsed=parsed)


def config(store_dir: Path, **ui: object) -> Config:
    return Config(
        account=AccountConfig(
            address=DOCTOR,
            username="doctor",
            imap=ServerConfig(host="imap.invalid"),
            smtp=ServerConfig(host="smtp.invalid"),
        ),
        identity=IdentityConfig(
            physician_name="Dr. Test", practice_name="Test Practice", phone="+1 555 0100", booking="call +1 555 0100"
        ),
        policy=PolicyConfig(response_hours=48),
        store=StoreConfig(path=store_dir),
        ui=UiConfig(**ui),  # type: ignore[arg-type]
        templates={"billing": "Dear {patient_first_name},\n\nFor billing questions please call {practice_phone}.\n"},
        triage=TriageConfig(),
    )


def practice_messages(hostile: bool = False) -> list[NewMessage]:
    p = [patient(i) for i in range(1, 8)]
    msgs = [
        message(
            "m1@x",
            sender=p[0],
            to=DOC,
            subject="Blood pressure medication",
            hours=0,
            uid=1,
            body="Hello doctor,\nshould I keep taking 5 mg in the morning?\nThanks",
        ),
        message(
            "m2@x",
            sender=Address("Maria Lopez", "maria@mail.example"),
            to=DOC,
            subject="Since this morning",
            hours=26,
            uid=2,
            body="I have chest pain and trouble breathing since this morning.",
        ),
        message(
            "m3@x",
            sender=p[2],
            to=DOC,
            subject="Appointment next week?",
            hours=-80,
            uid=3,
            body="Can I book an appointment for next week?",
        ),
        message("m4@x", sender=p[3], to=DOC, subject="Thank you", hours=-10, uid=4, body="Thanks for the advice."),
        message(
            "m4r@x",
            sender=DOC,
            to=p[3],
            subject="Re: Thank you",
            hours=-5,
            uid=5,
            in_reply_to="m4@x",
            references=("m4@x",),
            body="You are welcome.",
        ),
        with_attachment(
            message(
                "m5@x",
                sender=p[4],
                to=DOC,
                subject="Lab results",
                hours=10,
                uid=6,
                body="Here are my lab results, what do they mean?",
            ),
            "results.pdf",
            b"%PDF-1.4 lab results",
        ),
        message(
            "m6@x",
            sender=p[5],
            to=DOC,
            subject="Question about my invoice",
            hours=20,
            uid=7,
            body="I think the invoice for my last visit is wrong.",
        ),
    ]
    if hostile:
        msgs.append(
            with_attachment(
                message(
                    "h1@x",
                    sender=Address(HOSTILE_NAME, "eve@mail.example"),
                    to=DOC,
                    subject=HOSTILE_SUBJECT,
                    hours=1,
                    uid=20,
                    body=HOSTILE_BODY,
                ),
                "\x1b]0;pwned\x07../../etc/passwd",
                b"evil",
            )
        )
    return msgs


def build_store(
    store_dir: Path,
    messages: list[NewMessage],
    *,
    ui: dict[str, object] | None = None,
    directory: Iterable[int] = (),
) -> Session:
    """A passphrase-keyed store holding ``messages``; ``directory``: patient numbers put in the
    patient directory (with consent), so their threads are verified."""
    key = create_data_key(store_dir, passphrase=PASSPHRASE, use_keychain=False, scrypt_n=2**14)
    cfg = config(store_dir, **(ui or {}))
    store = Store.open(store_dir, Cipher(key), professional=DOCTOR, create=True)
    policy = policy_from_config(cfg.policy)
    if directory:
        for n in directory:
            p = patient(n)
            save_patient(store, make_patient(p.name, p.addr, consent_date="2026-01-05", last_visit="2026-10-01"))
    store.add_messages("INBOX", messages)
    rethread(store, policy, [safety_inspector(store, cfg, NOW)])
    return Session(config=cfg, store=store, policy=policy)


def practice(store_dir: Path, *, hostile: bool = False, ui: dict[str, object] | None = None) -> Session:
    return build_store(store_dir, practice_messages(hostile), ui=ui, directory=range(1, 8))


def many(store_dir: Path, n: int, *, ui: dict[str, object] | None = None) -> Session:
    """``n`` waiting conversations, one per patient, for bulk tests."""
    msgs = [
        message(
            f"b{i}@x",
            sender=patient(100 + i),
            to=DOC,
            subject=f"Question {i}",
            hours=i * 0.1,
            uid=100 + i,
            body=f"Question number {i}",
        )
        for i in range(n)
    ]
    return build_store(store_dir, msgs, ui=ui, directory=range(100, 100 + n))


__all__ = ["NOW", "PASSPHRASE", "UTC", "clock", "many", "practice"]


async def settle(app) -> None:
    """Wait until the app's workers are done. A worker cancelled by a newer one of its exclusive
    group (the status line's refresh on a busy machine) is not a failure: wait for the rest."""
    from textual.worker import WorkerCancelled

    for _ in range(50):
        try:
            await app.workers.wait_for_complete()
            return
        except WorkerCancelled:
            continue
    raise AssertionError("the app's workers never settled")
