"""A private Dovecot (Debian dovecot-imapd 2.3) for integration tests.

Everything lives in one temp dir made with ``tempfile.mkdtemp`` (not pytest's 0700 ``tmp_path``: Dovecot's
own users must traverse it): config, self-signed cert, passwd-file, mail homes, logs, base_dir.
Mail is owned by the ``dovecot`` system user (``first_valid_uid = 1`` lets Dovecot serve it).

    with Dovecot() as dc:
        dc.add_user("alice", "secret")
        dc.deliver("alice", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        ... connect to dc.host:dc.imaps_port with ca_file=dc.ca_file ...
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DOVECOT_BIN = Path("/usr/sbin/dovecot")
DOVEADM_BIN = Path("/usr/bin/doveadm")

# Maildir info flags (the ":2,XYZ" suffix), by IMAP flag
_MAILDIR_FLAGS = {
    "\\draft": "D",
    "\\flagged": "F",
    "\\answered": "R",
    "\\seen": "S",
    "\\deleted": "T",
}


def dovecot_available() -> bool:
    """True when this machine can run the private Dovecot (binary present, dovecot users exist, root)."""
    if not DOVECOT_BIN.exists() or not os.access(DOVECOT_BIN, os.X_OK):
        return False
    try:
        pwd.getpwnam("dovecot")
        pwd.getpwnam("dovenull")
    except KeyError:
        return False
    return os.geteuid() == 0


def _fast_tmp_dir() -> str | None:
    """/dev/shm when it is a roomy tmpfs (creating files on the disk here costs ~1 ms each), else the default."""
    shm = Path("/dev/shm")
    try:
        if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= 2 * 1024**3:
            return str(shm)
    except OSError:
        pass
    return None


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                fields = (p / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 1 and fields[1] == str(pid):
                out.append(int(p.name))
    return out


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_self_signed_cert(directory: Path, cn: str = "localhost", san: str | None = None) -> tuple[Path, Path]:
    """A self-signed cert + key (PEM) in ``directory``; returns (cert, key). The cert doubles as the CA file."""
    san = san or "DNS:localhost,IP:127.0.0.1"
    cert, key = directory / f"{cn}-cert.pem", directory / f"{cn}-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "30",
            "-subj",
            f"/CN={cn}",
            "-addext",
            f"subjectAltName={san}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=60,
    )
    return cert, key


@dataclass(frozen=True)
class ImapAccount:
    """A test mailbox on the private Dovecot: what ``ImapSettings`` needs, plus the server itself."""

    host: str
    port: int  # implicit TLS (imaps)
    starttls_port: int  # plain IMAP port (STARTTLS, or plaintext from 127.0.0.1)
    username: str
    password: str
    ca_file: Path
    server: Dovecot

    def settings(self, **overrides: Any) -> Any:
        """``carebox.mail.imap.ImapSettings`` for this account (implicit TLS, test CA); fields overridable."""
        from carebox.mail.imap import ImapSettings

        values: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "username": self.username,
            "password": self.password,
            "ca_file": self.ca_file,
            "timeout": 10.0,
        }
        values.update(overrides)
        return ImapSettings(**values)

    def deliver(self, raw: bytes, folder: str = "INBOX", flags: str = "") -> Path:
        return self.server.deliver(self.username, raw, folder=folder, flags=flags)


_CONFIG = """\
instance_name = {instance}
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = yes
auth_mechanisms = plain login
auth_failure_delay = 0
mail_location = maildir:~/Maildir
first_valid_uid = 1
mail_fsync = never
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 2 mins
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {root}/passwd.d/%n
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {root}/passwd.d/%n
}}
namespace inbox {{
  inbox = yes
  separator = .
  mailbox Drafts {{
    special_use = \\Drafts
  }}
  mailbox Sent {{
    special_use = \\Sent
    auto = subscribe
  }}
  mailbox Trash {{
    special_use = \\Trash
  }}
  mailbox Junk {{
    special_use = \\Junk
  }}
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""


class Dovecot:
    """One private Dovecot master process with its own config, cert, users and mail."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="carebox-dovecot-", dir=_fast_tmp_dir()))
        os.chmod(self.root, 0o755)  # noqa: S103 - Dovecot's users must traverse it
        self.conf = self.root / "dovecot.conf"
        self.log_path = self.root / "dovecot.log"
        self.passwd = self.root / "passwd.d"
        self.homes = self.root / "home"
        self.imap_port = 0
        self.imaps_port = 0
        self.cert, self.key = make_self_signed_cert(self.root)
        self._pw = pwd.getpwnam("dovecot")
        self._counter = itertools.count(1)
        self._users: dict[str, str] = {}
        self._started = False

    # ---- lifecycle -------------------------------------------------------------------------------

    @property
    def ca_file(self) -> Path:
        """The CA file a client must trust: the self-signed server cert itself."""
        return self.cert

    @property
    def pid_file(self) -> Path:
        return self.root / "run" / "master.pid"

    def start(self, timeout: float = 15.0) -> Dovecot:
        if self._started:
            return self
        for sub in ("run", "state"):
            (self.root / sub).mkdir(exist_ok=True)
        self.homes.mkdir(exist_ok=True)
        os.chown(self.homes, self._pw.pw_uid, self._pw.pw_gid)
        self.passwd.mkdir(exist_ok=True)
        os.chmod(self.passwd, 0o755)  # noqa: S103
        self.imap_port, self.imaps_port = free_port(), free_port()
        while self.imaps_port == self.imap_port:
            self.imaps_port = free_port()
        self.conf.write_text(
            _CONFIG.format(
                instance=f"carebox-test-{uuid.uuid4().hex[:8]}",
                root=self.root,
                cert=self.cert,
                key=self.key,
                imap_port=self.imap_port,
                imaps_port=self.imaps_port,
            )
        )
        # Output to a file: Dovecot keeps inherited stdout/stderr open, a pipe would hang the caller.
        with open(self.root / "startup.log", "ab") as out:
            proc = subprocess.run(
                [str(DOVECOT_BIN), "-c", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                timeout=30,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"dovecot failed to start (exit {proc.returncode}): {self._startup_text()}")
        self._started = True
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        for port in (self.imap_port, self.imaps_port):
            while True:
                try:
                    with socket.create_connection((self.host, port), timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"dovecot did not listen on {port}: {self._startup_text()}") from None
                    time.sleep(0.05)
        return self

    def _startup_text(self) -> str:
        parts = []
        for p in (self.root / "startup.log", self.log_path):
            if p.exists():
                parts.append(p.read_text(errors="replace")[-2000:])
        return " | ".join(parts)

    def stop(self, remove: bool = True) -> None:
        """Stop this instance (by its master.pid) and delete its directory.

