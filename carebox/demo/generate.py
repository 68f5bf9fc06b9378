"""The bundled demo practice mailbox: invented patients writing to an invented practice.

Everything here is fiction: names, addresses (all under ``.example``), phone numbers (the
555-01xx range set aside for fiction), complaints and replies.

* :func:`demo_messages` builds the raw messages in memory with dates relative to ``now``, so
  ``carebox demo`` always shows threads due soon, threads overdue by hours, and answered ones.
* :func:`demo_patients` / :func:`patients_csv` give the matching patient list.
* ``python -m carebox.demo.generate`` rewrites ``practice.mbox`` and ``patients.csv`` next to
  this file from the same functions with :data:`FIXED_NOW` (or ``--now``), for people who want
  to ``carebox import`` a file. Output is byte-for-byte deterministic for a given ``now``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import csv
import io
import random
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from email.header import Header
from email.utils import format_datetime, formataddr
from pathlib import Path

__all__ = [
    "BROKEN_MESSAGE_ID",
    "DOCTOR_NAME",
    "FIXED_NOW",
    "HOSTILE_SUBJECT",
    "MBOX_PATH",
    "PATIENTS_CSV_PATH",
    "PRACTICE_ADDRESS",
    "PRACTICE_NAME",
    "PRACTICE_PHONE",
    "DemoPatient",
    "demo_messages",
    "demo_patients",
    "mbox_bytes",
    "patients_csv",
    "write_demo",
]

PRACTICE_NAME = "Riverside Family Practice"
DOCTOR_NAME = "Dr. Maya Lindqvist"
PRACTICE_ADDRESS = "dr.lindqvist@riverside-practice.example"
PRACTICE_PHONE = "+1 555 0100 200"
PRACTICE_DOMAIN = "riverside-practice.example"

FIXED_NOW = datetime(2025, 11, 3, 15, 0, tzinfo=UTC)  # the committed practice.mbox is "as of" this
SEED = 20251103
HERE = Path(__file__).resolve().parent
MBOX_PATH = HERE / "practice.mbox"
PATIENTS_CSV_PATH = HERE / "patients.csv"

HOSTILE_SUBJECT = "Re: your account [@click=app.quit]x[/] \x1b]0;pwned\x07 verify now"
BROKEN_MESSAGE_ID = "rash-photo.1.upload@mailbox.example"

_LOCAL = timezone(timedelta(hours=-5))  # the practice's clock, and most patients'
_SIGNATURE = f"\n\nBest regards,\n{DOCTOR_NAME}\n{PRACTICE_NAME}\n{PRACTICE_PHONE}"


# --------------------------------------------------------------------------- patients


@dataclass(frozen=True, slots=True)
class DemoPatient:
    name: str
    emails: tuple[str, ...]
    phone: str
    consent_date: date | None
    last_visit: date | None
    next_visit: date | None


# key: (name, emails, consent: bool, last visit days ago or None, next visit days ahead or None, utc offset)
_PATIENTS: dict[str, tuple[str, tuple[str, ...], bool, int | None, int | None, int]] = {
    "zoe": ("Zoë Martínez", ("zoe.martinez@mailbox.example",), True, 40, 50, -5),
    "bjorn": ("Björn Åkesson", ("bjorn.akesson@nordpost.example",), True, 9, None, 1),
    "lan": ("Nguyễn Thị Lan", ("lan.nguyen@webmail.example",), True, 120, 14, -5),
    "lukasz": ("Łukasz Wiśniewski", ("l.wisniewski@post.example",), True, 300, None, -5),
    "grace": ("Grace Okafor", ("grace.okafor@inbox.example",), True, 6, 30, -5),
    "henry": ("Henry Caldwell", ("hcaldwell@oldmail.example",), True, 5, 21, -5),
    "priya": ("Priya Raman", ("priya.raman@mailbox.example", "priya.r@work-mail.example"), True, 200, None, -5),
    "tom": ("Tom Becker", ("tom.becker@inbox.example",), True, 25, 10, -5),
    "amara": ("Amara Diallo", ("amara.diallo@webmail.example",), True, 60, None, -5),
    "wei": ("Zhang Wei (张伟)", ("zhang.wei@post.example",), True, 8, 90, 8),
    "fatima": ("Fatima Haddad", ("fatima.haddad@inbox.example",), True, 12, 18, -5),
    "sean": ("Seán O'Brien", ("sean.obrien@mailbox.example",), True, 400, None, -5),
    "ingrid": ("Ingrid Solberg", ("ingrid.solberg@nordpost.example",), True, 2, None, -5),
    "marcus": ("Marcus Johnson", ("marcus.j@webmail.example",), True, 1, 28, -5),
    "elena": ("Elena Petrova", ("elena.petrova@post.example",), True, 20, 70, -5),
    "david": ("David Cohen", ("dcohen@inbox.example",), True, 35, 60, -5),
    "aiko": ("Aiko Tanaka", ("aiko.tanaka@mailbox.example",), True, 150, 200, -5),
    "carlos": ("Carlos Mendoza", ("carlos.mendoza@webmail.example",), True, 10, None, -5),
    "ruth": ("Ruth Abernathy", ("ruth.abernathy@oldmail.example",), True, 95, 5, -5),
    "kwame": ("Kwame Mensah", ("kwame.mensah@inbox.example",), True, 45, 40, -5),
    "sofia": ("Sofia Rossi", ("sofia.rossi@post.example",), True, 380, None, 1),
    "jamal": ("Jamal Wright", ("jamal.wright@mailbox.example",), True, 70, 20, -5),
    "hannah": ("Hannah Schmidt", ("hannah.schmidt@webmail.example",), False, 16, None, 1),
    "oliver": ("Oliver Bennett", ("oliver.bennett@inbox.example",), True, 14, 16, -5),
    "mei": ("Mei Lin", ("mei.lin@post.example",), True, 4, 24, -8),
    "rosa": ("Rosa Alvarez", ("rosa.alvarez@mailbox.example",), True, 11, 80, -5),
    "peter": ("Peter Novak", ("peter.novak@webmail.example",), False, 30, None, -5),
    "linda": ("Linda Park", ("linda.park@inbox.example",), True, 7, 7, -5),
    "ahmed": ("Ahmed Farouk", ("ahmed.farouk@post.example",), True, 3, None, -5),
    "claire": ("Claire Dubois", ("claire.dubois@mailbox.example",), True, 4, 30, -5),
    "george": ("George Whitfield", ("g.whitfield@oldmail.example",), True, 50, 12, -5),
    "nadia": ("Nadia Kowalski", ("nadia.k@webmail.example",), True, 21, 35, -5),
    "samuel": ("Samuel Adeyemi", ("samuel.adeyemi@inbox.example",), True, 3, 25, -5),
    "julia": ("Julia Fischer", ("julia.fischer@post.example",), True, 2, 8, -5),
    "victor": ("Victor Almeida", ("victor.almeida@mailbox.example",), True, 13, None, -5),
    "emma": ("Emma Larsson", ("emma.larsson@nordpost.example",), True, 9, 19, 1),
    "raj": ("Raj Patel", ("raj.patel@webmail.example",), True, 4, None, -5),
    "olga": ("Olga Ivanova", ("olga.ivanova@inbox.example",), True, 180, None, -5),
    "ben": ("Ben Carter", ("ben.carter@mailbox.example",), True, 260, None, -5),
    "lucia": ("Lucía Fernández", ("lucia.fernandez@post.example",), True, 330, None, -5),
    "noah": ("Noah Williams", ("noah.williams@inbox.example",), True, 90, 4, -5),
    "yusuf": ("Yusuf Demir", ("yusuf.demir@webmail.example",), True, 410, None, -5),
    "margaret": ("Margaret Hughes", ("margaret.hughes@oldmail.example",), True, 33, 45, -5),
    "kenji": ("Kenji Watanabe", ("kenji.watanabe@mailbox.example",), True, 220, None, -5),
    "chloe": ("Chloe Martin", ("chloe.martin@inbox.example",), True, 19, None, -5),
    "tariq": ("Tariq Hassan", ("tariq.hassan@post.example",), True, 500, 26, -5),
    "anna": ("Anna Berg", ("anna.berg@nordpost.example",), True, 15, None, 1),
    "leo": ("Leo Moreau", ("leo.moreau@webmail.example",), True, 22, None, -5),
    "isabel": ("Isabel Costa", ("isabel.costa@mailbox.example",), True, 100, None, -5),
    "frank": ("Frank Miller", ("frank.miller@inbox.example",), True, 18, None, -5),
    "daniela": ("Daniela Reyes", ("daniela.reyes@post.example",), True, 140, 150, -5),
    "paul": ("Paul Nguyen", ("paul.nguyen@webmail.example",), True, 280, None, -5),
    "sarah": ("Sarah Thompson", ("sarah.thompson@mailbox.example",), True, 12, 9, -5),
    "mohammed": ("Mohammed Al-Sayed", ("m.alsayed@inbox.example",), True, 27, 3, -5),
}

# Writers who are not patients of the practice (absent from patients.csv).
_STRANGERS: dict[str, tuple[str, str, int]] = {
    "kevin": ("Kevin Doyle", "kevin.doyle@freemail.example", -5),  # never seen, wants free advice
    "hughes-daughter": ("", "jen.hughes.home@freemail.example", -5),  # unknown address
    "phish": ("Account Security", "no-reply@secure-login-check.example", 0),  # hostile
}


def demo_patients(now: datetime) -> list[DemoPatient]:
    """The patients of the demo practice, with visit dates relative to ``now``."""
    now = _aware(now)
    rng = random.Random(SEED)  # noqa: S311 - invented demo data, not security
    today = now.astimezone(_LOCAL).date()
    patients = []
    for index, (name, emails, consent, last_days, next_days, _offset) in enumerate(_PATIENTS.values()):
        phone = f"+1 555 01{index % 100:02d} {rng.randrange(100, 1000)}"
        consent_days = rng.randrange(max(30, (last_days or 0) + 1), 1200)
        patients.append(
            DemoPatient(
                name=name,
                emails=emails,
                phone=phone,
                consent_date=today - timedelta(days=consent_days) if consent else None,
                last_visit=today - timedelta(days=last_days) if last_days is not None else None,
                next_visit=today + timedelta(days=next_days) if next_days is not None else None,
            )
        )
    return patients


def patients_csv(now: datetime) -> str:
    """patients.csv text: name,emails,phone,consent_date,last_visit,next_visit (ISO dates)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["name", "emails", "phone", "consent_date", "last_visit", "next_visit"])
    for p in demo_patients(now):
        writer.writerow(
            [
                p.name,
                ";".join(p.emails),
                p.phone,
                p.consent_date.isoformat() if p.consent_date else "",
                p.last_visit.isoformat() if p.last_visit else "",
                p.next_visit.isoformat() if p.next_visit else "",
            ]
        )
    return out.getvalue()


