"""Instance families on a Ray compute: a node offers the families it was started with
(`--resources='{"studio-family-<family>": <cores>}'`, tests/ray_cluster.py: every node DSv2, the last one
FSv2 too); a type of a family only one node has runs there only, and one of a family no node has waits,
saying why, until a node that has it joins."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest

from endpoints_app.models import Instance, InstanceState, InstanceType
from tests import ray_cluster
from tests.cluster.conftest import BASE, deploy_on
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_family_on_one_node_lands_there_and_a_family_no_node_has_waits_saying_so(cluster, owner_api,
                                                                                   workspace, tmp_path):
    # IT's small types of two families (one core each, so two instances fit on one two-core node).
    InstanceType.objects.create(name="Standard_F1_test", family="FSv2", cores=1, memory_gb=Decimal(1),
                                price_per_hour=Decimal("0.05"))
    InstanceType.objects.create(name="Standard_NC1_test", family="NCv3", cores=1, memory_gb=Decimal(1),
                                price_per_hour=Decimal("0.90"))
    model = make_custom_model(workspace, tmp_path / "code")

    pinned = deploy_on(owner_api, cluster.compute, "pinned", "blue", f"{model.name}:1", 2,
                       instance_type="Standard_F1_test")
    assert pinned["provisioning_state"] == "Succeeded", pinned["error"]
    fsv2_node = f"{cluster.compute.name}:{ray_cluster.node_ids(cluster.address)[cluster.nodes[-1].name][:16]}"
    rows = Instance.objects.filter(deployment__endpoint__name="pinned", state=InstanceState.READY)
    # Spread would put two instances on two nodes; the family keeps both on the one node that has it.
    assert list(rows.values_list("node__name", flat=True)) == [fsv2_node, fsv2_node]

    assert owner_api.post(BASE, {"name": "nofamily"}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_NC1_test", "instance_count": 1,
            "compute": cluster.compute.name}
    assert owner_api.post(f"{BASE}/nofamily/deployments", body, format="json").status_code == 202
    waiting = wait_for(lambda: (d := owner_api.get(f"{BASE}/nofamily/deployments/blue").json())["error"] and d,
                       timeout=30, what="the deployment saying why it waits")
    assert waiting["provisioning_state"] == "Creating"
    assert "No node of compute 'cluster' has instance family NCv3" in waiting["error"], waiting["error"]
    assert "studio-family-NCv3" in waiting["error"]
    time.sleep(3)  # more passes: it still waits, and no actor was asked of Ray
    row = Instance.objects.get(deployment__endpoint__name="nofamily")
    assert (row.state, row.pid) == (InstanceState.STARTING, None)
    logs = owner_api.get(f"{BASE}/nofamily/deployments/blue/logs").content.decode()
    assert "waiting: No node of compute 'cluster' has instance family NCv3" in logs, logs
    assert row.name not in ray_cluster.live_actors(cluster.address)
    assert owner_api.get(f"{BASE}/nofamily/deployments/blue").json()["provisioning_state"] == "Creating"

