"""The models API: the shared catalog plus a workspace's own models, filters,
pagination, permissions and the error shape."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from endpoints_app.models import AuditLog, CatalogModel, Workspace
from tests.live import register_test_node

URL = "/api/v1/workspaces/team/models"


def make_model(name: str, version: int = 1, workspace: Workspace | None = None, **fields) -> CatalogModel:
    defaults = {
        "task": "classification",
        "format": "sklearn",
        "license": "MIT",
        "deployment_kinds": ["online", "batch"],
        "summary": f"{name} summary",
        "sample_request": {"input_data": [[1, 2, 3]]},
    }
    defaults.update(fields)
    return CatalogModel.objects.create(
        registry=workspace.name if workspace else "studio", workspace=workspace, name=name, version=version, **defaults
    )


@pytest.fixture
def catalog(workspace):
    make_model("iris-classifier")
    make_model("iris-classifier", version=2)
    make_model("diabetes-regressor", task="regression", license="BSD-3-Clause")
    make_model("iris-onnx", format="onnx")
    make_model(
        "minilm-embeddings",
        task="embeddings",
        format="sentence-transformers",
        license="Apache-2.0",
        deployment_kinds=["online", "serverless"],
        price_input_per_1k="0.000100",
        price_output_per_1k="0",
    )
    other = Workspace.objects.create(name="other")
    make_model("secret-model", workspace=other)
    make_model("team-model", workspace=workspace, format="custom", task="custom", deployment_kinds=["online"])


def names(response) -> list[str]:
    return [row["name"] for row in response.json()["results"]]


def test_list_shows_shared_catalog_and_own_models_latest_version(owner_api, catalog):
    response = owner_api.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 5
    assert sorted(names(response)) == [
        "diabetes-regressor", "iris-classifier", "iris-onnx", "minilm-embeddings", "team-model"
    ]
    iris = next(row for row in body["results"] if row["name"] == "iris-classifier")
    assert iris["version"] == 2
    assert iris["id"] == "studio://registries/studio/models/iris-classifier/versions/2"
    assert iris["deployment_kinds"] == ["online", "batch"]
    assert iris["sample_request"] == {"input_data": [[1, 2, 3]]}
    assert iris["pricing"] is None
    assert iris["workspace"] is None


def test_list_never_shows_another_workspaces_models(owner_api, catalog):
    response = owner_api.get(URL, {"search": "secret"})
    assert response.json()["count"] == 0


def test_own_model_carries_its_workspace_registry(reader_api, catalog):
    row = reader_api.get(URL, {"name": "team-model"}).json()["results"][0]
    assert row["id"] == "studio://registries/team/models/team-model/versions/1"
    assert row["workspace"] == "team"


def test_foundation_model_carries_pricing(reader_api, catalog):
    row = reader_api.get(URL, {"name": "minilm-embeddings"}).json()["results"][0]
    assert row["pricing"] == {"input_per_1k_tokens": 0.0001, "output_per_1k_tokens": 0.0, "currency": "USD"}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"task": "regression"}, ["diabetes-regressor"]),
        ({"format": "onnx"}, ["iris-onnx"]),
        ({"deployment_kind": "serverless"}, ["minilm-embeddings"]),
        ({"deployment_kind": "batch"}, ["diabetes-regressor", "iris-classifier", "iris-onnx"]),
        ({"license": "apache-2.0"}, ["minilm-embeddings"]),
        ({"search": "IRIS"}, ["iris-classifier", "iris-onnx"]),
        ({"search": "iris", "format": "sklearn"}, ["iris-classifier"]),
    ],
)
def test_filters(reader_api, catalog, params, expected):
    response = reader_api.get(URL, params)
    assert response.status_code == 200
    assert sorted(names(response)) == expected


def test_name_filter_lists_every_version(reader_api, catalog):
    response = reader_api.get(URL, {"name": "iris-classifier"})
    assert [row["version"] for row in response.json()["results"]] == [2, 1]


def test_bad_filter_value_is_400_naming_the_field(reader_api, catalog):
    response = reader_api.get(URL, {"task": "astrology"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadRequest"
    assert error["field"] == "task"
    assert "astrology" in error["message"]


def test_pagination(reader_api, catalog):
    first = reader_api.get(URL, {"limit": 2}).json()
    assert first["count"] == 5
    assert len(first["results"]) == 2
    assert "offset=2" in first["next"]
    rest = reader_api.get(URL, {"limit": 2, "offset": 4}).json()
    assert len(rest["results"]) == 1
    assert rest["next"] is None


def test_get_by_name_returns_latest_version(reader_api, catalog):
    response = reader_api.get(f"{URL}/iris-classifier")
    assert response.status_code == 200
    assert response.json()["version"] == 2


def test_get_one_version(reader_api, catalog):
    assert reader_api.get(f"{URL}/iris-classifier/versions/1").json()["version"] == 1
    assert reader_api.get(f"{URL}/iris-classifier", {"version": 1}).json()["version"] == 1


def test_get_missing_model_or_version_is_404(reader_api, catalog):
    for url in (f"{URL}/nope", f"{URL}/iris-classifier/versions/9", f"{URL}/secret-model"):
        response = reader_api.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "NotFound"


def test_bad_version_param_is_400(reader_api, catalog):
    response = reader_api.get(f"{URL}/iris-classifier", {"version": "two"})
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "version"


def test_outsider_gets_404(outsider_api, catalog):
    for url in (URL, f"{URL}/iris-classifier"):
        response = outsider_api.get(url)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "NotFound"


def test_anonymous_gets_401(client, catalog):
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


def test_session_auth_works(owner_client, catalog):
    response = owner_client.get(URL)
    assert response.status_code == 200
    assert response.json()["count"] == 5


def test_reader_cannot_register_a_model(reader_api, catalog):
    response = reader_api.post(URL, {"name": "mine"}, format="multipart")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"


def test_outsider_cannot_register_a_model(outsider_api, catalog):
    response = outsider_api.post(URL, {"name": "mine"}, format="multipart")
    assert response.status_code == 404


def test_register_without_a_file_is_400(contributor_api, catalog):
    response = contributor_api.post(URL, {"name": "mine"}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "file"


def _count_queries(api, params=None) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = api.get(URL, params or {})
    assert response.status_code == 200
    return len(queries)


def test_list_query_count_is_constant_as_rows_grow(owner_api, catalog, workspace):
    few = _count_queries(owner_api)
    for index in range(30):
        make_model(f"bulk-{index:02d}", task="regression")
        make_model(f"bulk-{index:02d}", version=2, task="regression")
        make_model(f"own-{index:02d}", workspace=workspace)
    assert _count_queries(owner_api) == few
    assert _count_queries(owner_api, {"task": "regression", "search": "bulk"}) == few


def test_schema_documents_the_models_api(owner_client):
    response = owner_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert "/api/v1/workspaces/{ws}/models" in paths
    parameters = {p["name"] for p in paths["/api/v1/workspaces/{ws}/models"]["get"]["parameters"]}
    assert {"task", "format", "deployment_kind", "search", "limit", "offset"} <= parameters
    assert "/api/v1/workspaces/{ws}/models/{name}/versions/{version}" in paths


def sklearn_upload(name: str = "model.joblib"):
    import io

    import joblib
    from django.core.files.uploadedfile import SimpleUploadedFile
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    buffer = io.BytesIO()
    joblib.dump(LogisticRegression(max_iter=200).fit(x, y), buffer)
    return SimpleUploadedFile(name, buffer.getvalue())


def score_zip():
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("my-model/score.py", "def init():\n    pass\n\ndef run(raw_data):\n    return {'echo': raw_data}\n")
        zf.writestr("my-model/weights.txt", "1 2 3\n")
    return SimpleUploadedFile("my-model.zip", buffer.getvalue())


def test_contributor_registers_a_sklearn_model_and_versions_increment(contributor_api, catalog):
    response = contributor_api.post(URL, {"name": "my-iris", "file": sklearn_upload(), "description": "Mine."},
                                    format="multipart")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] == "studio://registries/team/models/my-iris/versions/1"
    assert body["format"] == "sklearn"
    assert body["workspace"] == "team"
    again = contributor_api.post(URL, {"name": "my-iris", "file": sklearn_upload()}, format="multipart")
    assert again.json()["version"] == 2
    listed = contributor_api.get(URL, {"search": "my-iris"}).json()["results"]
    assert [(row["name"], row["version"]) for row in listed] == [("my-iris", 2)]


def test_register_a_zip_with_score_py(contributor_api, catalog):
    response = contributor_api.post(URL, {"name": "echo", "file": score_zip()}, format="multipart")
    assert response.status_code == 201, response.content
    assert response.json()["format"] == "custom"


def test_register_a_bad_file_is_400_naming_the_problem(contributor_api, catalog):
    from django.core.files.uploadedfile import SimpleUploadedFile

    junk = SimpleUploadedFile("model.joblib", b"this is not a pickle at all")
    response = contributor_api.post(URL, {"name": "junk", "file": junk}, format="multipart")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "file"
    assert "model.joblib" in error["message"]
    assert not CatalogModel.objects.filter(name="junk").exists()


def test_register_a_bad_name_is_400(contributor_api, catalog):
    response = contributor_api.post(URL, {"name": "no spaces please", "file": sklearn_upload()}, format="multipart")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "name"


def test_register_too_large_is_413(contributor_api, catalog, settings):
    settings.STUDIO_MAX_UPLOAD_BYTES = 100
    response = contributor_api.post(URL, {"name": "big", "file": sklearn_upload()}, format="multipart")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "PayloadTooLarge"


def test_a_registered_model_takes_a_sample_request_at_registration_and_later(contributor_api, reader_api, catalog):
    sample = '{"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}'
    created = contributor_api.post(URL, {"name": "echo", "file": score_zip(), "sample_request": sample},
                                   format="multipart")
    assert created.status_code == 201, created.content
    assert created.json()["sample_request"] == {"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}}
    bad = contributor_api.post(URL, {"name": "echo", "file": score_zip(), "sample_request": "{nope"},
                               format="multipart")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "sample_request"

    version = f"{URL}/echo/versions/1"
    changed = contributor_api.patch(version, {"sample_request": {"text": "hello"}}, format="json")
    assert changed.status_code == 200 and changed.json()["sample_request"] == {"text": "hello"}
    assert reader_api.patch(version, {"sample_request": {"x": 1}}, format="json").status_code == 403
    shared = contributor_api.patch(f"{URL}/iris-classifier/versions/1", {"sample_request": {"x": 1}}, format="json")
    assert shared.status_code == 409
    assert AuditLog.objects.filter(action="model.update", object_name__startswith="echo").exists()


def test_a_registered_model_version_is_deleted_unless_a_deployment_uses_it(contributor_api, reader_api, catalog,
                                                                           workspace):
    register_test_node()
    from endpoints_app.services import deployments as deployment_svc
    from endpoints_app.services import online as endpoint_svc
    from endpoints_app.services.audit import Actor

    for _ in range(2):
        assert contributor_api.post(URL, {"name": "echo", "file": score_zip()}, format="multipart").status_code == 201
    endpoint = endpoint_svc.do_create_endpoint(Actor(user=None), workspace, name="echo-ep")
    deployment_svc.do_create_deployment(Actor(user=None), endpoint, {"name": "blue", "model": "echo:2"})

    assert reader_api.delete(f"{URL}/echo/versions/1").status_code == 403
    refused = contributor_api.delete(f"{URL}/echo/versions/2")
    assert refused.status_code == 409 and "echo-ep/blue" in refused.json()["error"]["message"]
    assert contributor_api.delete(f"{URL}/echo/versions/1").status_code == 204
    assert contributor_api.get(f"{URL}/echo/versions/1").status_code == 404
    assert [m["version"] for m in contributor_api.get(URL, {"name": "echo"}).json()["results"]] == [2]
    # Version numbers are never reused.
    assert contributor_api.post(URL, {"name": "echo", "file": score_zip()}, format="multipart").json()["version"] == 3
    assert contributor_api.delete(f"{URL}/iris-classifier/versions/1").status_code == 409