# --------------------------------------------------------------------------- conversations


@dataclass(frozen=True, slots=True)
class _Turn:
    practice: bool  # written by the practice (else by the patient)
    hours_ago: float
    body: str


@dataclass(frozen=True, slots=True)
class _Conversation:
    key: str  # stable; part of every Message-ID of the thread
    writer: str  # a key of _PATIENTS or _STRANGERS
    subject: str
    turns: tuple[_Turn, ...]
    kind: str = "plain"  # plain | html | attachment | hostile | broken
    address: int = 0  # which of the patient's addresses writes
    no_reply_headers: bool = False  # a phone client that drops In-Reply-To/References
    reply_prefix: str = "Re: "


def P(hours_ago: float, body: str) -> _Turn:
    return _Turn(False, hours_ago, body)


def D(hours_ago: float, body: str) -> _Turn:
    return _Turn(True, hours_ago, body + _SIGNATURE)


_CONVERSATIONS: tuple[_Conversation, ...] = (
    # ---- lab results
    _Conversation(
        "a1c",
        "zoe",
        "Question about my A1c result",
        (
            P(
                50,
                "Hello Dr. Lindqvist,\n\nI saw in the portal that my A1c came back at 6.1%. Last year it was "
                "5.8%. Does this mean I have prediabetes now? Should I change anything before my next "
                "visit?\n\nThank you,\nZoë",
            ),
            D(
                46,
                "Dear Zoë,\n\nA value of 6.1% is in the prediabetes range, but only just. It is not a "
                "reason to worry, and it is very responsive to small changes: regular walks, fewer sweet "
                "drinks, and keeping an eye on portion sizes. We will repeat the test in three months and "
                "talk it through at your visit.",
            ),
            P(
                22,
                "Thank you, that is reassuring. Can I have the repeat test done at the lab near my work "
                "(Harbor Street), or does it have to be yours? And do I need to fast for it?\n\nZoë",
            ),
        ),
    ),
    _Conversation(
        "cholesterol",
        "bjorn",
        "Cholesterol numbers",
        (
            P(
                26,
                "Dear Doctor,\n\nMy cholesterol results arrived: total 242, LDL 161, HDL 48. The letter "
                "says 'borderline high'. My father had a heart attack at 58, so I am a bit nervous. Should "
                "I start a statin or try diet first?\n\nBest regards,\nBjörn Åkesson",
            ),
        ),
    ),
    _Conversation(
        "tsh",
        "grace",
        "Thyroid test - what does TSH 5.2 mean?",
        (
            P(
                9,
                "Hi Dr. Lindqvist,\n\nMy TSH came back 5.2 and it is flagged high. I have been very tired "
                "lately and cold all the time. Is this my thyroid? Do I need medication?\n\nGrace",
            ),
        ),
    ),
    _Conversation(
        "bloodwork-henry",
        "henry",
        "My blood work from Tuesday",
        (
            P(
                72,
                "Dear Dr. Lindqvist,\n\nI had my blood drawn on Tuesday as you asked. I have not heard "
                "anything. Is no news good news? My wife says I should ask.\n\nHenry Caldwell",
            ),
            D(
                70,
                "Dear Mr. Caldwell,\n\nYour results are in and they look good: kidney function and "
                "potassium are normal on the new dose, and your blood count is fine. No changes needed. "
                "Please keep your appointment in three weeks.",
            ),
        ),
    ),
    _Conversation(
        "vitamin-d",
        "fatima",
        "Vitamin D result",
        (
            P(
                40,
                "Hello,\n\nMy vitamin D level is 14. The portal says low. How much should I take, and for "
                "how long? I already take a multivitamin.\n\nThanks,\nFatima Haddad",
            ),
        ),
    ),
    _Conversation(
        "urine",
        "marcus",
        "Lab says 'abnormal' on my urine test",
        (
            P(
                13,
                "Hey doc,\n\nThe urine test from yesterday shows 'trace protein' and 'abnormal' in red. "
                "Should I be worried? I did go to the gym right before, if that matters.\n\nMarcus",
            ),
        ),
    ),
    _Conversation(
        "checkup-wei",
        "wei",
        "关于体检报告的问题 / question about my check-up report",
        (
            P(
                31,
                "Dear Dr. Lindqvist,\n\nI received my check-up report (体检报告). Most values are normal but "
                "my liver enzyme ALT is 68. I drink very little. Do I need another test or an "
                "ultrasound?\n\nThank you very much,\nZhang Wei",
            ),
        ),
    ),
    _Conversation(
        "ferritin",
        "elena",
        "Ferritin low again?",
        (
            P(
                96,
                "Dear Dr. Lindqvist,\n\nMy ferritin is 11 again, even though I took iron for three months "
                "last year. From what I read, it could be my heavy periods. What should I do?\n\nElena",
            ),
            D(
                90,
                "Dear Elena,\n\nYes, heavy periods are the most likely cause. Please restart the iron "
                "tablets every other day (they are absorbed better that way) and book a visit so we can "
                "talk about options to make the periods lighter.",
            ),
            P(88, "Thank you, I will restart the iron and call to book.\n\nElena"),
        ),
    ),
    # ---- refills
    _Conversation(
        "refill-lisinopril",
        "david",
        "Refill request: lisinopril 10 mg",
        (
            P(
                5,
                "Hello,\n\nI have five tablets of lisinopril 10 mg left. Could you send a refill to the "
                "Main Street pharmacy? Blood pressure has been around 128/80 at home.\n\nDavid Cohen",
            ),
        ),
    ),
    _Conversation(
        "refill-levo",
        "aiko",
        "Refill - levothyroxine",
        (
            P(48, "Dear Dr. Lindqvist,\n\nPlease could you renew my levothyroxine 75 mcg? Thank you.\n\nAiko Tanaka"),
            D(
                45,
                "Dear Ms. Tanaka,\n\nDone: 90 days with one refill were sent to your usual pharmacy. We "
                "should check your TSH before the next renewal.",
            ),
        ),
    ),
    _Conversation(
        "inhaler-trip",
        "carlos",
        "Need more inhaler before my trip",
        (
            P(
                20,
                "Hi Dr. Lindqvist,\n\nI fly to my sister's wedding in Lisbon on Saturday and I only have "
                "half an inhaler (the blue one). Could I get a new prescription before Friday?\n\n"
                "Thanks a lot,\nCarlos",
            ),
        ),
    ),
    _Conversation(
        "metformin",
        "ruth",
        "Prescription renewal (metformin)",
        (
            P(
                60,
                "Dear Doctor,\n\nThe pharmacy told me my metformin prescription has run out. I have "
                "tablets until Thursday. Could you please renew it?\n\nKind regards,\nRuth Abernathy",
            ),
        ),
    ),
    _Conversation(
        "bp-pills",
        "kwame",
        "Refill for my blood pressure pills",
        (P(1.5, "Hello Doctor,\n\nI need a refill for amlodipine 5 mg, same pharmacy as usual.\n\nKwame Mensah"),),
    ),
    _Conversation(
        "contraception",
        "sofia",
        "Birth control prescription renewal",
        (
            P(
                28,
                "Dear Dr. Lindqvist,\n\nCould you renew my pill prescription? I have one pack left.\n\n"
                "Best,\nSofia Rossi",
            ),
            D(
                27,
                "Dear Sofia,\n\nI can give you one more pack now, but it has been over a year since your "
                "last check, so I need to see you for a blood pressure measurement before renewing for "
                "longer.",
            ),
            P(
                23.5,
                "OK, understood. Do you have anything on a Tuesday or Thursday afternoon? I work mornings.\n\nSofia",
            ),
        ),
        reply_prefix="AW: ",
    ),
    _Conversation(
        "sertraline",
        "jamal",
        "Sertraline refill",
        (
            P(
                44,
                "Hi,\n\nI need a refill of sertraline 50 mg. I'm doing much better on it and would like "
                "to keep going for now.\n\nJamal Wright",
            ),
        ),
    ),
    _Conversation(
        "nasal-spray",
        "hannah",
        "Refill of my allergy spray",
        (
            P(
                17,
                "Guten Tag Dr. Lindqvist,\n\nthe pollen is back and I need my nasal spray again "
                "(fluticasone). Can you send it to the pharmacy on Oak Avenue?\n\nViele Grüße,\n"
                "Hannah Schmidt",
            ),
        ),
    ),
    # ---- side effects
    _Conversation(
        "cough-acei",
        "oliver",
        "Cough since starting the new BP medicine",
        (
            P(
                23,
                "Dear Dr. Lindqvist,\n\nSince I started the new blood pressure medicine two weeks ago I have "
                "a dry, tickly cough, worst at night. No fever. Could it be the pills?\n\nOliver Bennett",
            ),
        ),
    ),
    _Conversation(
        "nausea-antibiotic",
        "mei",
        "Nausea with the antibiotics",
        (
            P(
                3,
                "Hi Dr. Lindqvist,\n\nI'm on day 3 of the antibiotic for my sinus infection and I feel "
                "nauseous after every dose. I have not vomited. Should I stop it or keep going?\n\nMei",
            ),
        ),
    ),
    _Conversation(
        "amlodipine-dizzy",
        "rosa",
        "Is dizziness normal with amlodipine?",
        (
            P(
                36,
                "Dear Doctor,\n\nI feel dizzy when I stand up quickly since the dose went up to 10 mg. "
                "Is that normal?\n\nRosa Alvarez",
            ),
            D(
                34,
                "Dear Ms. Alvarez,\n\nIt can happen when the dose goes up. Stand up slowly and drink "
                "enough. Please measure your blood pressure sitting and standing for three days and send "
                "me the numbers. If you faint or feel very unwell, call us or go to urgent care.",
            ),
        ),
    ),
    _Conversation(
        "statin-aches",
        "peter",
        "Muscle aches on statin",
        (
            P(
                47,
                "Hello,\n\nMy legs ache since I started atorvastatin last month, mostly the thighs. Should "
                "I stop taking it?\n\nPeter Novak",
            ),
        ),
    ),
    _Conversation(
        "prednisone-sleep",
        "linda",
        "Trouble sleeping since starting prednisone",
        (
            P(
                11,
                "Hi Dr. Lindqvist,\n\nI can't sleep since I started the prednisone for my asthma flare. "
                "I'm wide awake at 3 am. Is this expected? Four more days to go.\n\nLinda",
            ),
        ),
    ),
    _Conversation(
        "antibiotic-rash",
        "ahmed",
        "Rash after the new antibiotic",
        (
            P(
                6,
                "Dear Dr. Lindqvist,\n\nI have an itchy red rash on my chest and arms since this morning. "
                "I started amoxicillin two days ago. No swelling of lips or trouble breathing. What should "
                "I do?\n\nAhmed Farouk",
            ),
        ),
    ),
    _Conversation(
        "ankles",
        "george",
        "Ankles swelling",
        (
            P(
                52,
                "Dear Dr. Lindqvist,\n\nMy ankles have been swollen for a week, worse in the evening. "
                "My shoes are tight. I'm not short of breath. Is this from the new tablets?\n\n"
                "George Whitfield",
            ),
        ),
    ),
    # ---- follow-up after a visit
    _Conversation(
        "personal-account",
        "claire",
        "Follow-up after Thursday's visit",
        (
            P(
                19,
                "Dear Dr. Lindqvist,\n\nSorry if this is a duplicate: I first wrote to your personal email "
                "(the one from the school parents' list) on Saturday, then realised I should use this "
                "address.\n\nAfter Thursday's visit the ear pain is better but I still hear a crackling "
                "sound on the left side. Should I finish the drops or come back?\n\nClaire Dubois",
            ),
        ),
    ),
    _Conversation(
        "knee-physio",
        "nadia",
        "Follow-up: my knee after physio",
        (
            P(
                29,
                "Hello Dr. Lindqvist,\n\nQuick update after six physio sessions: the knee is better on the "
                "flat but stairs still hurt. The physiotherapist suggests an MRI. What do you think?\n\n"
                "Nadia",
            ),
        ),
    ),
    _Conversation(
        "bp-log",
        "samuel",
        "After my visit - blood pressure log",
        (
            P(
                55,
                "Dear Dr. Lindqvist,\n\nAs agreed at my visit I am measuring my blood pressure. Should I "
                "send you the numbers every week or all at once?\n\nSamuel Adeyemi",
            ),
            D(53, "Dear Mr. Adeyemi,\n\nAll at once after two weeks is perfect: morning and evening values."),
            P(
                25,
                "Here are my readings (morning / evening):\n\nMon 142/88 - 138/85\nTue 139/86 - 135/84\n"
                "Wed 145/90 - 140/87\nThu 137/84 - 133/82\nFri 141/87 - 136/83\n\nSamuel",
            ),
        ),
        no_reply_headers=True,
    ),
    _Conversation(
        "stitches",
        "julia",
        "Stitches - when can I shower?",
        (
            P(
                7,
                "Hi,\n\nAfter you removed the mole on my back on Monday: can I shower normally now, or do I "
                "have to keep the dressing dry until the stitches come out?\n\nJulia Fischer",
            ),
        ),
    ),
    _Conversation(
        "cardiology-referral",
        "victor",
        "Follow-up on the referral to cardiology",
        (
            P(
                33,
                "Dear Dr. Lindqvist,\n\nThree weeks ago you said you would refer me to cardiology for the "
                "palpitations. I have not heard from them. Was the referral sent?\n\nVictor Almeida",
            ),
        ),
    ),
    _Conversation(
        "back-pain",
        "emma",
        "Back pain update",
        (
            P(
                120,
                "Dear Dr. Lindqvist,\n\nThe back pain is a little better with the exercises, but I still "
                "cannot sit for more than an hour at work.\n\nEmma Larsson",
            ),
            D(
                118,
                "Dear Emma,\n\nThat is progress. Keep the exercises going and get up every 30 minutes at "
                "work. If there is numbness or weakness in a leg, let me know right away.",
            ),
            P(100, "No numbness, only stiffness. Could I get a note for a standing desk at work?\n\nEmma"),
            D(97, "Dear Emma,\n\nOf course. The note is ready at the front desk, or we can mail it."),
        ),
    ),
    _Conversation(
        "antibiotic-length",
        "raj",
        "How long should I keep taking the antibiotics?",
        (
            P(
                4,
                "Hi Dr. Lindqvist,\n\nI feel completely fine after four days. The box says seven days. Do I "
                "really have to take all of them?\n\nRaj",
            ),
        ),
    ),
    # ---- urgent-sounding
    _Conversation(
        "chest",
        "olga",
        "Chest tightness since this morning",
        (
            P(
                0.7,
                "Dear Dr. Lindqvist,\n\nI have had chest tightness since this morning, and now my left arm "
                "feels heavy. I am a bit short of breath climbing stairs. I didn't want to bother anyone, "
                "is it OK to wait for an appointment?\n\nOlga Ivanova",
            ),
        ),
    ),
    _Conversation(
        "child-fever",
        "chloe",
        "My son has a fever of 39.6 and won't drink",
        (
            P(
                0.3,
                "Hello,\n\nMy son Lucas (4) has had a fever of 39.6 since last night and he refuses to "
                "drink anything. He is very sleepy. What should I do?\n\nChloe Martin",
            ),
        ),
    ),
    # ---- appointments
    _Conversation(
        "appointment-next-week",
        "lucia",
        "Can I get an appointment next week?",
        (
            P(
                15,
                "Hello,\n\nI'd like an appointment next week for a check-up, ideally Wednesday. Is anything "
                "free?\n\nLucía Fernández",
            ),
        ),
    ),
    _Conversation(
        "reschedule",
        "noah",
        "Reschedule my Friday appointment",
        (
            P(
                21,
                "Hi,\n\nI can't make my appointment on Friday at 10. Could we move it to next week?\n\nNoah Williams",
            ),
        ),
    ),
    _Conversation(
        "physical",
        "yusuf",
        "Annual physical - need a date",
        (P(39, "Hello,\n\nIt has been over a year. I'd like to book my annual physical.\n\nYusuf Demir"),),
    ),
    _Conversation(
        "daughters-email",
        "hughes-daughter",
        "From Margaret Hughes - writing from my daughter's email",
        (
            P(
                12,
                "Dear Dr. Lindqvist,\n\nThis is Margaret Hughes. My own email stopped working, so my "
                "daughter Jennifer is letting me use hers. I need to change my appointment on the 14th, "
                "and I wanted to ask whether I should still take the water tablet on the morning of the "
                "blood test.\n\nMargaret Hughes",
            ),
        ),
    ),
    _Conversation(
        "travel-vaccines",
        "kenji",
        "Travel vaccines appointment",
        (
            P(
                26.5,
                "Dear Dr. Lindqvist,\n\nI'm travelling to Ghana in six weeks. Which vaccines do I need, and "
                "can I book an appointment for them?\n\nKenji Watanabe",
            ),
        ),
    ),
    _Conversation(
        "earlier-appointment",
        "tariq",
        "Any earlier appointment available?",
        (
            P(58, "Hello,\n\nIs there anything earlier than the 26th? My shoulder is getting worse.\n\nTariq Hassan"),
            D(
                57,
                "Dear Mr. Hassan,\n\nWe had a cancellation: Thursday at 8:30 is yours if you want it. "
                "Please confirm by phone.",
            ),
        ),
    ),
    # ---- billing
    _Conversation(
        "bill-question",
        "anna",
        "Question about my bill",
        (
            P(
                30.5,
                "Hello,\n\nI received a bill for 'extended consultation'. I thought my visit was a normal "
                "one. Could someone explain?\n\nAnna Berg",
            ),
        ),
    ),
    _Conversation(
        "insurance-denied",
        "leo",
        "Insurance denied the claim for my visit",
        (
            P(
                49,
                "Hi,\n\nMy insurance denied the claim for my visit last month (code missing, they say). "
                "Can the practice resubmit it?\n\nLeo Moreau",
            ),
        ),
    ),
    _Conversation(
        "charged-twice",
        "frank",
        "Charged twice?",
        (
            P(
                14,
                "Hello,\n\nMy card statement shows the same copay twice on the same day. Can you check?"
                "\n\nFrank Miller",
            ),
        ),
    ),
    _Conversation(
        "receipt",
        "daniela",
        "Receipt for my tax return",
        (
            P(80, "Hello,\n\nCould I get a receipt of all my payments this year for my taxes?\n\nDaniela Reyes"),
            D(79, "Dear Ms. Reyes,\n\nOur front desk will mail the receipt this week."),
        ),
    ),
    _Conversation(
        "new-insurance",
        "paul",
        "Do you accept the new insurance plan?",
        (
            P(
                45,
                "Hi,\n\nMy employer is switching us to a new insurance plan in January. Will the practice "
                "still accept me?\n\nPaul Nguyen",
            ),
        ),
    ),
    # ---- someone never seen, hostile, attachment, HTML only, broken
    _Conversation(
        "free-advice",
        "kevin",
        "Quick question (not a patient)",
        (
            P(
                10,
                "Hello Dr. Lindqvist,\n\nI'm not a patient of yours, I found your address on the practice "
                "website. My own doctor is on holiday. I take warfarin: is it safe to take ibuprofen for "
                "a toothache? Just a quick yes or no would be great.\n\nKevin Doyle",
            ),
        ),
    ),
    _Conversation(
        "phish",
        "phish",
        HOSTILE_SUBJECT,
        (
            P(
                8,
                "Your mailbox will be closed.\x1b[2J Click below to keep your account.\n\n"
                "\u202eexe.tnuocca-yfirev\u202c\n\nAccount Security",
            ),
        ),
        kind="hostile",
    ),
    _Conversation(
        "discharge-letter",
        "sarah",
        "Hospital discharge letter attached",
        (
            P(
                18,
                "Dear Dr. Lindqvist,\n\nI was in St. Anne's over the weekend for a kidney stone. Here is the "
                "discharge letter. They said to follow up with you within a week.\n\nSarah Thompson",
            ),
        ),
        kind="attachment",
    ),
    _Conversation(
        "mri-html",
        "mohammed",
        "Question about my MRI appointment",
        (
            P(
                24.5,
                "Dear Dr. Lindqvist,\n\nThe hospital called to schedule my MRI for the 12th. Do I need to "
                "stop any of my medicines before it? And can I drive home afterwards?\n\nMohammed Al-Sayed",
            ),
        ),
        kind="html",
    ),
    _Conversation(
        "rash-photo",
        "isabel",
        "Photo of the rash on my arm",
        (
            P(
                2,
                "Hi Dr. Lindqvist,\n\nHere is a photo of the rash I mentioned on the phone. It is spreading "
                "a little since yesterday.\n\nIsabel",
            ),
        ),
        kind="broken",
    ),
    # ---- more of everyday practice mail
    _Conversation(
        "sick-note",
        "ingrid",
        "Sick note for work",
        (
            P(16, "Hello,\n\nMy employer needs a sick note for Monday to Wednesday. Can you send one?\n\nIngrid"),
            D(15.5, "Dear Ingrid,\n\nThe note is attached to your portal account. Get well soon."),
        ),
    ),
    _Conversation(
        "vaccination-daughter",
        "lan",
        "Question about vaccination for my daughter",
        (
            P(
                42,
                "Dear Dr. Lindqvist,\n\nMy daughter is 11. The school says she needs the HPV vaccine. Can "
                "she get it at your practice, and how many doses?\n\nLan",
            ),
        ),
    ),
    _Conversation(
        "gym-form",
        "lukasz",
        "Form for the gym / fitness certificate",
        (
            P(
                66,
                "Hello,\n\nMy new gym wants a signed fitness certificate.\nFrom what I understand it is a "
                "short form. Can I drop it off, or do I need an appointment?\n\nŁukasz Wiśniewski",
            ),
        ),
    ),
    _Conversation(
        "pregnancy",
        "priya",
        "Pregnancy test positive - next steps?",
        (
            P(
                2.5,
                "Hi Dr. Lindqvist,\n\nWriting from my work email, sorry. I just had a positive pregnancy "
                "test! My last period was about six weeks ago. What should I do next, and should I keep "
                "taking my migraine medicine?\n\nPriya Raman",
            ),
        ),
        address=1,
    ),
    _Conversation(
        "records",
        "amara",
        "Medical records request",
        (
            P(140, "Hello,\n\nI'm moving to Denver. How do I get a copy of my records?\n\nAmara Diallo"),
            D(138, "Dear Ms. Diallo,\n\nPlease sign the release form at the front desk and we'll send them."),
        ),
    ),
    _Conversation(
        "mole",
        "sean",
        "Mole that changed shape",
        (
            P(
                27.5,
                "Dear Dr. Lindqvist,\n\nA mole on my shoulder has changed shape and looks darker at one "
                "edge. My wife noticed it. How soon should I come in?\n\nSeán",
            ),
        ),
    ),
    _Conversation(
        "bp-high",
        "tom",
        "Blood pressure readings high this week",
        (
            P(
                35,
                "Hi,\n\nMy home readings this week were around 160/95. I feel fine. I'm taking my pills. "
                "Should I come in before my appointment?\n\nTom Becker",
            ),
        ),
    ),
    _Conversation(
        "hearing",
        "henry",
        "Hearing aid referral",
        (
            P(
                19.5,
                "Dear Dr. Lindqvist,\n\nMy wife says the television is too loud. Could you refer me for a "
                "hearing test?\n\nHenry Caldwell",
            ),
        ),
    ),
    _Conversation(
        "school-form",
        "zoe",
        "Form for my daughter's school",
        (
            P(76, "Hello,\n\nCould you fill in the school health form for my daughter Inés?\n\nZoë"),
            D(74, "Dear Zoë,\n\nYes: drop it at the front desk and it will be ready in two working days."),
        ),
    ),
    _Conversation(
        "thanks",
        "marcus",
        "Thanks for yesterday",
        (P(10.5, "Hi Dr. Lindqvist,\n\nJust wanted to say thanks for taking the time yesterday.\n\nMarcus"),),
    ),
    _Conversation(
        "quit-smoking",
        "kwame",
        "Smoking cessation - can we talk about options?",
        (
            P(
                53,
                "Dear Doctor,\n\nI want to quit smoking for good this time. What are my options? Patches "
                "didn't work last time.\n\nKwame",
            ),
        ),
    ),
    _Conversation(
        "gestational-diet",
        "mei",
        "Diet advice after gestational diabetes",
        (
            P(
                61,
                "Hi Dr. Lindqvist,\n\nI had gestational diabetes with my last pregnancy. Is there anything I "
                "should do now to lower my risk later?\n\nMei Lin",
            ),
        ),
    ),
    _Conversation(
        "sleep-study",
        "david",
        "Sleep apnea test results",
        (
            P(200, "Hello,\n\nDid you get the results of my home sleep test?\n\nDavid Cohen"),
            D(
                190,
                "Dear Mr. Cohen,\n\nYes: moderate sleep apnea. I recommend a CPAP trial and have referred "
                "you to the sleep clinic.",
            ),
            P(150, "Thanks. The sleep clinic called and I start CPAP next week.\n\nDavid"),
            D(149, "Dear Mr. Cohen,\n\nGood. Let me know how you get on after a month."),
        ),
    ),
    _Conversation(
        "anxiety",
        "fatima",
        "Anxiety getting worse",
        (
            P(
                46.5,
                "Dear Dr. Lindqvist,\n\nMy anxiety has been getting worse over the last month. I'm not "
                "sleeping well and I had two panic attacks at work. Could we talk about it? I'm safe, I "
                "just need help.\n\nFatima",
            ),
        ),
    ),
    _Conversation(
        "work-note-back",
        "carlos",
        "Work note for back injury",
        (
            P(84, "Hi,\n\nWork wants a note saying I can't lift anything heavy for two weeks.\n\nCarlos"),
            D(82, "Dear Carlos,\n\nThe note is ready at the front desk."),
        ),
    ),
    _Conversation(
        "vaccination-record",
        "oliver",
        "Request for a copy of vaccination record",
        (
            P(100, "Hello,\n\nMy new job needs proof of my hepatitis B vaccinations.\n\nOliver Bennett"),
            D(99, "Dear Mr. Bennett,\n\nThe record is now in your portal under Documents."),
        ),
    ),
    _Conversation(
        "knee-running",
        "jamal",
        "Knee pain running",
        (
            P(
                37.5,
                "Hey Dr. Lindqvist,\n\nI started running again and my right knee hurts on the outside after "
                "about 5 km. Rest or keep going?\n\nJamal",
            ),
        ),
    ),
    _Conversation(
        "allergy-testing",
        "nadia",
        "Allergy testing?",
        (
            P(
                70,
                "Hello,\n\nEvery spring I'm miserable. Would allergy testing help, and do you do it "
                "here?\n\nNadia Kowalski",
            ),
        ),
    ),
    _Conversation(
        "flu-shot",
        "ruth",
        "Flu shot this year?",
        (
            P(
                3.5,
                "Dear Dr. Lindqvist,\n\nShould I get the flu shot and the COVID booster at the same time this "
                "year? I'm 74.\n\nRuth Abernathy",
            ),
        ),
    ),
    _Conversation(
        "mammogram",
        "linda",
        "Mammogram reminder",
        (
            P(
                43,
                "Hi,\n\nI got a reminder letter about a mammogram. Do I need a referral from you or can I "
                "book it myself?\n\nLinda Park",
            ),
            D(42, "Dear Linda,\n\nYou can book it yourself; the letter is the referral."),
        ),
    ),
)


