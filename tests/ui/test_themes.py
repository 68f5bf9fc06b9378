"""Themes are data files; each meets WCAG AA for text (the contrast theme AAA); a broken file
falls back to the default with a notice; the stylesheet uses theme variables only."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from textual.color import Color

from carebox.ui.app import CareboxApp
from carebox.ui.themes import (
    DEFAULT_THEME,
    FALLBACK,
    THEME_DIR,
    contrast_ratio,
    load_theme_file,
    load_themes,
    text_pairs,
)
from tests.ui.helpers import clock, practice

NAMES = ("carebox-dark", "carebox-light", "carebox-contrast")


def test_contrast_ratio_matches_wcag_reference_values() -> None:
    assert contrast_ratio(Color.parse("#000000"), Color.parse("#FFFFFF")) == pytest.approx(21.0)
    assert contrast_ratio(Color.parse("#777777"), Color.parse("#FFFFFF")) == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio(Color.parse("#FFFFFF"), Color.parse("#FFFFFF")) == pytest.approx(1.0)


@pytest.mark.parametrize("name", NAMES)
def test_theme_text_meets_wcag(name: str) -> None:
    theme = load_theme_file(THEME_DIR / f"{name}.toml")
    assert theme.name == name
    minimum = 7.0 if name == "carebox-contrast" else 4.5
    pairs = text_pairs(theme)
    assert len(pairs) >= 30
    low = [p for p in pairs if p.ratio < minimum]
    assert low == [], low


def test_the_builtin_fallback_is_readable_too() -> None:
    assert [p for p in text_pairs(FALLBACK) if p.ratio < 4.5] == []


def test_a_low_contrast_theme_would_fail_the_check(tmp_path: Path) -> None:
    text = (THEME_DIR / "carebox-dark.toml").read_text().replace('text = "#E4E7EB"', 'text = "#30343A"')
    (tmp_path / "grey.toml").write_text(text.replace('name = "carebox-dark"', 'name = "grey"'))
    low = [p for p in text_pairs(load_theme_file(tmp_path / "grey.toml")) if p.ratio < 4.5]
    assert {p.text for p in low} == {"text"}


def test_broken_files_are_reported_and_skipped(tmp_path: Path) -> None:
    for name in NAMES:
        shutil.copy(THEME_DIR / f"{name}.toml", tmp_path)
    (tmp_path / "bad-toml.toml").write_text("name = \n")
    (tmp_path / "bad-colour.toml").write_text(
        (THEME_DIR / "carebox-dark.toml").read_text().replace('"#15191E"', '"nope"').replace("carebox-dark", "x")
    )
    (tmp_path / "bad-key.toml").write_text('name = "y"\nprimary = "#123456"\ncolour = "#FFFFFF"\n')
    (tmp_path / "missing-vars.toml").write_text('name = "z"\nprimary = "#123456"\n')
    loaded = load_themes(tmp_path)
    assert sorted(loaded.themes) == sorted(NAMES)
    problems = " | ".join(loaded.problems)
    assert "bad-toml.toml is not valid TOML" in problems
    assert "'nope' is not a colour" in problems
    assert "unknown key 'colour'" in problems
    assert "variables lacks alarm" in problems
    assert load_themes(tmp_path / "missing").themes == {DEFAULT_THEME: FALLBACK}


async def test_a_broken_configured_theme_falls_back_with_a_notice(tmp_path: Path) -> None:
    themes = tmp_path / "themes"
    themes.mkdir()
    shutil.copy(THEME_DIR / "carebox-dark.toml", themes)
    (themes / "mine.toml").write_text('name = "mine"\nprimary = "red-ish"\n')
    session = practice(tmp_path / "store", ui={"theme": "mine"})
    app = CareboxApp(session, clock=clock, theme_dir=themes, background_sync=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == DEFAULT_THEME
        messages = [str(n.message) for n in app._notifications]
        assert any("mine.toml" in m for m in messages)
        assert any("theme 'mine' is not available" in m for m in messages)
    session.close()


async def test_configured_theme_is_used(tmp_path: Path) -> None:
    session = practice(tmp_path / "store", ui={"theme": "carebox-contrast"})
    app = CareboxApp(session, clock=clock, background_sync=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause()
        assert app.theme == "carebox-contrast"
        assert app.palette.alarm == "#FF9E9E"
        assert not app._notifications
    session.close()


def test_stylesheet_uses_theme_variables_only() -> None:
    css = (Path(__file__).resolve().parents[2] / "carebox" / "ui" / "carebox.tcss").read_text()
    body = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    assert not re.search(r"#[0-9a-fA-F]{3,8}\b", body)
    assert not re.search(r"\b(rgb|hsl)a?\(", body)
    colour_words = r"\b(red|green|blue|white|black|yellow|grey|gray|magenta|cyan|orange|purple)\b"
    for line in body.splitlines():
        if re.search(r"\b(color|background|border[-a-z]*|tint)\s*:", line):
            assert not re.search(colour_words, line), line
            assert "$" in line or re.search(r":\s*(none|hidden)", line), line
