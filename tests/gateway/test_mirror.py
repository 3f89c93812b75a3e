import asyncio
import time

import aiohttp
import pytest
import requests
from django.db.models import Sum

from endpoints_app.gateway.mirror import outputs_agree
from endpoints_app.metering.mirror import mirror_summary
from endpoints_app.models import MirrorComparison, UsageMinute
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}


async def _send(url: str, key: str, count: int) -> list[tuple[int, str, dict, float]]:
    async with aiohttp.ClientSession() as session:
        async def one(i: int):
            began = time.monotonic()
            async with session.post(url, json={"data": [i]}, headers=auth(key)) as r:
                body = await r.json()
                return r.status, r.headers["azureml-model-deployment"], body, time.monotonic() - began

        results = []
        for start in range(0, count, 4):
            results += await asyncio.gather(*(one(i) for i in range(start, min(count, start + 4))))
        return results


def _wait_for_comparisons(endpoint, expected_at_least: int, timeout: float = 10.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = MirrorComparison.objects.filter(endpoint=endpoint).count()
        if count >= expected_at_least:
            return count
        time.sleep(0.2)
    return MirrorComparison.objects.filter(endpoint=endpoint).count()


def test_mirrored_share_is_compared_and_never_reaches_the_client(procs, make_endpoint):
    live, _ = procs.upstream()
    shadow, _ = procs.upstream()
    endpoint, creds = make_endpoint(
        "mirrored", {"blue": ([live], 100, SETTINGS), "green": ([shadow], 0, SETTINGS)}, mirror={"green": 50}
    )
    url, gateway = procs.gateway()

    results = asyncio.run(_send(f"{url}/inference/mirrored/score", creds["primary"], 200))
    procs.stop(gateway)  # the shutdown flush writes what is left

    assert {(status, dep) for status, dep, _, _ in results} == {(200, "blue")}
    assert all(body == {"predictions": [i]} for i, (_, _, body, _) in enumerate(results))
    rows = list(MirrorComparison.objects.filter(endpoint=endpoint))
    assert 60 <= len(rows) <= 140
    served_by_shadow = requests.get(f"http://127.0.0.1:{shadow}/count").json()["served"]
    assert served_by_shadow == len(rows)
    assert {(r.live_deployment, r.shadow_deployment, r.live_status, r.shadow_status, r.agreed) for r in rows} == {
        ("blue", "green", 200, 200, True)
    }
    summary = mirror_summary(endpoint)
    assert summary["requests"] == len(rows)
    assert summary["agreement_rate"] == 1.0
    # The copies are metered to the mirror deployment: traffic share, latency, errors, autoscale.
    metered = UsageMinute.objects.filter(endpoint=endpoint).values("deployment").annotate(
        requests=Sum("requests"), ok=Sum("status_2xx"), latency=Sum("latency_ms_sum"))
    by_deployment = {row["deployment"]: row for row in metered}
    assert by_deployment["blue"]["requests"] == 200
    assert by_deployment["green"]["requests"] == by_deployment["green"]["ok"] == len(rows)
    assert by_deployment["green"]["latency"] > 0


def test_slow_disagreeing_shadow_costs_the_client_nothing_and_shows_in_the_summary(procs, make_endpoint):
    live, _ = procs.upstream()
    shadow, _ = procs.upstream(bias=1, delay_ms=1000)
    endpoint, creds = make_endpoint(
        "shadowed", {"blue": ([live], 100, SETTINGS), "green": ([shadow], 0, SETTINGS)}, mirror={"green": 50}
    )
    url, _ = procs.gateway()

    results = asyncio.run(_send(f"{url}/inference/shadowed/score", creds["primary"], 40))
    count = _wait_for_comparisons(endpoint, 8)

    assert max(elapsed for _, _, _, elapsed in results) < 0.8
    assert count >= 8
    summary = mirror_summary(endpoint)
    assert summary["agreement_rate"] == 0.0
    assert summary["latency_diff_ms_p50"] > 700
    assert summary["deployments"] == [{"live": "blue", "shadow": "green"}]


def test_header_targeted_requests_are_not_mirrored(procs, make_endpoint):
    live, _ = procs.upstream()
    shadow, _ = procs.upstream()
    endpoint, creds = make_endpoint(
        "pinnedmirror", {"blue": ([live], 100, SETTINGS), "green": ([shadow], 0, SETTINGS)}, mirror={"green": 50}
    )
    url, gateway = procs.gateway()
    for i in range(20):
        response = requests.post(f"{url}/inference/pinnedmirror/score", json={"data": [i]},
                                 headers={**auth(creds["primary"]), "azureml-model-deployment": "blue"})
        assert response.status_code == 200
    procs.stop(gateway)

    assert MirrorComparison.objects.filter(endpoint=endpoint).count() == 0


def test_outputs_agree_within_float_noise_only():
    assert outputs_agree(200, b'{"p": [0.1, 2]}', 200, b'{"p": [0.1000000001, 2.0]}')
    assert not outputs_agree(200, b'{"p": [0.1]}', 200, b'{"p": [0.2]}')
    assert not outputs_agree(200, b'{"p": [1]}', 500, b'{"p": [1]}')
    assert not outputs_agree(200, b'{"p": true}', 200, b'{"p": 1}')