        Dovecot's master takes ~2.5 s to exit after SIGTERM (it waits on its log process); after a short
        grace period the master and its own children (found by parent pid) are killed instead.
        """
        if self._started:
            self._started = False
            pid = None
            with contextlib.suppress(OSError, ValueError):
                pid = int(self.pid_file.read_text().strip())
            if pid and _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
                deadline = time.monotonic() + 0.3
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
                for p in [pid, *_children(pid)] if _alive(pid) else []:
                    if _alive(p):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(p, signal.SIGKILL)
                deadline = time.monotonic() + 5
                while _alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.02)
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # ---- users and mail --------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a user. One passwd-file per user (``passwd.d/NAME``): Dovecot re-reads a changed shared
        passwd-file at most once a second, so a user added right after a login would be missed."""
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
            raise ValueError("test user names are letters, digits, '-', '_' and '.' only")
        if ":" in password or "\n" in password:
            raise ValueError("password must not contain ':' or newlines")
        home = self.homes / name
        home.mkdir(exist_ok=True)
        os.chown(home, self._pw.pw_uid, self._pw.pw_gid)
        line = f"{name}:{{PLAIN}}{password}:{self._pw.pw_uid}:{self._pw.pw_gid}::{home}::\n"
        target = self.passwd / name
        tmp = self.passwd / f".{name}.tmp"
        tmp.write_text(line)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        self._users[name] = password

    def new_account(self, hint: str = "user", password: str | None = None) -> ImapAccount:
        """A fresh user with a unique name (so tests never share a mailbox)."""
        base = re.sub(r"[^a-z0-9]", "", hint.lower())[:20] or "user"
        name = f"{base}-{next(self._counter)}-{uuid.uuid4().hex[:6]}"
        pw = password or f"pw-{uuid.uuid4().hex[:12]}"
        self.add_user(name, pw)
        return ImapAccount(self.host, self.imaps_port, self.imap_port, name, pw, self.ca_file, self)

    def home(self, user: str) -> Path:
        return self.homes / user

