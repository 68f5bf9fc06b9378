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


def test_tokens_are_the_hmac_they_always_were() -> None:
    # stored tokens must stay comparable across versions: HMAC-SHA256 under the derived token key
    import hashlib
    import hmac

    from carebox.store.crypto import _derive

    key = os.urandom(32)
    want = hmac.new(_derive(key, b"tokens v1"), b"addr\0x@example.org", hashlib.sha256).hexdigest()[:32]
    c = Cipher(key)
    assert c.token("addr", "x@example.org") == want
    assert c.token("addr", "x@example.org") == want  # the prepared HMAC is copied, never consumed


def test_nonces_never_repeat_across_pool_refills_threads_and_a_fork() -> None:
    import threading

    from carebox.store import crypto

    c = Cipher(os.urandom(32))
    nonces: list[bytes] = []

    def seal_many() -> None:
        got = [c.seal("v", "a:b:c")[1 : 1 + crypto.NONCE_BYTES] for _ in range(crypto.NONCE_POOL)]
        nonces.extend(got)

    threads = [threading.Thread(target=seal_many) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(nonces) == 4 * crypto.NONCE_POOL == len(set(nonces))

    c.seal("v", "a:b:c")  # a pool is now partly used
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child must not hand out the parent's remaining nonces
        os.close(r)
        os.write(w, c.seal("v", "a:b:c")[1 : 1 + crypto.NONCE_BYTES])
        os._exit(0)
    os.close(w)
    child = os.read(r, 64)
    os.close(r)
    os.waitpid(pid, 0)
    parent = c.seal("v", "a:b:c")[1 : 1 + crypto.NONCE_BYTES]
    assert len(child) == crypto.NONCE_BYTES and child != parent and child not in nonces
