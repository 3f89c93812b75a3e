"""Deployments through the REST API: validation, quota and capacity, updates, deletes, logs.
No worker runs here: these tests check what the control plane writes and refuses."""

import pytest

from endpoints_app.models import AuditLog, Deployment, Endpoint, Instance, InstanceState, Node, QuotaLimit

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/team/online-endpoints"


def post_deployment(api, body: dict, endpoint: str = "iris"):
    return api.post(f"{BASE}/{endpoint}/deployments", body, format="json")


def spec(catalog_model, **extra) -> dict:
    return {"name": "blue", "model": catalog_model.asset_id, "instance_type": "Standard_DS1_v2", **extra}


def test_it_accepts_a_deployment_with_202_and_cli_field_names(owner_api, endpoint_factory, catalog_model):
    endpoint_factory("iris")
    body = spec(
        catalog_model,
        **{"$schema": "https://azuremlschemas.azureedge.net/latest/managedOnlineDeployment.schema.json"},
        endpoint_name="iris",
        instance_count=2,
        environment_variables={"WORKERS": 2, "DEBUG": True},
        request_settings={"request_timeout_ms": 3000, "max_concurrent_requests_per_instance": 4},
        liveness_probe={"period": 7},
        readiness_probe={"initial_delay": 1, "failure_threshold": 10},
    )

    response = post_deployment(owner_api, body)

    assert response.status_code == 202, response.content
    data = response.json()
    assert data["provisioning_state"] == "Creating" and data["instances"] == []
    assert data["model"] == "studio://registries/studio/models/iris-classifier/versions/1"
    assert data["instance_count"] == 2 and data["instance_type"] == "Standard_DS1_v2"
    assert data["environment_variables"] == {"WORKERS": "2", "DEBUG": "true"}
    assert data["request_settings"] == {"request_timeout_ms": 3000, "max_concurrent_requests_per_instance": 4}
    assert data["liveness_probe"]["period"] == 7 and data["liveness_probe"]["failure_threshold"] == 3
    assert data["readiness_probe"]["initial_delay"] == 1 and data["readiness_probe"]["failure_threshold"] == 10
    assert data["scale_settings"] == {"type": "default"} and data["traffic"] == 100
    assert AuditLog.objects.filter(action="deployment.create", object_name="iris/blue").exists()


def test_a_model_can_be_named_by_name_and_version(owner_api, endpoint_factory, catalog_model):
    endpoint_factory("iris")
    response = post_deployment(owner_api, spec(catalog_model, model="iris-classifier:1"))
    assert response.status_code == 202
    unknown = post_deployment(owner_api, spec(catalog_model, name="green", model="iris-classifier:9"))
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "model"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Blue!"}, "name"),
        ({"instance_count": 0}, "instance_count"),
        ({"instance_count": "many"}, "instance_count"),
        ({"instance_type": "Huge_VM"}, "instance_type"),
        ({"model": "nothing:1"}, "model"),
        ({"instanse_count": 1}, "instanse_count"),
        ({"liveness_probe": {"period": 0}}, "liveness_probe.period"),
        ({"readiness_probe": {"every": 3}}, "readiness_probe.every"),
        ({"request_settings": {"request_timeout_ms": -5}}, "request_settings.request_timeout_ms"),
        ({"scale_settings": {"type": "magic"}}, "scale_settings.type"),
        ({"scale_settings": {"type": "target_utilization", "min_instances": 3, "max_instances": 2}},
         "scale_settings.max_instances"),
        ({"environment_variables": {"1BAD": "x"}}, "environment_variables"),
        ({"environment_variables": "A=1"}, "environment_variables"),
        ({"code_configuration": {"scoring_script": "score.py"}}, "code_configuration.code"),
        ({"code_configuration": {"code": "/etc"}}, "code_configuration.code"),
        ({"code_configuration": {"code": "models/../../secret"}}, "code_configuration.code"),
        ({"code_configuration": {"code": "models", "scoring_script": "../x.py"}}, "code_configuration.scoring_script"),
        ({"code_configuration": {"code": "models", "scoring_script": "/tmp/x.py"}},
         "code_configuration.scoring_script"),
        ({"endpoint_name": "other"}, "endpoint_name"),
    ],
)
def test_invalid_deployments_are_400_naming_the_field(owner_api, endpoint_factory, catalog_model, change, field):
    endpoint_factory("iris")
    response = post_deployment(owner_api, {**spec(catalog_model), **change})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not Deployment.objects.exists()


