"""Themes as data: TOML files in ``themes/`` turned into Textual themes, and the WCAG contrast
arithmetic the tests use to keep every text colour readable.

A theme file holds the fields of ``textual.theme.Theme`` (name, dark, primary, background...)
and a ``[variables]`` table. carebox's own variables (``alarm``, ``caution``, ``ok``,
``selected``) colour the countdowns and badges; every theme must be readable with them.
A file that is missing, not TOML, or has a bad colour or field is skipped with one line saying
why; the app then falls back to the default theme and shows that line as a notice.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from textual.color import Color, ColorParseError
from textual.theme import Theme


def _theme_dir() -> Path:
    """themes/ beside the package in a checkout; share/carebox/themes in an installed wheel."""
    import sys

    checkout = Path(__file__).resolve().parents[2] / "themes"
    installed = Path(sys.prefix) / "share" / "carebox" / "themes"
    return checkout if checkout.is_dir() or not installed.is_dir() else installed


THEME_DIR = _theme_dir()
DEFAULT_THEME = "carebox-dark"
CAREBOX_VARIABLES = ("alarm", "caution", "ok", "selected")
# Used when even the default theme file is unusable: the dark theme's main colours, no file needed.
FALLBACK = Theme(
    name=DEFAULT_THEME,
    dark=True,
    primary="#5B9BD5",
    secondary="#7C8FA3",
    accent="#D4A656",
    warning="#E5B567",
    error="#E06C75",
    success="#82C785",
    foreground="#E4E7EB",
    background="#15191E",
    surface="#1B2027",
    panel="#262D36",
    variables={
        "text": "#E4E7EB",
        "text-muted": "#AAB3BD",
        "text-error": "#FF9494",
        "text-warning": "#F0C674",
        "text-success": "#96D69A",
        "text-primary": "#8CC4F0",
        "alarm": "#FF9494",
        "caution": "#F0C674",
        "ok": "#96D69A",
        "selected": "#8CC4F0",
        "block-cursor-background": "#2E4257",
        "block-cursor-foreground": "#FFFFFF",
        "footer-background": "#262D36",
        "footer-key-foreground": "#8CC4F0",
        "footer-description-foreground": "#E4E7EB",
        "input-cursor-background": "#E4E7EB",
        "input-cursor-foreground": "#15191E",
    },
)

_FIELDS = {
    "name": str,
    "dark": bool,
    "primary": str,
    "secondary": str,
    "warning": str,
    "error": str,
    "success": str,
    "accent": str,
    "foreground": str,
    "background": str,
    "surface": str,
    "panel": str,
    "boost": str,
    "luminosity_spread": float,
    "text_alpha": float,
    "variables": dict,
}
_COLOR_FIELDS = (
    "primary",
    "secondary",
    "warning",
    "error",
    "success",
    "accent",
    "foreground",
    "background",
    "surface",
    "panel",
    "boost",
)


class ThemeError(Exception):
    """A theme file that cannot be used; the message is one line."""


def _check_color(path: Path, key: str, value: object) -> None:
    if not isinstance(value, str):
        raise ThemeError(f'theme {path.name}: {key} must be a colour string like "#1E2A33"')
    if value.startswith("auto"):
        return
    try:
        Color.parse(value)
    except ColorParseError:
        raise ThemeError(f"theme {path.name}: {key} = {value!r} is not a colour (use #RRGGBB)") from None


def load_theme_file(path: Path) -> Theme:
    """One theme file as a Theme. Raises ThemeError (one line) when it cannot be used."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ThemeError(f"theme file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ThemeError(f"cannot read theme file {path.name}: {exc.__class__.__name__}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ThemeError(f"theme {path.name} is not valid TOML: {exc}") from None
    for key, value in data.items():
        kind = _FIELDS.get(key)
        if kind is None:
            raise ThemeError(f"theme {path.name}: unknown key {key!r}")
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            data[key] = value
        if not isinstance(value, kind):
            raise ThemeError(f"theme {path.name}: {key} must be a {kind.__name__}")
    if not data.get("name") or not data.get("primary"):
        raise ThemeError(f"theme {path.name}: needs at least name and primary")
    for key in _COLOR_FIELDS:
        if key in data:
            _check_color(path, key, data[key])
    variables = {str(k): v for k, v in data.get("variables", {}).items()}
    for key, value in variables.items():
        if not isinstance(value, str):
            raise ThemeError(f"theme {path.name}: variables.{key} must be a string")
        if not key.endswith("-style"):
            _check_color(path, f"variables.{key}", value)
    missing = [v for v in CAREBOX_VARIABLES if v not in variables]
    if missing:
        raise ThemeError(f"theme {path.name}: variables lacks {', '.join(missing)}")
    data["variables"] = variables
    try:
        return Theme(**data)
    except (TypeError, ValueError) as exc:
        raise ThemeError(f"theme {path.name}: {exc}") from None


@dataclass
class LoadedThemes:
    themes: dict[str, Theme]
    problems: list[str]


def load_themes(directory: Path = THEME_DIR) -> LoadedThemes:
    """Every ``*.toml`` theme in ``directory``; broken ones are reported, never raised. The
    default theme is always present (from its file, else the built-in fallback)."""
    themes: dict[str, Theme] = {}
    problems: list[str] = []
    try:
        files = sorted(directory.glob("*.toml"))
    except OSError as exc:
        files = []
        problems.append(f"cannot read the themes folder {directory}: {exc.__class__.__name__}")
    for path in files:
        try:
            theme = load_theme_file(path)
        except ThemeError as exc:
            problems.append(str(exc))
            continue
        themes[theme.name] = theme
    if DEFAULT_THEME not in themes:
        themes[DEFAULT_THEME] = FALLBACK
    return LoadedThemes(themes, problems)


# --- contrast (WCAG 2.x) ----------------------------------------------------------------------------


def relative_luminance(color: Color) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.04045 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = color.rgb
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def contrast_ratio(fg: Color, bg: Color) -> float:
    """WCAG contrast ratio of two opaque colours (1 to 21)."""
    a, b = relative_luminance(fg), relative_luminance(bg)
    hi, lo = max(a, b), min(a, b)
    return (hi + 0.05) / (lo + 0.05)


def theme_variables(theme: Theme) -> dict[str, str]:
    """The CSS variables a theme produces in Textual (as the app computes them)."""
    return {**theme.to_color_system().generate(), **theme.variables}


def resolve(value: str, variables: dict[str, str], under: Color) -> Color:
    """A variable's value as the opaque colour seen over ``under`` ("auto 87%" and alpha
    colours are blended the way Textual paints them)."""
    value = value.strip()
    if value.startswith("$"):
        value = variables[value[1:]]
    if value.startswith("auto"):
        pct = value[4:].strip().rstrip("%")
        alpha = float(pct) / 100 if pct else 1.0
        return under + under.get_contrast_text(alpha)
    color = Color.parse(value)
    return under + color if color.a < 1 else color


# Text colour -> the backgrounds it is drawn on in carebox's layout.
TEXT_ON = {
    "foreground": ("background", "surface", "panel"),
    "text": ("background", "surface", "panel"),
    "text-muted": ("background", "surface", "panel"),
    "alarm": ("background", "surface", "panel", "block-cursor-background"),
    "caution": ("background", "surface", "block-cursor-background"),
    "ok": ("background", "surface", "block-cursor-background"),
    "selected": ("background", "surface", "block-cursor-background"),
    "text-error": ("background", "surface"),
    "text-warning": ("background", "surface"),
    "text-success": ("background", "surface"),
    "text-primary": ("background", "surface"),
    "block-cursor-foreground": ("block-cursor-background",),
    "footer-key-foreground": ("footer-background",),
    "footer-description-foreground": ("footer-background",),
    "input-cursor-foreground": ("input-cursor-background",),
}


@dataclass(frozen=True)
class Pair:
    text: str
    background: str
    ratio: float


def text_pairs(theme: Theme, pairs: dict[str, Iterable[str]] | None = None) -> list[Pair]:
    """The contrast of every text colour on every background it appears on."""
    variables = theme_variables(theme)
    out = []
    for fg, backgrounds in (pairs or TEXT_ON).items():
        for bg in backgrounds:
            base = Color.parse(variables["background"])
            under = resolve(f"${bg}", variables, base)
            color = resolve(f"${fg}", variables, under)
            out.append(Pair(fg, bg, round(contrast_ratio(color, under), 2)))
    return out
