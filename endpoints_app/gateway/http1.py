"""A small pooled HTTP/1.1 client for the gateway's one kind of upstream call.

The gateway sends one POST with a JSON body to a model server it trusts and
reads one response. aiohttp's general client spends most of the gateway's CPU
on that call (request and response objects, header multidicts, stream
readers, timers); this client writes the request in one call and lets
httptools (the parser uvicorn uses) read the response into a buffer. Idle
keep-alive connections are pooled per instance.

Whether any byte of a request reached the model server decides whether the
gateway may try another instance (gateway/proxy.py), so a pooled connection is
used only when it has been idle for less than the model servers' keep-alive
timeout minus a margin, and the kernel says the server has not closed it (a
zero-timeout poll, as urllib3 checks a pooled connection); anything else is
closed and the next one (or a fresh connection) taken."""

from __future__ import annotations

import asyncio
import select
from collections import deque

import httptools

from endpoints_app.runtime import channel
from endpoints_app.runtime.listen import KEEP_ALIVE_S

# A pooled connection idle for longer than this is closed rather than used: the model server closes it
# after KEEP_ALIVE_S, and a request written just as it does would be lost with no way to tell whether
# the server read it. The margin covers the trip and a busy event loop on either side.
MAX_IDLE_S = KEEP_ALIVE_S - 5.0
# Connecting takes at most this long (within the request's own timeout); past it nothing was sent.
CONNECT_TIMEOUT_S = 5.0


class UpstreamConnectionError(ConnectionError):
    """The connection failed or closed before a whole response arrived. `sent` is False only when no
    byte of the request was written (connect failed or the peer was refused): the model server
    provably never saw it, so another instance may be tried."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def dropped(transport: asyncio.BaseTransport) -> bool:
    """Has the peer closed (or reset) this idle connection, or sent something unasked? Asks the kernel, not
    the event loop (which may not have run the close's callback yet): an idle keep-alive connection has
    nothing to read, so a socket that polls readable (end of file, data or an error) cannot carry a
    request. urllib3 checks a pooled connection the same way (wait_for_read with no timeout); a poll costs
    a tenth of a MSG_PEEK recv here, as the transport's socket refuses recv() and a socket object would
    have to be made on its descriptor each time."""
    if transport.is_closing():
        return True
    fd = transport.get_extra_info("socket").fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _Connection(asyncio.Protocol):
    __slots__ = ("transport", "parser", "waiter", "chunks", "content_type", "closed", "keep_alive", "pool",
                 "idle_since", "undelivered")

    def __init__(self, pool: deque) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future | None = None
        self.chunks: list[bytes] = []
        self.content_type = b"application/json"
        self.closed = False
        self.keep_alive = False
        self.idle_since = 0.0
        self.undelivered = False

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamConnectionError(f"bad response from the model server: {exc}", sent=True))
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.closed = True
        try:
            self.pool.remove(self)
        except ValueError:
            pass
        # Only a connection carrying a request has a waiter: that request was written.
        self._fail(UpstreamConnectionError("the model server closed the connection while handling the request",
                                           sent=True))

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.content_type = value
        elif name == channel.UNDELIVERED_HEADER:
            self.undelivered = True

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
        now = loop.time()
        while idle:
            candidate = idle.pop()  # the most recently used first: the least likely to be closing
            if not candidate.closed and now - candidate.idle_since < MAX_IDLE_S and not dropped(candidate.transport):
                conn = candidate
                break
            candidate.transport.close()
        if conn is None:
            conn = await self._connect(loop, idle, host, port, socket, uid)
        conn.chunks = []
        conn.content_type = b"application/json"
        conn.undelivered = False
        waiter = conn.waiter = loop.create_future()
        conn.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        try:
            status = await waiter
        except BaseException:
            # Failed, or cancelled (timeout): the response may still come; this connection cannot be reused.
            conn.transport.close()
            raise
        finally:
            conn.waiter = None
        data = b"".join(conn.chunks) if len(conn.chunks) != 1 else conn.chunks[0]
        if conn.undelivered:
            conn.transport.close()
            raise UpstreamConnectionError(f"the node's relay could not reach the model server: {status}", sent=False)
        if conn.keep_alive and not conn.closed:
            conn.idle_since = loop.time()
            idle.append(conn)
        else:
            conn.transport.close()
        return status, data, conn.content_type.decode("latin-1")

    @staticmethod
    async def _connect(loop, idle: deque, host: str, port: int, socket: str, uid: int | None) -> _Connection:
        """A fresh connection; UpstreamConnectionError(sent=False) when none could be made (refused,
        unreachable, CONNECT_TIMEOUT_S passed) or the wrong server answers a sandboxed instance's socket."""
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                if not socket:
                    _, conn = await loop.create_connection(lambda: _Connection(idle), host, port)
                    return conn
                transport, conn = await loop.create_unix_connection(lambda: _Connection(idle),
                                                                    channel.connect_path(socket))
        except TimeoutError:
            raise UpstreamConnectionError(f"cannot connect to {socket or f'{host}:{port}'} within "
                                          f"{CONNECT_TIMEOUT_S:.0f} s", sent=False) from None
        except OSError as exc:
            raise UpstreamConnectionError(f"cannot connect to {socket or f'{host}:{port}'}: "
                                          f"{exc.strerror or exc}", sent=False) from None
        try:
            # Once per connection: the kernel's word on who listens there.
            channel.check_peer(transport.get_extra_info("socket"), uid)
        except (OSError, channel.WrongPeer) as exc:
            transport.close()
            raise UpstreamConnectionError(f"refused {socket}: {exc}", sent=False) from None
        return conn

    def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                idle.pop().transport.close()
