from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from carebox.services.session import Session
from carebox.ui.app import CareboxApp
from tests.ui.helpers import clock, practice


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    s = practice(tmp_path / "store")
    yield s
    s.close()


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Session]:
    s = practice(tmp_path / "store", hostile=True)
    yield s
    s.close()


@pytest.fixture
def make_app() -> Callable[..., CareboxApp]:
    def make(session: Session, **kwargs: object) -> CareboxApp:
        kwargs.setdefault("undo_seconds", 3600.0)  # no send during a test unless it asks
        kwargs.setdefault("background_sync", False)  # the test account's server does not exist
        return CareboxApp(session, clock=clock, **kwargs)  # type: ignore[arg-type]

    return make
