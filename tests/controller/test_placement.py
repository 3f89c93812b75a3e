"""Placement and planning without processes: which node, which port, lost nodes."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from endpoints_app.controller import placement, reconcile
from endpoints_app.models import Deployment, Instance, InstanceState, InstanceType, Node
from tests.live import register_test_node

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/team/online-endpoints"


def other_node(name: str, cores: int = 8, heartbeat_ago: float = 0) -> Node:
    return Node.objects.create(name=name, host="127.0.0.1", cores=cores, memory_gb=Decimal(32), queue=f"node.{name}",
                               last_heartbeat=timezone.now() - timedelta(seconds=heartbeat_ago))


@pytest.fixture
def blue(owner_api, workspace, tmp_path):
    from tests.live import make_custom_model

    register_test_node()
    make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(BASE, {"name": "spread"}, format="json").status_code == 201
    body = {"name": "blue", "model": "doubler:1", "instance_type": "Standard_DS2_v2", "instance_count": 3}
    assert owner_api.post(f"{BASE}/spread/deployments", body, format="json").status_code == 202
    return Deployment.objects.get(name="blue")


def test_instances_go_to_the_node_with_the_most_free_cores(blue):
    other_node("big", cores=10)
    reconcile.plan_deployment(blue.pk)
    nodes = sorted(Instance.objects.filter(deployment=blue).values_list("node__name", flat=True))
    # DS2 has 2 cores: big (10 free) first, then both have 8 free, then the one with more left.
    assert nodes == ["big", "big", "test-node"]


def test_a_node_that_stopped_answering_gets_no_instances(blue):
    other_node("silent", cores=64, heartbeat_ago=600)
    reconcile.plan_deployment(blue.pk)
    assert set(Instance.objects.filter(deployment=blue).values_list("node__name", flat=True)) == {"test-node"}


def test_instances_on_a_lost_node_are_replaced_on_a_live_one(blue):
    silent = other_node("silent", heartbeat_ago=0)
    Instance.objects.create(deployment=blue, name="spread-blue-old", node=silent, state=InstanceState.READY, port=1)
    Node.objects.filter(pk=silent.pk).update(last_heartbeat=timezone.now() - timedelta(seconds=600))

    reconcile.plan_deployment(blue.pk)

    assert Instance.objects.get(name="spread-blue-old").state == InstanceState.STOPPED
    live = Instance.objects.filter(deployment=blue, state=InstanceState.STARTING)
    assert live.count() == 3 and set(live.values_list("node__name", flat=True)) == {"test-node"}


def test_ports_held_by_instances_are_not_handed_out_again(blue, settings):
    node = register_test_node()
    settings.STUDIO_INSTANCE_PORTS = (29990, 29992)
    Instance.objects.create(deployment=blue, name="a", node=node, state=InstanceState.READY, port=29990)
    Instance.objects.create(deployment=blue, name="b", node=node, state=InstanceState.STARTING, port=29991)
    assert placement.pick_port(node) == 29992


def test_deployments_on_a_ray_compute_take_none_of_the_local_nodes_capacity(blue, owner_api):
    from endpoints_app.models import Compute

    before = placement.capacity()
    Compute.objects.create(name="far", type="ray", address="10.0.0.5:6379")
    body = {"name": "green", "model": "doubler:1", "instance_type": "Standard_DS2_v2", "instance_count": 8,
            "compute": "far"}
    assert owner_api.post(f"{BASE}/spread/deployments", body, format="json").status_code == 202
    after = placement.capacity()
    assert (after.used_cores, after.used_memory_gb) == (before.used_cores, before.used_memory_gb) == (6, Decimal(21))
    placement.check_capacity(InstanceType.objects.get(name="Standard_DS2_v2"), 1)


def test_capacity_counts_what_deployments_reserve(blue):
    ds2 = InstanceType.objects.get(name="Standard_DS2_v2")
    # test-node has 8 cores; blue reserves 3 x 2.
    placement.check_capacity(ds2, 1)
    with pytest.raises(Exception, match="Not enough capacity"):
        placement.check_capacity(ds2, 2)
