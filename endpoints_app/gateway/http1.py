"""A small pooled HTTP/1.1 client for the gateway's one kind of upstream call.

The gateway sends one POST with a JSON body to a model server it trusts and
reads one response. aiohttp's general client spends most of the gateway's CPU
on that call (request and response objects, header multidicts, stream
readers, timers); this client writes the request in one call and lets
httptools (the parser uvicorn uses) read the response into a buffer. Idle
keep-alive connections are pooled per instance; a connection the server closed
is dropped from the pool when the close arrives."""

from __future__ import annotations

import asyncio
from collections import deque

import httptools

from endpoints_app.runtime import channel


class UpstreamConnectionError(ConnectionError):
    """The connection failed or closed before a whole response arrived."""

    def __init__(self, message: str, reused: bool = False) -> None:
        super().__init__(message)
        # A pooled connection the server had already closed: a fresh one may well succeed.
        self.reused = reused


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "chunks", "content_type", "closed", "keep_alive", "pool")

    def __init__(self, pool: deque) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.chunks: list[bytes] = []
        self.content_type = b"application/json"
        self.closed = False
        self.keep_alive = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"bad response from the model server: {exc}"))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        try:
            self.pool.remove(self)
        except ValueError:
            pass
        self._fail(UpstreamConnectionError("the model server closed the connection", reused=not self.chunks))

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"content-type":
            self.content_type = value

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        # Only valid inside this callback: the parser resets once the message is done.
        self.keep_alive = self.parser.should_keep_alive()
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())


class Http1Pool:
    """Keep-alive connections per (host, port), or per instance socket (and uid)."""

    def __init__(self) -> None:
        self._idle: dict[tuple, deque[_Connection]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def post(self, host: str, port: int, head: bytes, body: bytes, socket: str = "",
                   uid: int | None = None) -> tuple[int, bytes, str]:
        """POST to the Unix socket `socket` whose server must run as `uid` (a sandboxed instance), else
        to host:port; head is the request line and headers up to (not including) Content-Length.
        Returns (status, body, content type)."""
        loop = self._loop or asyncio.get_running_loop()
        self._loop = loop
        key = (socket, uid) if socket else (host, port)
        idle = self._idle.get(key)
        if idle is None:
            idle = self._idle[key] = deque()
        conn = None
        reused = False
        while idle:
            candidate = idle.pop()
            if not candidate.closed:
                conn, reused = candidate, True
                break
        if conn is None:
            conn = await self._connect(loop, idle, host, port, socket, uid)
        conn.chunks = []
        conn.content_type = b"application/json"
        waiter = conn.waiter = loop.create_future()
        conn.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        try:
            status = await waiter
        except UpstreamConnectionError as exc:
            exc.reused = reused and exc.reused
            raise
        except BaseException:
            # Cancelled (timeout): the response may still come; this connection cannot be reused.
            conn.transport.close()
            raise
        finally:
            conn.waiter = None
        data = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        if conn.keep_alive and not conn.closed:
            idle.append(conn)
        else:
            conn.transport.close()
        return status, data, conn.content_type.decode("latin-1")

    @staticmethod
    async def _connect(loop, idle: deque, host: str, port: int, socket: str, uid: int | None) -> _Connection:
        try:
            if not socket:
                _, conn = await loop.create_connection(lambda: _Connection(idle), host, port)
                return conn
            transport, conn = await loop.create_unix_connection(lambda: _Connection(idle),
                                                                channel.connect_path(socket))
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {socket or f'{host}:{port}'}: "
                                          f"{exc.strerror or exc}") from None
        try:
            # Once per connection: the kernel's word on who listens there.
            channel.check_peer(transport.get_extra_info("socket"), uid)
        except (OSError, channel.WrongPeer) as exc:
            transport.close()
            raise UpstreamConnectionError(f"refused {socket}: {exc}") from None
        return conn

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().transport.close()
