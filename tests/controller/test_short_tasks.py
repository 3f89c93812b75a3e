"""Controller tasks stay short: slow rollouts advance in re-queued steps, so reconcile keeps
healing online instances while they run (a real worker with 3 slots, real model servers)."""

import ast
import os
import signal
import time
from pathlib import Path

import pytest

from endpoints_app.controller import process
from endpoints_app.models import Deployment, Instance
from tests.controller.test_provisioning import create, deployment_json, wait_state
from tests.live import make_custom_model, wait_for

CONTROLLER = Path(__file__).resolve().parents[2] / "endpoints_app" / "controller"

# init() takes long, as a big model's load does: the rollout stays Creating meanwhile.
SLOW_SCORE_PY = '''
import time

def init():
    print("slow init: loading", flush=True)
    time.sleep(25)
    print("slow init: done", flush=True)

def run(raw_data):
    return raw_data
'''
SLOW_ROLLOUTS = 4  # more than the test worker's 3 slots: one long task each would starve reconcile


def test_it_never_imports_services_from_the_controller():
    for path in CONTROLLER.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [f"{node.module}.{a.name}" for a in node.names]
            assert not any(n.startswith("endpoints_app.services") for n in names), (path.name, names)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_heals_a_killed_instance_on_time_while_slow_rollouts_run(live_worker, owner_api, workspace, tmp_path):
    fast = make_custom_model(workspace, tmp_path / "fast")
    create(owner_api, "doubler", "blue", fast, liveness_probe={"period": 2})
    [instance] = wait_state(owner_api, "doubler", "blue")["instances"]
    slow = make_custom_model(workspace, tmp_path / "slow", name="slow", source=SLOW_SCORE_PY)
    for n in range(SLOW_ROLLOUTS):
        create(owner_api, f"slow-{n}", "blue", slow)

    def all_loading():
        rows = list(Instance.objects.filter(deployment__model=slow, pid__isnull=False))
        return len(rows) == SLOW_ROLLOUTS and all(
            "slow init: loading" in process.log_path(r.name).read_text(errors="replace") for r in rows
            if process.log_path(r.name).exists()
        ) and all(process.log_path(r.name).exists() for r in rows)
    wait_for(all_loading, timeout=60, what="every slow model server in its init()")
    killed_at = time.monotonic()

    os.kill(instance["pid"], signal.SIGKILL)

    def replaced():
        [now] = deployment_json(owner_api, "doubler", "blue")["instances"]
        return now["state"] == "Ready" and now["pid"] != instance["pid"] and now
    wait_for(replaced, timeout=60, interval=0.1, what="a replacement instance")
    elapsed = time.monotonic() - killed_at

    # The rollouts were still in progress the whole time: healing did not wait for them.
    states = set(Deployment.objects.filter(model=slow).values_list("provisioning_state", flat=True))
    assert states == {"Creating"}, states
    # Its usual time: a liveness period (it notices the death), a reconcile interval, its start-up.
    row = Instance.objects.get(name=instance["name"])
    start_up = (row.ready_at - row.launched_at).total_seconds()
    assert elapsed <= 2 + 1 + start_up + 1.5, (elapsed, start_up)
    # And the slow rollouts finish by themselves.
    for n in range(SLOW_ROLLOUTS):
        assert wait_state(owner_api, f"slow-{n}", "blue", timeout=90)["provisioning_state"] == "Succeeded"


