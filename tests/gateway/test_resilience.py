import asyncio
import collections
import os
import signal
import time

import aiohttp
import pytest

from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_killing_one_of_two_instances_under_load_loses_no_request(procs, make_endpoint):
    first, first_proc = procs.upstream(delay_ms=5)
    second, _ = procs.upstream(delay_ms=5)
    settings = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}
    _, creds = make_endpoint("sturdy", {"blue": ([first, second], 100, settings)})
    url, _ = procs.gateway()

    statuses: collections.Counter = collections.Counter()
    killed_at: list[float] = []

    async def load():
        async with aiohttp.ClientSession() as session:
            stop = time.monotonic() + 4.0

            async def client(n: int):
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    async with session.post(f"{url}/inference/sturdy/score", json={"data": [n, i]},
                                            headers=auth(creds["primary"])) as r:
                        await r.read()
                        statuses[r.status] += 1

            async def killer():
                await asyncio.sleep(1.5)
                os.kill(first_proc.pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

            await asyncio.gather(killer(), *(client(n) for n in range(8)))

    asyncio.run(load())

    assert killed_at and first_proc.wait(timeout=5) == -signal.SIGKILL
    assert statuses[200] > 200
    assert set(statuses) == {200}, statuses