def test_a_model_that_does_not_support_online_is_refused(owner_api, endpoint_factory, catalog_model):
    catalog_model.deployment_kinds = ["batch"]
    catalog_model.save()
    endpoint_factory("iris")
    response = post_deployment(owner_api, spec(catalog_model))
    assert response.status_code == 400 and "online" in response.json()["error"]["message"]


def test_a_taken_deployment_name_is_409(owner_api, endpoint_factory, catalog_model):
    endpoint_factory("iris", deployments=("blue",))
    assert post_deployment(owner_api, spec(catalog_model)).status_code == 409


def test_quota_refusal_names_the_quota_the_use_and_the_ask(owner_api, endpoint_factory, catalog_model, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=4)
    endpoint_factory("iris")
    assert post_deployment(owner_api, spec(catalog_model, instance_count=2)).status_code == 202

    response = post_deployment(owner_api, spec(catalog_model, name="green", instance_type="Standard_DS2_v2",
                                               instance_count=2))

    assert response.status_code == 409
    error = response.json()["error"]
    assert error["code"] == "QuotaExceeded"
    assert "DSv2" in error["message"] and "quota is 4 cores" in error["message"]
    assert "2 in use" in error["message"] and "asks for 4" in error["message"]


def test_scaling_past_the_quota_is_refused_and_changes_nothing(owner_api, endpoint_factory, catalog_model, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=3)
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.patch(f"{BASE}/iris/deployments/blue", {"instance_count": 4}, format="json")
    assert response.status_code == 409 and "asks for 4" in response.json()["error"]["message"]
    assert Deployment.objects.get(name="blue").instance_count == 1


def test_autoscaled_deployments_reserve_their_maximum(owner_api, endpoint_factory, catalog_model, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=3)
    endpoint_factory("iris")
    body = spec(catalog_model, scale_settings={"type": "target_utilization", "min_instances": 1, "max_instances": 4})
    response = post_deployment(owner_api, body)
    assert response.status_code == 409 and "asks for 4" in response.json()["error"]["message"]


def test_capacity_refusal_when_nodes_are_full(owner_api, endpoint_factory, catalog_model, node):
    node.cores = 2
    node.save()
    endpoint_factory("iris")
    response = post_deployment(owner_api, spec(catalog_model, instance_count=3))
    assert response.status_code == 409
    assert "capacity" in response.json()["error"]["message"] and "2 cores" in response.json()["error"]["message"]


def test_no_live_node_is_refused_with_a_hint(owner_api, endpoint_factory, catalog_model, node):
    endpoint_factory("iris")
    Node.objects.update(last_heartbeat=None)
    response = post_deployment(owner_api, spec(catalog_model))
    assert response.status_code == 409 and "worker" in response.json()["error"]["message"]


def test_reader_cannot_create_update_or_delete_deployments(reader_api, owner_api, endpoint_factory, catalog_model):
    endpoint_factory("iris", deployments=("blue",))
    assert post_deployment(reader_api, spec(catalog_model, name="green")).status_code == 403
    assert reader_api.patch(f"{BASE}/iris/deployments/blue", {"instance_count": 2}, format="json").status_code == 403
    assert reader_api.delete(f"{BASE}/iris/deployments/blue").status_code == 403
    assert reader_api.get(f"{BASE}/iris/deployments/blue").status_code == 200
    assert reader_api.get(f"{BASE}/iris/deployments").json()[0]["name"] == "blue"


def test_contributor_can_deploy_and_outsider_gets_404(contributor_api, outsider_api, endpoint_factory, catalog_model):
    endpoint_factory("iris")
    assert post_deployment(contributor_api, spec(catalog_model)).status_code == 202
    assert outsider_api.get(f"{BASE}/iris/deployments/blue").status_code == 404
    assert outsider_api.get(f"{BASE}/iris/deployments/blue/logs").status_code == 404


