"""Fixtures for tests against servers the suite starts itself (see tests/servers/).

* ``dovecot`` (session): one private Dovecot on 127.0.0.1 (imaps + imap/STARTTLS ports). Skipped when
  Dovecot is not installed, but FAILS under ``CI=true``.
* ``imap_account``: a fresh user per test (own Maildir: tests never see each other's mail);
  ``imap_account.settings(**overrides)`` gives ``carebox.mail.imap.ImapSettings`` for implicit TLS.
* ``tls_certs`` (session): self-signed certs for the hostile server: ``.cert/.key`` for localhost and
  127.0.0.1, ``.wrong_cert/.wrong_key`` for the host name wrong.example.

Every test collected from this directory gets the ``integration`` marker.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:  # `pytest` (the script) does not put the project root on sys.path
    sys.path.insert(0, str(_ROOT))

from tests.servers.dovecot import Dovecot, ImapAccount, dovecot_available, make_self_signed_cert  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not dovecot_available():
        msg = "Dovecot is not available (needs /usr/sbin/dovecot from dovecot-imapd, its users, root)"
        if _in_ci():
            pytest.fail(msg + " -- required under CI=true")
        pytest.skip(msg)
    server = Dovecot().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def imap_account(dovecot: Dovecot, request: pytest.FixtureRequest) -> ImapAccount:
    return dovecot.new_account(hint=request.node.name)


@dataclass(frozen=True)
class TlsCerts:
    cert: Path
    key: Path
    wrong_cert: Path
    wrong_key: Path


@pytest.fixture(scope="session")
def tls_certs() -> Iterator[TlsCerts]:
    if shutil.which("openssl") is None:
        if _in_ci():
            pytest.fail("openssl is required under CI=true")
        pytest.skip("openssl not installed")
    d = Path(tempfile.mkdtemp(prefix="carebox-certs-"))
    try:
        cert, key = make_self_signed_cert(d)
        wrong_cert, wrong_key = make_self_signed_cert(d, cn="wrong.example", san="DNS:wrong.example")
        yield TlsCerts(cert, key, wrong_cert, wrong_key)
    finally:
        shutil.rmtree(d, ignore_errors=True)
