"""Succeeded means it answers: through a gateway with several workers, a deployment answers the call made
the instant it turns Succeeded, and a traffic split holds from the first call after it is set."""

import threading
import time
from collections import Counter

import pytest
import requests

from endpoints_app.models import GatewayWorker, RouteVersion
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/workspaces/team/online-endpoints"


def _state(api, endpoint: str, deployment: str) -> str:
    return api.get(f"{BASE}/{endpoint}/deployments/{deployment}").json()["provisioning_state"]


def _calls(url: str, key: str, count: int, threads: int = 4) -> list[requests.Response]:
    """`count` calls, each on a new connection (so they spread over the gateway's workers)."""
    answers: list[requests.Response] = []
    lock = threading.Lock()
    left = iter(range(count))

    def run():
        while True:
            with lock:
                if next(left, None) is None:
                    return
            response = requests.post(url, json={"data": [1]}, headers={"Authorization": f"Bearer {key}"},
                                     timeout=30)
            with lock:
                answers.append(response)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers


def test_a_call_made_the_instant_a_deployment_turns_succeeded_answers(live_gateway_workers, owner_api, workspace,
                                                                       tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(BASE, {"name": "instant"}, format="json").status_code == 201
    key = owner_api.post(f"{BASE}/instant/list-keys").json()["primary_key"]
    # Room for the 6 concurrent callers: with Redis the in-flight limit holds across gateway workers.
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
            "request_settings": {"max_concurrent_requests_per_instance": 8}}
    assert owner_api.post(f"{BASE}/instant/deployments", body, format="json").status_code == 202
    wait_for(lambda: _state(owner_api, "instant", "blue") == "Succeeded", timeout=90, interval=0.02,
             what="Succeeded")

    answers = _calls(f"{live_gateway_workers}/inference/instant/score", key, 30, threads=6)

    assert Counter(a.status_code for a in answers) == {200: 30}, [a.text for a in answers if a.status_code != 200]
    # Every live gateway worker had loaded the version that routes to it.
    assert GatewayWorker.lagging(RouteVersion.current()) == []


def test_a_traffic_split_holds_from_the_first_call_after_it_is_set(live_gateway_workers, owner_api, workspace,
                                                                     tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(BASE, {"name": "split"}, format="json").status_code == 201
    key = owner_api.post(f"{BASE}/split/list-keys").json()["primary_key"]
    for name in ("blue", "green"):
        body = {"name": name, "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
                "request_settings": {"max_concurrent_requests_per_instance": 8}}
        assert owner_api.post(f"{BASE}/split/deployments", body, format="json").status_code == 202
    for name in ("blue", "green"):
        wait_for(lambda name=name: _state(owner_api, "split", name) == "Succeeded", timeout=90, what=name)
    # Blue took all traffic as the first deployment; green none.
    assert owner_api.get(f"{BASE}/split").json()["traffic"] == {"blue": 100, "green": 0}

    began = time.monotonic()
    response = owner_api.patch(f"{BASE}/split", {"traffic": {"blue": 80, "green": 20}}, format="json")
    acknowledged_in = time.monotonic() - began
    assert response.status_code == 200, response.content
    answers = _calls(f"{live_gateway_workers}/inference/split/score", key, 1000)

    assert Counter(a.status_code for a in answers) == {200: 1000}
    served = Counter(a.headers["azureml-model-deployment"] for a in answers)
    green_share = 100 * served["green"] / 1000
    # Binomial spread of 1,000 draws at 20%: 1.3 points; 4 points is 3 sigma.
    assert 16 <= green_share <= 24, served
    assert acknowledged_in < GatewayWorker.ACK_TIMEOUT_SECONDS + 2