def test_updates_that_need_new_processes_bump_the_generation(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    Deployment.objects.update(provisioning_state="Succeeded")

    env = owner_api.patch(f"{BASE}/iris/deployments/blue", {"environment_variables": {"A": "1"}}, format="json")
    assert env.status_code == 202 and env.json()["generation"] == 2 and env.json()["provisioning_state"] == "Updating"

    Deployment.objects.update(provisioning_state="Succeeded")
    timeout = owner_api.patch(f"{BASE}/iris/deployments/blue", {"request_settings": {"request_timeout_ms": 9000}},
                              format="json")
    assert timeout.status_code == 200 and timeout.json()["generation"] == 2
    assert timeout.json()["provisioning_state"] == "Succeeded"
    assert timeout.json()["request_settings"]["max_concurrent_requests_per_instance"] == 1

    scale = owner_api.patch(f"{BASE}/iris/deployments/blue", {"instance_count": 2}, format="json")
    assert scale.status_code == 202 and scale.json()["generation"] == 2


def test_a_deployment_with_live_traffic_next_to_others_cannot_be_deleted(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue", "green"))
    response = owner_api.delete(f"{BASE}/iris/deployments/blue")
    assert response.status_code == 409 and "traffic" in response.json()["error"]["message"]

    assert owner_api.delete(f"{BASE}/iris/deployments/green").status_code == 204
    assert Endpoint.objects.get(name="iris").traffic == {"blue": 100}


def test_the_only_deployment_taking_all_traffic_cannot_be_deleted(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.delete(f"{BASE}/iris/deployments/blue")
    error = response.json()["error"]
    assert response.status_code == 409 and error["field"] == "traffic"
    assert "100% of live traffic" in error["message"] and "delete the endpoint" in error["message"]
    assert Endpoint.objects.get(name="iris").traffic == {"blue": 100}
    assert owner_api.get(f"{BASE}/iris/deployments/blue").status_code == 200


def test_a_deployment_taking_mirror_traffic_cannot_be_deleted_until_it_is_0(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue", "green"))
    mirrored = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {"green": 10}}, format="json")
    assert mirrored.status_code == 200, mirrored.content
    response = owner_api.delete(f"{BASE}/iris/deployments/green")
    assert response.status_code == 409 and response.json()["error"]["field"] == "mirror_traffic"
    assert "10% mirror traffic" in response.json()["error"]["message"]
    assert owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {}}, format="json").status_code == 200
    assert owner_api.delete(f"{BASE}/iris/deployments/green").status_code == 204


def test_deleting_a_deployment_with_instances_marks_them_stopping(owner_api, endpoint_factory, node):
    endpoint_factory("iris", deployments=("blue", "green"))  # green takes no traffic
    deployment = Deployment.objects.get(name="green")
    Instance.objects.create(deployment=deployment, name="iris-green-1", node=node, state=InstanceState.READY, port=1)

    response = owner_api.delete(f"{BASE}/iris/deployments/green")

    assert response.status_code == 202 and response.json()["provisioning_state"] == "Deleting"
    assert Instance.objects.get(name="iris-green-1").state == InstanceState.STOPPING
    assert owner_api.patch(f"{BASE}/iris/deployments/green", {"instance_count": 2}, format="json").status_code == 409


def test_logs_are_plain_text_per_instance(owner_api, endpoint_factory, node, settings):
    endpoint_factory("iris", deployments=("blue",))
    deployment = Deployment.objects.get(name="blue")
    log = settings.DATA_DIR / "logs" / "instances" / "iris-blue-test.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("".join(f"line {n}\n" for n in range(50)))
    Instance.objects.create(deployment=deployment, name="iris-blue-test", node=node, log_path=str(log))

    response = owner_api.get(f"{BASE}/iris/deployments/blue/logs?lines=3")

    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    assert "line 47\nline 48\nline 49\n" in text and "line 46" not in text
    one = owner_api.get(f"{BASE}/iris/deployments/blue/logs?lines=2&instance=iris-blue-test").content.decode()
    assert one == "line 48\nline 49\n"
    assert owner_api.get(f"{BASE}/iris/deployments/blue/logs?lines=zero").status_code == 400
    assert owner_api.get(f"{BASE}/iris/deployments/blue/logs?instance=nope").status_code == 400


def test_listing_deployments_takes_a_fixed_number_of_queries(owner_api, endpoint_factory, node,
                                                             django_assert_max_num_queries):
    endpoint_factory("iris", deployments=("blue", "green", "red"))
    for deployment in Deployment.objects.all():
        for n in range(2):
            Instance.objects.create(deployment=deployment, name=f"{deployment.name}-{n}", node=node, port=1000 + n)
    with django_assert_max_num_queries(8):
        response = owner_api.get(f"{BASE}/iris/deployments")
    assert [len(d["instances"]) for d in response.json()] == [2, 2, 2]


def test_gguf_models_get_a_longer_default_request_timeout(owner_api, endpoint_factory):
    from endpoints_app.models import CatalogModel

    CatalogModel.objects.create(
        name="tiny-chat", version=1, task="chat-completion", format="gguf", license="Apache-2.0",
        artifact_path="/nowhere/tiny.gguf", deployment_kinds=["online", "serverless"],
    )
    endpoint_factory("chat")
    response = post_deployment(owner_api, {"name": "blue", "model": "tiny-chat:1"}, endpoint="chat")
    assert response.status_code == 202
    assert response.json()["request_settings"]["request_timeout_ms"] == 120000


