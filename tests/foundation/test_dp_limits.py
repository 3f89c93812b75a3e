"""Per-minute limits of serverless endpoints hold across gateway workers: three gunicorn workers
sharing Redis admit at most the limit (plus what refills during the burst) out of 200 concurrent
requests; the rest get 429 with Retry-After. Real MiniLM pool."""

from __future__ import annotations

import asyncio
import collections
import os

import pytest

from endpoints_app.models import ServerlessRateLimit
from tests.foundation.conftest import EMBEDDINGS

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

# Never db 0 on a shared machine; CI's REDIS_URL wins when set.
REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/4"


@pytest.fixture
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip(f"no Redis at {REDIS_URL}")
    for key in client.scan_iter("studio:gw:*"):  # buckets of earlier runs' endpoints
        client.delete(key)
    yield REDIS_URL
    client.close()


async def _burst(url: str, key: str, body: dict, count: int = 200) -> list[tuple[int, dict, dict]]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one():
            async with session.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) as r:
                return r.status, dict(r.headers), await r.json()

        return await asyncio.gather(*(one() for _ in range(count)))


def _limited(serverless_endpoint, workspace, **limits):
    endpoint, key, _ = serverless_endpoint("minilm", EMBEDDINGS)
    ServerlessRateLimit.objects.create(workspace=workspace, model=endpoint.model, **limits)
    # Room for the whole burst in flight: only the per-minute limits are under test here.
    pool = endpoint.pool
    pool.request_settings = {**pool.request_settings, "max_concurrent_requests_per_instance": 200,
                             "request_timeout_ms": 60000}
    pool.save(update_fields=["request_settings"])
    return endpoint, key


def _check_refused(results) -> None:
    for status, headers, body in results:
        if status == 429:
            assert int(headers["Retry-After"]) >= 1
            assert "x-ratelimit-remaining-requests" in headers and "x-ratelimit-remaining-tokens" in headers
            assert body["error"]["code"] == "TooManyRequests"


def test_the_request_limit_holds_across_three_workers(procs, serverless_endpoint, workspace, redis_url):
    _, key = _limited(serverless_endpoint, workspace, requests_per_minute=50)
    url, _ = procs.gateway(workers=3, REDIS_URL=redis_url)

    results = asyncio.run(_burst(f"{url}/inference/minilm/embeddings", key, {"input": "hello"}))

    statuses = collections.Counter(status for status, _, _ in results)
    assert set(statuses) == {200, 429}
    assert 50 <= statuses[200] <= 51
    _check_refused(results)
    assert "requests per minute" in next(b for s, _, b in results if s == 429)["error"]["message"]


def test_the_token_limit_holds_across_three_workers(procs, serverless_endpoint, workspace, redis_url):
    # 400 characters are charged 100 tokens on admission (and their real count, 202, when they end).
    _, key = _limited(serverless_endpoint, workspace, tokens_per_minute=5000)
    url, _ = procs.gateway(workers=3, REDIS_URL=redis_url)

    results = asyncio.run(_burst(f"{url}/inference/minilm/embeddings", key, {"input": "a " * 200}))

    statuses = collections.Counter(status for status, _, _ in results)
    assert set(statuses) == {200, 429}
    assert 10 <= statuses[200] <= 51
    _check_refused(results)
    assert "tokens per minute" in next(b for s, _, b in results if s == 429)["error"]["message"]


def test_without_redis_one_worker_still_enforces_the_limit(procs, serverless_endpoint, workspace):
    _, key = _limited(serverless_endpoint, workspace, requests_per_minute=20)
    url, _ = procs.gateway(REDIS_URL="")

    results = asyncio.run(_burst(f"{url}/inference/minilm/embeddings", key, {"input": "hello"}, count=60))

    statuses = collections.Counter(status for status, _, _ in results)
    assert 20 <= statuses[200] <= 21 and statuses[429] == 60 - statuses[200]
