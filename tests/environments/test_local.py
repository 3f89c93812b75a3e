"""`studio online-deployment create --local` builds the environment here and runs the same model server in
the foreground; `studio online-endpoint invoke --local` calls it, with the same errors. No studio runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live import ROOT, free_port

pytestmark = pytest.mark.slow

SCORE_PY = '''
import json
import six


def init():
    global greeting
    greeting = open("greeting.txt").read().strip()


def run(raw_data):
    data = json.loads(raw_data)["data"]  # a KeyError for a body without data: the model's own 422
    return {"greeting": greeting, "six": six.__version__, "doubled": [2 * x for x in data]}
'''


def _studio(*args: str, cwd: Path, env: dict, **kwargs):
    return subprocess.run([sys.executable, "-m", "studio_client", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300, stdin=subprocess.DEVNULL, **kwargs)


def test_a_deployment_runs_and_answers_locally_before_anything_is_provisioned(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "greeting.txt").write_text("hello\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "score.py").write_text(SCORE_PY)
    (tmp_path / "deployment.yml").write_text(
        "kind: online-deployment\nname: blue\nendpoint_name: try-it\nmodel: model\n"
        "code_configuration: {code: src, scoring_script: score.py}\n"
        "environment: {pip_requirements: [six==1.17.0]}\n")
    (tmp_path / "request.json").write_text(json.dumps({"data": [1, 2]}))
    (tmp_path / "bad.json").write_text(json.dumps({"rows": [1]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k != "DJANGO_SETTINGS_MODULE"}
    env.update({"PYTHONPATH": str(ROOT), "STUDIO_LOCAL_HOME": str(tmp_path / "home")})
    port = free_port()
    log = open(tmp_path / "local.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "studio_client", "online-deployment", "create", "--local",
                               "-f", "../deployment.yml", "--port", str(port)], cwd=tmp_path / "src", env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            answer = _studio("online-endpoint", "invoke", "--local", "-n", "try-it", "--request-file",
                             str(tmp_path / "request.json"), cwd=tmp_path, env=env)
            if answer.returncode == 0 or server.poll() is not None:
                break
            time.sleep(0.5)
        assert answer.returncode == 0, (tmp_path / "local.log").read_text() + answer.stderr
        assert json.loads(answer.stdout) == {"greeting": "hello", "six": "1.17.0", "doubled": [2, 4]}
        bad = _studio("online-endpoint", "invoke", "--local", "-n", "try-it", "--request-file",
                      str(tmp_path / "bad.json"), cwd=tmp_path, env=env)
        assert bad.returncode == 1 and "422" in bad.stderr and "KeyError" in bad.stderr
        assert "building the environment (six==1.17.0)" in (tmp_path / "local.log").read_text()
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
        log.close()
    assert not (tmp_path / "home" / "try-it.json").exists()
    gone = _studio("online-endpoint", "invoke", "--local", "-n", "try-it", "--request-file",
                   str(tmp_path / "request.json"), cwd=tmp_path, env=env)
    assert gone.returncode == 1 and "no local deployment of try-it" in gone.stderr
