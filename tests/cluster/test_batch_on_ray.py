"""Batch jobs do not run on Ray computes yet: a job of a batch deployment on one fails with a message
that says so, rather than running its model servers on the studio's own machine."""

from __future__ import annotations

import pytest

from tests.batch.conftest import WS, iris_csv, upload
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"


def test_a_job_on_a_ray_compute_fails_saying_batch_runs_on_local_compute_only(cluster, owner_api, workspace,
                                                                             tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(EP, {"name": "onray"}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
            "compute": cluster.compute.name}
    answer = owner_api.post(f"{EP}/onray/deployments", body, format="json")
    assert answer.status_code == 201, answer.content
    assert upload(owner_api, "rows", {"a.csv": iris_csv(4)}).status_code == 201
    answer = owner_api.post(f"{EP}/onray/jobs", {"inputs": {"input_data": {
        "type": "uri_folder", "path": "studio:data/rows/versions/1"}}}, format="json")
    assert answer.status_code == 202, answer.content
    name = answer.json()["name"]
    job = wait_for(lambda: (j := owner_api.get(f"{EP}/onray/jobs/{name}").json())["status"] in ("Completed", "Failed")
                   and j, timeout=60, what="the job settled")
    assert job["status"] == "Failed"
    assert "do not run on Ray computes yet" in job["error"], job
