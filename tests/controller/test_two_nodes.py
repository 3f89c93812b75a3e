"""Two nodes, each with its own worker on its own queue (both on this machine): the
scheduler spreads instances and each node's worker starts its own."""

import pytest

from endpoints_app.models import Instance
from tests.live import LiveWorker, make_custom_model, score_instance, served_by, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/workspaces/team/online-endpoints"


@pytest.fixture
def second_node(live_worker):
    worker = LiveWorker("test-node-2")
    worker.start()
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()


def test_instances_spread_over_nodes_and_each_worker_starts_its_own(second_node, owner_api, workspace, tmp_path):
    make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(BASE, {"name": "spread"}, format="json").status_code == 201
    body = {"name": "blue", "model": "doubler:1", "instance_type": "Standard_DS2_v2", "instance_count": 2}
    assert owner_api.post(f"{BASE}/spread/deployments", body, format="json").status_code == 202

    deployment = wait_for(
        lambda: (d := owner_api.get(f"{BASE}/spread/deployments/blue").json())["provisioning_state"]
        in ("Succeeded", "Failed") and d,
        timeout=90, what="provisioned",
    )

    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]
    assert sorted(i["node"] for i in deployment["instances"]) == ["test-node", "test-node-2"]
    for instance in deployment["instances"]:
        assert score_instance(instance, [1]) == {"result": [2.0], "uid": served_by(instance)}
    # Each process was started by its own node's worker.
    remote = Instance.objects.get(node__name="test-node-2")
    assert f"started {remote.name}" in second_node.log_path.read_text()
