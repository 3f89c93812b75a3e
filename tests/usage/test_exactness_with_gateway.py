"""Exactness end to end: requests through real gateway workers (three, under gunicorn) are
reported by the usage API exactly, once their flush has run, before and after rollups."""

import asyncio
import collections
import time
from datetime import timedelta

import aiohttp
import pytest
from django.utils import timezone

from endpoints_app.metering.rollup import rollup_usage
from endpoints_app.models import UsageRollup
from tests.gateway.conftest import auth, catalog_model, make_endpoint, node, procs  # noqa: F401 - fixtures

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}
URL = "/api/v1/workspaces/team/usage"


def test_usage_api_reports_exactly_what_three_gateway_workers_served(procs, make_endpoint, owner_api):  # noqa: F811
    blue, _ = procs.upstream()
    green, _ = procs.upstream()
    endpoint, creds = make_endpoint("exact", {"blue": ([blue], 70, SETTINGS), "green": ([green], 30, SETTINGS)})
    url, _gateway = procs.gateway(workers=3)
    started = timezone.now()
    sent: collections.Counter = collections.Counter()
    sent_codes: collections.Counter = collections.Counter()

    async def load():
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async def one(i: int):
                # Every fifth body is one the model rejects (422): counted as a 4xx of its deployment.
                body = b'{"data": [%d]}' % i if i % 5 else b'{"data": [1], "reject": "no"}'
                async with session.post(f"{url}/inference/exact/score", data=body,
                                        headers=auth(creds["primary"])) as r:
                    await r.read()
                    sent[(r.headers.get("azureml-model-deployment", ""), r.status // 100)] += 1
                    sent_codes[str(r.status)] += 1

            for first in range(0, 450, 9):
                await asyncio.gather(*(one(i) for i in range(first, first + 9)))

    asyncio.run(load())
    params = {"endpoint": "exact", "from": (started - timedelta(minutes=2)).isoformat(),
              "to": (timezone.now() + timedelta(minutes=2)).isoformat(), "interval": "1m"}

    def reported() -> collections.Counter:
        got: collections.Counter = collections.Counter()
        for point in owner_api.get(URL, params).json()["series"]:
            got[(point["deployment"], 2)] += point["status_2xx"]
            got[(point["deployment"], 4)] += point["status_4xx"]
            got[(point["deployment"], 5)] += point["status_5xx"]
        return +got

    # Within a few flush intervals (0.5 s in tests) the API has every request, no more.
    deadline = time.monotonic() + 15
    while reported() != +sent and time.monotonic() < deadline:
        time.sleep(0.3)
    assert reported() == +sent
    totals = owner_api.get(URL, params).json()["totals"]
    assert totals["requests"] == 450
    assert totals["status_2xx"] == sum(n for (_, s), n in sent.items() if s == 2) == 360
    assert totals["status_4xx"] == 90
    assert totals["status_codes"] == dict(sent_codes) == {"200": 360, "422": 90}

    # Rolled up into hours and days, the same range still reports the same numbers.
    rollup_usage(now=timezone.now() + timedelta(days=2))
    assert UsageRollup.objects.filter(endpoint=endpoint, period="hour").exists()
    params.update(interval="1d", to=(timezone.now() + timedelta(days=1)).isoformat(),
                  **{"from": (started - timedelta(days=1)).isoformat()})
    rolled = owner_api.get(URL, params).json()["totals"]
    assert rolled["requests"] == 450
    assert rolled["status_codes"] == {"200": 360, "422": 90}
