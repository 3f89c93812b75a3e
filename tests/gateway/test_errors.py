import asyncio
import time

import aiohttp
import joblib
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from tests.gateway.conftest import TEST_MAX_PAYLOAD, auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 4, "request_timeout_ms": 5000}


def _error(response, status: int, code: str | None = None) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["message"]
    if code:
        assert error["code"] == code
    return error["message"]


def test_unknown_endpoint_gets_404(procs, make_endpoint):
    url, _ = procs.gateway()

    _error(requests.post(f"{url}/inference/nobody/score", json={"data": [1]}), 404, "EndpointNotFound")


def test_malformed_json_gets_400_and_oversized_payload_413(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("strict", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()
    score = f"{url}/inference/strict/score"

    _error(requests.post(score, data=b"{not json", headers=auth(creds["primary"])), 400, "BadRequest")
    big = b'{"data": [' + b"1," * TEST_MAX_PAYLOAD + b"1]}"
    _error(requests.post(score, data=big, headers=auth(creds["primary"])), 413, "PayloadTooLarge")

    # Chunked upload without a Content-Length is cut off at the limit too.
    def chunks():
        yield b'{"data": ['
        for _ in range(100):
            yield b"1," * (TEST_MAX_PAYLOAD // 100)
        yield b"1]}"

    _error(requests.post(score, data=chunks(), headers=auth(creds["primary"])), 413, "PayloadTooLarge")


def test_deeply_nested_json_gets_400_not_500(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("nested", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()

    nested = b"[" * 30000 + b"]" * 30000  # within the payload limit, far past the parser's recursion limit
    message = _error(requests.post(f"{url}/inference/nested/score", data=nested, headers=auth(creds["primary"])),
                     400, "BadRequest")
    assert "nested too deeply" in message


def test_input_the_model_rejects_gets_422_with_the_models_message(procs, make_endpoint, tmp_path):
    x, y = load_iris(return_X_y=True)
    artifact = tmp_path / "model.joblib"
    joblib.dump(LogisticRegression(max_iter=500).fit(x, y), artifact)
    port, _ = procs.sklearn_server(artifact)
    _, creds = make_endpoint("iris", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway()
    score = f"{url}/inference/iris/score"

    good = requests.post(score, json={"data": [[5.1, 3.5, 1.4, 0.2]]}, headers=auth(creds["primary"]))
    bad = requests.post(score, json={"data": [[5.1, 3.5]]}, headers=auth(creds["primary"]))

    assert good.status_code == 200
    assert good.json()["predictions"] == [0]
    message = _error(bad, 422)
    assert "feature" in message
    assert bad.headers["azureml-model-deployment"] == "blue"


def test_no_ready_instance_or_no_traffic_gets_503(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("starting", {"blue": ([port], 100, SETTINGS)}, states={"blue": "Starting"})
    _, idle_creds = make_endpoint("idle", {"blue": ([port], 0, SETTINGS)})
    url, _ = procs.gateway()

    not_ready = requests.post(f"{url}/inference/starting/score", json={"data": [1]}, headers=auth(creds["primary"]))
    no_traffic = requests.post(f"{url}/inference/idle/score", json={"data": [1]}, headers=auth(idle_creds["primary"]))

    assert "no ready instance" in _error(not_ready, 503, "NoReadyInstance")
    _error(no_traffic, 503, "NoTraffic")


def test_slow_model_gets_504_after_request_timeout(procs, make_endpoint):
    port, _ = procs.upstream()
    _, creds = make_endpoint("slow", {"blue": ([port], 100, {"request_timeout_ms": 300})})
    url, _ = procs.gateway()

    began = time.monotonic()
    response = requests.post(f"{url}/inference/slow/score", json={"data": [1], "sleep_ms": 3000},
                             headers=auth(creds["primary"]))
    elapsed = time.monotonic() - began

    assert "300 ms" in _error(response, 504, "RequestTimeout")
    assert elapsed < 2.0


def test_too_many_requests_in_flight_get_429_with_retry_after(procs, make_endpoint):
    port, _ = procs.upstream()
    # One instance at one concurrent request: at most 2 x 1 x 1 = 2 in flight.
    _, creds = make_endpoint("busy", {"blue": ([port], 100, {"max_concurrent_requests_per_instance": 1})})
    url, _ = procs.gateway()

    async def burst():
        async with aiohttp.ClientSession() as session:
            async def one():
                async with session.post(f"{url}/inference/busy/score", json={"data": [1], "sleep_ms": 1500},
                                        headers=auth(creds["primary"])) as r:
                    return r.status, r.headers.get("Retry-After"), await r.json()

            return await asyncio.gather(*(one() for _ in range(6)))

    results = asyncio.run(burst())

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [200, 200, 429, 429, 429, 429]
    for status, retry_after, body in results:
        if status == 429:
            assert int(retry_after) >= 1
            assert body["error"]["code"] == "TooManyRequests"
