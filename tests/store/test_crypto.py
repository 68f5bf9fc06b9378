import os

import pytest

from carebox.store.crypto import Cipher, DecryptError, Locked


def test_seal_and_open_round_trip() -> None:
    c = Cipher(os.urandom(32))
    blob = c.seal("Blutdruck 140/90 — Grüße", "message:body:abc")
    assert b"Blutdruck" not in blob
    assert c.open_text(blob, "message:body:abc") == "Blutdruck 140/90 — Grüße"


def test_each_seal_uses_a_fresh_nonce() -> None:
    c = Cipher(os.urandom(32))
    assert c.seal("same", "t:c:1") != c.seal("same", "t:c:1")


@pytest.mark.parametrize("aad", ["message:body:other-row", "message:subject:abc", "thread:body:abc"])
def test_value_moved_to_another_row_or_column_fails(aad: str) -> None:
    c = Cipher(os.urandom(32))
    blob = c.seal("secret", "message:body:abc")
    with pytest.raises(DecryptError):
        c.open_text(blob, aad)


def test_tampered_or_foreign_key_value_fails() -> None:
    c = Cipher(os.urandom(32))
    blob = bytearray(c.seal("secret", "a:b:c"))
    blob[-1] ^= 1
    with pytest.raises(DecryptError):
        c.open_text(bytes(blob), "a:b:c")
    with pytest.raises(DecryptError):
        Cipher(os.urandom(32)).open_text(c.seal("secret", "a:b:c"), "a:b:c")


def test_tokens_are_keyed_and_stable() -> None:
    key = os.urandom(32)
    a, b = Cipher(key), Cipher(key)
    assert a.token("addr", "x@example.org") == b.token("addr", "x@example.org")
    assert a.token("addr", "x@example.org") != a.token("msgid", "x@example.org")
    assert Cipher(os.urandom(32)).token("addr", "x@example.org") != a.token("addr", "x@example.org")
    assert a.token("addr", "") == ""


def test_forget_drops_the_keys() -> None:
    c = Cipher(os.urandom(32))
    blob = c.seal("v", "a:b:c")
    c.forget()
    assert c.locked
    with pytest.raises(Locked):
        c.open_text(blob, "a:b:c")
    with pytest.raises(Locked):
        c.token("addr", "x")
