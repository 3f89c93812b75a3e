"""Relaying one request to a deployment's instances over a pooled aiohttp client."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from multidict import CIMultiDict

from endpoints_app.gateway.routes import FAILED_INSTANCE_BACKOFF_S, DeploymentRoute, InstanceRoute

UPSTREAM_HEADERS = CIMultiDict({"Content-Type": "application/json"})


class NoReadyInstance(Exception):
    pass


class UpstreamUnreachable(Exception):
    """Connection failed on the instance and on the one retry."""


class UpstreamTimeout(Exception):
    pass


def new_session() -> aiohttp.ClientSession:
    # One pooled session per gateway worker; limit=0: the gateway's own 429 bounds concurrency.
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
    )


async def _attempt(session: aiohttp.ClientSession, inst: InstanceRoute, path: str, body: bytes):
    inst.inflight += 1
    try:
        async with session.post(inst.url(path), data=body, headers=UPSTREAM_HEADERS) as resp:
            data = await resp.read()
            return resp.status, data, resp.headers.get("Content-Type", "application/json")
    finally:
        inst.inflight -= 1


async def forward(
    session: aiohttp.ClientSession, deployment: DeploymentRoute, path: str, body: bytes
) -> tuple[int, bytes, str, InstanceRoute]:
    """(status, body, content type, instance) from the least busy ready instance.

    A connection failure (refused, reset, server gone mid-request) is retried once on
    another ready instance; the failed one is skipped for a few seconds."""
    inst = deployment.pick()
    if inst is None:
        raise NoReadyInstance()
    try:
        async with asyncio.timeout(deployment.request_timeout_s):
            try:
                status, data, ctype = await _attempt(session, inst, path, body)
                return status, data, ctype, inst
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                inst.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
            retry = deployment.pick(exclude=inst)
            if retry is None:
                raise UpstreamUnreachable()
            try:
                status, data, ctype = await _attempt(session, retry, path, body)
                return status, data, ctype, retry
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError):
                retry.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
                raise UpstreamUnreachable() from None
    except TimeoutError:
        raise UpstreamTimeout() from None
