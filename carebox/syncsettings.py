"""The few validated settings a no-change ``carebox sync`` needs, remembered beside the store.

Validating the config (pydantic: importing it and building the config's models) is 0.1-0.2 s of
the 0.3-0.5 s that a ``carebox sync`` with nothing new takes. After a sync has validated the config,
``remember`` writes what the quick check uses (the account's server, user name, address,
password command and folders; never a password) to ``sync-settings.json`` in the store folder,
with a digest of everything the validation depended on: the config file's path and bytes, the
environment that decides the default and ``~`` paths, and carebox's config code. ``recall`` gives
those settings back, without pydantic, only while that digest is unchanged; on any doubt it
gives None and the config is validated as before (and remembered again).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from carebox.paths import find_config, store_dir_hint

SETTINGS_FILE = "sync-settings.json"
_ENV = ("HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME", "CAREBOX_CONFIG")


def stamp(cli_path: str | os.PathLike[str] | None) -> str | None:
    """The digest of what validating the config now depends on (read BEFORE validating it: a file
    changed in between then only fails to match). None when there is no config file to read."""
    path = find_config(cli_path)
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    h = hashlib.sha256()
    for part in (str(path.absolute()).encode(), raw, *(os.environ.get(k, "").encode() for k in _ENV)):
        h.update(len(part).to_bytes(8, "big") + part)
    here = Path(__file__).resolve().parent
    for code in ("config.py", "paths.py", "syncsettings.py"):  # a carebox update revalidates
        with contextlib.suppress(OSError):
            st = (here / code).stat()
            h.update(f"{code}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()


def remember(config: Any, store_dir: Path, digest: str | None) -> None:
    """Keep ``config``'s sync settings in ``store_dir`` (which must exist), for ``recall``."""
    account = config.account
    if digest is None or account is None or not store_dir.is_dir():
        return
    imap = account.imap
    data = {
        "digest": digest,
        "store_dir": str(store_dir),
        "address": account.address,
        "username": account.username,
        "password_command": account.password_command,
        "imap": {
            "host": imap.host,
            "port": imap.port,
            "tls": imap.tls,
            "ca_file": str(imap.ca_file) if imap.ca_file is not None else None,
            "allow_insecure": imap.allow_insecure,
        },
        "folders": {"inbox": account.folders.inbox, "sent": account.folders.sent, "extra": list(account.folders.extra)},
    }
    text = json.dumps(data, indent=1)
    target = store_dir / SETTINGS_FILE
    with contextlib.suppress(OSError):
        if target.is_file() and target.read_text(encoding="utf-8") == text:
            return
        tmp = target.with_name(target.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)


def recall(cli_path: str | os.PathLike[str] | None) -> Any | None:
    """The remembered settings, shaped like the validated config where the quick check reads it
    (``.account.imap.host``, ``.account.folders.inbox``, ..., and ``.store_dir``), or None."""
    digest = stamp(cli_path)
    hint = store_dir_hint(cli_path)
    if digest is None or hint is None:
        return None
    try:
        data = json.loads((hint / SETTINGS_FILE).read_text(encoding="utf-8"))
        if data["digest"] != digest or data["store_dir"] != str(hint):
            return None
        imap = data["imap"]
        folders = data["folders"]
        account = SimpleNamespace(
            address=str(data["address"]),
            username=str(data["username"]),
            password_command=data["password_command"],
            imap=SimpleNamespace(
                host=str(imap["host"]),
                port=imap["port"],
                tls=str(imap["tls"]),
                ca_file=Path(imap["ca_file"]) if imap["ca_file"] is not None else None,
                allow_insecure=bool(imap["allow_insecure"]),
            ),
            folders=SimpleNamespace(
                inbox=str(folders["inbox"]), sent=str(folders["sent"]), extra=tuple(folders["extra"])
            ),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return SimpleNamespace(account=account, store_dir=hint)