    def maildir(self, user: str, folder: str = "INBOX") -> Path:
        """The Maildir++ directory of ``folder`` (``INBOX`` is ~/Maildir, ``Sent`` is ~/Maildir/.Sent)."""
        base = self.homes / user / "Maildir"
        return base if folder.upper() == "INBOX" else base / f".{folder}"

    def _ensure_maildir(self, user: str, folder: str) -> Path:
        base = self.homes / user / "Maildir"
        md = self.maildir(user, folder)
        for d in (base, md, md / "cur", md / "new", md / "tmp"):
            if not d.exists():
                d.mkdir()
                os.chown(d, self._pw.pw_uid, self._pw.pw_gid)
        if md != base and not (md / "maildirfolder").exists():
            (md / "maildirfolder").touch()
            os.chown(md / "maildirfolder", self._pw.pw_uid, self._pw.pw_gid)
        return md

    def deliver(
        self, user: str, raw: bytes, folder: str = "INBOX", flags: str = "", mtime: float | None = None
    ) -> Path:
        """Write one message straight into the user's Maildir (``cur/``, flags as Maildir info).

        ``flags`` is IMAP-style (``"\\\\Seen \\\\Flagged"``) or Maildir letters (``"SF"``). Dovecot indexes the
        file on the next SELECT/NOOP of that folder. ``mtime`` sets the file time (Dovecot's INTERNALDATE).
        An IMAP APPEND from a second client is the reliable way to wake an IDLE at once.
        """
        md = self._ensure_maildir(user, folder)
        letters = set()
        for part in flags.split():
            if part.startswith("\\"):
                letters.add(_MAILDIR_FLAGS[part.lower()])
            else:
                letters.update(part)
        info = "".join(sorted(letters))
        n = next(self._counter)
        base = f"{int(time.time())}.P{os.getpid()}Q{n}R{uuid.uuid4().hex[:8]}.carebox-test"
        tmp = md / "tmp" / base
        tmp.write_bytes(raw)
        os.chown(tmp, self._pw.pw_uid, self._pw.pw_gid)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        final = md / "cur" / f"{base}:2,{info}"
        os.rename(tmp, final)
        return final

    def deliver_many(self, user: str, messages: list[bytes], folder: str = "INBOX", flags: str = "") -> None:
        for raw in messages:
            self.deliver(user, raw, folder=folder, flags=flags)

    def doveadm(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run ``doveadm -c CONF ARGS`` against this instance; returns the completed process (text)."""
        with tempfile.TemporaryFile() as err:
            proc = subprocess.run(
                [str(DOVEADM_BIN), "-c", str(self.conf), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                timeout=timeout,
                text=True,
                check=False,
            )
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        proc.stderr = stderr
        if check and proc.returncode != 0:
            raise RuntimeError(f"doveadm {' '.join(args)} failed ({proc.returncode}): {stderr.strip()}")
        return proc

    def status(self, user: str, folder: str = "INBOX") -> dict[str, int]:
        """``doveadm mailbox status``: messages, uidnext, uidvalidity, highestmodseq as ints."""
        out = self.doveadm(
            "-f", "flow", "mailbox", "status", "-u", user, "messages uidnext uidvalidity highestmodseq", folder
        ).stdout
        result: dict[str, int] = {}
        for tok in out.split():
            k, _, v = tok.partition("=")
            if v.isdigit():
                result[k] = int(v)
        return result

    def set_uidvalidity(self, user: str, folder: str = "INBOX", value: int | None = None) -> int:
        """Give ``folder`` a new UIDVALIDITY (messages stay). Returns the new value."""
        if value is None:
            value = self.status(user, folder)["uidvalidity"] + 1
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)
        return value

    def recreate_mailbox(self, user: str, folder: str = "INBOX") -> int:
        """Force a UIDVALIDITY change the way a server-side rebuild does: the mails stay, but Dovecot's
        uidlist and indexes are dropped and a new UIDVALIDITY is set, so every UID is reassigned.
        Returns the new UIDVALIDITY. Clients that had the folder selected should reconnect."""
        old = self.status(user, folder)["uidvalidity"]
        md = self.maildir(user, folder)
        for p in md.iterdir():
            if p.name.startswith("dovecot") and p.is_file():
                p.unlink()
        index_dir = md  # indexes live next to the maildir unless mail_location says otherwise
        for p in index_dir.glob("dovecot.index*"):
            p.unlink()
        new = self.status(user, folder)["uidvalidity"]
        if new <= old:
            new = self.set_uidvalidity(user, folder, old + 1)
        return new
