"""The online endpoints' in-flight limit (2 x max_concurrent_requests_per_instance x ready instances)
holds across gateway workers when Redis is configured."""

from __future__ import annotations

import asyncio
import collections
import os

import aiohttp
import pytest

from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/4"  # never db 0 on a shared machine


async def _concurrent(url: str, key: str, count: int) -> list[int]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one(i: int) -> int:
            async with session.post(url, json={"data": [i]}, headers=auth(key)) as r:
                await r.read()
                return r.status

        return await asyncio.gather(*(one(i) for i in range(count)))


def test_three_workers_share_one_in_flight_limit(procs, make_endpoint):
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    port, _ = procs.upstream(delay_ms=1500)
    settings = {"max_concurrent_requests_per_instance": 1, "request_timeout_ms": 10000}
    _, creds = make_endpoint("busy", {"blue": ([port], 100, settings)})
    url, _ = procs.gateway(workers=3, REDIS_URL=REDIS_URL)
    score = f"{url}/inference/busy/score"
    asyncio.run(_concurrent(score, creds["primary"], 3))  # every worker has its table and connections

    statuses = collections.Counter(asyncio.run(_concurrent(score, creds["primary"], 30)))
    after = collections.Counter(asyncio.run(_concurrent(score, creds["primary"], 2)))

    # Capacity 2 (2 x 1 x 1 instance) for all workers together; each 1.5 s request keeps its place.
    assert statuses[200] == 2 and statuses[429] == 28
    assert after[200] == 2  # places are given back
    client.close()
