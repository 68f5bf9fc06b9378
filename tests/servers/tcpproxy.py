"""An asyncio TCP proxy between a client and a server (e.g. Dovecot's IMAPS port) that breaks on demand.

TLS passes through untouched, so the client still verifies the server's certificate: connect to
``127.0.0.1:proxy.port`` (the Dovecot test cert covers IP 127.0.0.1).

    async with TcpProxy("127.0.0.1", dovecot.imaps_port) as proxy:
        proxy.cut_after(200_000)       # each connection dies after 200 kB server->client (once)
        ...                            # sync fails mid-FETCH with ImapConnectionError
        proxy.cut_after(None)          # disarm; or it disarmed itself after firing once
        await proxy.cut()              # kill every open connection now
        proxy.stall()                  # stop forwarding, keep sockets open (a dead network)
        proxy.resume()

Counters: ``bytes_down`` (server->client, all connections), ``bytes_up``, ``connections``, ``cuts``.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client_w: asyncio.StreamWriter
    server_w: asyncio.StreamWriter
    down: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self.port = 0
        self.bytes_down = 0
        self.bytes_up = 0
        self.connections = 0
        self.cuts = 0
        self._cut_after: int | None = None
        self._cut_once = True
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._links: set[_Link] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self.cut_event = asyncio.Event()  # set whenever a connection was cut

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, self.listen_host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self.cut(count=False)
            for t in list(self._handlers):
                t.cancel()
            for t in list(self._handlers):
                with contextlib.suppress(BaseException):
                    await t
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
            self._server = None

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- faults -----------------------------------------------------------------------------------

    def cut_after(self, n_bytes: int | None, once: bool = True) -> None:
        """Abort a connection once it has carried ``n_bytes`` server->client (counted per connection,
        from its start). ``once``: disarm after the first cut, so a reconnect works. None disarms."""
        self._cut_after = n_bytes
        self._cut_once = once

    async def cut(self, count: bool = True) -> None:
        """Abort every open connection now (both sides see a reset)."""
        for link in list(self._links):
            self._abort(link, count=count)
        await asyncio.sleep(0)

    def stall(self) -> None:
        """Stop forwarding in both directions; sockets stay open (like a silently dead network)."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    @property
    def open_connections(self) -> int:
        return len(self._links)

    # ---- plumbing ---------------------------------------------------------------------------------

    def _abort(self, link: _Link, count: bool = True) -> None:
        if link in self._links:
            self._links.discard(link)
            if count:
                self.cuts += 1
                self.cut_event.set()
            for w in (link.client_w, link.server_w):
                with contextlib.suppress(Exception):
                    w.transport.abort()
            for t in link.tasks:
                t.cancel()

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)  # type: ignore[arg-type]
        try:
            try:
                server_r, server_w = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                client_w.transport.abort()
                return
            self.connections += 1
            link = _Link(client_w, server_w)
            self._links.add(link)
            up = asyncio.ensure_future(self._pump(link, client_r, server_w, downstream=False))
            down = asyncio.ensure_future(self._pump(link, server_r, client_w, downstream=True))
            link.tasks = [up, down]
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
            # one side ended: close the other gracefully (half-close semantics are not needed here)
            for w in (client_w, server_w):
                with contextlib.suppress(Exception):
                    w.close()
            for t in link.tasks:
                t.cancel()
            self._links.discard(link)
        finally:
            self._handlers.discard(task)  # type: ignore[arg-type]

    async def _pump(
        self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, downstream: bool
    ) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                await self._flowing.wait()
                if downstream:
                    limit = self._cut_after
                    if limit is not None and link.down + len(data) >= limit:
                        keep = max(limit - link.down, 0)
                        if keep:
                            writer.write(data[:keep])
                            self.bytes_down += keep
                            link.down += keep
                            with contextlib.suppress(Exception):
                                await writer.drain()
                        if self._cut_once:
                            self._cut_after = None
                        self._abort(link)
                        return
                    link.down += len(data)
                    self.bytes_down += len(data)
                else:
                    self.bytes_up += len(data)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
