"""Deployments on a Ray compute: a real three-node Ray cluster on 127.0.0.1 (tests/cluster/conftest.py)."""

from __future__ import annotations

import collections
import hashlib
import threading
from pathlib import Path

import pytest
import requests

from endpoints_app.models import Instance, InstanceSample, InstanceState
from tests import ray_cluster
from tests.cluster.conftest import BASE, deploy_on
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def score(url: str, endpoint: str, key: str, deployment: str | None = None) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return requests.post(f"{url}/inference/{endpoint}/score", json={"data": [1, 2]}, headers=headers, timeout=10)


def test_three_instances_land_one_per_node_and_answer_through_their_relays(cluster, owner_api, workspace,
                                                                           tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    deployment = deploy_on(owner_api, cluster.compute, "spread", "blue", f"{model.name}:1", 3)
    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]

    rows = list(Instance.objects.filter(deployment__name="blue", state=InstanceState.READY).select_related("node"))
    assert len(rows) == 3
    assert len({r.node.name for r in rows}) == 3, [r.node.name for r in rows]  # one per Ray node
    # Ray records a node started with --node-ip-address=127.0.0.1 under this machine's own address.
    low, high = ray_cluster.port_range()
    assert len({r.node.host for r in rows}) == 1 and all(low <= r.port <= high for r in rows)
    key = owner_api.post(f"{BASE}/spread/list-keys").json()["primary_key"]
    answers = [score(cluster.web, "spread", key) for _ in range(9)]
    assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
    assert {tuple(a.json()["result"]) for a in answers} == {(2.0, 4.0)}

    # The relay in front of each instance answers only a caller that presents the instance's secret.
    for row in rows:
        url = f"http://{row.node.host}:{row.port}/score"
        assert requests.post(url, json={"data": [1]}, timeout=5).status_code == 401
        forged = requests.post(url, json={"data": [1]}, headers={"Authorization": "Bearer forged"}, timeout=5)
        assert forged.status_code == 401
    # Each node fetched the model's file into its own cache (by content hash), not from the studio's disk.
    # (The session's cluster keeps what earlier tests cached too, batch inputs among them.)
    source = (tmp_path / "code" / "score.py").read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    for node in cluster.nodes:
        assert (node.folder / "cache" / digest[:2] / digest).read_bytes() == source
    # The model servers' output comes back to the studio's instance logs (the Logs tab reads them), and
    # their CPU and memory to the Monitoring tab's samples.
    for row in rows:
        wait_for(lambda row=row: "score.py init done" in Path(row.log_path).read_text(errors="replace"),
                 timeout=15, what=f"{row.name}'s log back in the studio")
    wait_for(lambda: set(InstanceSample.objects.filter(instance__in=rows, memory_mb__gt=0)
                         .values_list("instance_id", flat=True)) == {r.pk for r in rows},
             timeout=30, what="a CPU/memory sample of each instance")


def test_a_blue_green_split_across_nodes_holds_its_percentages(cluster, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    assert deploy_on(owner_api, cluster.compute, "split", "blue", f"{model.name}:1", 2)["provisioning_state"] \
        == "Succeeded"
    green = deploy_on(owner_api, cluster.compute, "split", "green", f"{model.name}:1", 1, create_endpoint=False)
    assert green["provisioning_state"] == "Succeeded", green["error"]
    answer = owner_api.patch(f"{BASE}/split", {"traffic": {"blue": 70, "green": 30}}, format="json")
    assert answer.status_code in (200, 202), answer.content
    nodes = set(Instance.objects.filter(state=InstanceState.READY).values_list("node__name", flat=True))
    assert len(nodes) == 3

    key = owner_api.post(f"{BASE}/split/list-keys").json()["primary_key"]
    wait_for(lambda: score(cluster.web, "split", key).status_code == 200, timeout=10, what="routed")
    counts: collections.Counter = collections.Counter()
    with requests.Session() as session:
        for _ in range(600):
            r = session.post(f"{cluster.web}/inference/split/score", json={"data": [1]},
                             headers={"Authorization": f"Bearer {key}"}, timeout=10)
            assert r.status_code == 200, r.text
            counts[r.headers["azureml-model-deployment"]] += 1
    # 600 draws at 30%: the standard deviation is 11 requests; 4 of them either way.
    assert abs(counts["green"] - 180) <= 45, counts


def test_a_rollout_on_ray_fails_no_request_and_leaves_no_actor_of_the_old_instances(cluster, owner_api, workspace,
                                                                                 tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    assert deploy_on(owner_api, cluster.compute, "roll", "blue", f"{model.name}:1", 2)["provisioning_state"] \
        == "Succeeded"
    old = set(Instance.objects.filter(state=InstanceState.READY).values_list("name", flat=True))
    assert old <= ray_cluster.live_actors(cluster.address)
    key = owner_api.post(f"{BASE}/roll/list-keys").json()["primary_key"]
    statuses: list[int] = []
    results: set[float] = set()
    stop = threading.Event()

    def load() -> None:
        with requests.Session() as session:
            while not stop.is_set():
                r = session.post(f"{cluster.web}/inference/roll/score", json={"data": [1]},
                                 headers={"Authorization": f"Bearer {key}"}, timeout=10)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    results.add(r.json()["result"][0])

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        answer = owner_api.patch(f"{BASE}/roll/deployments/blue", {"environment_variables": {"FACTOR": "3"}},
                                 format="json")
        assert answer.status_code in (200, 202), answer.content
        wait_for(lambda: owner_api.get(f"{BASE}/roll/deployments/blue").json()["provisioning_state"] == "Succeeded",
                 timeout=90, what="rollout Succeeded")
        wait_for(lambda: not Instance.objects.filter(name__in=old).exclude(state=InstanceState.STOPPED).exists(),
                 timeout=60, what="the old instances stopped")
        wait_for(lambda: 3.0 in results, timeout=10, what="answers of the new generation")
    finally:
        stop.set()
        thread.join(15)
    assert statuses and set(statuses) == {200}, collections.Counter(statuses)
    assert not old & ray_cluster.live_actors(cluster.address)
