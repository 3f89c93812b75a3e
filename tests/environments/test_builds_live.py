"""Real builds from the package index, by the real worker, and model servers that run in them.

- A LightGBM model with its score.py and conda file, deployed twice on one shared build, answers what
  LightGBM's own predict() answers in a plain process; its score.py, hostile, reads no secret and
  cannot change its environment.
- A package that does not exist fails the deployment within a minute with uv's own words.
- The build sandbox sees nothing of the studio's data and runs as the build uid.

uv's cache ($STUDIO_DATA_DIR/environments/uv-cache) outlives the test database: repeat runs install
from it in seconds."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import textwrap
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection

from endpoints_app.models import BuildState, EnvironmentBuild
from endpoints_app.runtime import environments as envs
from endpoints_app.runtime import sandbox
from tests.batch.test_jobs_live import download, invoke, wait_job
from tests.live import make_custom_model, register_test_node, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WS = "/api/v1/workspaces/team"
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "environments" / "lightgbm"
CONDA = (EXAMPLE / "conda.yaml").read_text()
# A hostile score.py in the same environment: it predicts too, and looks for the studio's secrets.
HOSTILE_SCORE_PY = '''
import json, os, site

import lightgbm as lgb
import numpy as np


def init():
    global booster
    booster = lgb.Booster(model_file=os.path.join(os.environ["AZUREML_MODEL_DIR"], "model.txt"))


def attempt(action):
    try:
        return "DONE " + str(action())[:40]
    except Exception as exc:
        return "DENIED " + type(exc).__name__


def probe(targets):
    found = {name: attempt(lambda p=path: open(p, "rb").read(16)) for name, path in targets.items()}
    found["list_data_dir"] = attempt(lambda: os.listdir(targets.pop("data_dir")))
    found.pop("data_dir", None)
    found["write_own_environment"] = attempt(
        lambda: open(os.path.join(site.getsitepackages()[0], "planted.py"), "w").write("x"))
    found["uid"] = os.getuid()
    found["env"] = sorted(os.environ)
    found["python"] = os.path.realpath(os.path.join(os.path.dirname(os.__file__), ".."))
    found["lightgbm"] = lgb.__file__
    return found


def run(raw_data):
    body = json.loads(raw_data)
    if "probe" in body:
        return probe(body["probe"])
    return booster.predict(np.asarray(body["data"], dtype=float)).tolist()
'''


def _deployment(api, endpoint: str, name: str, model: str, environment) -> dict:
    body = {"name": name, "model": model, "instance_type": "Standard_DS1_v2", "environment": environment}
    answer = api.post(f"{WS}/online-endpoints/{endpoint}/deployments", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()


def _state(api, endpoint: str, name: str) -> dict:
    return api.get(f"{WS}/online-endpoints/{endpoint}/deployments/{name}").json()


def test_a_model_on_its_environment_serves_what_its_framework_predicts(live_gateway, owner_api, workspace,
                                                                       tmp_path, make_asset):
    spec = yaml.safe_load((EXAMPLE / "environment.yml").read_text())  # as `studio environment create` reads it
    created = owner_api.post(f"{WS}/environments", {"name": spec["name"], "conda_file": CONDA}, format="json")
    assert created.status_code == 201, created.content
    env = wait_for(lambda: (e := owner_api.get(f"{WS}/environments/lightgbm/versions/1").json())["build"]["state"]
                   in ("Succeeded", "Failed") and e, timeout=240, what="the lightgbm build")
    log = owner_api.get(f"{WS}/environments/lightgbm/versions/1/build-log").content.decode()
    assert env["build"]["state"] == "Succeeded", log
    assert "lightgbm==4.6.0" in log and "build succeeded" in log

    # The example as written: LightGBM trains in a plain process of the environment's interpreter.
    build = EnvironmentBuild.objects.get()
    code = tmp_path / "code"
    shutil.copytree(EXAMPLE / "model", code)
    trained = subprocess.run([str(build.python), str(EXAMPLE / "train.py"), str(code)], capture_output=True,
                             text=True, check=True, timeout=120)
    expected = json.loads(trained.stdout)
    model = make_custom_model(workspace, code, name="lightgbm-regressor", source=(code / "score.py").read_text())
    hostile_code = tmp_path / "hostile"
    shutil.copytree(code, hostile_code)
    make_custom_model(workspace, hostile_code, name="lgbm-hostile", source=HOSTILE_SCORE_PY)

    # An upload check runs the model's score.py in its environment: with it, LightGBM is there.
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w") as zf:
        for path in code.iterdir():
            zf.write(path, path.name)
    for environment, status in (("", 400), ("azureml:lightgbm:1", 201)):
        upload = SimpleUploadedFile("lgbm.zip", zipped.getvalue())
        answer = owner_api.post(f"{WS}/models", {"name": "lgbm-upload", "file": upload, "environment": environment},
                                format="multipart")
        assert answer.status_code == status, answer.content
    assert answer.json()["environment"] == "azureml:lightgbm:1"

    assert owner_api.post(f"{WS}/online-endpoints", {"name": "lgbm-ep"}, format="json").status_code == 201
    spec = yaml.safe_load((EXAMPLE / "deployment.yml").read_text())
    assert spec["environment"] == "azureml:lightgbm@latest" and spec["model"] == f"azureml:{model.name}:1"
    _deployment(owner_api, "lgbm-ep", "blue", spec["model"], spec["environment"])
    # The same packages given inline: the same build, nothing built again.
    inline = _deployment(owner_api, "lgbm-ep", "green", "lgbm-hostile:1", {"conda_file": CONDA})
    assert inline["environment"].startswith("azureml:inline-") and EnvironmentBuild.objects.count() == 1
    for name in ("blue", "green"):
        wait_for(lambda n=name: _state(owner_api, "lgbm-ep", n)["provisioning_state"] in ("Succeeded", "Failed"),
                 timeout=90, what=f"{name} provisioned")
        assert _state(owner_api, "lgbm-ep", name)["provisioning_state"] == "Succeeded", _state(owner_api, "lgbm-ep",
                                                                                                 name)

    key = owner_api.post(f"{WS}/online-endpoints/lgbm-ep/list-keys").json()["primary_key"]
    headers = {"Authorization": f"Bearer {key}"}
    for name in ("blue", "green"):
        answer = wait_for(lambda n=name: (r := requests.post(
            f"{live_gateway}/inference/lgbm-ep/score", json={"data": expected["rows"]}, timeout=10,
            headers={**headers, "azureml-model-deployment": n})).status_code == 200 and r, timeout=15,
            what=f"{name} answering")
        assert answer.json() == pytest.approx(expected["predictions"], rel=1e-9)
        assert answer.headers["azureml-model-deployment"] == name

    # The same score.py on the same environment in batch, from the example's specs as written.
    batch_ep = yaml.safe_load((EXAMPLE / "batch-endpoint.yml").read_text())["name"]
    register_test_node()
    assert owner_api.post(f"{WS}/batch-endpoints", {"name": batch_ep}, format="json").status_code == 201
    spec = yaml.safe_load((EXAMPLE / "batch-deployment.yml").read_text())
    body = {k: v for k, v in spec.items() if k not in ("kind", "endpoint_name")}
    created = owner_api.post(f"{WS}/batch-endpoints/{batch_ep}/deployments", body, format="json")
    assert created.status_code == 201, created.content
    rows_csv = ",".join(expected["columns"]) + "\n" + "".join(",".join(map(repr, r)) + "\n" for r in expected["rows"])
    make_asset("lgbm-rows", {"rows.csv": rows_csv.encode()})
    job = invoke(owner_api, batch_ep, "studio:data/lgbm-rows/versions/1")
    done = wait_job(owner_api, batch_ep, job["name"], timeout=180)
    assert done["status"] == "Completed", done
    scored = sorted(download(owner_api, done), key=lambda r: int(r["row"]))
    assert [float(r["prediction"]) for r in scored] == pytest.approx(expected["predictions"], rel=1e-9)
    assert EnvironmentBuild.objects.count() == 1  # online and batch servers share the one build

    # Hostile: the same score.py looks for the studio's secrets from inside its environment.
    data_dir = Path(settings.DATA_DIR)
    targets = {"secret_key": str(data_dir / "secret-key.txt"), "data_dir": str(data_dir),
               "other_build_log": str(build.log_path), "studio_environ": f"/proc/{os.getpid()}/environ"}
    if connection.vendor == "sqlite":
        targets["database"] = str(connection.settings_dict["NAME"])
    found = requests.post(f"{live_gateway}/inference/lgbm-ep/score", json={"probe": targets},
                          headers={**headers, "azureml-model-deployment": "green"},
                          timeout=10).json()
    assert found["lightgbm"].startswith(str(data_dir)), found  # LightGBM comes from the environment
    assert found.pop("list_data_dir") in ("DONE ['sandbox']", "DENIED PermissionError")
    leaked = {k: v for k, v in found.items() if isinstance(v, str) and v.startswith("DONE")}
    assert leaked == {}, found
    assert "SECRET_KEY" not in found["env"] and "DATABASE_URL" not in found["env"]
    if sandbox.privileged():
        assert found["uid"] >= sandbox.UID_BASE
    assert not any(p.name == "planted.py" for p in build.venv.rglob("planted.py"))


def test_a_build_that_fails_fails_the_deployment_with_the_installers_words(live_worker, owner_api, workspace,
                                                                           tmp_path):
    make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(f"{WS}/online-endpoints", {"name": "broken-env"}, format="json").status_code == 201
    _deployment(owner_api, "broken-env", "blue", "doubler:1",
                {"pip_requirements": ["studio-no-such-package-4242==1.0"]})
    failed = wait_for(lambda: (d := _state(owner_api, "broken-env", "blue"))["provisioning_state"] == "Failed" and d,
                      timeout=60, what="the deployment Failed")
    assert "studio-no-such-package-4242" in failed["error"] and "failed to build" in failed["error"]
    build = EnvironmentBuild.objects.get()
    assert build.state == BuildState.FAILED and "studio-no-such-package-4242" in build.error
    assert not build.venv.exists()


def test_the_build_sandbox_sees_nothing_of_the_studio(db, tmp_path):
    folder = Path(settings.DATA_DIR) / "environments" / "sandbox-probe"
    (folder / "venv").mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)  # as build_venv leaves it (the studio's umask is 077)
    cache = Path(settings.STUDIO_ENV_UV_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    if sandbox.privileged():
        os.chown(folder / "venv", envs.BUILD_UID, envs.BUILD_UID)
    secret = Path(settings.DATA_DIR) / "secret-key.txt"
    script = textwrap.dedent(f"""
        id -u
        cat {secret} 2>/dev/null && echo READ-SECRET
        ls {settings.DATA_DIR}
        ls {settings.DATA_DIR}/environments
        touch {folder}/planted 2>/dev/null && echo WROTE-FOLDER
        touch {folder}/venv/ok && echo WROTE-VENV
        env
    """)
    log_path = tmp_path / "probe.log"
    with open(log_path, "wb") as log:
        assert envs._sandboxed(["/bin/sh", "-c", script], folder, cache, log, timeout=30) == 0
    out = log_path.read_text().split("\n")
    if sandbox.privileged():
        assert out[0] == str(envs.BUILD_UID)
    assert "READ-SECRET" not in out and "WROTE-FOLDER" not in out and "WROTE-VENV" in out
    # The data dir shows only the way to this environment's folder (and uv's cache when it lives there).
    assert "secret-key.txt" not in out and "db.sqlite3" not in out
    assert not any(line.startswith(("SECRET_KEY=", "DATABASE_URL=", "STUDIO_")) for line in out)


def test_a_build_from_local_sources_only_gets_no_network(db, tmp_path, settings):
    folder = Path(settings.DATA_DIR) / "environments" / "sandbox-netns"
    (folder / "venv").mkdir(parents=True, exist_ok=True)
    (folder / "wheels").mkdir(exist_ok=True)
    for path in (folder, folder / "wheels"):
        os.chmod(path, 0o755)  # as build_venv leaves its folder (the studio's umask is 077)
    settings.STUDIO_ENV_INDEX_URL = "none"
    settings.STUDIO_ENV_FIND_LINKS = [str(folder / "wheels")]
    cache = Path(settings.STUDIO_ENV_UV_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    connect = ("import socket\ntry:\n    socket.create_connection(('pypi.org', 443), timeout=5)\n"
               "    print('CONNECTED')\nexcept OSError as exc:\n    print('NO NETWORK', type(exc).__name__)\n")
    log_path = tmp_path / "net.log"
    with open(log_path, "wb") as log:
        assert envs._sandboxed([envs.base_python(), "-I", "-c", connect], folder, cache, log, timeout=30) == 0
    assert "NO NETWORK" in log_path.read_text(), log_path.read_text()
    assert envs._index_options() == (["--no-index", "--find-links", str(folder / "wheels")],
                                     [str(folder / "wheels")], [])
