"""The architecture stays visible: lower layers import without Textual, and imports point down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "carebox"

# what each layer may import from carebox (besides itself)
ALLOWED = {
    "domain": set(),
    "store": {"domain"},
    "mail": {"domain"},
    "services": {"domain", "store", "mail", "config", "demo"},
    "ui": {"domain", "services", "config"},
}
FORBIDDEN_IN_DOMAIN = {
    "sqlite3",
    "sqlalchemy",
    "sqlmodel",
    "textual",
    "socket",
    "ssl",
    "aioimaplib",
    "aiosmtplib",
    "keyring",
    "subprocess",
    "asyncio",
    "os",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_lower_layers_import_without_textual() -> None:
    modules = []
    for layer in ("domain", "store", "mail", "services"):
        for path in sorted((ROOT / layer).glob("*.py")):
            modules.append(f"carebox.{layer}.{path.stem}" if path.stem != "__init__" else f"carebox.{layer}")
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "bad = sorted(k for k in sys.modules if k == 'textual' or k.startswith('textual.'))\n"
        "print(len(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0", out.stdout + out.stderr
    assert len(modules) >= 15


def test_imports_point_down() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in (ROOT / layer).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] != "carebox" or len(parts) < 2:
                    continue
                target = parts[1]
                if target != layer and target not in allowed:
                    problems.append(f"{path.relative_to(ROOT)} imports {name}")
    assert problems == []


def test_domain_is_pure() -> None:
    problems = []
    for path in (ROOT / "domain").rglob("*.py"):
        for name in _imports(path):
            if name.split(".")[0] in FORBIDDEN_IN_DOMAIN:
                problems.append(f"{path.name} imports {name}")
    assert problems == []
