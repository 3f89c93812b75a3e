"""Environments through the API, the services and the CLI's spec reading: create named versions from a
conda file or a pip list, one shared build per distinct content, inline environments in deployments,
references, and the 4xx that name the field (unknown fields, `image`, a Python the studio cannot
provide, installer options). No build runs here (tests/environments/test_builds_live.py builds)."""

import sys

import pytest

from endpoints_app.models import BuildState, Deployment, Environment, EnvironmentBuild
from endpoints_app.services import environments as env_svc

pytestmark = pytest.mark.django_db
WS = "/api/v1/workspaces/team"
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
CONDA = f"""
name: lgbm
channels: [conda-forge]
dependencies:
  - python={PY}
  - numpy=2.4
  - pip
  - pip:
    - LightGBM==4.6.0
"""


@pytest.fixture(autouse=True)
def no_builds(monkeypatch):
    """Queued builds are recorded, not run (no worker here)."""
    queued = []
    monkeypatch.setattr("endpoints_app.tasks.build_environment.delay", queued.append)
    return queued


def test_it_creates_versions_from_a_conda_file(owner_api, no_builds, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        created = owner_api.post(f"{WS}/environments", {"name": "lgbm", "conda_file": CONDA}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["id"] == "azureml:lgbm:1" and body["python_version"] == PY
    assert body["build"]["state"] == "NotStarted"
    # Normalised: canonical names, conda's "=2.4" as any 2.4.x; pip itself and python left out.
    assert body["build"]["requirements"] == ["lightgbm==4.6.0", "numpy==2.4.*"]
    assert no_builds == [EnvironmentBuild.objects.get().pk]

    second = owner_api.post(f"{WS}/environments", {"name": "lgbm", "pip_requirements": ["numpy==2.4.*",
                                                   "lightgbm==4.6.0"]}, format="json").json()
    assert second["version"] == "2"
    # Same packages: the same build.
    assert second["build"]["key"] == body["build"]["key"] and EnvironmentBuild.objects.count() == 1
    assert owner_api.get(f"{WS}/environments/lgbm").json()["version"] == "2"
    assert owner_api.get(f"{WS}/environments/lgbm/versions/1").json()["conda_file"]["name"] == "lgbm"
    assert [e["version"] for e in owner_api.get(f"{WS}/environments?name=lgbm").json()] == ["2", "1"] or \
        sorted(e["version"] for e in owner_api.get(f"{WS}/environments?name=lgbm").json()) == ["1", "2"]
    assert [e["name"] for e in owner_api.get(f"{WS}/environments").json()] == ["lgbm"]
    log = owner_api.get(f"{WS}/environments/lgbm/versions/1/build-log")
    assert log.status_code == 200 and "NotStarted" in log.content.decode()


def test_it_refuses_a_version_that_exists(owner_api):
    spec = {"name": "e", "version": "1", "pip_requirements": ["six"]}
    assert owner_api.post(f"{WS}/environments", spec, format="json").status_code == 201
    again = owner_api.post(f"{WS}/environments", spec, format="json")
    assert again.status_code == 409 and again.json()["error"]["field"] == "version"


@pytest.mark.parametrize(("spec", "field", "words"), [
    ({"name": "e", "image": "mcr.microsoft.com/azureml/minimal:latest", "conda_file": CONDA}, "image",
     "not supported"),
    ({"name": "e", "pip_requirements": ["six"], "build": {"path": "."}}, "build", "Unknown"),
    ({"name": "e", "pip_requirements": ["six"], "python_version": "3.8"}, "python_version", "3.8"),
    ({"name": "e", "conda_file": "dependencies:\n  - python=3.9\n"}, "conda_file.dependencies.python", "3.9"),
    ({"name": "e", "conda_file": {"dependencies": ["pip"], "extra": 1}}, "conda_file.extra", "extra"),
    ({"name": "e", "pip_requirements": ["--index-url http://evil/simple", "six"]}, "pip_requirements[0]",
     "not allowed"),
    ({"name": "e", "pip_requirements": ["six @ file:///etc/passwd"]}, "pip_requirements[0]", "URL"),
    ({"name": "e", "pip_requirements": ["not a requirement!"]}, "pip_requirements[0]", "not a requirement"),
    ({"name": "e"}, "conda_file", "one of"),
    ({"name": "bad name", "pip_requirements": ["six"]}, "name", "not valid"),
])
def test_it_refuses_bad_environments_naming_the_field(owner_api, spec, field, words):
    answer = owner_api.post(f"{WS}/environments", spec, format="json")
    assert answer.status_code == 400, answer.content
    error = answer.json()["error"]
    assert error["field"] == field and words in error["message"]
    assert not Environment.objects.exists() and not EnvironmentBuild.objects.exists()


def test_it_checks_roles(reader_api, outsider_api):
    spec = {"name": "e", "pip_requirements": ["six"]}
    assert reader_api.post(f"{WS}/environments", spec, format="json").status_code == 403
    assert outsider_api.post(f"{WS}/environments", spec, format="json").status_code == 404
    assert outsider_api.get(f"{WS}/environments").status_code == 404
    assert reader_api.get(f"{WS}/environments").json() == []


def _deployment_spec(name, environment):
    return {"name": name, "model": "iris-classifier", "instance_type": "Standard_DS1_v2", "environment": environment}


@pytest.fixture
def endpoint(owner_api, catalog_iris):
    from tests.live import register_test_node

    register_test_node()
    assert owner_api.post(f"{WS}/online-endpoints", {"name": "env-ep"}, format="json").status_code in (200, 201, 202)
    return "env-ep"


@pytest.fixture
def catalog_iris(db):
    from endpoints_app.models import CatalogModel

    return CatalogModel.objects.create(name="iris-classifier", task="classification", format="sklearn",
                                       license="MIT", artifact_path="none.joblib", deployment_kinds=["online"])


def test_deployments_with_equal_inline_environments_share_one_build(owner_api, endpoint, no_builds):
    inline = {"conda_file": {"dependencies": [f"python={PY}", {"pip": ["six==1.17.0"]}]}}
    for name in ("blue", "green"):
        answer = owner_api.post(f"{WS}/online-endpoints/{endpoint}/deployments", _deployment_spec(name, inline),
                                format="json")
        assert answer.status_code == 202, answer.content
        assert answer.json()["environment"].startswith("azureml:inline-")
    assert EnvironmentBuild.objects.count() == 1 and Environment.objects.filter(is_inline=True).count() == 1
    envs = {d.environment_id for d in Deployment.objects.all()}
    assert len(envs) == 1

    named = owner_api.post(f"{WS}/environments", {"name": "six", "pip_requirements": ["six==1.17.0"]},
                           format="json").json()
    assert named["build"]["key"] == EnvironmentBuild.objects.get().key
    ref = owner_api.post(f"{WS}/online-endpoints/{endpoint}/deployments",
                         _deployment_spec("red", "azureml:six@latest"), format="json")
    assert ref.status_code == 202 and ref.json()["environment"] == "azureml:six:1"


def test_deployments_refuse_unknown_environments_and_images(owner_api, endpoint):
    missing = owner_api.post(f"{WS}/online-endpoints/{endpoint}/deployments",
                             _deployment_spec("blue", "azureml:nope:3"), format="json")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "environment"
    image = owner_api.post(f"{WS}/online-endpoints/{endpoint}/deployments",
                           _deployment_spec("blue", {"image": "python:3.11"}), format="json")
    assert image.status_code == 400 and image.json()["error"]["field"] == "environment.image"
    assert not Deployment.objects.exists()


def test_a_failed_build_is_tried_again_when_asked_for(workspace, no_builds, django_capture_on_commit_callbacks):
    build = env_svc.build_for(PY, ["six"])
    EnvironmentBuild.objects.filter(pk=build.pk).update(state=BuildState.FAILED, error="index down")
    with django_capture_on_commit_callbacks(execute=True):
        from endpoints_app.tasks import request_build

        request_build(build)
    build.refresh_from_db()
    assert build.state == BuildState.NOT_STARTED and no_builds == [build.pk]


def test_the_cli_reads_conda_files_beside_the_spec(tmp_path):
    from studio_client import specs

    (tmp_path / "conda.yml").write_text(CONDA)
    (tmp_path / "requirements.txt").write_text("# pinned\nsix==1.17.0\n\n")
    spec = specs.read_environment_files({"name": "x", "conda_file": "conda.yml"}, str(tmp_path / "env.yml"))
    assert "LightGBM" in spec["conda_file"]
    spec = specs.read_environment_files({"pip_requirements": "requirements.txt"}, str(tmp_path / "env.yml"))
    assert spec["pip_requirements"] == ["six==1.17.0"]
    with pytest.raises(specs.SpecError, match="no such file"):
        specs.read_environment_files({"conda_file": "missing.yml"}, str(tmp_path / "env.yml"))


def _zip_of(files: dict[str, str]):
    import io
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return SimpleUploadedFile("model.zip", buffer.getvalue())


@pytest.mark.parametrize(("files", "field", "words"), [
    ({"model/model.pkl": "x"}, "file", "MLmodel"),
    ({"model/MLmodel": "flavors:\n  sklearn: {}\n"}, "file", "python_function"),
    ({"model/MLmodel": "flavors:\n  python_function: {}\n", "model/python_env.yaml": "python: 3.9.1\n"},
     "python_env.yaml", "3.9.1"),
])
def test_it_refuses_mlflow_models_it_cannot_serve(owner_api, files, field, words):
    answer = owner_api.post(f"{WS}/models", {"name": "m", "type": "mlflow_model", "file": _zip_of(files)},
                            format="multipart")
    assert answer.status_code == 400, answer.content
    assert answer.json()["error"]["field"] == field and words in answer.json()["error"]["message"]
    assert not Environment.objects.exists()


def test_an_mlflow_model_gets_an_environment_from_its_requirements(owner_api, no_builds,
                                                                   django_capture_on_commit_callbacks):
    mlmodel = ("mlflow_version: 3.18.0\nflavors:\n  python_function: {loader_module: mlflow.sklearn}\n"
               "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"a\", \"required\": true}]'\n")
    files = {"m/MLmodel": mlmodel, "m/requirements.txt": "mlflow==3.18.0\nscikit-learn==1.9.1\n-r extra.txt\n"}
    with django_capture_on_commit_callbacks(execute=True):
        answer = owner_api.post(f"{WS}/models", {"name": "m", "type": "mlflow_model", "file": _zip_of(files)},
                                format="multipart")
    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert body["format"] == "mlflow" and body["sample_request"]["input_data"]["columns"] == ["a"]
    build = EnvironmentBuild.objects.get()
    assert build.requirements == ["mlflow-skinny==3.18.0", "pandas", "scikit-learn==1.9.1"]
    assert no_builds == [build.pk]


def test_the_register_page_takes_an_mlflow_model(owner_client, no_builds, django_capture_on_commit_callbacks):
    mlmodel = ("mlflow_version: 3.18.0\nflavors:\n  python_function: {loader_module: mlflow.sklearn}\n"
               "signature:\n  inputs: '[{\"type\": \"double\", \"name\": \"a\", \"required\": true}]'\n")
    form = owner_client.get("/catalog/register/").content.decode()
    assert 'value="mlflow"' in form and 'name="environment"' in form

    with django_capture_on_commit_callbacks(execute=True):
        answer = owner_client.post("/catalog/register/", {
            "name": "from-page", "format": "mlflow",
            "file": _zip_of({"m/MLmodel": mlmodel, "m/requirements.txt": "mlflow==3.18.0\nscikit-learn==1.9.1\n"}),
        })

    assert answer.status_code == 302 and answer["Location"] == "/catalog/from-page/?version=1"
    build = EnvironmentBuild.objects.get()
    assert build.requirements == ["mlflow-skinny==3.18.0", "pandas", "scikit-learn==1.9.1"]
    refused = owner_client.post("/catalog/register/", {"name": "not-mlflow", "format": "mlflow",
                                                       "file": _zip_of({"m/model.pkl": "x"})})
    assert refused.status_code == 400 and "MLmodel" in refused.content.decode()


def test_the_environments_page_creates_and_shows_builds(owner_client, no_builds):
    created = owner_client.post("/environments/create/", {"name": "page-env", "kind": "pip",
                                                          "content": "six==1.17.0\n# comment\n"})
    assert created.status_code == 302 and created["Location"].endswith("/environments/page-env/versions/1/")
    page = owner_client.get("/environments/page-env/versions/1/").content.decode()
    assert "NotStarted" in page and "six==1.17.0" in page and 'hx-trigger="every 2s"' in page
    listing = owner_client.get("/environments/").content.decode()
    assert "page-env" in listing and "NotStarted" in listing
    refused = owner_client.post("/environments/create/", {"name": "bad", "kind": "conda",
                                                          "content": "dependencies:\n  - python=3.9\n"})
    assert refused.status_code == 400 and "3.9" in refused.content.decode()


def test_a_build_whose_worker_died_is_queued_again_past_the_timeout(workspace, no_builds, settings,
                                                                     django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    from endpoints_app.tasks import request_build

    build = env_svc.build_for(PY, ["six"])
    recent = timezone.now() - timedelta(seconds=5)
    EnvironmentBuild.objects.filter(pk=build.pk).update(state=BuildState.BUILDING, started_at=recent)
    with django_capture_on_commit_callbacks(execute=True):
        request_build(build)
    assert no_builds == []  # still building: left alone
    long_ago = timezone.now() - timedelta(seconds=settings.STUDIO_ENV_BUILD_TIMEOUT_SECONDS + 120)
    EnvironmentBuild.objects.filter(pk=build.pk).update(started_at=long_ago)
    with django_capture_on_commit_callbacks(execute=True):
        request_build(build)
    assert no_builds == [build.pk]


def test_the_admin_console_lists_environments_and_builds_read_only(admin_client, owner_api):
    assert owner_api.post(f"{WS}/environments", {"name": "adm", "pip_requirements": ["six"]},
                          format="json").status_code == 201
    envs = admin_client.get("/admin/endpoints_app/environment/")
    assert envs.status_code == 200 and "adm" in envs.content.decode()
    builds = admin_client.get("/admin/endpoints_app/environmentbuild/")
    assert builds.status_code == 200 and "NotStarted" in builds.content.decode()
    assert admin_client.get("/admin/endpoints_app/environment/add/").status_code == 403
