"""Through the gateway: a provisioned deployment answers with keys and tokens, and a
regenerated key stops working within 2 s."""

import time

import pytest
import requests

from endpoints_app import keys
from endpoints_app.models import Endpoint
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/workspaces/team/online-endpoints"


def deploy(api, workspace, tmp_path, endpoint: str, auth_mode: str = "key") -> None:
    model = make_custom_model(workspace, tmp_path / "code")
    assert api.post(BASE, {"name": endpoint, "auth_mode": auth_mode}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2"}
    assert api.post(f"{BASE}/{endpoint}/deployments", body, format="json").status_code == 202
    wait_for(
        lambda: api.get(f"{BASE}/{endpoint}/deployments/blue").json()["provisioning_state"] == "Succeeded",
        timeout=60, what="Succeeded",
    )


def score(gateway: str, endpoint: str, credential: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {credential}"} if credential else {}
    return requests.post(f"{gateway}/inference/{endpoint}/score", json={"data": [1, 2]}, headers=headers, timeout=10)


def test_keys_score_and_a_regenerated_key_stops_working(live_gateway, owner_api, workspace, tmp_path):
    deploy(owner_api, workspace, tmp_path, "doubler")
    creds = owner_api.post(f"{BASE}/doubler/list-keys").json()

    ok = wait_for(lambda: (r := score(live_gateway, "doubler", creds["primary_key"])).status_code == 200 and r,
                  timeout=10, what="the gateway routes to the new deployment")
    assert ok.json()["result"] == [2.0, 4.0] and ok.headers["azureml-model-deployment"] == "blue"
    assert score(live_gateway, "doubler", creds["secondary_key"]).status_code == 200
    assert score(live_gateway, "doubler", None).status_code == 401
    assert score(live_gateway, "doubler", "not-a-key").status_code == 401

    new = owner_api.post(f"{BASE}/doubler/regenerate-keys", {"key_type": "primary"}, format="json").json()
    regenerated_at = time.monotonic()
    wait_for(lambda: score(live_gateway, "doubler", creds["primary_key"]).status_code == 401, timeout=5,
             interval=0.05, what="the old key refused")
    assert time.monotonic() - regenerated_at <= 2.0
    assert score(live_gateway, "doubler", new["primary_key"]).status_code == 200
    assert score(live_gateway, "doubler", creds["secondary_key"]).status_code == 200


def test_aml_token_endpoints_take_tokens_until_they_expire(live_gateway, owner_api, workspace, tmp_path):
    deploy(owner_api, workspace, tmp_path, "tokened", auth_mode="aml_token")
    token = owner_api.post(f"{BASE}/tokened/token").json()["access_token"]

    wait_for(lambda: score(live_gateway, "tokened", token).status_code == 200, timeout=10, what="token accepted")
    tokened = Endpoint.objects.get(name="tokened")
    expired, _ = keys.issue_token(tokened.pk, tokened.token_generation, lifetime=-1)
    assert score(live_gateway, "tokened", expired).status_code == 401
    other, _ = keys.issue_token(tokened.pk + 1, tokened.token_generation)  # another endpoint's token
    assert score(live_gateway, "tokened", other).status_code == 401


class Load:
    """Requests in a loop through the gateway from a thread; records every status."""

    def __init__(self, gateway: str, endpoint: str, key: str) -> None:
        import threading

        self.url = f"{gateway}/inference/{endpoint}/score"
        self.headers = {"Authorization": f"Bearer {key}"}
        self.statuses: list[int] = []
        self.answered_by: set[str] = set()
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    response = session.post(self.url, json={"data": [1]}, headers=self.headers, timeout=10)
                    self.statuses.append(response.status_code)
                    self.answered_by.add(f"{response.headers.get('azureml-model-deployment')}:"
                                         f"{response.json().get('result')}")
                except requests.RequestException:
                    self.statuses.append(0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(timeout=15)


def test_rollout_and_traffic_shift_fail_no_request(live_gateway, owner_api, workspace, tmp_path):
    deploy(owner_api, workspace, tmp_path, "doubler")
    key = owner_api.post(f"{BASE}/doubler/list-keys").json()["primary_key"]
    wait_for(lambda: score(live_gateway, "doubler", key).status_code == 200, timeout=10, what="routed")

    with Load(live_gateway, "doubler", key) as load:
        # A new environment: new processes come up before the old one stops.
        owner_api.patch(f"{BASE}/doubler/deployments/blue", {"environment_variables": {"FACTOR": "3"}}, format="json")
        wait_for(lambda: owner_api.get(f"{BASE}/doubler/deployments/blue").json()["provisioning_state"]
                 == "Succeeded", timeout=60, what="rollout done")
        wait_for(lambda: all(i["generation"] == 2 for i in
                             owner_api.get(f"{BASE}/doubler/deployments/blue").json()["instances"]),
                 timeout=30, what="old instance stopped")
        # A second deployment, then all traffic moves to it.
        body = {"name": "green", "model": "doubler:1", "instance_type": "Standard_DS1_v2",
                "environment_variables": {"FACTOR": "5"}}
        assert owner_api.post(f"{BASE}/doubler/deployments", body, format="json").status_code == 202
        wait_for(lambda: owner_api.get(f"{BASE}/doubler/deployments/green").json()["provisioning_state"]
                 == "Succeeded", timeout=60, what="green ready")
        assert owner_api.patch(f"{BASE}/doubler", {"traffic": {"blue": 0, "green": 100}},
                               format="json").status_code == 200
        wait_for(lambda: "green:[5.0]" in load.answered_by, timeout=10, what="green answering")
        time.sleep(1)

    assert load.statuses and set(load.statuses) == {200}, {s: load.statuses.count(s) for s in set(load.statuses)}
    assert {"blue:[2.0]", "blue:[3.0]", "green:[5.0]"} <= load.answered_by


SLOW_SCORE_PY = '''
import json
import time

def init():
    pass

def run(raw_data):
    time.sleep(0.3)
    return {"ok": True}
'''


def test_load_through_the_gateway_scales_a_deployment_out(live_gateway, owner_api, workspace, tmp_path):
    import threading

    from endpoints_app.models import AuditLog

    model = make_custom_model(workspace, tmp_path / "slow", name="slow", source=SLOW_SCORE_PY)
    assert owner_api.post(BASE, {"name": "busy"}, format="json").status_code == 201
    body = {
        "name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
        "request_settings": {"max_concurrent_requests_per_instance": 1},
        "scale_settings": {"type": "target_utilization", "min_instances": 1, "max_instances": 2,
                           "target_utilization_percentage": 50, "cooldown_seconds": 5},
    }
    assert owner_api.post(f"{BASE}/busy/deployments", body, format="json").status_code == 202
    wait_for(lambda: owner_api.get(f"{BASE}/busy/deployments/blue").json()["provisioning_state"] == "Succeeded",
             timeout=60, what="Succeeded")
    key = owner_api.post(f"{BASE}/busy/list-keys").json()["primary_key"]
    wait_for(lambda: score(live_gateway, "busy", key).status_code == 200, timeout=10, what="routed")

    stop = threading.Event()

    def client():
        with requests.Session() as session:
            while not stop.is_set():
                session.post(f"{live_gateway}/inference/busy/score", json={}, timeout=10,
                             headers={"Authorization": f"Bearer {key}"})

    threads = [threading.Thread(target=client, daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        # Two requests in flight against a target of 0.5 per instance: out to the maximum, 2.
        wait_for(lambda: [i["state"] for i in owner_api.get(f"{BASE}/busy/deployments/blue").json()["instances"]]
                 == ["Ready", "Ready"], timeout=90, interval=0.5, what="two ready instances")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    entry = AuditLog.objects.get(action="deployment.autoscale")
    assert entry.details["from_instances"] == 1 and entry.details["to_instances"] == 2
    assert entry.details["in_flight"] > 0.5
