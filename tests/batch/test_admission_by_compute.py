"""Admission counts each job against its own compute: a Ray compute's jobs neither take the local nodes'
cores nor hold local jobs behind them (controller/jobs.py admit), without a worker."""

import pytest

from endpoints_app.controller import jobs
from endpoints_app.models import BatchJob, Compute, JobStatus
from tests.batch.conftest import WS, iris_csv
from tests.computes.conftest import spare_port

pytestmark = pytest.mark.django_db

EP = f"{WS}/batch-endpoints"


def _endpoint(api, name: str, model: str, **extra) -> None:
    assert api.post(EP, {"name": name}, format="json").status_code == 201
    body = {"name": "blue", "model": model, "instance_type": "Standard_DS4_v2", **extra}
    created = api.post(f"{EP}/{name}/deployments", body, format="json")
    assert created.status_code == 201, created.content


def _invoke(api, endpoint: str) -> str:
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}
    answer = api.post(f"{EP}/{endpoint}/jobs", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["name"]


def _status(name: str) -> str:
    return BatchJob.objects.get(name=name).status


def test_a_ray_job_that_does_not_fit_holds_no_local_job_and_takes_no_local_core(owner_api, node, iris,
                                                                                 make_asset):
    # A Ray cluster that does not answer offers no cores; the test node offers 8 (one Standard_DS4_v2).
    Compute.objects.create(name="far", type="ray", address=f"127.0.0.1:{spare_port()}", state="Unreachable")
    _endpoint(owner_api, "onray", iris.asset_id, compute="far")
    _endpoint(owner_api, "here", iris.asset_id)
    make_asset("rows", {"a.csv": iris_csv(3)})

    first_ray = _invoke(owner_api, "onray")
    assert jobs.admit() and _status(first_ray) == JobStatus.RUNNING  # nothing runs there: it starts anyway
    second_ray = _invoke(owner_api, "onray")
    local = _invoke(owner_api, "here")
    jobs.admit()
    # The second Ray job waits for its cluster; the local job behind it starts on the local node's 8 cores,
    # which the running Ray job's instance does not hold.
    assert _status(second_ray) == JobStatus.QUEUED
    assert _status(local) == JobStatus.RUNNING
    # The local node is full now: a second local job waits behind the first.
    another_local = _invoke(owner_api, "here")
    jobs.admit()
    assert _status(another_local) == JobStatus.QUEUED
    # Each compute's jobs wait in their own line.
    assert [BatchJob.objects.get(name=n).queue_position() for n in (second_ray, another_local)] == [1, 1]
