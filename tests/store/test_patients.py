"""The patient directory in the store: sealed per patient, looked up by address token."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from carebox.domain.safety import DirectoryPatient
from carebox.store import patients as P
from carebox.store.crypto import Cipher
from carebox.store.store import Store
from tests.factories import DOC, DOCTOR, message


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "store", Cipher(b"p" * 32), professional=DOCTOR, create=True)
    yield s
    s.close()


ANNA = DirectoryPatient(
    "", "Annamarker Bergmarker", ("Anna.Marker@Mail.example", "anna2@mail.example"), "+1 555 0101",
    date(2025, 1, 2), date(2026, 5, 1), None,
)  # fmt: skip


def test_save_get_and_lookup(store: Store) -> None:
    (saved,) = P.save_patients(store, [ANNA])
    assert saved.id and saved.emails == ("anna.marker@mail.example", "anna2@mail.example")
    assert P.get_patient(store, saved.id) == saved
    assert P.patient_for_address(store, " ANNA.marker@mail.example ") == saved
    assert P.patient_for_address(store, "nobody@mail.example") is None
    assert P.all_patients(store) == [saved]
    assert P.patient_count(store) == 1


def test_values_are_sealed(store: Store) -> None:
    P.save_patient(store, ANNA)
    store.close()
    for f in store.directory.iterdir():
        data = f.read_bytes()
        for marker in (b"Annamarker", b"Bergmarker", b"anna.marker", b"555 0101", b"2025-01-02"):
            assert marker not in data, (f.name, marker)


def test_edit_replaces_addresses(store: Store) -> None:
    saved = P.save_patient(store, ANNA)
    edited = DirectoryPatient(saved.id, "Anna Berg", ("new@mail.example",), consent_date=None)
    P.save_patient(store, edited)
    assert P.patient_for_address(store, "anna.marker@mail.example") is None
    assert P.patient_for_address(store, "new@mail.example") == edited
    assert P.patient_count(store) == 1


def test_an_address_belongs_to_one_patient(store: Store) -> None:
    P.save_patient(store, ANNA)
    other = DirectoryPatient("", "Someone Else", ("anna2@mail.example",))
    with pytest.raises(P.PatientConflict) as info:
        P.save_patients(store, [DirectoryPatient("", "Fine Person", ("fine@mail.example",)), other])
    assert "anna2" not in str(info.value)
    assert P.patient_count(store) == 1  # the whole batch was rolled back


def test_delete(store: Store) -> None:
    saved = P.save_patient(store, ANNA)
    assert P.delete_patient(store, saved.id)
    assert not P.delete_patient(store, saved.id)
    assert P.patient_for_address(store, "anna2@mail.example") is None


def test_thread_ids_for_addresses_and_load_messages(store: Store) -> None:
    from carebox.domain.deadlines import Policy
    from carebox.domain.models import Address
    from carebox.services.threads import rethread

    a = Address("Anna", "anna2@mail.example")
    store.add_messages(
        "INBOX",
        [
            message("m1@x", sender=a, to=DOC, body="hello", uid=1),
            message("m2@x", sender=Address("B", "b@x.example"), to=DOC, uid=2),
        ],
    )
    rethread(store, Policy())
    (tid,) = P.thread_ids_for_addresses(store, ["ANNA2@mail.example"])
    keys = store.thread_message_keys([tid])[tid]
    loaded = P.load_messages(store, keys)
    assert [m.body for m in loaded.values()] == ["hello"]
    assert P.thread_ids_for_addresses(store, ["none@x.example"]) == []
    assert [(m.subject, m.sender.addr) for m in loaded.values()] == [("Question", "anna2@mail.example")]


def test_load_messages_without_bodies_reads_the_sender_facts_only(store: Store) -> None:
    import dataclasses

    from carebox.domain.models import Address

    m = message("m1@x", sender=Address("Anna", "anna2@mail.example"), to=DOC, subject="Chest", body="chest pain")
    m = dataclasses.replace(
        m,
        parsed=dataclasses.replace(m.parsed, reply_to=(Address("", "r@x.example"),), auth_results="mx; dkim=fail"),
    )
    (mid,) = store.add_messages("INBOX", [m]).added
    full = P.load_messages(store, [mid])[mid]
    light = P.load_messages(store, [mid, mid], bodies=False)[mid]
    assert (full.subject, full.body) == ("Chest", "chest pain")
    assert (light.subject, light.body) == ("", "")
    assert dataclasses.replace(light, subject=full.subject, body=full.body) == full
    assert light.reply_to == (Address("", "r@x.example"),) and light.auth_results == "mx; dkim=fail"
