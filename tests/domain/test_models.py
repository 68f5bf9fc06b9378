"""The plain data classes cross process boundaries (a sync's parse and check workers): pickling
must give back equal objects, field for field."""

import pickle
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import pytest

from carebox.domain.models import Address, Attachment, MessageRef, ParsedMessage, pickled_by_fields
from carebox.services.safety_checks import CheckMessage
from carebox.store.sealing import SealedMessage


def _distinct_values(cls):
    """An instance whose every field holds a value no other field holds (a swapped pair shows)."""
    a, b = Address("Ana", "ana@example.org"), Address("Bo", "bo@example.org")
    samples = {
        ParsedMessage: ParsedMessage(
            message_id="m1@x",
            in_reply_to=("p1@x",),
            references=("r1@x", "p1@x"),
            subject="Subject",
            sender=a,
            to=(b,),
            cc=(Address("Cy", "cy@example.org"),),
            reply_to=(Address("Di", "di@example.org"),),
            date=datetime(2026, 1, 2, 3, 4, tzinfo=UTC),
            body="body text",
            attachments=(Attachment("a.pdf", "application/pdf", 3, b"pdf"),),
            auth_results="spf=pass",
            malformed=True,
            problem="a problem",
        ),
        MessageRef: MessageRef("k", "mid", ("p",), "subj", "cp", datetime(2026, 1, 1, tzinfo=UTC), True, True),
        CheckMessage: CheckMessage(a, (b,), (), (a, b), "dkim=pass", "subject", "body"),
        SealedMessage: SealedMessage(
            id="id",
            msgid_token="t1",
            subject_token="t2",
            counterpart_token="t3",
            content_token="t4",
            reply_prefix=True,
            date="2026-01-01 00:00:00.000000",
            internal_date="2026-01-02 00:00:00.000000",
            size=12,
            outgoing=False,
            malformed=True,
            sealed=(b"raw", b"mid"),
            parents=(("id", 0, "t5"),),
            attachments=(("aid", "id", 0, 3, b"info", b"data"),),
            date_read_back=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    }
    return samples[cls]


@pytest.mark.parametrize("cls", [ParsedMessage, MessageRef, CheckMessage, SealedMessage])
def test_pickle_round_trip_keeps_every_field(cls):
    obj = _distinct_values(cls)
    back = pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))  # noqa: S301 - our own bytes
    assert type(back) is cls
    for f in fields(cls):
        assert getattr(back, f.name) == getattr(obj, f.name), f.name
    assert back == obj


def test_pickled_by_fields_refuses_a_field_outside_init():
    with pytest.raises(TypeError):

        @pickled_by_fields
        @dataclass(frozen=True, slots=True)
        class Odd:
            a: int
            b: int = field(init=False, default=0)
