"""A scripted asyncio IMAP server for the faults Dovecot will not produce.

It speaks just enough IMAP4rev1 for carebox's client (CAPABILITY, STARTTLS, LOGIN, ENABLE, SELECT/EXAMINE,
UID FETCH, UID SEARCH, NOOP, IDLE, LOGOUT) over one folder of in-memory messages, and misbehaves on demand:

    FAULTS
      "literal_too_long"        BODY[] {N} followed by more than N bytes
      "huge_literal"            BODY[] {10737418240} then junk streamed until the client hangs up
      "unsolicited_mid_fetch"   "* n EXPUNGE", "* n EXISTS" and a flags-only FETCH between FETCH items
      "expunge_inside_item"     "* n EXPUNGE" inside a FETCH item, after its literal (illegal)
      "starttls_refused"        STARTTLS offered, answered NO
      "starttls_absent"         STARTTLS not offered
      "starttls_inject"         STARTTLS answered OK with a plaintext "* 99 EXISTS" in the same packet
      "preauth"                 greeting is "* PREAUTH"
      "bye_greeting"            greeting is "* BYE"
      "silent"                  accepts the TCP connection, never says anything
      "stall_fetch"             starts a BODY FETCH answer, then stops sending (connection kept open)
      "endless_line"            a FETCH line that never ends (no CRLF), streamed until the client hangs up
      "no_idle_answer"          never answers DONE after IDLE

    async with HostileImapServer(fault="huge_literal", tls=True, cert=..., key=...) as srv:
        settings = ImapSettings("127.0.0.1", srv.port, "user", "pw", ca_file=cert)

``srv.logins`` records (user, was_tls) for every LOGIN received, ``srv.bytes_sent`` what it wrote,
``srv.commands`` every command line (password masked), ``srv.disconnected`` is set when a client left.
A certificate for the wrong host name: ``make_self_signed_cert(dir, cn="wrong.example",
san="DNS:wrong.example")`` from tests.servers.dovecot.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path

FAULTS = frozenset(
    {
        "",
        "literal_too_long",
        "huge_literal",
        "unsolicited_mid_fetch",
        "expunge_inside_item",
        "starttls_refused",
        "starttls_absent",
        "starttls_inject",
        "preauth",
        "bye_greeting",
        "silent",
        "stall_fetch",
        "endless_line",
        "no_idle_answer",
    }
)

TEN_GB = 10 * 1024**3


def sample_message(uid: int) -> bytes:
    return (
        f"From: Test Sender <sender{uid}@example.org>\r\n"
        f"To: practice@example.org\r\n"
        f"Subject: Re: * urgent * question {uid}\r\n"
        f"Message-ID: <hostile-{uid}@example.org>\r\n"
        f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n"
        f"\r\n"
        f"Body of message {uid}.\r\n* a line that starts with a star\r\n"
    ).encode()


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    tls: bool
    selected: bool = False


@dataclass
class HostileImapServer:
    fault: str = ""
    tls: bool = True  # implicit TLS on the listening port (False: plaintext, for STARTTLS scenarios)
    cert: Path | None = None
    key: Path | None = None
    host: str = "127.0.0.1"
    messages: dict[int, bytes] = field(default_factory=lambda: {u: sample_message(u) for u in (1, 2, 3)})
    uidvalidity: int = 4242
    huge_stream_limit: int = 256 * 1024 * 1024  # stop streaming junk after this many bytes regardless

    port: int = 0
    logins: list[tuple[str, bool]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    connections: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}")
        self._server: asyncio.base_events.Server | None = None
        self._ctx: ssl.SSLContext | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        if self.cert is not None and self.key is not None:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(self.cert), str(self.key))
            self._ctx = ctx
        elif self.tls or self.fault.startswith("starttls"):
            raise ValueError("TLS scenarios need cert and key")

    async def start(self) -> HostileImapServer:
        self._server = await asyncio.start_server(self._handle, self.host, 0, ssl=self._ctx if self.tls else None)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            for t in list(self._tasks):
                t.cancel()
            for t in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await t
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> HostileImapServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- plumbing ---------------------------------------------------------------------------------

    async def _send(self, conn: _Conn, data: bytes) -> None:
        conn.writer.write(data)
        self.bytes_sent += len(data)
        await conn.writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        self._writers.add(writer)
        self.connections += 1
        conn = _Conn(reader, writer, tls=self.tls)
        try:
            await self._session(conn)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            with contextlib.suppress(Exception):
                writer.transport.abort()
            self.disconnected.set()
            self._tasks.discard(task)  # type: ignore[arg-type]

    def _caps(self, conn: _Conn) -> str:
        caps = ["IMAP4rev1", "IDLE", "UIDPLUS", "ENABLE"]
        if not conn.tls and self.fault != "starttls_absent":
            caps.append("STARTTLS")
            caps.append("LOGINDISABLED")
        return " ".join(caps)

    async def _session(self, conn: _Conn) -> None:
        if self.fault == "silent":
            await conn.reader.read()  # until the client gives up
            return
        if self.fault == "bye_greeting":
            await self._send(conn, b"* BYE Too many connections, try later\r\n")
            return
        if self.fault == "preauth":
            await self._send(conn, b"* PREAUTH [CAPABILITY " + self._caps(conn).encode() + b"] hostile ready\r\n")
        else:
            await self._send(conn, b"* OK hostile IMAP ready\r\n")
        while True:
            line = await conn.reader.readline()
            if not line:
                return
            if not line.endswith(b"\r\n"):
                return
            text = line[:-2].decode("utf-8", "replace")
            m = re.match(r"(\S+) (UID )?(\S+) ?(.*)$", text, re.IGNORECASE)
            if not m:
                await self._send(conn, b"* BAD what?\r\n")
                continue
            tag, is_uid, cmd, args = m.group(1), bool(m.group(2)), m.group(3).upper(), m.group(4)
            self.commands.append(f"{tag} {'UID ' if is_uid else ''}{cmd} {args if cmd != 'LOGIN' else '***'}")
            if await self._command(conn, tag, is_uid, cmd, args) is False:
                return

    async def _command(self, conn: _Conn, tag: str, is_uid: bool, cmd: str, args: str) -> bool | None:
        t = tag.encode()
        if cmd == "CAPABILITY":
            await self._send(conn, b"* CAPABILITY " + self._caps(conn).encode() + b"\r\n" + t + b" OK done\r\n")
        elif cmd == "STARTTLS":
            if self.fault == "starttls_refused" or conn.tls:
                await self._send(conn, t + b" NO STARTTLS not available right now\r\n")
                return None
            if self.fault == "starttls_inject":
                # the OK and an injected plaintext response in one packet
                await self._send(conn, t + b" OK Begin TLS\r\n* 99 EXISTS\r\n")
            else:
                await self._send(conn, t + b" OK Begin TLS\r\n")
            assert self._ctx is not None
            await conn.writer.start_tls(self._ctx)
            conn.tls = True
        elif cmd == "LOGIN":
            user = args.split(" ", 1)[0].strip('"')
            self.logins.append((user, conn.tls))
            await self._send(conn, t + b" OK [CAPABILITY " + self._caps(conn).encode() + b"] Logged in\r\n")
        elif cmd == "ENABLE":
            await self._send(conn, t + b" OK enabled nothing\r\n")
        elif cmd in ("SELECT", "EXAMINE"):
            conn.selected = True
            n = len(self.messages)
            nxt = max(self.messages, default=0) + 1
            await self._send(
                conn,
                b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
                + f"* {n} EXISTS\r\n* OK [UIDVALIDITY {self.uidvalidity}] UIDs valid\r\n".encode()
                + f"* OK [UIDNEXT {nxt}] Predicted next UID\r\n".encode()
                + t
                + b" OK [READ-WRITE] Select completed\r\n",
            )
        elif cmd == "FETCH" and is_uid:
            return await self._fetch(conn, t, args)
        elif cmd == "SEARCH":
            uids = " ".join(str(u) for u in sorted(self.messages))
            await self._send(conn, f"* SEARCH {uids}\r\n".encode() + t + b" OK Search completed\r\n")
        elif cmd == "NOOP":
            await self._send(conn, t + b" OK NOOP completed\r\n")
        elif cmd == "IDLE":
            await self._send(conn, b"+ idling\r\n")
            done = await conn.reader.readline()
            if self.fault == "no_idle_answer":
                await conn.reader.read()
                return False
            if done.strip().upper() == b"DONE":
                await self._send(conn, t + b" OK Idle completed\r\n")
            else:
                await self._send(conn, t + b" BAD expected DONE\r\n")
        elif cmd == "LOGOUT":
            await self._send(conn, b"* BYE Logging out\r\n" + t + b" OK Logout completed\r\n")
            return False
        else:
            await self._send(conn, t + b" BAD unsupported here\r\n")
        return None

    async def _fetch(self, conn: _Conn, t: bytes, args: str) -> bool | None:
        uid_set, _, items = args.partition(" ")
        uids = [u for u in _parse_set(uid_set, max(self.messages, default=0)) if u in self.messages]
        seqs = {u: i + 1 for i, u in enumerate(sorted(self.messages))}
        want_body = "BODY.PEEK[]" in items.upper()
        if not want_body:
            out = b""
            for u in uids:
                size = len(self.messages[u])
                out += f"* {seqs[u]} FETCH (UID {u} RFC822.SIZE {size} FLAGS ())\r\n".encode()
            await self._send(conn, out + t + b" OK Fetch completed\r\n")
            return None
        date = b'"01-Jan-2024 10:00:00 +0000"'
        for i, u in enumerate(uids):
            raw = self.messages[u]
            head = f"* {seqs[u]} FETCH (UID {u} FLAGS (\\Seen) INTERNALDATE ".encode() + date
            if self.fault == "huge_literal" and i == 0:
                await self._send(conn, head + b" RFC822.SIZE 100 BODY[] {%d}\r\n" % TEN_GB)
                junk = b"x" * 65536
                while self.bytes_sent < self.huge_stream_limit:
                    await self._send(conn, junk)
                return False
            if self.fault == "endless_line" and i == 0:
                await self._send(conn, head + b" X-JUNK ")
                junk = b"y" * 65536
                while self.bytes_sent < self.huge_stream_limit:
                    await self._send(conn, junk)
                return False
            if self.fault == "stall_fetch" and i == 0:
                await self._send(conn, head + b" RFC822.SIZE %d BODY[] {%d}\r\n" % (len(raw), len(raw)))
                await self._send(conn, raw[: len(raw) // 2])
                await conn.reader.read()
                return False
            if self.fault == "literal_too_long" and i == 1:
                extra = b"\r\nthis text was not announced in the literal size\r\n"
                await self._send(
                    conn, head + b" RFC822.SIZE %d BODY[] {%d}\r\n" % (len(raw), len(raw)) + raw + extra + b")\r\n"
                )
                continue
            if self.fault == "expunge_inside_item" and i == 1:
                await self._send(
                    conn,
                    head
                    + b" RFC822.SIZE %d BODY[] {%d}\r\n" % (len(raw), len(raw))
                    + raw
                    + b"\r\n* 9 EXPUNGE\r\n)\r\n",
                )
                continue
            await self._send(conn, head + b" RFC822.SIZE %d BODY[] {%d}\r\n" % (len(raw), len(raw)) + raw + b")\r\n")
            if self.fault == "unsolicited_mid_fetch" and i == 0:
                await self._send(
                    conn,
                    b"* 7 EXPUNGE\r\n* 12 EXISTS\r\n"
                    b"* 3 FETCH (UID 3 FLAGS (\\Flagged))\r\n"
                    b"* OK [ALERT] a status line in the middle\r\n",
                )
        await self._send(conn, t + b" OK Fetch completed\r\n")
        return None


def _parse_set(text: str, star: int) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        a = star if lo == "*" else int(lo)
        b = a if not hi else (star if hi == "*" else int(hi))
        lo_i, hi_i = min(a, b), max(a, b)
        out.extend(range(lo_i, min(hi_i, star) + 1))
    return out
