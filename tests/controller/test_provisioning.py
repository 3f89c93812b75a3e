"""Provisioning with real model-server processes and a real Celery worker."""

import os
import signal
import time
from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.controller import process
from endpoints_app.models import Deployment, Endpoint, Instance
from endpoints_app.runtime.sandbox_exec import descendants
from tests.live import make_custom_model, score_instance, served_by, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/workspaces/team/online-endpoints"


def deployment_json(api, endpoint: str, name: str) -> dict:
    response = api.get(f"{BASE}/{endpoint}/deployments/{name}")
    assert response.status_code == 200, response.content
    return response.json()


def wait_state(api, endpoint: str, name: str, states=("Succeeded", "Failed"), timeout: float = 90) -> dict:
    return wait_for(
        lambda: (d := deployment_json(api, endpoint, name))["provisioning_state"] in states and d,
        timeout=timeout, interval=0.2, what=f"deployment {name} in {states}",
    )


def create(api, endpoint: str, name: str, model, **extra) -> dict:
    if not Endpoint.objects.filter(name=endpoint).exists():
        assert api.post(BASE, {"name": endpoint}, format="json").status_code == 201
    body = {"name": name, "model": f"{model.name}:{model.version}", "instance_type": "Standard_DS1_v2",
            "instance_count": 1, **extra}
    response = api.post(f"{BASE}/{endpoint}/deployments", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def score(instance: dict, data) -> dict:
    return score_instance(instance, data)


def test_deployment_provisions_a_model_server_that_scores(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    created = create(owner_api, "doubler", "blue", model)
    assert created["provisioning_state"] == "Creating"

    deployment = wait_state(owner_api, "doubler", "blue")

    assert deployment["provisioning_state"] == "Succeeded", deployment["error"]
    [instance] = deployment["instances"]
    assert instance["state"] == "Ready" and instance["node"] == live_worker.node_name
    assert score(instance, [1, 2.5]) == {"result": [2.0, 5.0], "uid": served_by(instance)}
    logs = owner_api.get(f"{BASE}/doubler/deployments/blue/logs?lines=50")
    assert logs.status_code == 200 and logs["Content-Type"].startswith("text/plain")
    assert "score.py init done" in logs.content.decode()


def live_pids() -> set[int]:
    """Pids of model servers that are alive, from the pid files and the instance rows."""
    pids = set(process.pid_files().values())
    pids |= {p for p in Instance.objects.values_list("pid", flat=True) if p}
    return {p for p in pids if process.proc_state(p) not in (None, "Z", "X")}


def test_killed_instance_is_replaced(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model, liveness_probe={"period": 2})
    [instance] = wait_state(owner_api, "doubler", "blue")["instances"]
    killed_at = time.monotonic()

    os.kill(instance["pid"], signal.SIGKILL)

    def replaced():
        [now] = deployment_json(owner_api, "doubler", "blue")["instances"]
        return now["state"] == "Ready" and now["pid"] != instance["pid"] and now
    replacement = wait_for(replaced, timeout=30, what="a replacement instance")
    elapsed = time.monotonic() - killed_at
    # Within two liveness periods plus the replacement's own start-up time (and polling slack).
    row = Instance.objects.get(name=instance["name"])
    start_up = (row.ready_at - row.launched_at).total_seconds()
    assert elapsed <= 2 * 2 + start_up + 0.5, (elapsed, start_up)
    assert row.started_at < row.launched_at, "billing keeps counting from the first start"
    assert replacement["name"] == instance["name"] and replacement["restarts"] == 1
    assert score(replacement, [3]) == {"result": [6.0], "uid": served_by(replacement)}


BROKEN_SCORE_PY = '''
def init():
    raise RuntimeError("the model file is corrupt, broken on purpose")

def run(raw_data):
    return raw_data
'''


def test_broken_score_py_ends_failed_with_its_error_and_no_process(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code", name="broken", source=BROKEN_SCORE_PY)
    create(owner_api, "broken", "blue", model)

    deployment = wait_state(owner_api, "broken", "blue", timeout=120)

    assert deployment["provisioning_state"] == "Failed"
    assert "broken on purpose" in deployment["error"]
    assert "RuntimeError" in deployment["error"]
    wait_for(lambda: not live_pids(), timeout=15, what="no model server left")
    logs = owner_api.get(f"{BASE}/broken/deployments/blue/logs?lines=200").content.decode()
    assert "giving up" in logs and "broken on purpose" in logs


def test_missing_scoring_script_ends_failed(live_worker, owner_api, workspace, tmp_path):
    # code_configuration.code: a folder of the workspace's model, in the artifact store.
    relative = f"{workspace.name}/doubler/{tmp_path.name}"
    model = make_custom_model(workspace, Path(settings.MEDIA_ROOT) / relative)
    create(owner_api, "doubler", "blue", model, code_configuration={"code": relative, "scoring_script": "nope.py"})
    deployment = wait_state(owner_api, "doubler", "blue", timeout=120)
    assert deployment["provisioning_state"] == "Failed"
    assert "nope.py" in deployment["error"] and "not found" in deployment["error"]
    wait_for(lambda: not live_pids(), timeout=15, what="no model server left")


def test_deleting_an_endpoint_stops_its_processes(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model, instance_count=2)
    deployment = wait_state(owner_api, "doubler", "blue")
    pids = {i["pid"] for i in deployment["instances"]}
    assert len(pids) == 2 and pids <= live_pids()

    response = owner_api.delete(f"{BASE}/doubler")

    assert response.status_code == 202 and response.json()["provisioning_state"] == "Deleting"
    wait_for(lambda: owner_api.get(f"{BASE}/doubler").status_code == 404, timeout=30, what="endpoint gone")
    assert not (pids & live_pids())
    assert not process.pid_files()
    assert not Endpoint.objects.filter(name="doubler").exists()


def test_deleting_a_deployment_drains_it_and_keeps_the_other(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model)
    create(owner_api, "doubler", "green", model)
    blue = wait_state(owner_api, "doubler", "blue")
    green = wait_state(owner_api, "doubler", "green")
    assert owner_api.get(f"{BASE}/doubler").json()["traffic"] == {"blue": 100, "green": 0}

    assert owner_api.delete(f"{BASE}/doubler/deployments/green").status_code == 202

    wait_for(lambda: not Deployment.objects.filter(name="green").exists(), timeout=30, what="green gone")
    assert green["instances"][0]["pid"] not in live_pids()
    assert blue["instances"][0]["pid"] in live_pids()


def test_changing_the_environment_rolls_out_new_instances_before_old_ones_stop(
    live_worker, owner_api, workspace, tmp_path
):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model, instance_count=2)
    old = wait_state(owner_api, "doubler", "blue")
    old_pids = {i["pid"] for i in old["instances"]}

    response = owner_api.patch(f"{BASE}/doubler/deployments/blue", {"environment_variables": {"FACTOR": "3"}},
                               format="json")
    assert response.status_code == 202 and response.json()["provisioning_state"] == "Updating"

    ready_counts = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = list(Instance.objects.filter(deployment__name="blue").exclude(state="Stopped")
                    .values("pid", "state", "generation"))
        ready_counts.append(sum(1 for r in rows if r["state"] == "Ready"))
        if {r["pid"] for r in rows if r["state"] == "Ready"}.isdisjoint(old_pids) and len(rows) == 2:
            break
        time.sleep(0.05)
    final = wait_state(owner_api, "doubler", "blue")
    assert final["provisioning_state"] == "Succeeded" and final["generation"] == 2
    # At no moment did the deployment have fewer ready instances than asked for.
    assert min(ready_counts) >= 2, ready_counts
    assert all(i["generation"] == 2 for i in final["instances"])
    assert score(final["instances"][0], [1]) == {"result": [3.0], "uid": served_by(final["instances"][0])}
    wait_for(lambda: not (old_pids & live_pids()), timeout=30, what="old instances stopped")


def test_scaling_out_and_in(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model)
    first = wait_state(owner_api, "doubler", "blue")["instances"][0]

    assert owner_api.patch(f"{BASE}/doubler/deployments/blue", {"instance_count": 3}, format="json").status_code == 202
    scaled = wait_state(owner_api, "doubler", "blue")
    assert [i["state"] for i in scaled["instances"]] == ["Ready"] * 3
    assert first["pid"] in {i["pid"] for i in scaled["instances"]}, "scaling out keeps the running instance"

    assert owner_api.patch(f"{BASE}/doubler/deployments/blue", {"instance_count": 1}, format="json").status_code == 202
    wait_for(lambda: len(deployment_json(owner_api, "doubler", "blue")["instances"]) == 1, timeout=30,
             what="scaled in to one instance")
    wait_for(lambda: len(live_pids()) == 1, timeout=15, what="two processes stopped")
    # The stopped instances stay, with their uptime, for billing.
    wait_for(lambda: Instance.objects.filter(state="Stopped", stopped_at__isnull=False).count() == 2, timeout=15,
             what="two stopped rows")


def test_worker_restart_adopts_running_instances(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model)
    [before] = wait_state(owner_api, "doubler", "blue")["instances"]

    live_worker.restart()
    time.sleep(3)  # a few reconcile passes of the new worker

    [after] = deployment_json(owner_api, "doubler", "blue")["instances"]
    assert after["pid"] == before["pid"] and after["state"] == "Ready" and after["restarts"] == 0
    assert live_pids() == {before["pid"]}


def test_updating_a_failed_deployment_retries_it(live_worker, owner_api, workspace, tmp_path):
    from tests.live import SCORE_PY

    model = make_custom_model(workspace, tmp_path / "code", name="broken", source=BROKEN_SCORE_PY)
    create(owner_api, "broken", "blue", model)
    assert wait_state(owner_api, "broken", "blue", timeout=120)["provisioning_state"] == "Failed"
    (tmp_path / "code" / "score.py").write_text(SCORE_PY)  # fixed in place, as users do

    response = owner_api.patch(f"{BASE}/broken/deployments/blue", {}, format="json")

    assert response.status_code == 202 and response.json()["provisioning_state"] == "Updating"
    fixed = wait_state(owner_api, "broken", "blue")
    assert fixed["provisioning_state"] == "Succeeded" and fixed["error"] == ""
    assert score(fixed["instances"][0], [2]) == {"result": [4.0], "uid": served_by(fixed["instances"][0])}


def test_a_failed_rollout_keeps_the_old_instances_serving(live_worker, owner_api, workspace, tmp_path):
    good = make_custom_model(workspace, tmp_path / "good")
    make_custom_model(workspace, tmp_path / "bad", name="broken", source=BROKEN_SCORE_PY)
    create(owner_api, "doubler", "blue", good)
    [old] = wait_state(owner_api, "doubler", "blue")["instances"]

    response = owner_api.patch(f"{BASE}/doubler/deployments/blue", {"model": "broken:1"}, format="json")
    assert response.status_code == 202

    failed = wait_state(owner_api, "doubler", "blue", timeout=120)
    assert failed["provisioning_state"] == "Failed" and "broken on purpose" in failed["error"]
    serving = [i for i in failed["instances"] if i["state"] == "Ready"]
    assert [i["pid"] for i in serving] == [old["pid"]]
    assert score(old, [1]) == {"result": [2.0], "uid": served_by(old)}
    wait_for(lambda: live_pids() == {old["pid"]}, timeout=15, what="only the old instance left")


def test_a_hung_instance_fails_its_liveness_probe_and_is_restarted(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model,
           liveness_probe={"period": 1, "timeout": 1, "failure_threshold": 2})
    [instance] = wait_state(owner_api, "doubler", "blue")["instances"]

    # Alive, but answers nothing: the instance's process and everything in its sandbox stopped.
    for pid in [instance["pid"], *descendants(instance["pid"])]:
        os.kill(pid, signal.SIGSTOP)

    def replaced():
        [now] = deployment_json(owner_api, "doubler", "blue")["instances"]
        return now["state"] == "Ready" and now["pid"] != instance["pid"] and now
    wait_for(replaced, timeout=30, what="the hung instance replaced")
    assert instance["pid"] not in live_pids()
    row = Instance.objects.get(name=instance["name"])
    assert "liveness probe" in row.last_error and row.restarts == 1


def test_a_model_server_no_instance_wants_is_stopped(live_worker, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code")
    create(owner_api, "doubler", "blue", model)
    [instance] = wait_state(owner_api, "doubler", "blue")["instances"]
    # Its row disappears (as after a crash between launching and recording it); the pid file is old.
    Instance.objects.filter(name=instance["name"]).delete()
    pid_file = process.pid_file(instance["name"])
    os.utime(pid_file, (time.time() - 60, time.time() - 60))

    wait_for(lambda: instance["pid"] not in live_pids() and not pid_file.exists(), timeout=20,
             what="the orphan stopped")
    # Meanwhile the deployment got a new instance in place of the lost row.
    wait_for(lambda: [i["state"] for i in deployment_json(owner_api, "doubler", "blue")["instances"]] == ["Ready"],
             timeout=30, what="a new instance")
