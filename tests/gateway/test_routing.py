import asyncio
import collections
import time

import aiohttp
import pytest
import requests

from endpoints_app.gateway.routes import DeploymentRoute, InstanceRoute
from endpoints_app.models import Instance, RouteVersion
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 16, "request_timeout_ms": 5000}


async def _post_many(url: str, key: str, count: int, concurrency: int = 8, headers: dict | None = None):
    """(status, answering deployment, json) for each of count requests."""
    results = []
    sem = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(i: int):
            async with sem, session.post(url, json={"data": [i]}, headers={**auth(key), **(headers or {})}) as r:
                results.append((r.status, r.headers.get("azureml-model-deployment"), await r.json()))

        await asyncio.gather(*(one(i) for i in range(count)))
    return results


def test_traffic_is_split_by_weight_and_the_response_names_the_deployment(procs, make_endpoint):
    blue, _ = procs.upstream()
    green, _ = procs.upstream()
    _, creds = make_endpoint("split", {"blue": ([blue], 70, SETTINGS), "green": ([green], 30, SETTINGS)})
    url, _ = procs.gateway()

    results = asyncio.run(_post_many(f"{url}/inference/split/score", creds["primary"], 400))

    assert all(status == 200 for status, _, _ in results)
    answered = collections.Counter(dep for _, dep, _ in results)
    assert set(answered) == {"blue", "green"}
    assert 0.20 <= answered["green"] / 400 <= 0.40


def test_header_targets_a_deployment_even_with_zero_traffic(procs, make_endpoint):
    live, _ = procs.upstream()
    canary, _ = procs.upstream(bias=100)
    _, creds = make_endpoint("pinned", {"blue": ([live], 100, SETTINGS), "canary": ([canary], 0, SETTINGS)})
    url, _ = procs.gateway()
    score = f"{url}/inference/pinned/score"

    unpinned = asyncio.run(_post_many(score, creds["primary"], 50))
    pinned = requests.post(score, json={"data": [1]},
                           headers={**auth(creds["primary"]), "azureml-model-deployment": "canary"})
    unknown = requests.post(score, json={"data": [1]},
                            headers={**auth(creds["primary"]), "azureml-model-deployment": "nope"})

    assert {dep for _, dep, _ in unpinned} == {"blue"}
    assert pinned.status_code == 200
    assert pinned.headers["azureml-model-deployment"] == "canary"
    assert pinned.json() == {"predictions": [101]}
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "DeploymentNotFound"


def test_least_busy_ready_instance_is_picked():
    a, b, c = InstanceRoute("a", "127.0.0.1", 1), InstanceRoute("b", "127.0.0.1", 2), InstanceRoute("c", "127.0.0.1", 3)
    a.inflight, b.inflight, c.inflight = 3, 1, 2
    route = DeploymentRoute(name="blue", instances=[a, b, c], request_timeout_s=1, max_concurrent_per_instance=1)

    assert [route.pick() for _ in range(5)] == [b] * 5
    assert route.pick(exclude=b) is c


def test_idle_instances_share_the_load():
    instances = [InstanceRoute(str(p), "127.0.0.1", p) for p in (1, 2)]
    route = DeploymentRoute(name="blue", instances=instances, request_timeout_s=1, max_concurrent_per_instance=1)

    picked = collections.Counter(route.pick().name for _ in range(10))

    assert picked == {"1": 5, "2": 5}


def test_swagger_describes_the_endpoint_from_the_model_schema(procs, make_endpoint):
    blue, _ = procs.upstream()
    _, creds = make_endpoint("documented", {"blue": ([blue], 100, SETTINGS)})
    url, _ = procs.gateway()

    response = requests.get(f"{url}/inference/documented/swagger.json", headers=auth(creds["secondary"]))
    anonymous = requests.get(f"{url}/inference/documented/swagger.json")

    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    operation = spec["paths"]["/score"]["post"]
    body = operation["requestBody"]["content"]["application/json"]
    assert body["schema"]["properties"]["data"]["type"] == "array"
    assert body["example"] == {"data": [1, 2]}
    assert "predictions" in operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert spec["servers"][0]["url"].endswith("/inference/documented")
    assert anonymous.status_code == 401


def _first_success_after(score: str, key: str, timeout: float) -> float | None:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if requests.post(score, json={"data": [1]}, headers=auth(key)).status_code == 200:
            return time.monotonic() - began
        time.sleep(0.05)
    return None


def test_instance_that_becomes_ready_is_routed_after_the_version_bump(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("warming", {"blue": ([port], 100, SETTINGS)}, states={"blue": "Starting"})
    url, _ = procs.gateway()
    score = f"{url}/inference/warming/score"
    assert requests.post(score, json={"data": [1]}, headers=auth(creds["primary"])).status_code == 503

    Instance.objects.filter(deployment__endpoint__name="warming").update(state="Ready")
    RouteVersion.bump()

    assert _first_success_after(score, creds["primary"], timeout=2.0) is not None


def test_a_change_nobody_announced_is_picked_up_by_the_periodic_reload(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("unannounced", {"blue": ([port], 100, SETTINGS)}, states={"blue": "Starting"})
    url, _ = procs.gateway(STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS="2")
    score = f"{url}/inference/unannounced/score"
    assert requests.post(score, json={"data": [1]}, headers=auth(creds["primary"])).status_code == 503

    Instance.objects.filter(deployment__endpoint__name="unannounced").update(state="Ready")  # no version bump

    assert _first_success_after(score, creds["primary"], timeout=5.0) is not None