def test_it_hides_environment_variable_values_from_readers(owner_api, contributor_api, reader_api,
                                                          endpoint_factory, catalog_model):
    endpoint_factory("iris")
    body = spec(catalog_model, environment_variables={"DB_PASSWORD": "hunter2", "WORKERS": "2"})
    assert post_deployment(owner_api, body).status_code == 202
    for api in (owner_api, contributor_api):
        assert api.get(f"{BASE}/iris/deployments/blue").json()["environment_variables"]["DB_PASSWORD"] == "hunter2"
    one = reader_api.get(f"{BASE}/iris/deployments/blue")
    listed = reader_api.get(f"{BASE}/iris/deployments")
    assert one.json()["environment_variables"] == {"DB_PASSWORD": "(hidden)", "WORKERS": "(hidden)"}
    assert b"hunter2" not in one.content and b"hunter2" not in listed.content
    assert listed.json()[0]["environment_variables"].keys() == {"DB_PASSWORD", "WORKERS"}


def test_code_resolves_only_inside_artifacts_the_workspace_may_use(owner_api, endpoint_factory, catalog_model,
                                                                    workspace):
    from endpoints_app.models import CatalogModel, Workspace

    other = Workspace.objects.create(name="rivals", display_name="Rivals")
    CatalogModel.objects.create(registry="rivals", workspace=other, name="secret-sauce", version=1, format="custom",
                                task="custom", license="MIT", artifact_path="rivals/secret-sauce/1-abc/code",
                                deployment_kinds=["online"])
    CatalogModel.objects.create(registry="team", workspace=workspace, name="ours", version=1, format="custom",
                                task="custom", license="MIT", artifact_path="team/ours/1-def/code",
                                deployment_kinds=["online"])
    endpoint_factory("iris")

    theirs = post_deployment(owner_api, spec(catalog_model,
                                             code_configuration={"code": "rivals/secret-sauce/1-abc/code"}))
    nobodys = post_deployment(owner_api, spec(catalog_model, code_configuration={"code": "broker"}))
    assert theirs.status_code == 400 and theirs.json()["error"]["field"] == "code_configuration.code"
    assert nobodys.status_code == 400 and nobodys.json()["error"]["field"] == "code_configuration.code"
    assert not Deployment.objects.exists()

    # A folder of its own model, or of a shared catalog model (models/iris.joblib sits in models/).
    ours = post_deployment(owner_api, spec(catalog_model, code_configuration={"code": "team/ours/1-def/code",
                                                                              "scoring_script": "score.py"}))
    assert ours.status_code == 202, ours.content
    shared = post_deployment(owner_api, spec(catalog_model, name="green", code_configuration={"code": "models"}))
    assert shared.status_code == 202, shared.content


def test_the_plan_check_refuses_deployments_that_only_fail_together(owner_api, endpoint_factory, node):
    check = "/api/v1/workspaces/team/deployment-check"
    big = {"kind": "online", "endpoint_name": "new", "name": "blue", "instance_type": "Standard_DS3_v2",
           "instance_count": 2}
    small = {"kind": "online", "endpoint_name": "new", "name": "green", "instance_type": "Standard_DS3_v2"}
    assert owner_api.post(check, {"deployments": [big]}, format="json").status_code == 200
    assert owner_api.post(check, {"deployments": [small]}, format="json").status_code == 200
    both = owner_api.post(check, {"deployments": [big, small]}, format="json")
    assert both.status_code == 409, both.content
    assert "Not enough capacity" in both.json()["error"]["message"]
    assert "Nothing was changed" in both.json()["error"]["message"]
    assert not Endpoint.objects.exists()


def test_the_plan_check_counts_an_updated_deployment_once(owner_api, endpoint_factory, node):
    endpoint_factory("iris", deployments=("blue",))  # 1 x Standard_DS1_v2
    check = "/api/v1/workspaces/team/deployment-check"
    grown = {"endpoint_name": "iris", "name": "blue", "instance_count": 8}
    answer = owner_api.post(check, {"deployments": [grown]}, format="json")
    assert answer.status_code == 200 and answer.json()["checked"] == ["online deployment iris/blue"]
    too_big = owner_api.post(check, {"deployments": [{**grown, "instance_count": 9}]}, format="json")
    assert too_big.status_code == 409
    unknown = owner_api.post(check, {"deployments": [{**grown, "instance_type": "Huge"}]}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "deployments[0].instance_type"


def test_a_reader_cannot_check_a_plan(reader_api, node):
    assert reader_api.post("/api/v1/workspaces/team/deployment-check", {"deployments": []},
                           format="json").status_code == 403
