import asyncio
import collections
import os
import signal
import time

import aiohttp
import pytest

from tests.gateway.conftest import auth, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.mark.parametrize("client", ["http1", "aiohttp"])
def test_killing_one_of_two_instances_under_load_fails_only_the_requests_in_flight_on_it(procs, make_endpoint,
                                                                                         client):
    """Requests already written to the killed instance get a 502 (the gateway does not send them again: the
    server may have acted on them); every request started after the kill is answered by the other one."""
    first, first_proc = procs.upstream(delay_ms=5)
    second, _ = procs.upstream(delay_ms=5)
    settings = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}
    _, creds = make_endpoint("sturdy", {"blue": ([first, second], 100, settings)})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)

    statuses: collections.Counter = collections.Counter()
    failed: list[tuple[float, int, str]] = []
    killed_at: list[float] = []

    async def load():
        async with aiohttp.ClientSession() as session:
            stop = time.monotonic() + 4.0

            async def client(n: int):
                i = 0
                while time.monotonic() < stop:
                    i += 1
                    started = time.monotonic()
                    async with session.post(f"{url}/inference/sturdy/score", json={"data": [n, i]},
                                            headers=auth(creds["primary"])) as r:
                        text = await r.text()
                        statuses[r.status] += 1
                        if r.status != 200:
                            failed.append((started, r.status, text))

            async def killer():
                await asyncio.sleep(1.5)
                os.kill(first_proc.pid, signal.SIGKILL)
                killed_at.append(time.monotonic())

            await asyncio.gather(killer(), *(client(n) for n in range(8)))

    asyncio.run(load())

    assert killed_at and first_proc.wait(timeout=5) == -signal.SIGKILL
    assert statuses[200] > 50
    # At most one request per client was in flight at the kill, each started before it (or while the
    # kernel was still tearing the process down: SIGKILL returns before its sockets are closed).
    assert len(failed) <= 8, failed
    for started, status, text in failed:
        assert status == 502 and "closed the connection while handling the request" in text, text
        assert started <= killed_at[0] + 0.25, (started - killed_at[0], text)


def test_single_instance_restarted_on_the_same_port_is_reached_again(procs, make_endpoint):
    """Pooled connections to the old process are dead; the gateway must not fail on them."""
    port, first = procs.upstream()
    _, creds = make_endpoint("reborn", {"blue": ([port], 100, {"max_concurrent_requests_per_instance": 8})})
    url, _ = procs.gateway()
    score = f"{url}/inference/reborn/score"

    async def burst(n: int) -> list[int]:
        async with aiohttp.ClientSession() as session:
            async def one(i: int):
                async with session.post(score, json={"data": [i]}, headers=auth(creds["primary"])) as r:
                    return r.status
            return await asyncio.gather(*(one(i) for i in range(n)))

    assert set(asyncio.run(burst(8))) == {200}  # leaves several idle pooled connections
    procs.stop(first)
    again = procs.start([*first.args[:2], "--port", str(port)], name="upstream-again")
    wait_http(f"http://127.0.0.1:{port}/health/ready", proc=again)

    assert set(asyncio.run(burst(8))) == {200}
