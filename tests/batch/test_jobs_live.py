"""Batch jobs on the real worker and real model servers: every input row scored exactly once,
also when a worker child is SIGKILLed mid-run or the studio restarts mid-job; failures against
error_threshold; cancel; queueing in order; no batch model server outside a job."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from endpoints_app.models import BatchJob, Instance, InstanceState, MiniBatch
from tests.batch.conftest import WS, iris_csv
from tests.live import make_custom_model, stop_instances, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"

# A batch scoring script (the Azure contract): run() gets the mini-batch's file paths.
SLOW_SCORE = '''
import os
import time

def init():
    global delay
    delay = float(os.environ.get("DELAY", "0.2"))

def run(mini_batch):
    out = []
    for path in mini_batch:
        name = os.path.basename(path)
        if name.startswith("bad"):
            raise ValueError(f"cannot score {name}")
        time.sleep(delay)
        with open(path) as fh:
            lines = [line for line in fh.read().splitlines()[1:] if line.strip()]
        out.extend({"source": name, "index": i, "pid": os.getpid()} for i, line in enumerate(lines))
    return out
'''


def invoke(api, endpoint: str, asset: str, **extra) -> dict:
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": asset}}, **extra}
    response = api.post(f"{EP}/{endpoint}/jobs", body, format="json")
    assert response.status_code == 202, response.content
    return response.json()


def job_state(api, endpoint: str, name: str) -> dict:
    return api.get(f"{EP}/{endpoint}/jobs/{name}").json()


def wait_job(api, endpoint: str, name: str, timeout: float = 120, states=("Completed", "Failed", "Canceled")) -> dict:
    return wait_for(lambda: (j := job_state(api, endpoint, name))["status"] in states and j, timeout=timeout,
                    interval=0.2, what=f"job {name} in {states}")


def download(api, job: dict, file: str = "predictions.csv") -> list[dict]:
    response = api.get(f"{EP}/{job['endpoint_name']}/jobs/{job['name']}/outputs/{file}")
    assert response.status_code == 200, response.content
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(text.splitlines()))


def no_batch_servers_soon(timeout: float = 30) -> None:
    wait_for(lambda: not Instance.objects.filter(deployment__endpoint__kind="batch").exclude(
        state__in=(InstanceState.STOPPED, InstanceState.FAILED)).exists(), timeout=timeout,
        what="batch model servers stopped")


def slow_endpoint(api, workspace, tmp_path, name="slow", delay="0.2", **settings) -> None:
    model = make_custom_model(workspace, tmp_path / "code", name="slow-scorer", source=SLOW_SCORE)
    assert api.post(EP, {"name": name}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": settings.pop("instance_type",
                                                                                       "Standard_DS1_v2"),
            "environment_variables": {"DELAY": delay}, **settings}
    response = api.post(f"{EP}/{name}/deployments", body, format="json")
    assert response.status_code == 201, response.content


def files_of(count: int, rows: int) -> dict[str, bytes]:
    return {f"part-{i:03d}.csv": iris_csv(rows, seed=i) for i in range(count)}


def assert_exactly_once(rows: list[dict], files: dict[str, bytes], file_key: str, row_key: str) -> None:
    seen = Counter((r[file_key], int(r[row_key])) for r in rows)
    expected = {(name, i) for name, body in files.items() for i in range(len(body.decode().splitlines()) - 1)}
    assert set(seen) == expected
    assert max(seen.values()) == 1, [k for k, n in seen.items() if n > 1][:5]


def test_it_scores_every_row_of_a_folder_with_the_catalog_model(live_worker, owner_api, batch_endpoint, make_asset):
    batch_endpoint(mini_batch_size=2, instance_count=2)
    assert not Instance.objects.filter(deployment__endpoint__kind="batch").exists()  # scale to zero
    files = files_of(5, 40)
    make_asset("iris-rows", files)
    started = time.monotonic()
    job = invoke(owner_api, "scorer", "studio:data/iris-rows/versions/1")
    done = wait_job(owner_api, "scorer", job["name"])
    assert done["status"] == "Completed", done
    assert (done["mini_batches_total"], done["mini_batches_done"], done["mini_batches_failed"]) == (3, 3, 0)
    assert done["rows_total"] == done["rows_done"] == 200 and done["progress"] == 100.0
    rows = download(owner_api, done)
    assert_exactly_once(rows, files, "file", "row")
    assert {r["prediction"] for r in rows} <= {"setosa", "versicolor", "virginica"}
    assert done["outputs"]["predictions.csv"].endswith(f"/jobs/{job['name']}/outputs/predictions.csv")
    assert len(BatchJob.objects.get(name=job["name"]).instances.all()) == 2
    no_batch_servers_soon()
    wait_for(lambda: job_state(owner_api, "scorer", job["name"])["instance_minutes"] > 0, timeout=15,
             what="instance minutes settled")
    billed = job_state(owner_api, "scorer", job["name"])
    assert 0 < billed["instance_minutes"] <= 2 * (time.monotonic() - started) / 60 + 0.1
    assert float(billed["cost"]) > 0


def test_it_loses_and_duplicates_no_row_when_a_worker_process_is_killed(live_worker, owner_api, workspace,
                                                                        tmp_path, make_asset):
    slow_endpoint(owner_api, workspace, tmp_path, delay="0.3", mini_batch_size=2, instance_count=2,
                  retry_settings={"max_retries": 3, "timeout": 4})
    files = files_of(24, 10)
    make_asset("many", files)
    job = invoke(owner_api, "slow", "studio:data/many/versions/1")
    killed = kill_and_restart_the_worker_mid_mini_batch(live_worker, job["name"], timeout=60)
    done = wait_job(owner_api, "slow", job["name"], timeout=120)
    assert done["status"] == "Completed", done
    assert_exactly_once(download(owner_api, done), files, "source", "index")
    # The killed worker's mini-batch ran again: one mini-batch took more than one attempt.
    assert MiniBatch.objects.filter(job__name=job["name"], attempts__gt=1).exists(), killed


def test_it_resumes_a_job_after_the_studio_restarts(live_worker, owner_api, workspace, tmp_path, make_asset):
    slow_endpoint(owner_api, workspace, tmp_path, delay="0.3", mini_batch_size=2,
                  retry_settings={"max_retries": 3, "timeout": 5})
    files = files_of(20, 10)
    make_asset("many", files)
    job = invoke(owner_api, "slow", "studio:data/many/versions/1")
    wait_for(lambda: job_state(owner_api, "slow", job["name"])["mini_batches_done"] >= 2, timeout=60,
             what="some mini-batches done")
    # What `make run` does on Ctrl-C and again: worker down, every model server stopped, worker up.
    live_worker.stop()
    stop_instances()
    before = job_state(owner_api, "slow", job["name"])
    assert before["status"] == "Running" and before["mini_batches_done"] < before["mini_batches_total"]
    live_worker.start()
    live_worker.wait_ready()
    done = wait_job(owner_api, "slow", job["name"], timeout=120)
    assert done["status"] == "Completed", done
    assert_exactly_once(download(owner_api, done), files, "source", "index")


def test_it_fails_a_job_whose_failures_pass_the_error_threshold(live_worker, owner_api, workspace, tmp_path,
                                                                 make_asset):
    slow_endpoint(owner_api, workspace, tmp_path, delay="0", mini_batch_size=1,
                  retry_settings={"max_retries": 1, "timeout": 10})
    files = {**files_of(4, 5), "bad-1.csv": iris_csv(5), "bad-2.csv": iris_csv(5)}
    make_asset("mixed", files)

    tolerant = invoke(owner_api, "slow", "studio:data/mixed/versions/1")
    done = wait_job(owner_api, "slow", tolerant["name"])
    assert done["status"] == "Completed" and done["mini_batches_failed"] == 2
    assert sorted(f["files"][0] for f in done["failures"]) == ["bad-1.csv", "bad-2.csv"]
    assert all(f["attempts"] == 2 and "cannot score bad" in f["error"] for f in done["failures"])
    assert "bad-1.csv" in done["error"] and "bad-2.csv" in done["error"]
    good = {k: v for k, v in files.items() if not k.startswith("bad")}
    assert_exactly_once(download(owner_api, done), good, "source", "index")

    strict = invoke(owner_api, "slow", "studio:data/mixed/versions/1", settings={"error_threshold": 1})
    failed = wait_job(owner_api, "slow", strict["name"])
    assert failed["status"] == "Failed" and "error_threshold 1" in failed["error"]
    assert "bad-1.csv" in failed["error"] and failed["outputs"]["predictions.csv"] is None
    no_batch_servers_soon()


def test_it_cancels_within_seconds_and_leaves_a_consistent_state(live_worker, owner_api, workspace, tmp_path,
                                                                 make_asset):
    slow_endpoint(owner_api, workspace, tmp_path, delay="0.5", mini_batch_size=1)
    make_asset("many", files_of(30, 5))
    job = invoke(owner_api, "slow", "studio:data/many/versions/1")
    wait_for(lambda: job_state(owner_api, "slow", job["name"])["mini_batches_done"] >= 1, timeout=60,
             what="the job scoring")
    asked = time.monotonic()
    canceled = owner_api.post(f"{EP}/slow/jobs/{job['name']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "Canceled"
    no_batch_servers_soon(timeout=15)
    assert time.monotonic() - asked < 15
    statuses = Counter(MiniBatch.objects.filter(job__name=job["name"]).values_list("status", flat=True))
    assert set(statuses) <= {"Completed", "Canceled"} and statuses["Canceled"] > 0
    time.sleep(1.5)  # a mini-batch in flight at the cancel may finish; nothing new starts
    after = Counter(MiniBatch.objects.filter(job__name=job["name"]).values_list("status", flat=True))
    assert after["Completed"] <= statuses["Completed"] + 1 and "Running" not in after and "Pending" not in after
    final = job_state(owner_api, "slow", job["name"])
    assert final["status"] == "Canceled" and final["outputs"]["predictions.csv"] is None


def test_jobs_beyond_capacity_wait_in_order(live_worker, owner_api, workspace, tmp_path, make_asset):
    # One 8-core instance fills the test node (8 cores): the next jobs wait, Queued, in order.
    slow_endpoint(owner_api, workspace, tmp_path, delay="0.3", mini_batch_size=1, instance_type="Standard_DS4_v2")
    make_asset("few", files_of(4, 3))
    first = invoke(owner_api, "slow", "studio:data/few/versions/1")
    second = invoke(owner_api, "slow", "studio:data/few/versions/1")
    third = invoke(owner_api, "slow", "studio:data/few/versions/1")
    wait_for(lambda: job_state(owner_api, "slow", first["name"])["status"] == "Running", timeout=30,
             what="the first job running")
    assert job_state(owner_api, "slow", second["name"])["queue_position"] == 1
    waiting = job_state(owner_api, "slow", third["name"])
    assert waiting["status"] == "Queued" and waiting["queue_position"] == 2
    for job in (first, second, third):
        assert wait_job(owner_api, "slow", job["name"], timeout=90)["status"] == "Completed"
    jobs = {j.name: j for j in BatchJob.objects.all()}
    assert jobs[first["name"]].finished_at <= jobs[second["name"]].started_at
    assert jobs[second["name"]].finished_at <= jobs[third["name"]].started_at
    no_batch_servers_soon()


# -- finding the worker child that is scoring a mini-batch --------------------------------------------

def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2:].split()[1]) == pid:
            kids.append(int(entry.name))
    return kids


def _socket_inodes_to(server_pids: set[int]) -> set[str]:
    """Inodes of this host's sockets connected to the sandboxed model servers started as `server_pids`
    (their Unix sockets: the servers' ends, read from their own fds, are the peers `ss` names)."""
    from endpoints_app.runtime.sandbox_exec import descendants

    server_side = set()
    for pid in server_pids:
        for proc in [pid, *descendants(pid)]:
            try:
                links = [os.readlink(f"/proc/{proc}/fd/{fd}") for fd in os.listdir(f"/proc/{proc}/fd")]
            except OSError:
                continue
            server_side |= {link[8:-1] for link in links if link.startswith("socket:[")}
    inodes = set()
    for line in subprocess.run(["ss", "-xn"], capture_output=True, text=True).stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[-1] in server_side:
            inodes.add(parts[-3])
    return inodes


def kill_and_restart_the_worker_mid_mini_batch(live_worker, job_name: str, timeout: float) -> int:
    """SIGKILL the worker while it scores one of the job's mini-batches (tasks run in threads: no pool child),
    then do what `make run`'s supervisor does: what was left of its group goes too, and it starts again."""
    killed = wait_for(lambda: kill_a_child_mid_mini_batch(live_worker.proc.pid, job_name), timeout=timeout,
                      interval=0.05, what="the worker scoring a mini-batch")
    live_worker.proc.wait(timeout=10)
    try:
        os.killpg(killed, signal.SIGKILL)
    except ProcessLookupError:
        pass
    live_worker.start()
    live_worker.wait_ready()
    return killed


def kill_a_child_mid_mini_batch(worker_pid: int, job_name: str) -> int | None:
    """SIGKILL the worker process (or a pool child of it) that has a request open to one of the job's model
    servers."""
    pids = set(Instance.objects.filter(batch_job__name=job_name, pid__isnull=False).values_list("pid", flat=True))
    if not pids or not MiniBatch.objects.filter(job__name=job_name, status="Completed").exists():
        return None
    inodes = _socket_inodes_to(pids)
    for child in [worker_pid, *_children(worker_pid)]:
        try:
            links = {os.readlink(f"/proc/{child}/fd/{fd}") for fd in os.listdir(f"/proc/{child}/fd")}
        except OSError:
            continue
        if any(f"socket:[{inode}]" in links for inode in inodes):
            os.kill(child, signal.SIGKILL)
            return child
    return None


def test_it_embeds_text_files_with_minilm(live_worker, owner_api, node, iris, make_asset):
    from endpoints_app.models import CatalogModel

    minilm = CatalogModel.objects.get(registry="studio", name="all-minilm-l6-v2")
    assert owner_api.post(EP, {"name": "embedder"}, format="json").status_code == 201
    created = owner_api.post(f"{EP}/embedder/deployments", {"name": "blue", "model": minilm.asset_id}, format="json")
    assert created.status_code == 201, created.content
    texts = {"a.txt": b"a cat sat on the mat\nthe dog barked\n", "b.txt": b"markets fell\n\nrain in spain\n"}
    make_asset("texts", texts)
    job = invoke(owner_api, "embedder", "studio:data/texts/versions/1")
    done = wait_job(owner_api, "embedder", job["name"], timeout=180)
    assert done["status"] == "Completed", done
    rows = download(owner_api, done)
    assert [(r["file"], int(r["row"])) for r in rows] == [("a.txt", 0), ("a.txt", 1), ("b.txt", 0), ("b.txt", 1)]
    assert all(len(json.loads(r["embedding"])) == 384 for r in rows)


BROKEN_SCORE = '''
def init():
    raise RuntimeError("the model file is missing")

def run(mini_batch):
    return []
'''


def test_a_model_server_that_cannot_start_fails_the_job_with_its_error(live_worker, owner_api, workspace, tmp_path,
                                                                        node, make_asset):
    model = make_custom_model(workspace, tmp_path / "code", name="broken", source=BROKEN_SCORE)
    assert owner_api.post(EP, {"name": "broken"}, format="json").status_code == 201
    assert owner_api.post(f"{EP}/broken/deployments", {"name": "blue", "model": f"{model.name}:1"},
                          format="json").status_code == 201
    make_asset("few", files_of(2, 3))
    job = invoke(owner_api, "broken", "studio:data/few/versions/1")
    failed = wait_job(owner_api, "broken", job["name"], timeout=120)
    assert failed["status"] == "Failed" and "the model file is missing" in failed["error"], failed
    assert set(MiniBatch.objects.filter(job__name=job["name"]).values_list("status", flat=True)) == {"Canceled"}
    no_batch_servers_soon()
