"""Batch endpoints, deployments and job creation through the API, without a worker: defaults,
settings, splitting into mini-batches, and bad input answered 4xx naming the field with nothing
half-created."""

import pytest
from django.test import override_settings

from endpoints_app.models import BatchJob, CatalogModel, DataAsset, MiniBatch, datastore_root
from tests.batch.conftest import WS, iris_csv

pytestmark = pytest.mark.django_db

EP = f"{WS}/batch-endpoints"


def job_body(path: str, **extra) -> dict:
    return {"inputs": {"input_data": {"type": "uri_folder", "path": path}}, **extra}


def test_it_creates_a_batch_deployment_with_the_anchor_defaults(owner_api, batch_endpoint):
    deployment = batch_endpoint()
    assert deployment["mini_batch_size"] == 10 and deployment["instance_count"] == 1
    assert deployment["max_concurrency_per_instance"] == 1 and deployment["error_threshold"] == -1
    assert deployment["retry_settings"] == {"max_retries": 3, "timeout": 30}
    assert deployment["output_action"] == "append_row" and deployment["output_file_name"] == "predictions.csv"
    assert deployment["provisioning_state"] == "Succeeded" and deployment["instances"] == []
    assert deployment["is_default"] is True
    endpoint = owner_api.get(f"{EP}/scorer").json()
    assert endpoint["defaults"] == {"deployment_name": "blue"}
    assert endpoint["scoring_uri"].endswith("/inference/scorer/jobs")


