import asyncio
import collections
import time

import aiohttp
import pytest
from django.db.models import Sum

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS
from endpoints_app.models import UsageMinute
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}


def _totals(endpoint) -> dict:
    return UsageMinute.objects.filter(endpoint=endpoint).aggregate(
        requests=Sum("requests"), s2=Sum("status_2xx"), s4=Sum("status_4xx"), s5=Sum("status_5xx"),
        bytes_in=Sum("bytes_in"), bytes_out=Sum("bytes_out"),
    )


def test_usage_is_counted_exactly_with_two_gateway_workers(procs, make_endpoint):
    blue, _ = procs.upstream()
    green, _ = procs.upstream()
    endpoint, creds = make_endpoint("metered", {"blue": ([blue], 50, SETTINGS), "green": ([green], 50, SETTINGS)})
    url, gateway = procs.gateway(workers=2)
    sent: collections.Counter = collections.Counter()
    bytes_sent = bytes_received = 0

    async def load():
        nonlocal bytes_sent, bytes_received
        # A fresh connection per request spreads requests over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async def one(i: int):
                nonlocal bytes_sent, bytes_received
                body = b'{"data": [%d]}' % i if i % 5 else b'{"data": [1], "reject": "no"}'
                key = creds["primary"] if i % 7 else "wrong"
                async with session.post(f"{url}/inference/metered/score", data=body, headers=auth(key)) as r:
                    data = await r.read()
                    sent[(r.status, r.headers.get("azureml-model-deployment", ""))] += 1
                    if r.status != 401:
                        bytes_sent += len(body)
                        bytes_received += len(data)

            for start in range(0, 600, 8):
                await asyncio.gather(*(one(i) for i in range(start, start + 8)))

    asyncio.run(load())
    expected = {
        "requests": 600,
        "s2": sum(n for (status, _), n in sent.items() if status == 200),
        "s4": sum(n for (status, _), n in sent.items() if 400 <= status < 500),
        "s5": 0,
        "bytes_in": bytes_sent,
        "bytes_out": bytes_received,
    }
    assert expected["s2"] and sent[(401, "")] and sum(n for (s, _), n in sent.items() if s == 422)

    # The background flush gets there without a shutdown...
    deadline = time.monotonic() + 10
    while _totals(endpoint) != expected and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _totals(endpoint) == expected
    # ...and stopping the workers neither loses nor repeats anything.
    procs.stop(gateway)
    assert gateway.returncode == 0
    assert _totals(endpoint) == expected

    rows = UsageMinute.objects.filter(endpoint=endpoint)
    by_deployment = collections.Counter()
    codes: collections.Counter = collections.Counter()
    for row in rows:
        by_deployment[row.deployment] += row.requests
        assert sum(row.status_codes.values()) == row.requests
        for code, n in row.status_codes.items():
            codes[(int(code), row.deployment)] += n
        assert len(row.latency_histogram) == len(LATENCY_BUCKETS_MS)
        assert sum(row.latency_histogram) == row.requests
        assert row.latency_ms_sum > 0
    for deployment in ("blue", "green"):
        assert by_deployment[deployment] == sum(n for (_, dep), n in sent.items() if dep == deployment)
    assert by_deployment[""] == sent[(401, "")]
    # Per status code and deployment, exactly what the clients got: 200s, 401s (no deployment) and 422s.
    assert +codes == +sent
    assert {status for status, _ in codes} == {200, 401, 422}


def test_counts_still_in_memory_are_written_at_shutdown(procs, make_endpoint):
    port, _ = procs.upstream()
    endpoint, creds = make_endpoint("lastcall", {"blue": ([port], 100, SETTINGS)})
    # A flush interval far longer than the test: only the shutdown flush can write these.
    url, gateway = procs.gateway(STUDIO_GATEWAY_FLUSH_SECONDS="600")

    async def load():
        async with aiohttp.ClientSession() as session:
            for i in range(25):
                async with session.post(f"{url}/inference/lastcall/score", json={"data": [i]},
                                        headers=auth(creds["primary"])) as r:
                    assert r.status == 200

    asyncio.run(load())
    assert not UsageMinute.objects.filter(endpoint=endpoint).exists()
    procs.stop(gateway)

    assert _totals(endpoint)["requests"] == 25
    assert _totals(endpoint)["s2"] == 25
