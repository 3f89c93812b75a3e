"""One shape per resource: every answer of the REST API has the fields its OpenAPI schema (/api/schema/)
documents for it, none missing and none more, because the serializer the schema names for a response is
the one that builds it (endpoints_app/api/common.py). Rows are made through the API itself where no
process is needed (a deployment's provisioning waits for a worker that does not run here)."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints_app.models import CatalogModel, Endpoint, MirrorComparison
from tests.live import register_test_node

API = "/api/v1"
WS = f"{API}/workspaces/team"
T = "/api/v1/workspaces/{ws}"


@pytest.fixture
def schema(owner_client) -> dict:
    response = owner_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def _component(schema: dict, ref_or_schema: dict) -> tuple[dict, bool]:
    """(the component an answer's schema names, whether the answer is a list of them)."""
    many = ref_or_schema.get("type") == "array"
    target = ref_or_schema["items"] if many else ref_or_schema
    name = target["$ref"].rsplit("/", 1)[-1]
    return schema["components"]["schemas"][name], many


def check(schema: dict, template: str, method: str, response, status: int = 200) -> None:
    """The answer's fields are the documented ones: every required field there, nothing undocumented."""
    assert response.status_code == status, (template, method, response.content[:300])
    documented = schema["paths"][template][method]["responses"][str(status)]["content"]["application/json"]
    component, many = _component(schema, documented["schema"])
    body = response.json()
    rows = body if many else [body]
    assert rows, f"{method} {template} answered no row to check"
    allowed, required = set(component["properties"]), set(component.get("required", ()))
    for row in rows:
        assert set(row) <= allowed, (method, template, sorted(set(row) - allowed))
        assert required <= set(row), (method, template, sorted(required - set(row)))


@pytest.fixture
def rows(db, owner, workspace):
    register_test_node()
    from endpoints_app.catalog.seed import seed_catalog

    seed_catalog()  # the iris classifier with its real artifact (cached in the data dir), smollm2 serverless
    return CatalogModel.objects.get(registry="studio", name="iris-classifier")


def test_every_answer_has_the_fields_its_schema_documents(owner_api, schema, rows):
    iris = rows.asset_id
    # Workspaces, members, tokens, instance types.
    check(schema, f"{API}/instance-types", "get", owner_api.get(f"{API}/instance-types"))
    check(schema, f"{API}/workspaces", "get", owner_api.get(f"{API}/workspaces"))
    check(schema, f"{API}/tokens", "get", owner_api.get(f"{API}/tokens"))
    check(schema, f"{API}/tokens", "post", owner_api.post(f"{API}/tokens", {}, format="json"), 201)
    check(schema, f"{T}/members", "get", owner_api.get(f"{WS}/members"))
    check(schema, f"{T}/members/{{username}}", "get", owner_api.get(f"{WS}/members/olivia"))

    # Online endpoints, deployments, keys, tokens, mirror comparison, the plan check.
    check(schema, f"{T}/online-endpoints", "post",
          owner_api.post(f"{WS}/online-endpoints", {"name": "iris"}, format="json"), 201)
    check(schema, f"{T}/online-endpoints", "get", owner_api.get(f"{WS}/online-endpoints"))
    check(schema, f"{T}/online-endpoints/{{name}}/deployments", "post",
          owner_api.post(f"{WS}/online-endpoints/iris/deployments",
                         {"name": "blue", "model": iris, "instance_type": "Standard_DS1_v2",
                          "environment_variables": {"GREETING": "hi"}}, format="json"), 202)
    check(schema, f"{T}/online-endpoints/{{name}}", "get", owner_api.get(f"{WS}/online-endpoints/iris"))
    check(schema, f"{T}/online-endpoints/{{name}}/deployments", "get",
          owner_api.get(f"{WS}/online-endpoints/iris/deployments"))
    check(schema, f"{T}/online-endpoints/{{name}}/deployments/{{deployment_name}}", "get",
          owner_api.get(f"{WS}/online-endpoints/iris/deployments/blue"))
    check(schema, f"{T}/online-endpoints/{{name}}/list-keys", "post",
          owner_api.post(f"{WS}/online-endpoints/iris/list-keys"))
    check(schema, f"{T}/online-endpoints/{{name}}/regenerate-keys", "post",
          owner_api.post(f"{WS}/online-endpoints/iris/regenerate-keys", {"key_type": "secondary"}, format="json"))
    owner_api.post(f"{WS}/online-endpoints", {"name": "iris-token", "auth_mode": "aml_token"}, format="json")
    check(schema, f"{T}/online-endpoints/{{name}}/token", "post",
          owner_api.post(f"{WS}/online-endpoints/iris-token/token"))
    from django.utils import timezone

    MirrorComparison.objects.create(endpoint=Endpoint.objects.get(name="iris"), live_deployment="blue",
                                    shadow_deployment="green", time=timezone.now(), live_status=200,
                                    shadow_status=200, live_latency_ms=3.0, shadow_latency_ms=4.0, agreed=True)
    check(schema, f"{T}/online-endpoints/{{name}}/mirror-comparison", "get",
          owner_api.get(f"{WS}/online-endpoints/iris/mirror-comparison"))
    check(schema, f"{T}/deployment-check", "post", owner_api.post(
        f"{WS}/deployment-check", {"deployments": [{"kind": "online", "endpoint_name": "iris", "name": "green",
                                                    "instance_type": "Standard_DS1_v2"}]}, format="json"))

    # Data, batch endpoints, deployments and jobs.
    upload = {"name": "flowers", "files": [SimpleUploadedFile(
        "a.csv", b"sepal_length,sepal_width,petal_length,petal_width\n5.1,3.5,1.4,0.2\n")]}
    check(schema, f"{T}/data", "post", owner_api.post(f"{WS}/data", upload, format="multipart"), 201)
    check(schema, f"{T}/data", "get", owner_api.get(f"{WS}/data"))
    check(schema, f"{T}/data/{{name}}/versions/{{version}}/preview", "get",
          owner_api.get(f"{WS}/data/flowers/versions/1/preview"))
    check(schema, f"{T}/batch-endpoints", "post",
          owner_api.post(f"{WS}/batch-endpoints", {"name": "scorer"}, format="json"), 201)
    check(schema, f"{T}/batch-endpoints/{{name}}/deployments", "post",
          owner_api.post(f"{WS}/batch-endpoints/scorer/deployments",
                         {"name": "blue", "model": iris, "instance_type": "Standard_DS1_v2"}, format="json"), 201)
    check(schema, f"{T}/batch-endpoints/{{name}}", "get", owner_api.get(f"{WS}/batch-endpoints/scorer"))
    check(schema, f"{T}/batch-endpoints/{{name}}/deployments/{{deployment_name}}", "get",
          owner_api.get(f"{WS}/batch-endpoints/scorer/deployments/blue"))
    check(schema, f"{T}/batch-endpoints/{{name}}/list-keys", "post",
          owner_api.post(f"{WS}/batch-endpoints/scorer/list-keys"))
    job = owner_api.post(f"{WS}/batch-endpoints/scorer/jobs", {"inputs": {"input_data": {
        "type": "uri_folder", "path": "studio:data/flowers/versions/1"}}}, format="json")
    check(schema, f"{T}/batch-endpoints/{{name}}/jobs", "post", job, 202)
    name = job.json()["name"]
    check(schema, f"{T}/batch-endpoints/{{name}}/jobs", "get", owner_api.get(f"{WS}/batch-endpoints/scorer/jobs"))
    check(schema, f"{T}/jobs/{{job_name}}", "get", owner_api.get(f"{WS}/jobs/{name}"))
    check(schema, f"{T}/jobs/{{job_name}}/cancel", "post", owner_api.post(f"{WS}/jobs/{name}/cancel"))

    # Datastores (the built-in one, listed first), environments, models, serverless, usage.
    check(schema, f"{T}/datastores", "get", owner_api.get(f"{WS}/datastores"))
    check(schema, f"{T}/datastores/{{name}}", "get", owner_api.get(f"{WS}/datastores/workspaceblobstore"))
    check(schema, f"{T}/environments", "post", owner_api.post(
        f"{WS}/environments", {"name": "tabular", "pip_requirements": ["numpy"]}, format="json"), 201)
    check(schema, f"{T}/environments/{{name}}", "get", owner_api.get(f"{WS}/environments/tabular"))
    check(schema, f"{T}/models/{{name}}", "get", owner_api.get(f"{WS}/models/iris-classifier"))
    chat = "studio://registries/studio/models/smollm2-135m-instruct"
    check(schema, f"{T}/marketplace-subscriptions", "post",
          owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": chat}, format="json"), 201)
    check(schema, f"{T}/serverless-endpoints", "post",
          owner_api.post(f"{WS}/serverless-endpoints", {"name": "chat", "model_id": chat}, format="json"), 201)
    check(schema, f"{T}/serverless-endpoints", "get", owner_api.get(f"{WS}/serverless-endpoints"))
    check(schema, f"{T}/list-inference-keys", "post", owner_api.post(f"{WS}/list-inference-keys"))
    check(schema, f"{T}/usage", "get", owner_api.get(f"{WS}/usage"))