def test_it_switches_the_default_deployment(owner_api, batch_endpoint, iris):
    batch_endpoint()
    green = {"name": "green", "model": iris.asset_id, "mini_batch_size": 2}
    assert owner_api.post(f"{EP}/scorer/deployments", green, format="json").status_code == 201
    switched = owner_api.patch(f"{EP}/scorer", {"defaults": {"deployment_name": "green"}}, format="json")
    assert switched.status_code == 200 and switched.json()["defaults"] == {"deployment_name": "green"}
    unknown = owner_api.patch(f"{EP}/scorer", {"defaults": {"deployment_name": "red"}}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "defaults.deployment_name"
    # The default cannot be deleted while others exist.
    assert owner_api.delete(f"{EP}/scorer/deployments/green").status_code == 409
    assert owner_api.delete(f"{EP}/scorer/deployments/blue").status_code == 204


@pytest.mark.parametrize(
    ("settings", "field"),
    [({"mini_batch_size": 0}, "mini_batch_size"), ({"error_threshold": -2}, "error_threshold"),
     ({"retry_settings": {"timeout": 0}}, "retry_settings.timeout"),
     ({"output_action": "overwrite"}, "output_action"), ({"output_file_name": "../x.csv"}, "output_file_name")],
)
def test_it_names_the_field_of_bad_deployment_settings(owner_api, node, iris, settings, field):
    assert owner_api.post(EP, {"name": "scorer"}, format="json").status_code == 201
    body = {"name": "blue", "model": iris.asset_id, **settings}
    response = owner_api.post(f"{EP}/scorer/deployments", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field


def test_it_refuses_models_that_are_not_batch_models(owner_api, node, iris):
    CatalogModel.objects.create(name="chatty", version=1, task="chat-completion", format="gguf", license="MIT",
                                deployment_kinds=["serverless", "online"])
    assert owner_api.post(EP, {"name": "scorer"}, format="json").status_code == 201
    response = owner_api.post(f"{EP}/scorer/deployments", {"name": "blue", "model": "chatty:1"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "model"


def test_it_splits_a_job_into_mini_batches_of_files_and_row_ranges(owner_api, batch_endpoint, make_asset):
    batch_endpoint(mini_batch_size=2)
    make_asset("rows", {"a.csv": iris_csv(3), "b.csv": iris_csv(4), "c.csv": iris_csv(5), "d.csv": iris_csv(25)})
    with override_settings(STUDIO_BATCH_ROWS_PER_MINI_BATCH=10):
        response = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["status"] == "Queued" and job["queue_position"] == 1 and job["deployment_name"] == "blue"
    assert job["rows_total"] == 37 and job["input_files"] == 4 and job["mini_batches_total"] == 5
    assert job["settings"]["mini_batch_size"] == 2 and job["settings"]["instance_count"] == 1
    items = [[(i["file"], i["start"], i["stop"]) for i in mb.items]
             for mb in MiniBatch.objects.filter(job__name=job["name"]).order_by("index")]
    assert items == [
        [("a.csv", 0, None), ("b.csv", 0, None)],
        [("c.csv", 0, None)],
        [("d.csv", 0, 10)], [("d.csv", 10, 20)], [("d.csv", 20, 25)],
    ]
    listed = owner_api.get(f"{EP}/scorer/jobs").json()
    assert [j["name"] for j in listed] == [job["name"]]
    assert owner_api.get(f"{EP}/scorer/jobs/{job['name']}").json()["status"] == "Queued"


def test_it_overrides_settings_per_invocation_and_takes_a_single_file(owner_api, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3), "b.csv": iris_csv(4)})
    body = {"inputs": {"input_data": {"type": "uri_file", "path": "studio:data/rows/versions/1/b.csv"}},
            "settings": {"mini_batch_size": 1, "instance_count": 2, "output_file_name": "out.csv",
                         "error_threshold": 5}}
    response = owner_api.post(f"{EP}/scorer/jobs", body, format="json")
    assert response.status_code == 202, response.content
    job = response.json()
    assert job["input_files"] == 1 and job["rows_total"] == 4
    assert (job["settings"]["instance_count"], job["settings"]["output_file_name"]) == (2, "out.csv")
    assert job["settings"]["error_threshold"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (job_body("../../secret-key.txt"), "inputs.input_data.path"),
        (job_body("/etc"), "inputs.input_data.path"),
        (job_body("https://example.com/data.csv"), "inputs.input_data.path"),
        (job_body("studio:data/nope/versions/1"), "inputs.input_data.path"),
        (job_body("studio:data/rows/versions/1/../../../x"), "inputs.input_data.path"),
        (job_body("empty"), "inputs.input_data.path"),
        (job_body("studio:data/wrong/versions/1"), "inputs.input_data.path"),
        (job_body("studio:data/rows/versions/1", settings={"mini_batch_size": 0}), "settings.mini_batch_size"),
        (job_body("studio:data/rows/versions/1", settings={"colour": 1}), "settings.colour"),
        (job_body("studio:data/rows/versions/1", deployment_name="red"), "deployment_name"),
        ({"inputs": {}}, "inputs.input_data"),
        ({"inputs": {"input_data": {"type": "uri_table", "path": "x"}}}, "inputs.input_data.type"),
    ],
)
def test_it_refuses_bad_jobs_naming_the_field_and_creates_nothing(owner_api, batch_endpoint, make_asset, body, field):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    make_asset("wrong", {"a.csv": iris_csv(3, columns=["a", "b", "c", "d"])})
    (datastore_root() / "team" / "empty").mkdir(parents=True, exist_ok=True)
    response = owner_api.post(f"{EP}/scorer/jobs", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not BatchJob.objects.exists() and not MiniBatch.objects.exists()
    if "wrong" in str(body):
        assert "missing columns sepal_length" in response.json()["error"]["message"]


def test_it_refuses_another_workspaces_asset(owner_api, batch_endpoint, make_asset, workspace):
    from endpoints_app.models import Workspace

    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    other = Workspace.objects.create(name="other")
    DataAsset.objects.filter(name="rows").update(workspace=other)
    response = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "inputs.input_data.path"


def test_it_checks_roles_on_jobs(reader_api, outsider_api, owner_api, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    assert reader_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json"
                           ).status_code == 403
    assert outsider_api.get(f"{EP}/scorer/jobs").status_code == 404
    created = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json").json()
    assert reader_api.post(f"{EP}/scorer/jobs/{created['name']}/cancel").status_code == 403
    assert reader_api.get(f"{EP}/scorer/jobs/{created['name']}").status_code == 200


def test_it_cancels_a_queued_job_once(owner_api, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    job = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json").json()
    canceled = owner_api.post(f"{EP}/scorer/jobs/{job['name']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "Canceled"
    assert set(MiniBatch.objects.values_list("status", flat=True)) == {"Canceled"}
    again = owner_api.post(f"{EP}/scorer/jobs/{job['name']}/cancel")
    assert again.status_code == 409


def test_it_finds_jobs_by_name_alone(owner_api, outsider_api, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    job = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json").json()
    assert [j["name"] for j in owner_api.get(f"{WS}/jobs?status=Queued&endpoint=scorer").json()] == [job["name"]]
    assert owner_api.get(f"{WS}/jobs?status=Completed").json() == []
    assert owner_api.get(f"{WS}/jobs?status=Done").json()["error"]["field"] == "status"
    assert owner_api.get(f"{WS}/jobs/{job['name']}").json()["endpoint_name"] == "scorer"
    assert outsider_api.get(f"{WS}/jobs/{job['name']}").status_code == 404
    assert owner_api.get(f"{WS}/jobs/{job['name']}/outputs/predictions.csv").status_code == 404
    assert owner_api.post(f"{WS}/jobs/{job['name']}/cancel").json()["status"] == "Canceled"


def test_deleting_a_batch_endpoint_cancels_its_jobs(owner_api, batch_endpoint, make_asset):
    batch_endpoint()
    make_asset("rows", {"a.csv": iris_csv(3)})
    job = owner_api.post(f"{EP}/scorer/jobs", job_body("studio:data/rows/versions/1"), format="json").json()
    assert owner_api.delete(f"{EP}/scorer").status_code == 204
    assert BatchJob.objects.get(name=job["name"]).status == "Canceled"
    assert owner_api.get(f"{EP}/scorer").status_code == 404


def test_an_update_clears_a_failed_batch_deployment(owner_api, batch_endpoint):
    from endpoints_app.models import Deployment

    batch_endpoint()
    Deployment.objects.filter(name="blue").update(provisioning_state="Failed", error="server exited")
    updated = owner_api.patch(f"{EP}/scorer/deployments/blue", {"mini_batch_size": 5}, format="json")
    assert updated.status_code == 200, updated.content
    assert (updated.json()["provisioning_state"], updated.json()["error"]) == ("Succeeded", "")
    assert updated.json()["mini_batch_size"] == 5


def test_dispatch_gives_work_to_an_idle_server_while_a_chain_holds_a_mini_batch_claimed_ahead(
        owner_api, batch_endpoint, make_asset, node):
    from endpoints_app.controller import jobs as controller
    from endpoints_app.models import Instance, InstanceState, MiniBatchStatus

    batch_endpoint()
    make_asset("rows", {f"{i}.csv": iris_csv(3, seed=i) for i in range(4)})
    body = job_body("studio:data/rows/versions/1", settings={"mini_batch_size": 1, "instance_count": 2})
    name = owner_api.post(f"{EP}/scorer/jobs", body, format="json").json()["name"]
    job = BatchJob.objects.get(name=name)
    busy, idle = (Instance.objects.create(deployment=job.deployment, batch_job=job, name=f"{name}-{n}", node=node,
                                          port=port, state=InstanceState.READY) for n, port in (("a", 1), ("b", 2)))
    batches = list(job.mini_batches.order_by("index"))
    # A chain on `busy`: one mini-batch sent to it, the next claimed ahead (no instance until it is sent).
    for mb, instance in ((batches[0], busy.name), (batches[1], "")):
        MiniBatch.objects.filter(pk=mb.pk).update(status=MiniBatchStatus.RUNNING, attempts=1, instance=instance)

    out = controller.Outbox()
    assert controller.dispatch(job, [busy, idle], out) == 1
    assert MiniBatch.objects.get(pk=batches[2].pk).instance == idle.name
    assert out.mini_batches == [(batches[2].pk, 1)]  # the task that ran the step sends it
    assert controller.dispatch(job, [busy, idle], out) == 0  # one mini-batch at a time per server


def test_it_keeps_named_input_columns_and_refuses_ones_the_files_lack(owner_api, batch_endpoint, make_asset):
    batch_endpoint(output_columns=["customer_id"])
    deployment = owner_api.get(f"{EP}/scorer/deployments/blue").json()
    assert deployment["output_columns"] == ["customer_id"]
    make_asset("rows", {"a.csv": b"customer_id,sepal_length,sepal_width,petal_length,petal_width\n"
                                 b"c-1,5.1,3.5,1.4,0.2\nc-2,6.7,3.0,5.2,2.3\n"})
    make_asset("plain", {"a.csv": iris_csv(3)})
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/rows/versions/1"}}}
    created = owner_api.post(f"{EP}/scorer/jobs", body, format="json")
    assert created.status_code == 202 and created.json()["settings"]["output_columns"] == ["customer_id"]
    lacking = {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/plain/versions/1"}}}
    refused = owner_api.post(f"{EP}/scorer/jobs", lacking, format="json")
    assert refused.status_code == 400 and refused.json()["error"]["field"] == "settings.output_columns"
    assert "customer_id" in refused.json()["error"]["message"]
    per_job = {**body, "settings": {"output_columns": "customer_id, sepal_length"}}
    overridden = owner_api.post(f"{EP}/scorer/jobs", per_job, format="json")
    assert overridden.json()["settings"]["output_columns"] == ["customer_id", "sepal_length"]
    reserved = owner_api.post(f"{EP}/scorer/jobs", {**body, "settings": {"output_columns": ["row"]}}, format="json")
    assert reserved.status_code == 400 and reserved.json()["error"]["field"] == "settings.output_columns"
