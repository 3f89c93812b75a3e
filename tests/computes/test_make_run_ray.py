"""`make run` with a Ray compute that has no address: its supervisor starts the studio's own Ray head
(the compute turns Ready with one live node), a deployment on it answers through the gateway, and
Ctrl-C stops it with everything else, leaving no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
import requests

from tests.computes.conftest import RAY_PORT_MIN
from tests.platform.test_make_run import REPO, free_port, processes_using

pytestmark = pytest.mark.slow


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def test_make_run_starts_the_studios_ray_head_and_ctrl_c_stops_it(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_PORT=str(port), STUDIO_ADMIN_PASSWORD="s3cret-pass",
               STUDIO_RAY_PORT_MIN=str(RAY_PORT_MIN), STUDIO_RAY_HEAD_CPUS="1")
    log_path = tmp_path / "make-run.log"
    log = log_path.open("w")
    proc = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail(log_path.read_text()[-3000:])
        assert "Ray head" not in log_path.read_text()  # no Ray compute yet: no Ray
        token = subprocess.run([str(REPO / ".venv/bin/python"), "manage.py", "drf_create_token", "admin"], cwd=REPO,
                               env=env, capture_output=True, text=True, timeout=60).stdout.split()[-1]
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"
        made = api.post(f"{base}/api/v1/computes", json={"name": "here", "type": "ray"}, timeout=30)
        assert made.status_code == 201, made.text

        deadline, seen = time.monotonic() + 150, {}
        while time.monotonic() < deadline:
            seen = api.get(f"{base}/api/v1/computes/here", timeout=30).json()
            if seen.get("state") == "Ready":
                break
            time.sleep(2)
        assert seen.get("state") == "Ready", (seen, log_path.read_text()[-3000:])
        assert [n["alive"] for n in seen["nodes"]] == [True] and seen["head_address"] == f"127.0.0.1:{RAY_PORT_MIN}"
        assert "started the studio's Ray head" in log_path.read_text()
        commands = [_cmdline(pid) for pid in processes_using(data_dir)]
        assert any("gcs_server" in c for c in commands) and any("raylet" in c for c in commands), commands

        # A deployment on it, as a user makes one: the workers' drivers get in with the head's token.
        endpoints = f"{base}/api/v1/workspaces/default/online-endpoints"
        assert api.post(endpoints, json={"name": "onhead"}, timeout=30).status_code == 201
        made = api.post(f"{endpoints}/onhead/deployments", timeout=30, json={
            "name": "blue", "model": "studio://registries/studio/models/iris-classifier/versions/1",
            "instance_type": "Standard_DS1_v2", "instance_count": 1, "compute": "here"})
        assert made.status_code == 202, made.text
        deadline, deployment = time.monotonic() + 180, {}
        while time.monotonic() < deadline:
            deployment = api.get(f"{endpoints}/onhead/deployments/blue", timeout=30).json()
            if deployment.get("provisioning_state") in ("Succeeded", "Failed"):
                break
            time.sleep(2)
        assert deployment.get("provisioning_state") == "Succeeded", (deployment, log_path.read_text()[-3000:])
        key = api.post(f"{endpoints}/onhead/list-keys", timeout=30).json()["primary_key"]
        answer = requests.post(f"{base}/inference/onhead/score", json={"data": [[5.1, 3.5, 1.4, 0.2]]},
                               headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert "InvalidAuthToken" not in log_path.read_text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # The instance's Ray worker and its sandbox end a moment after the raylet that ran them.
    deadline = time.monotonic() + 20
    while processes_using(data_dir) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [_cmdline(pid) for pid in processes_using(data_dir)] == []
