"""Mirror traffic from a deployment on a Ray compute, as on local compute: the mirrored share of live
requests is copied to the shadow deployment (here on the local compute), compared, and never reaches
the client."""

from __future__ import annotations

import time

import pytest
import requests

from endpoints_app.models import Instance, InstanceState
from endpoints_app.models.computes import Compute
from tests.cluster.conftest import BASE, deploy_on
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# The same answer from any sandbox (tests.live.SCORE_PY answers with its uid, which differs per instance).
SCORE_PY = '''
import json

def init():
    pass

def run(raw_data):
    return {"result": [x * 2.0 for x in json.loads(raw_data)["data"]]}
'''


def test_a_ray_deployments_mirrored_share_reaches_a_local_shadow_and_never_the_client(cluster, owner_api,
                                                                                      workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code", source=SCORE_PY)
    blue = deploy_on(owner_api, cluster.compute, "shadowed", "blue", f"{model.name}:1", 1)
    assert blue["provisioning_state"] == "Succeeded", blue["error"]
    green = deploy_on(owner_api, Compute.local(), "shadowed", "green", f"{model.name}:1", 1, create_endpoint=False)
    assert green["provisioning_state"] == "Succeeded", green["error"]
    computes = dict(Instance.objects.filter(state=InstanceState.READY)
                    .values_list("deployment__name", "deployment__compute__type"))
    assert computes == {"blue": "ray", "green": "local"}
    answer = owner_api.patch(f"{BASE}/shadowed", {"traffic": {"blue": 100}, "mirror_traffic": {"green": 50}},
                             format="json")
    assert answer.status_code in (200, 202), answer.content
    key = owner_api.post(f"{BASE}/shadowed/list-keys").json()["primary_key"]

    with requests.Session() as session:
        answers = [session.post(f"{cluster.web}/inference/shadowed/score", json={"data": [i]},
                                headers={"Authorization": f"Bearer {key}"}, timeout=10) for i in range(200)]
    assert {(a.status_code, a.headers["azureml-model-deployment"]) for a in answers} == {(200, "blue")}
    assert [a.json()["result"] for a in answers] == [[2.0 * i] for i in range(200)]

    def compared() -> dict:
        summary = owner_api.get(f"{BASE}/shadowed/mirror-comparison").json()
        return summary["requests"] >= 60 and summary

    wait_for(compared, timeout=20, interval=0.5, what="the mirrored copies compared")
    time.sleep(3)  # the gateway's next flush brings any comparison still in memory
    summary = owner_api.get(f"{BASE}/shadowed/mirror-comparison").json()
    # 200 draws at 50%: the standard deviation is 7 requests; 60-140 is far outside chance.
    assert 60 <= summary["requests"] <= 140, summary
    assert summary["agreed"] == summary["requests"] and summary["shadow_errors"] == 0, summary
    assert summary["deployments"] == [{"live": "blue", "shadow": "green"}]
