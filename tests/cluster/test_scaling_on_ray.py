"""Scaling a deployment on a Ray compute, as on local compute: autoscale out under load through the
gateway and back in once it is gone, and a scale down under steady load that loses no request."""

from __future__ import annotations

import time

import pytest

from endpoints_app.models import AuditLog, Instance, InstanceState
from tests import ray_cluster
from tests.cluster.conftest import BASE, Load, deploy_on
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SLOW_SCORE_PY = '''
import time

def init():
    pass

def run(raw_data):
    time.sleep(0.3)
    return {"ok": True}
'''


def states(api, endpoint: str) -> list[str]:
    return [i["state"] for i in api.get(f"{BASE}/{endpoint}/deployments/blue").json()["instances"]]


def test_load_through_the_gateway_scales_a_ray_deployment_out_across_nodes_and_back_in(cluster, owner_api,
                                                                                      workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "slow", name="slow", source=SLOW_SCORE_PY)
    deployment = deploy_on(
        owner_api, cluster.compute, "busy", "blue", f"{model.name}:1", 1,
        request_settings={"max_concurrent_requests_per_instance": 1},
        scale_settings={"type": "target_utilization", "min_instances": 1, "max_instances": 2,
                        "target_utilization_percentage": 50, "cooldown_seconds": 5})
    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]
    key = owner_api.post(f"{BASE}/busy/list-keys").json()["primary_key"]

    # Two clients keep two requests in flight against a target of 0.5 per instance: out to the maximum, 2.
    loads = [Load(f"{cluster.web}/inference/busy/score", key, body={}).start() for _ in range(2)]
    try:
        wait_for(lambda: states(owner_api, "busy") == ["Ready", "Ready"], timeout=120, interval=0.5,
                 what="two ready instances")
    finally:
        for load in loads:
            load.stop()
    out = AuditLog.objects.get(action="deployment.autoscale", details__to_instances=2)
    assert out.details["from_instances"] == 1 and out.details["in_flight"] > 0.5
    rows = list(Instance.objects.filter(deployment__name="blue", state=InstanceState.READY).select_related("node"))
    assert len({r.node.name for r in rows}) == 2  # the new actor went to another node (SPREAD)
    assert {r.name for r in rows} <= ray_cluster.live_actors(cluster.address)
    assert all(s[1] in (200, 429) for load in loads for s in load.statuses)

    # Without load the measured in-flight falls once the busy minute is behind (at most about 70 s):
    # back in to the minimum, and the leaving instance's actor is gone.
    wait_for(lambda: states(owner_api, "busy") == ["Ready"], timeout=120, interval=1, what="back to one instance")
    back = AuditLog.objects.get(action="deployment.autoscale", details__to_instances=1)
    assert back.details["from_instances"] == 2
    stopped = wait_for(lambda: list(Instance.objects.filter(deployment__name="blue", state=InstanceState.STOPPED)
                                    .values_list("name", flat=True)), timeout=30, what="the extra instance stopped")
    live = ray_cluster.live_actors(cluster.address)
    assert not set(stopped) & live and len(live & {r.name for r in rows}) == 1


def test_scaling_a_ray_deployment_from_three_to_one_stops_two_actors_and_loses_no_request(cluster, owner_api,
                                                                                        workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    deployment = deploy_on(owner_api, cluster.compute, "shrink", "blue", f"{model.name}:1", 3)
    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]
    names = set(Instance.objects.filter(state=InstanceState.READY).values_list("name", flat=True))
    assert len(names) == 3 and names <= ray_cluster.live_actors(cluster.address)
    key = owner_api.post(f"{BASE}/shrink/list-keys").json()["primary_key"]

    load = Load(f"{cluster.web}/inference/shrink/score", key).start()
    try:
        time.sleep(1)
        answer = owner_api.patch(f"{BASE}/shrink/deployments/blue", {"instance_count": 1}, format="json")
        assert answer.status_code in (200, 202), answer.content
        wait_for(lambda: Instance.objects.filter(name__in=names, state=InstanceState.STOPPED).count() == 2,
                 timeout=60, interval=0.5, what="two instances drained and stopped")
        during = len(load.statuses)
        time.sleep(2)  # the one left goes on serving
    finally:
        load.stop()
    assert states(owner_api, "shrink") == ["Ready"]
    assert len(load.statuses) > during + 10
    assert not load.failures(), load.failures()
    kept = set(Instance.objects.filter(name__in=names, state=InstanceState.READY).values_list("name", flat=True))
    assert ray_cluster.live_actors(cluster.address) & names == kept and len(kept) == 1
