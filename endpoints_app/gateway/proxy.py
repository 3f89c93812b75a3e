"""Relaying one request to a deployment's instances over pooled keep-alive connections.

Two clients do the same job: `Http1Client` (default; the gateway's own small
HTTP/1.1 client, see http1.py) and `AiohttpClient` (aiohttp's pooled session),
chosen with STUDIO_GATEWAY_CLIENT=http1|aiohttp. bench/gateway.py measures both.

A request is tried on another instance only when no byte of it reached a model server (see
`forward`); both clients tell which (UpstreamConnectionError.sent) and check a pooled connection
before writing to it (http1.dropped, http1.MAX_IDLE_S)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from django.conf import settings
from multidict import CIMultiDict

from endpoints_app.gateway.http1 import CONNECT_TIMEOUT_S, MAX_IDLE_S, Http1Pool, UpstreamConnectionError, dropped
from endpoints_app.gateway.routes import FAILED_INSTANCE_BACKOFF_S, DeploymentRoute, InstanceRoute
from endpoints_app.runtime import channel

UNDELIVERED = channel.UNDELIVERED_HEADER.decode()


class NoReadyInstance(Exception):
    pass


class UpstreamUnreachable(Exception):
    """No connection could be made to the instance, nor to another one (nothing was sent)."""


class UpstreamClosed(Exception):
    """The connection closed after the request was written and before a whole response came: the model
    server may have acted on it, so it is not sent again."""


class UpstreamTimeout(Exception):
    pass


class PeerRefused(aiohttp.ClientConnectionError):
    """A sandboxed instance's socket is served by another uid (nothing was sent)."""


class _CheckedPool:
    """aiohttp hands out a pooled connection only when it is connected and idle for less than
    keepalive_timeout; this also asks the kernel whether the server closed it (http1.dropped), so a
    request is never written to a connection the server already let go."""

    async def _get(self, key, traces):
        while (conn := await super()._get(key, traces)) is not None:
            if conn.transport is not None and not dropped(conn.transport):
                return conn
            conn.close()
        return None


class CheckedTCPConnector(_CheckedPool, aiohttp.TCPConnector):
    pass


class CheckedUnixConnector(_CheckedPool, aiohttp.UnixConnector):
    """aiohttp over an instance's socket, checking on each new connection that its server runs as the
    instance's uid (runtime/channel.py)."""

    def __init__(self, path: str, uid: int | None) -> None:
        super().__init__(path=channel.connect_path(path), limit=0, keepalive_timeout=MAX_IDLE_S)
        self._uid = uid

    async def _create_connection(self, req, traces, timeout):
        proto = await super()._create_connection(req, traces, timeout)
        try:
            channel.check_peer(proto.transport.get_extra_info("socket"), self._uid)
        except (OSError, channel.WrongPeer) as exc:
            proto.transport.close()
            raise PeerRefused(str(exc)) from None
        return proto


class Sessions:
    """aiohttp sessions: one over TCP, one per instance socket (a UnixConnector serves one path)."""

    def __init__(self) -> None:
        self._tcp: aiohttp.ClientSession | None = None
        self._unix: dict[tuple[str, int | None], aiohttp.ClientSession] = {}

    @staticmethod
    def _session(connector) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                                     cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                                     skip_auto_headers=("User-Agent", "Accept-Encoding"))

    def get(self, inst: InstanceRoute) -> aiohttp.ClientSession:
        if inst.socket:
            key = (inst.socket, inst.uid)
            session = self._unix.get(key)
            if session is None or session.closed:
                session = self._unix[key] = self._session(CheckedUnixConnector(inst.socket, inst.uid))
            return session
        if self._tcp is None or self._tcp.closed:
            # limit=0: the gateway's own 429 bounds concurrency.
            self._tcp = self._session(CheckedTCPConnector(limit=0, keepalive_timeout=MAX_IDLE_S,
                                                          enable_cleanup_closed=True))
        return self._tcp

    async def close(self) -> None:
        for session in [self._tcp, *self._unix.values()]:
            if session is not None:
                await session.close()
        self._tcp, self._unix = None, {}


class AiohttpClient:
    def __init__(self) -> None:
        self.sessions = Sessions()

    async def post(self, inst: InstanceRoute, path: str, body: bytes, request_id: bytes) -> tuple[int, bytes, str]:
        headers = CIMultiDict(inst.headers)
        headers["x-request-id"] = request_id.decode("latin-1")
        try:
            async with self.sessions.get(inst).post(inst.url(path), data=body, headers=headers) as resp:
                data = await resp.read()
                if UNDELIVERED in resp.headers:
                    raise UpstreamConnectionError("the node's relay could not reach the model server", sent=False)
                return resp.status, data, resp.headers.get("Content-Type", "application/json")
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, PeerRefused) as exc:
            # No connection was made: nothing was written.
            raise UpstreamConnectionError(str(exc), sent=False) from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamConnectionError(str(exc) or type(exc).__name__, sent=True) from None

    async def close(self) -> None:
        await self.sessions.close()


class Http1Client:
    def __init__(self) -> None:
        self.pool = Http1Pool()

    async def post(self, inst: InstanceRoute, path: str, body: bytes, request_id: bytes) -> tuple[int, bytes, str]:
        head = b"%sx-request-id: %s\r\n" % (inst.request_head(path), request_id)
        return await self.pool.post(inst.host, inst.port, head, body, inst.socket, inst.uid)

    async def close(self) -> None:
        self.pool.close()


def new_client() -> AiohttpClient | Http1Client:
    return AiohttpClient() if settings.STUDIO_GATEWAY_CLIENT == "aiohttp" else Http1Client()


async def _attempt(client, inst: InstanceRoute, path: str, body: bytes, request_id: bytes) -> tuple[int, bytes, str]:
    inst.inflight += 1
    try:
        return await client.post(inst, path, body, request_id)
    finally:
        inst.inflight -= 1


async def forward(
    client, deployment: DeploymentRoute, path: str, body: bytes, request_id: bytes = b"-"
) -> tuple[int, bytes, str, InstanceRoute]:
    """(status, body, content type, instance) from the least busy ready instance.

    `request_id` goes upstream as `x-request-id`, so the model server's log names the request.

    A request that provably never reached a model server (the connection was refused, unreachable or
    timed out, or the wrong server answered a sandboxed socket) is tried once on another ready instance,
    and the failed one is skipped for FAILED_INSTANCE_BACKOFF_S. A connection that fails after the
    request was written is not retried anywhere (UpstreamClosed): the server may have run it."""
    inst = deployment.pick()
    if inst is None:
        raise NoReadyInstance()
    try:
        async with asyncio.timeout(deployment.request_timeout_s):
            try:
                status, data, ctype = await _attempt(client, inst, path, body, request_id)
                return status, data, ctype, inst
            except UpstreamConnectionError as exc:
                if exc.sent:
                    raise UpstreamClosed(str(exc)) from None
                inst.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
            retry = deployment.pick(exclude=inst)
            if retry is None:
                raise UpstreamUnreachable()
            try:
                status, data, ctype = await _attempt(client, retry, path, body, request_id)
                return status, data, ctype, retry
            except UpstreamConnectionError as exc:
                if exc.sent:
                    raise UpstreamClosed(str(exc)) from None
                retry.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
                raise UpstreamUnreachable() from None
    except TimeoutError:
        raise UpstreamTimeout() from None
