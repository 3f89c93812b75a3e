"""The `studio` CLI as automation uses it: YAML specs in, JSON out, against a
real web process (REST API + embedded gateway) and a real Celery worker."""

import json
import os
import signal
import subprocess
import zipfile
from pathlib import Path

import pytest
import requests

from endpoints_app.models import ApiToken
from tests.live import BIN, ROOT, free_port, wait_for, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCORE_PY = """
import json

def init():
    print("tripler ready", flush=True)

def run(raw_data):
    return {"result": [x * 3 for x in json.loads(raw_data)["data"]]}
"""


@pytest.fixture
def live_web(live_worker, tmp_path):
    """The whole web process (Django + the embedded gateway) on the test database."""
    port = free_port()
    log = open(tmp_path / "web.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan", "on", "--no-access-log"],
        cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # not up yet, or busy booting workers
            return False

    try:
        wait_for(healthy, timeout=60, what="the web process")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def studio(url: str, token: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, STUDIO_URL=url, STUDIO_TOKEN=token, STUDIO_WORKSPACE="team")
    return subprocess.run([str(BIN / "studio"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_registers_deploys_invokes_and_deletes(live_web, owner, tmp_path):
    token = ApiToken.objects.create(user=owner)[1]
    with zipfile.ZipFile(tmp_path / "tripler.zip", "w") as archive:
        archive.writestr("score.py", SCORE_PY)
    model = ok(studio(live_web, token, "model", "create", "-n", "tripler", "--path", "tripler.zip", cwd=tmp_path))
    assert model["version"] == 1

    (tmp_path / "endpoint.yml").write_text("name: cli-demo\nauth_mode: key\ndescription: made by the CLI\n")
    (tmp_path / "deployment.yml").write_text(
        "name: blue\nendpoint_name: cli-demo\n"
        f"model: {model['id']}\ninstance_type: Standard_DS1_v2\ninstance_count: 1\n"
    )
    (tmp_path / "sample.json").write_text('{"data": [1, 2]}')

    endpoint = ok(studio(live_web, token, "online-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path))
    assert endpoint["provisioning_state"] == "Succeeded"
    deployment = ok(studio(live_web, token, "online-deployment", "create", "-f", "deployment.yml", "--all-traffic",
                           cwd=tmp_path))
    assert deployment["provisioning_state"] == "Succeeded"
    assert ok(studio(live_web, token, "online-endpoint", "show", "-n", "cli-demo", cwd=tmp_path))["traffic"] == {
        "blue": 100
    }

    answer = ok(studio(live_web, token, "online-endpoint", "invoke", "-n", "cli-demo", "--request-file", "sample.json",
                       cwd=tmp_path))
    assert answer == {"result": [3, 6]}

    keys = ok(studio(live_web, token, "online-endpoint", "get-credentials", "-n", "cli-demo", cwd=tmp_path))
    new = ok(studio(live_web, token, "online-endpoint", "regenerate-keys", "-n", "cli-demo", "--key-type", "primary",
                    cwd=tmp_path))
    assert new["primary_key"] != keys["primary_key"]

    logs = studio(live_web, token, "online-deployment", "get-logs", "-e", "cli-demo", "-n", "blue", cwd=tmp_path)
    assert logs.returncode == 0 and "tripler ready" in logs.stdout

    ok(studio(live_web, token, "online-endpoint", "delete", "-n", "cli-demo", cwd=tmp_path))
    missing = studio(live_web, token, "online-endpoint", "show", "-n", "cli-demo", cwd=tmp_path)
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


def test_cli_fails_with_the_api_message(live_web, reader, tmp_path):
    token = ApiToken.objects.create(user=reader)[1]
    (tmp_path / "endpoint.yml").write_text("name: not-allowed\n")
    result = studio(live_web, token, "online-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "HTTP 403" in result.stderr and "Contributor" in result.stderr


def test_cli_names_a_bad_field(live_web, owner, tmp_path):
    token = ApiToken.objects.create(user=owner)[1]
    (tmp_path / "endpoint.yml").write_text("name: Bad_Name\n")
    result = studio(live_web, token, "online-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path)
    assert result.returncode == 1
    assert "name" in result.stderr and "HTTP 400" in result.stderr
