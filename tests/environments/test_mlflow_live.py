"""An MLflow model saved by MLflow's own save_model, registered with no scoring script and no environment:
the studio builds its environment from the model's requirements, serves it online (split and records
orientations, signature errors naming the column, swagger from the signature) and in batch (one
prediction per CSV row), with predictions equal to MLflow's own pyfunc predict in a plain process."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints_app.models import CatalogModel, EnvironmentBuild
from tests.batch.test_jobs_live import download, invoke, wait_job
from tests.live import register_test_node, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WS = "/api/v1/workspaces/team"
MLFLOW = "mlflow-skinny==3.18.0"
COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
# The example as written: MLflow trains and saves the model, then predicts with its own pyfunc loader.
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "environments" / "mlflow-iris"


def _spec(name: str) -> dict:
    """An example's spec as the CLI sends it (without its kind and endpoint name)."""
    spec = yaml.safe_load((EXAMPLE / name).read_text())
    return {k: v for k, v in spec.items() if k not in ("kind", "endpoint_name")}


def _zip(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, f"model/{path.relative_to(folder).as_posix()}")
    return buffer.getvalue()


def _built(api, name: str, timeout: float = 300) -> dict:
    env = wait_for(lambda: (e := api.get(f"{WS}/environments/{name}").json())["build"]["state"]
                   in ("Succeeded", "Failed") and e, timeout=timeout, what=f"environment {name} built")
    assert env["build"]["state"] == "Succeeded", env["build"]["error"]
    return env


@pytest.fixture
def saved_model(live_worker, owner_api, workspace, tmp_path):
    """An MLflow model folder written by mlflow.sklearn.save_model, and MLflow's own predictions."""
    spec = {"name": "mlflow-train", "pip_requirements": [MLFLOW, "scikit-learn==1.9.1", "pandas"]}
    assert owner_api.post(f"{WS}/environments", spec, format="json").status_code == 201
    _built(owner_api, "mlflow-train")
    python = EnvironmentBuild.objects.get().python
    folder = tmp_path / "iris-mlflow"
    done = subprocess.run([str(python), str(EXAMPLE / "train.py"), str(folder)], capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return folder, json.loads(done.stdout.strip().splitlines()[-1])


def test_an_mlflow_model_deploys_online_and_to_batch_without_code_or_environment(
        saved_model, live_gateway, owner_api, workspace, make_asset):
    folder, expected = saved_model
    assert (folder / "MLmodel").exists() and (folder / "requirements.txt").exists()
    spec = yaml.safe_load((EXAMPLE / "model.yml").read_text())
    upload = SimpleUploadedFile("iris-mlflow.zip", _zip(folder))
    created = owner_api.post(f"{WS}/models", {"name": spec["name"], "type": spec["type"], "file": upload},
                             format="multipart")
    assert created.status_code == 201, created.content
    model = created.json()
    assert model["format"] == "mlflow" and model["environment"].startswith("azureml:inline-")
    assert model["sample_request"]["input_data"]["columns"] == COLUMNS

    assert owner_api.post(f"{WS}/online-endpoints", {"name": "iris-mlflow"}, format="json").status_code == 201
    body = _spec("deployment.yml")
    assert "environment" not in body and "code_configuration" not in body
    assert owner_api.post(f"{WS}/online-endpoints/iris-mlflow/deployments", body, format="json").status_code == 202
    blue = wait_for(lambda: (d := owner_api.get(f"{WS}/online-endpoints/iris-mlflow/deployments/blue").json())[
        "provisioning_state"] in ("Succeeded", "Failed") and d, timeout=300, what="blue provisioned")
    assert blue["provisioning_state"] == "Succeeded", blue["error"]

    key = owner_api.post(f"{WS}/online-endpoints/iris-mlflow/list-keys").json()["primary_key"]
    url = f"{live_gateway}/inference/iris-mlflow/score"
    headers = {"Authorization": f"Bearer {key}"}

    def score(payload):
        # A list around the answer: a 400 Response is falsy.
        return wait_for(lambda: (r := requests.post(url, json=payload, headers=headers, timeout=30)).status_code
                        != 503 and [r], timeout=15, what="routed")[0]

    split = {"input_data": {"columns": COLUMNS, "index": [0, 1, 2, 3], "data": expected["rows"]}}
    answer = score(split)
    assert answer.status_code == 200, answer.text
    assert answer.json() == expected["predictions"]
    records = {"input_data": [dict(zip(COLUMNS, row, strict=True)) for row in expected["rows"]]}
    assert score(records).json() == expected["predictions"]
    # Columns in another order are matched by name.
    shuffled = {"input_data": {"columns": COLUMNS[::-1], "data": [row[::-1] for row in expected["rows"]]}}
    assert score(shuffled).json() == expected["predictions"]

    missing = score({"input_data": {"columns": COLUMNS[:3], "data": [row[:3] for row in expected["rows"]]}})
    assert missing.status_code == 400 and "petal_width" in missing.json()["error"]["message"]
    wrong = score({"input_data": {"columns": COLUMNS, "data": [["wide", 3.5, 1.4, 0.2]]}})
    assert wrong.status_code == 400
    assert "sepal_length" in wrong.json()["error"]["message"] and "double" in wrong.json()["error"]["message"]

    swagger = requests.get(f"{live_gateway}/inference/iris-mlflow/swagger.json", headers=headers, timeout=10).json()
    documented = json.dumps(swagger)
    assert all(c in documented for c in COLUMNS) and "double" in documented

    # Batch: the same model, CSV rows in, one prediction per row.
    register_test_node()
    assert owner_api.post(f"{WS}/batch-endpoints", {"name": "iris-mlflow-batch"}, format="json").status_code == 201
    body = _spec("batch-deployment.yml")
    assert owner_api.post(f"{WS}/batch-endpoints/iris-mlflow-batch/deployments", body,
                          format="json").status_code == 201
    csv = ",".join(COLUMNS) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in expected["rows"])
    jsonl = "".join(json.dumps(dict(zip(COLUMNS, row, strict=True))) + "\n" for row in expected["rows"])
    make_asset("iris-mlflow-rows", {"rows.csv": csv.encode(), "rows.jsonl": jsonl.encode()})
    job = invoke(owner_api, "iris-mlflow-batch", "studio:data/iris-mlflow-rows/versions/1")
    done = wait_job(owner_api, "iris-mlflow-batch", job["name"], timeout=180)
    assert done["status"] == "Completed", done
    rows = download(owner_api, done)
    for name in ("rows.csv", "rows.jsonl"):
        mine = sorted((r for r in rows if r["file"] == name), key=lambda r: int(r["row"]))
        assert [int(r["prediction"]) for r in mine] == expected["predictions"], rows
    # One environment for the model, shared by its online and batch servers (plus the training one).
    assert EnvironmentBuild.objects.count() == 2
    assert CatalogModel.objects.get(name="iris-mlflow").environment.build.state == "Succeeded"


def test_it_refuses_a_zip_without_mlmodel(owner_api, workspace):
    upload = SimpleUploadedFile("not-mlflow.zip", _zip_of({"model/model.pkl": b"x"}))
    answer = owner_api.post(f"{WS}/models", {"name": "nope", "type": "mlflow_model", "file": upload},
                            format="multipart")
    assert answer.status_code == 400 and answer.json()["error"]["field"] == "file"
    assert "MLmodel" in answer.json()["error"]["message"]
    assert not CatalogModel.objects.filter(name="nope").exists()


def _zip_of(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
    return buffer.getvalue()
