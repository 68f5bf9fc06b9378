"""Where the config and the store live, found without validating the config (no pydantic):
``carebox open`` starts unlocking the store's key from ``store_dir_hint`` while the config is
still being validated, and checks the hint against the validated config before using the key."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import platformdirs

APP_NAME = "carebox"


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME)) / "carebox.toml"


def default_store_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME)) / "store"


def find_config(cli_path: str | os.PathLike[str] | None) -> Path | None:
    """The config file to read, or None when there is none anywhere (defaults apply)."""
    if cli_path:
        return Path(cli_path)
    env = os.environ.get("CAREBOX_CONFIG")
    if env:
        return Path(env)
    path = default_config_path()
    return path if path.exists() else None


def store_dir_hint(cli_path: str | os.PathLike[str] | None) -> Path | None:
    """The store folder the config will most likely name (``Config.store_dir``), from its raw
    TOML; None on any doubt. Only a hint: the validated config decides."""
    try:
        path = find_config(cli_path)
        if path is None:
            return default_store_dir()
        with path.open("rb") as f:
            raw = tomllib.load(f)
        store = raw.get("store", {})
        value = store.get("path") if isinstance(store, dict) else None
        if value is None:
            return default_store_dir()
        return Path(value).expanduser() if isinstance(value, str) and value else None
    except (OSError, ValueError):
        return None
