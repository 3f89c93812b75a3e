"""A Ray compute whose head does not answer: its deployments wait (no instance starts anywhere else),
and the local compute's deployments are provisioned as usual meanwhile."""

from __future__ import annotations

import time

import pytest

from endpoints_app.models import Instance, InstanceState
from tests.cluster.conftest import BASE, deploy_on
from tests.live import free_port, make_custom_model

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_deployment_on_an_unreachable_ray_compute_waits_while_local_ones_provision(live_worker, owner_api,
                                                                                     workspace, tmp_path):
    from endpoints_app.models.computes import Compute

    Compute.local()
    Compute.objects.create(name="dark", type="ray", address=f"127.0.0.1:{free_port()}", state="Ready")
    model = make_custom_model(workspace, tmp_path / "code")
    began = time.monotonic()
    assert owner_api.post(BASE, {"name": "waits"}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2", "compute": "dark"}
    assert owner_api.post(f"{BASE}/waits/deployments", body, format="json").status_code == 202
    local = deploy_on(owner_api, Compute.local(), "here", "blue", f"{model.name}:1", 1, timeout=60)
    assert local["provisioning_state"] == "Succeeded", local["error"]
    assert time.monotonic() - began < 60
    waiting = owner_api.get(f"{BASE}/waits/deployments/blue").json()
    assert waiting["provisioning_state"] == "Creating"
    assert list(Instance.objects.filter(deployment__name="blue", deployment__endpoint__name="waits")
                .values_list("state", "pid")) == [(InstanceState.STARTING, None)]
    # The pass that tried the head logs it once its bounded connect gives up: wait for that, bounded too.
    deadline = time.monotonic() + 30
    while "Ray compute dark is unreachable" not in live_worker.log_tail(400):
        assert time.monotonic() < deadline, live_worker.log_tail(40)
        time.sleep(0.5)