# A batch scoring script that takes its time: every file of a mini-batch costs DELAY seconds.
LONG_BATCH_SCORE_PY = '''
import os
import time

def init():
    global delay
    delay = float(os.environ.get("DELAY", "1"))

def run(mini_batch):
    time.sleep(delay * len(mini_batch))
    return [os.path.basename(path) for path in mini_batch]
'''


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_it_heals_a_killed_instance_on_time_while_a_long_job_and_slow_rollouts_run(
    live_worker, owner_api, workspace, tmp_path
):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from endpoints_app.models import BatchJob

    ws = "/api/v1/workspaces/team"
    fast = make_custom_model(workspace, tmp_path / "fast")
    create(owner_api, "doubler", "blue", fast, liveness_probe={"period": 2})
    [instance] = wait_state(owner_api, "doubler", "blue")["instances"]
    # The long job: two mini-batches at a time (two of the worker's three slots), 1.5 s each.
    long_model = make_custom_model(workspace, tmp_path / "long", name="long-scorer", source=LONG_BATCH_SCORE_PY)
    assert owner_api.post(f"{ws}/batch-endpoints", {"name": "long"}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{long_model.name}:1", "instance_type": "Standard_DS1_v2",
            "mini_batch_size": 1, "max_concurrency_per_instance": 2, "environment_variables": {"DELAY": "1.5"},
            "retry_settings": {"max_retries": 0, "timeout": 10}}
    assert owner_api.post(f"{ws}/batch-endpoints/long/deployments", body, format="json").status_code == 201
    files = [SimpleUploadedFile(f"f{i:02d}.txt", b"x\n") for i in range(40)]
    assert owner_api.post(f"{ws}/data", {"name": "many", "files": files}, format="multipart").status_code == 201
    job = owner_api.post(f"{ws}/batch-endpoints/long/jobs",
                         {"inputs": {"input_data": {"type": "uri_folder", "path": "studio:data/many/versions/1"}}},
                         format="json").json()
    wait_for(lambda: BatchJob.objects.filter(name=job["name"], mini_batches_done__gte=2).exists(), timeout=90,
             what="the long job scoring")
    # Two slow rollouts: with the job's two mini-batches that is more work than the worker's three slots.
    slow = make_custom_model(workspace, tmp_path / "slow", name="slow", source=SLOW_SCORE_PY)
    for n in range(2):
        create(owner_api, f"slow-{n}", "blue", slow)
    wait_for(lambda: Instance.objects.filter(deployment__model=slow, pid__isnull=False).count() == 2, timeout=30,
             what="the slow rollouts' model servers started")
    killed_at = time.monotonic()

    os.kill(instance["pid"], signal.SIGKILL)

    def replaced():
        [now] = deployment_json(owner_api, "doubler", "blue")["instances"]
        return now["state"] == "Ready" and now["pid"] != instance["pid"] and now
    wait_for(replaced, timeout=60, interval=0.1, what="a replacement instance")
    elapsed = time.monotonic() - killed_at

    # The job and the rollout were still running the whole time.
    assert BatchJob.objects.get(name=job["name"]).status == "Running"
    assert set(Deployment.objects.filter(model=slow).values_list("provisioning_state", flat=True)) == {"Creating"}
    row = Instance.objects.get(name=instance["name"])
    start_up = (row.ready_at - row.launched_at).total_seconds()
    assert elapsed <= 2 + 1 + start_up + 1.5, (elapsed, start_up)


def test_it_never_reads_a_half_written_broker_message(tmp_path):
    """Steps re-queue themselves often; the embedded broker must hand a worker only whole messages
    (kombu's stock filesystem writer let a poller take a file before its bytes were written)."""
    import threading

    from kombu import Connection

    import portal.broker  # noqa: F401  (registers the transport for filesystem://)

    # Its own control folder too: kombu's default is ./control, shared by every run from the clone.
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False,
               "polling_interval": 0, "control_folder": str(tmp_path / "control")}
    sent = 600
    received: list[int] = []
    errors: list[BaseException] = []

    def consume() -> None:
        with Connection("filesystem://", transport_options=options) as conn:
            queue = conn.SimpleQueue("q")
            try:
                while len(received) < sent:
                    # Generous: a loaded CI machine once stalled this thread past 10 s; a lost
                    # message still fails the test, only later.
                    message = queue.get(timeout=60)
                    received.append(message.payload["n"])
                    message.ack()
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    reader = threading.Thread(target=consume)
    reader.start()
    with Connection("filesystem://", transport_options=options) as conn:
        queue = conn.SimpleQueue("q")
        for n in range(sent):
            queue.put({"n": n, "pad": "x" * 20_000})
    reader.join(120)

    left = sorted(p.name for p in tmp_path.glob("*.msg*"))
    assert not errors, (errors, f"{len(received)} received, files left in the queue folder: {left[:5]}")
    assert sorted(received) == list(range(sent))
    assert type(Connection("filesystem://").transport).__module__ == "portal.broker"
