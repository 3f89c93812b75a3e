"""Hostile input to the control plane, as an attacker would send it: deployment variables that change
how the loader or Python starts, a batch deployment's code pointed at another team's artifacts,
JSON nested thousands deep, file names longer than a file system takes. Each is a 400 naming the
field, and nothing is written."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints_app.models import CatalogModel, DataAsset, Deployment, Workspace
from endpoints_app.services.specs import refused_variable_names

pytestmark = pytest.mark.django_db

WS = "/api/v1/workspaces/team"
ONLINE = f"{WS}/online-endpoints"
BATCH = f"{WS}/batch-endpoints"

# What a review used to become root in a sandbox, and the like.
HOSTILE_VARIABLES = [
    "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONINSPECT", "PYTHONWARNINGS",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "GLIBC_TUNABLES", "GCONV_PATH", "BASH_ENV", "NODE_OPTIONS",
    "PATH", "HOME", "TMPDIR", "STUDIO_INSTANCE_SECRET", "HF_HUB_OFFLINE", "ld_preload", "PythonPath",
]


def _spec(model, **extra) -> dict:
    return {"name": "blue", "model": model.asset_id, "instance_type": "Standard_DS1_v2", **extra}


@pytest.fixture
def online(endpoint_factory, catalog_model):
    endpoint_factory("iris", deployments=("live",))
    return f"{ONLINE}/iris/deployments"


@pytest.fixture
def batch(owner_api, node, catalog_model):
    assert owner_api.post(BATCH, {"name": "scorer"}, format="json").status_code == 201
    created = owner_api.post(f"{BATCH}/scorer/deployments", _spec(catalog_model, name="live"), format="json")
    assert created.status_code == 201, created.content
    return f"{BATCH}/scorer/deployments"


def _refused(response, field: str) -> dict:
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field, error
    return error


@pytest.mark.parametrize("kind", ["online", "batch"])
def test_it_refuses_variables_that_change_how_the_loader_or_python_starts(owner_api, request, catalog_model, kind):
    base = request.getfixturevalue(kind)
    before = list(Deployment.objects.values_list("name", "environment_variables"))

    for name in HOSTILE_VARIABLES:
        created = owner_api.post(base, _spec(catalog_model, environment_variables={"WORKERS": "2", name: "."}),
                                 format="json")
        updated = owner_api.patch(f"{base}/live", {"environment_variables": {name: "/tmp/evil.so"}}, format="json")

        for response in (created, updated):
            error = _refused(response, f"environment_variables.{name}")
            assert name in error["message"]
    assert list(Deployment.objects.values_list("name", "environment_variables")) == before


def test_it_names_every_refused_variable_and_keeps_ordinary_ones(owner_api, online, catalog_model):
    refused = owner_api.post(online, _spec(catalog_model, environment_variables={
        "PYTHONPATH": ".", "LD_PRELOAD": "./x.so", "OMP_NUM_THREADS": "1"}), format="json")
    error = _refused(refused, "environment_variables.LD_PRELOAD")
    assert "LD_PRELOAD" in error["message"] and "PYTHONPATH" in error["message"]

    ordinary = {"OMP_NUM_THREADS": "1", "MODEL_MODE": "fast", "LANG": "C.UTF-8"}
    accepted = owner_api.post(online, _spec(catalog_model, environment_variables=ordinary), format="json")
    assert accepted.status_code == 202, accepted.content
    assert refused_variable_names(["MY_PYTHONPATH", "LDAP_URL", "HOMEPAGE"]) == []


@pytest.mark.parametrize(("variables", "field"), [
    ({"A" * 129: "x"}, "environment_variables"),
    ({"A-B": "x"}, "environment_variables"),
    ({"BIG": "x" * (32 * 1024 + 1)}, "environment_variables.BIG"),
    ({"NUL": "a\x00b"}, "environment_variables.NUL"),
    ({f"V{i}": "x" for i in range(101)}, "environment_variables"),
])
def test_it_bounds_variable_names_values_and_count(owner_api, online, catalog_model, variables, field):
    _refused(owner_api.post(online, _spec(catalog_model, environment_variables=variables), format="json"), field)


@pytest.fixture
def rival_artifacts(workspace):
    """Team A ("rivals") owns a score.py model; the caller's workspace is team B."""
    other = Workspace.objects.create(name="rivals", display_name="Rivals")
    return CatalogModel.objects.create(
        registry="rivals", workspace=other, name="secret-sauce", version=1, format="custom", task="custom",
        license="MIT", artifact_path="rivals/secret-sauce/1-abc/code", deployment_kinds=["online", "batch"],
    )


@pytest.mark.parametrize("code", ["rivals", "rivals/secret-sauce/1-abc/code", ".", "broker"])
def test_a_batch_deployment_cannot_take_code_from_outside_the_workspaces_models(owner_api, batch, catalog_model,
                                                                                  rival_artifacts, code):
    body = _spec(catalog_model, code_configuration={"code": code, "scoring_script": "score.py"})

    created = owner_api.post(batch, body, format="json")
    updated = owner_api.patch(f"{batch}/live", {"code_configuration": body["code_configuration"]}, format="json")

    _refused(created, "code_configuration.code")
    _refused(updated, "code_configuration.code")
    assert Deployment.objects.get(name="live").code_configuration == {}
    # The same rule as online deployments: the shared catalog's folder is fine.
    shared = owner_api.post(batch, _spec(catalog_model, name="green", code_configuration={"code": "models"}),
                            format="json")
    assert shared.status_code == 201, shared.content