# --------------------------------------------------------------------------- building messages


def _aware(now: datetime) -> datetime:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("demo dates need an aware datetime (with a time zone)")
    return now


def _writer(conv: _Conversation) -> tuple[str, str, timezone]:
    if conv.writer in _PATIENTS:
        name, emails, *_rest, offset = _PATIENTS[conv.writer]
        return name, emails[conv.address], timezone(timedelta(hours=offset))
    name, address, offset = _STRANGERS[conv.writer]
    return name, address, timezone(timedelta(hours=offset))


def _subject_header(subject: str) -> str:
    if subject.isascii() and subject.isprintable():
        return subject
    return Header(subject, "utf-8", header_name="Subject").encode(linesep="\r\n")


def _address_header(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8") if name else address


def _qp(text: str) -> bytes:
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def _crlf(text: str) -> bytes:
    return text.replace("\r\n", "\n").replace("\n", "\r\n").encode("utf-8")


def _quote(turn_date: datetime, who: str, body: str) -> str:
    quoted = "\n".join(f"> {line}" if line else ">" for line in body.split("\n"))
    return f"\n\nOn {format_datetime(turn_date)}, {who} wrote:\n{quoted}"


def _text_part(text: str, style: str) -> tuple[list[str], bytes]:
    """Content headers and encoded body in one of the transfer encodings clients use."""
    if style == "base64":
        payload = base64.encodebytes(text.encode("utf-8")).replace(b"\n", b"\r\n")
    elif style == "8bit":
        payload = _crlf(text)
    else:
        payload = _qp(text)
    headers = ["Content-Type: text/plain; charset=utf-8", f"Content-Transfer-Encoding: {style}"]
    if style == "qp":
        headers[1] = "Content-Transfer-Encoding: quoted-printable"
    return headers, payload


def _style(address: str) -> str:
    domain = address.rpartition("@")[2]
    return {"webmail.example": "base64", "nordpost.example": "8bit"}.get(domain, "qp")


def _html(text: str) -> bytes:
    paragraphs = "".join(
        "<p>" + para.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>") + "</p>\n"
        for para in text.split("\n\n")
    )
    html = (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>Message</title>\n'
        "<style>p { font-family: Arial; color: #222 }</style>\n"
        "<script>window.location='https://tracker.example/x'</script></head>\n<body>\n"
        f"{paragraphs}"
        '<p style="color:#888">Sent from <a href="https://webmail-provider.example/?ref=sig">my webmail</a>'
        '<img src="https://tracker.example/open.gif?u=1" width="1" height="1" alt=""></p>\n'
        "</body></html>\n"
    )
    return _qp(html)


_FAKE_PDF = (
    b"%PDF-1.4\n% carebox demo document: invented, not a real discharge letter\n"
    b"1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
    b"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n"
    b"trailer << /Root 1 0 R >>\n%%EOF\n"
)


def _body(conv: _Conversation, text: str, address: str) -> tuple[list[str], bytes]:
    if conv.kind == "html":
        return ["Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable"], _html(text)
    if conv.kind == "attachment":
        boundary = f"=_riverside_demo_{conv.key}"
        text_headers, text_payload = _text_part(text, "qp")
        pdf = base64.encodebytes(_FAKE_PDF).replace(b"\n", b"\r\n")
        body = (
            f"This is a multi-part message in MIME format.\r\n--{boundary}\r\n".encode()
            + "\r\n".join(text_headers).encode()
            + b"\r\n\r\n"
            + text_payload
            + f"\r\n--{boundary}\r\n".encode()
            + b'Content-Type: application/pdf; name="Discharge_letter_St_Annes.pdf"\r\n'
            + b'Content-Disposition: attachment; filename="Discharge_letter_St_Annes.pdf"\r\n'
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + pdf
            + f"--{boundary}--\r\n".encode()
        )
        return [f'Content-Type: multipart/mixed; boundary="{boundary}"'], body
    if conv.kind == "broken":
        # An upload cut short: the photo's base64 stops mid-line and the closing boundary is missing.
        boundary = "----=_Part_4417_upload"
        text_headers, text_payload = _text_part(text, "qp")
        photo = base64.b64encode(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 3)[:301]
        body = (
            f"--{boundary}\r\n".encode()
            + "\r\n".join(text_headers).encode()
            + b"\r\n\r\n"
            + text_payload
            + f"\r\n--{boundary}\r\n".encode()
            + b'Content-Type: image/jpeg; name="IMG_2231.jpg"\r\n'
            + b'Content-Disposition: attachment; filename="IMG_2231.jpg"\r\n'
            + b"Content-Transfer-Encoding: base64\r\n\r\n"
            + b"\r\n".join(photo[i : i + 76] for i in range(0, len(photo), 76))
        )
        return [f'Content-Type: multipart/mixed; boundary="{boundary}"'], body
    return _text_part(text, "qp" if conv.kind == "hostile" else _style(address))


@dataclass(frozen=True, slots=True)
class _Built:
    raw: bytes
    sender: str
    date: datetime


def _build_all(now: datetime) -> list[_Built]:
    now = _aware(now)
    rng = random.Random(SEED)  # noqa: S311 - invented demo data, not security
    built: list[_Built] = []
    for conv in _CONVERSATIONS:
        name, address, tz = _writer(conv)
        domain = address.rpartition("@")[2]
        ids: list[str] = []
        previous: tuple[datetime, str, str] | None = None  # date, who, body
        for index, turn in enumerate(conv.turns, 1):
            jitter = timedelta(minutes=rng.randrange(0, 9), seconds=rng.randrange(0, 60))
            when = now - timedelta(hours=turn.hours_ago) - jitter
            if turn.practice:
                from_name, from_addr, to_name, to_addr, zone = DOCTOR_NAME, PRACTICE_ADDRESS, name, address, _LOCAL
            else:
                from_name, from_addr, to_name, to_addr, zone = name, address, DOCTOR_NAME, PRACTICE_ADDRESS, tz
            suffix = "upload" if conv.kind == "broken" else f"{rng.getrandbits(40):010x}"
            message_id = f"{conv.key}.{index}.{suffix}@{PRACTICE_DOMAIN if turn.practice else domain}"
            subject = (
                conv.subject if index == 1 else (conv.reply_prefix if not turn.practice else "Re: ") + conv.subject
            )
            text = turn.body
            if previous is not None and not turn.practice:
                text += _quote(previous[0].astimezone(zone), previous[1], previous[2])
            headers: list[str] = []
            if not turn.practice:
                headers += [
                    f"Return-Path: <{from_addr}>",
                    f"Received: from mail.{domain} (mail.{domain} [192.0.2.{rng.randrange(2, 250)}])\r\n"
                    f"\tby mx.{PRACTICE_DOMAIN} with ESMTPS id {rng.getrandbits(48):012X}\r\n"
                    f"\tfor <{PRACTICE_ADDRESS}>; {format_datetime(when.astimezone(_LOCAL))}",
                    _auth_results(domain, hostile=conv.kind == "hostile"),
                ]
            headers += [
                f"Date: {format_datetime(when.astimezone(zone))}",
                f"From: {_address_header(from_name, from_addr)}",
                f"To: {_address_header(to_name, to_addr)}",
                f"Subject: {_subject_header(subject)}",
                f"Message-ID: <{message_id}>",
            ]
            if ids and not (conv.no_reply_headers and not turn.practice):
                headers.append(f"In-Reply-To: <{ids[-1]}>")
                headers.append("References: " + "\r\n ".join(f"<{i}>" for i in ids))
            content_headers, payload = _body(conv, text, from_addr)
            headers += ["MIME-Version: 1.0", *content_headers]
            raw = "\r\n".join(headers).encode("utf-8") + b"\r\n\r\n" + payload
            if not raw.endswith(b"\r\n"):
                raw += b"\r\n"
            built.append(_Built(raw=raw, sender=from_addr, date=when))
            ids.append(message_id)
            previous = (when, f"{from_name} <{from_addr}>" if from_name else from_addr, turn.body)
    built.sort(key=lambda b: b.date)
    return built


def _auth_results(domain: str, *, hostile: bool) -> str:
    if hostile:
        verdict = f"spf=fail smtp.mailfrom={domain};\r\n\tdkim=none;\r\n\tdmarc=fail header.from={domain}"
    else:
        verdict = (
            f"spf=pass smtp.mailfrom={domain};\r\n\tdkim=pass header.d={domain};\r\n\tdmarc=pass header.from={domain}"
        )
    return f"Authentication-Results: mx.{PRACTICE_DOMAIN};\r\n\t{verdict}"


def demo_messages(now: datetime) -> list[bytes]:
    """The demo mailbox's raw messages (CRLF line ends), oldest first, dated relative to ``now``.

    Every writer, Message-ID and link uses a ``.example`` domain. Deterministic for one ``now``.
    Raises ValueError when ``now`` is naive.
    """
    return [b.raw for b in _build_all(now)]


# --------------------------------------------------------------------------- files

_MBOX_FROM = re.compile(rb"^(>*From )", re.MULTILINE)


def mbox_bytes(now: datetime) -> bytes:
    """The demo messages as an mboxrd file (LF line ends, ``>From `` escaping)."""
    chunks = []
    for b in _build_all(now):
        when = b.date.astimezone(UTC)
        envelope = f"From {b.sender} {when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}\n".encode()
        text = b.raw.replace(b"\r\n", b"\n")
        text = _MBOX_FROM.sub(rb">\1", text)
        if not text.endswith(b"\n"):
            text += b"\n"
        chunks.append(envelope + text + b"\n")
    return b"".join(chunks)


def write_demo(folder: Path = HERE, now: datetime = FIXED_NOW) -> tuple[Path, Path]:
    """Write practice.mbox and patients.csv into ``folder``; returns their paths."""
    folder = Path(folder)
    mbox = folder / MBOX_PATH.name
    patients = folder / PATIENTS_CSV_PATH.name
    mbox.write_bytes(mbox_bytes(now))
    patients.write_text(patients_csv(now), encoding="utf-8", newline="")
    return mbox, patients


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the demo practice.mbox and patients.csv.")
    parser.add_argument("--now", help=f"ISO date-time the dates are relative to (default {FIXED_NOW.isoformat()})")
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: the package)")
    args = parser.parse_args(argv)
    now = FIXED_NOW
    if args.now:
        now = datetime.fromisoformat(args.now)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
    mbox, patients = write_demo(args.out, now)
    print(f"wrote {mbox} and {patients}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