def _nested(depth: int) -> bytes:
    return b'{"description": ' + b"[" * depth + b"]" * depth + b"}"


@pytest.mark.parametrize("depth", [65, 900, 100_000])
def test_deeply_nested_json_on_an_api_patch_is_a_400_not_a_500(owner_api, endpoint_factory, depth):
    endpoint_factory("iris")

    response = owner_api.generic("PATCH", f"{ONLINE}/iris", _nested(depth), content_type="application/json")

    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == "application/json"
    assert "nested too deeply" in response.json()["error"]["message"]


def test_json_nested_64_levels_deep_is_still_read(owner_api, endpoint_factory):
    endpoint_factory("iris")
    response = owner_api.generic("PATCH", f"{ONLINE}/iris", b'{"tags": {"a": ' + b"[" * 62 + b"]" * 62 + b"}}",
                                 content_type="application/json")
    assert response.status_code != 500 and b"nested too deeply" not in response.content


@pytest.mark.parametrize("size", [8, 6 * 1024 * 1024])  # in memory, and streamed to a temporary file
def test_an_upload_with_a_file_name_no_file_system_takes_is_a_400_naming_the_field(owner_api, size):
    body = b"a,b\n" + b"1,2\n" * (size // 4)
    for name in ["é" * 200 + ".csv", "rows." + "é" * 200]:  # 400 bytes of UTF-8, as a name or an extension
        data = owner_api.post(f"{WS}/data", {"name": "rows", "files": [SimpleUploadedFile(name, body)]},
                              format="multipart")
        model = owner_api.post(f"{WS}/models", {"name": "rows", "file": SimpleUploadedFile(name, body)},
                               format="multipart")
        _refused(data, "files")
        _refused(model, "format")  # no model file, whatever its name: never a 500
    assert not DataAsset.objects.exists() and not CatalogModel.objects.filter(name="rows").exists()


def test_a_nul_character_in_a_json_string_is_a_400_not_a_500(owner_api, workspace):
    # PostgreSQL refuses NUL in text: found by the API fuzz test on CI's database.
    body = '{"name": "nul-ep", "auth_mode": "key", "description": "a\\u0000b"}'
    answer = owner_api.post("/api/v1/workspaces/team/online-endpoints", body, content_type="application/json")

    assert answer.status_code == 400 and answer.json()["error"]["field"] == "description"
    fine = owner_api.post("/api/v1/workspaces/team/online-endpoints", '{"name": "ok-ep", "description": "a\\\\u0000b"}',
                          content_type="application/json")
    assert fine.status_code == 201, fine.content


def test_a_lone_surrogate_in_a_json_string_is_a_400_not_a_500(owner_api, workspace):
    # PostgreSQL cannot encode half a surrogate pair either: found by the API fuzz test on CI's database.
    for name, body, field in [("s1", '"description": "\\ud800"', "description"),
                              ("s2", '"tags": {"a": "x\\uDC00"}', "tags.a"),
                              ("s3", '"tags": {"\\udbff": "x"}', "tags")]:
        answer = owner_api.post("/api/v1/workspaces/team/online-endpoints", f'{{"name": "{name}", {body}}}',
                                content_type="application/json")
        assert answer.status_code == 400 and answer.json()["error"]["field"] == field, answer.content
    # A whole pair, escaped, is a character like any other.
    pair = owner_api.post("/api/v1/workspaces/team/online-endpoints", '{"name": "s4", "description": "\\ud83d\\ude00"}',
                          content_type="application/json")
    assert pair.status_code == 201 and pair.json()["description"] == "\U0001f600"


def test_mirror_traffic_on_a_new_endpoint_is_a_400_not_ignored(owner_api, workspace):
    answer = owner_api.post("/api/v1/workspaces/team/online-endpoints",
                            {"name": "m1", "mirror_traffic": {"blue": 10}}, format="json")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "mirror_traffic"
    assert owner_api.post("/api/v1/workspaces/team/online-endpoints",
                          {"name": "m2", "mirror_traffic": {}}, format="json").status_code == 201


@pytest.mark.parametrize("body", ["-1.2e-07", '"text"', "[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_a_400_on_every_write_that_reads_one(owner_api, endpoint_factory,
                                                                                   body):
    # PATCH of a model version with a bare number was a 500: found by the API fuzz test.
    endpoint_factory("iris", deployments=("blue",))  # its model is the workspace's iris-classifier
    for method, path in [("patch", f"{WS}/models/iris-classifier/versions/1"), ("post", f"{WS}/data"),
                         ("post", f"{WS}/environments")]:
        answer = getattr(owner_api, method)(path, body, content_type="application/json")
        assert answer.status_code == 400, (path, answer.content)
        assert "JSON object" in answer.json()["error"]["message"], (path, answer.content)


def test_a_data_asset_name_that_is_not_a_string_is_a_400_naming_it(owner_api, workspace):
    answer = owner_api.post(f"{WS}/data", {"name": 5, "type": "uri_folder", "path": "azureml://datastores/x/paths/y"},
                            format="json")
    _refused(answer, "name")
