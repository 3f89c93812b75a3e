"""Batch jobs on a Ray compute: a real three-node Ray cluster on 127.0.0.1 (tests/cluster/conftest.py).

A job's model servers are Ray actors spread across the nodes; each mini-batch's input files reach the
node of the instance that scores it (fetched by content hash over the studio's signed internal route,
linked into that instance's own sandbox) and its rows and output folder come back as on local compute.
A node lost mid-job costs no row and duplicates none; a sandbox on a node reads no other job's inputs."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import textwrap
import time
from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.models import BatchJob, Instance, MiniBatch, MiniBatchStatus, datastore_root
from endpoints_app.models.tokens import ApiToken
from endpoints_app.runtime.sandbox import sanitize
from tests import ray_cluster
from tests.batch.conftest import WS, upload
from tests.cli.conftest import ok, run_studio
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"

# One output row per input row (its id), the node's sandbox path it read, and a file per input in its
# output folder. DELAY slows each mini-batch so that a node can be lost while some are in flight.
SCORER = '''
import csv
import os
import time
from pathlib import Path

def init():
    global out, delay
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]
    delay = float(os.environ.get("DELAY", "0"))

def run(mini_batch):
    time.sleep(delay)
    rows = []
    for path in mini_batch:
        with open(path, newline="") as fh:
            ids = [r["id"] for r in csv.DictReader(fh)]
        rows.extend({"id": i, "read_from": path} for i in ids)
        Path(out, Path(path).stem + ".seen").write_text(str(len(ids)))
    return rows
'''

# What a hostile score.py tries: read every path it is told of (another job's input, on every node and in
# the studio's store), and list what its own inputs folder holds.
PROBER = '''
import json
import os
from pathlib import Path

def init():
    pass

def _try(path):
    try:
        with open(path) as fh:
            return "read:" + fh.read(200)
    except OSError as exc:
        return type(exc).__name__

def run(mini_batch, probe=None):
    inputs = Path(mini_batch[0])
    while inputs.name != "datastore":  # its sandbox's inputs folder
        inputs = inputs.parent
    listed = sorted(str(p.relative_to(inputs)) for p in inputs.rglob("*") if p.is_file())
    return [{"path": p, "outcome": _try(p)} for p in json.loads(probe)] + [
        {"path": "own input", "outcome": _try(mini_batch[0])},
        {"path": "own inputs folder", "outcome": json.dumps(listed)}]
'''

# The victim: holds its only mini-batch (and so its staged input) while the prober runs.
HOLDER = '''
import time

def init():
    pass

def run(mini_batch):
    time.sleep(120)
    return ["done" for _ in mini_batch]
'''


def _ids_csv(start: int, count: int) -> bytes:
    return ("id\n" + "".join(f"row-{i:05d}\n" for i in range(start, start + count))).encode()


def _batch_deployment(api, endpoint: str, model, compute, **settings_) -> None:
    assert api.post(EP, {"name": endpoint}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
            "compute": compute.name, **settings_}
    created = api.post(f"{EP}/{endpoint}/deployments", body, format="json")
    assert created.status_code == 201, created.content


def _invoke(api, endpoint: str, asset: str, **inputs) -> str:
    body = {"inputs": {"input_data": {"type": "uri_folder", "path": f"studio:data/{asset}/versions/1"}, **inputs}}
    answer = api.post(f"{EP}/{endpoint}/jobs", body, format="json")
    assert answer.status_code == 202, answer.content
    return answer.json()["name"]


def _settled(api, endpoint: str, name: str, timeout: float) -> dict:
    return wait_for(lambda: (j := api.get(f"{EP}/{endpoint}/jobs/{name}").json())["status"]
                    in ("Completed", "Failed", "Canceled") and j, timeout=timeout, interval=0.5,
                    what=f"job {name} settled")


def _rows(api, endpoint: str, name: str) -> list[dict]:
    response = api.get(f"{EP}/{endpoint}/jobs/{name}/outputs/predictions.csv")
    assert response.status_code == 200, response.content
    return list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))


def _node_of(instance: Instance, ids: dict[str, str]) -> str:
    """The cluster node's name (n1, n2, n3) an instance row sits on."""
    return next(name for name, node_id in ids.items() if instance.node.name.endswith(node_id[:16]))


def test_a_job_spreads_across_the_nodes_and_scores_every_row_once(cluster, owner_api, owner, workspace,
                                                                   tmp_path):
    model = make_custom_model(workspace, tmp_path / "code", name="scorer", source=SCORER)
    # The batch deployment names its compute in its YAML, through the CLI, as a user writes it.
    (tmp_path / "endpoint.yml").write_text("name: spread\n")
    (tmp_path / "deployment.yml").write_text(textwrap.dedent(f"""\
        name: blue
        endpoint_name: spread
        model: azureml:{model.name}:1
        compute: azureml:{cluster.compute.name}
        instance_type: Standard_DS1_v2
        instance_count: 3
        mini_batch_size: 1
        retry_settings: {{max_retries: 1, timeout: 60}}
        """))
    token = ApiToken.objects.create(user=owner)[1]
    ok(run_studio(cluster.web, token, "batch-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path))
    made = ok(run_studio(cluster.web, token, "batch-deployment", "create", "-f", "deployment.yml", cwd=tmp_path))
    assert made["compute"] == cluster.compute.name, made
    files = {f"part-{n:02d}.csv": _ids_csv(n * 10, 10) for n in range(12)}
    assert upload(owner_api, "ids", files).status_code == 201
    name = _invoke(owner_api, "spread", "ids")

    job = _settled(owner_api, "spread", name, timeout=180)
    assert job["status"] == "Completed", job
    rows = _rows(owner_api, "spread", name)
    ids = [r["id"] for r in rows]
    assert len(ids) == 120 and set(ids) == {f"row-{i:05d}" for i in range(120)}
    # Each instance read its mini-batch from its own sandbox on its node, not from the studio's store.
    assert not any(r["read_from"].startswith(str(settings.DATA_DIR)) for r in rows)
    nodes = {n.name: str(n.folder) for n in cluster.nodes}
    assert all(any(r["read_from"].startswith(f) for f in nodes.values()) for r in rows)
    # The instances ran one per node (Ray spread them) and the work went to all of them.
    node_ids = ray_cluster.node_ids(cluster.address)
    instances = list(Instance.objects.filter(batch_job__name=name).select_related("node"))
    assert sorted(_node_of(i, node_ids) for i in instances) == ["n1", "n2", "n3"]
    # What the score.py wrote to its output folder came back, one file per input.
    assert sorted(o for o in job["outputs"] if o.endswith(".seen")) == sorted(
        f.replace(".csv", ".seen") for f in files)
    seen = owner_api.get(f"{EP}/spread/jobs/{name}/outputs/part-03.seen")
    assert b"".join(seen.streaming_content) == b"10"
    # Every node fetched only the files its instance scored (by content hash, into its cache).
    digests = {hashlib.sha256(body).hexdigest() for body in files.values()}
    cached = {p.name for n in cluster.nodes for p in (n.folder / "cache").rglob("*") if p.is_file()}
    assert digests <= cached
    wait_for(lambda: not Instance.objects.filter(batch_job__name=name).exclude(state="Stopped").exists(),
             timeout=60, what="the job's instances stopped")
    wait_for(lambda: not {i.name for i in instances} & ray_cluster.live_actors(cluster.address), timeout=30,
             what="their actors gone")


def test_a_sandbox_on_a_node_reads_no_other_jobs_inputs(cluster, owner_api, workspace, tmp_path):
    holder = make_custom_model(workspace, tmp_path / "holder", name="holder", source=HOLDER)
    prober = make_custom_model(workspace, tmp_path / "prober", name="prober", source=PROBER)
    _batch_deployment(owner_api, "victim", holder, cluster.compute, retry_settings={"timeout": 300})
    _batch_deployment(owner_api, "attacker", prober, cluster.compute)
    secret = b"id\nvictim-secret-4711\n"
    assert upload(owner_api, "private", {"secret.csv": secret}).status_code == 201
    assert upload(owner_api, "mine", {"mine.csv": b"id\nattacker-row\n"}).status_code == 201
    victim = _invoke(owner_api, "victim", "private")
    # The victim's mini-batch is in its server's hands: its input is staged on its node now.
    wait_for(lambda: MiniBatch.objects.filter(job__name=victim, status=MiniBatchStatus.RUNNING)
             .exclude(instance="").exists(), timeout=120, what="the victim's mini-batch running")
    victim_instance = Instance.objects.get(batch_job__name=victim)
    rel = MiniBatch.objects.get(job__name=victim).items[0]["path"]
    digest = hashlib.sha256(secret).hexdigest()
    paths = [str(datastore_root() / rel)]
    for node in cluster.nodes:
        paths += [str(node.folder / "cache" / digest[:2] / digest),
                  str(node.folder / "sandbox" / sanitize(victim_instance.name) / "datastore" / rel)]
    # They are there (the test itself can read them): the prober is told exactly where to look.
    wait_for(lambda: sum(Path(p).is_file() for p in paths) >= 3, timeout=10, what="the victim's input on its node")

    attacker = _invoke(owner_api, "attacker", "mine", probe={"type": "string", "default": json.dumps(paths)})
    # Admitted beside the victim: admission counts the cluster's CPUs as Ray reports them (6), not the studio's.
    job = _settled(owner_api, "attacker", attacker, timeout=100)
    assert job["status"] == "Completed", job
    outcomes = {r["path"]: r["outcome"] for r in _rows(owner_api, "attacker", attacker)}
    assert set(outcomes) == {*paths, "own input", "own inputs folder"}
    # It reads its own input (so a read would show), and nothing of the victim's, wherever it lies.
    assert outcomes.pop("own input") == "read:id\nattacker-row\n"
    read = {p: o for p, o in outcomes.items() if o.startswith("read:")}
    assert not read, read
    # Its own inputs folder holds its own mini-batch's file and nothing of the victim's.
    listed = json.loads(outcomes["own inputs folder"])
    assert len(listed) == 1 and listed[0].endswith("mine.csv"), listed

    assert owner_api.post(f"{EP}/victim/jobs/{victim}/cancel").status_code in (200, 202)
    assert _settled(owner_api, "victim", victim, timeout=30)["status"] == "Canceled"


def test_a_node_lost_mid_job_costs_no_row_and_duplicates_none(cluster, owner_api, workspace, tmp_path):
    model = make_custom_model(workspace, tmp_path / "code", name="slow", source=SCORER)
    _batch_deployment(owner_api, "steady", model, cluster.compute, instance_count=3, mini_batch_size=1,
                      environment_variables={"DELAY": "0.5"}, retry_settings={"max_retries": 1, "timeout": 60})
    files = {f"part-{n:02d}.csv": _ids_csv(n * 5, 5) for n in range(60)}
    assert upload(owner_api, "many", files).status_code == 201
    name = _invoke(owner_api, "steady", "many")
    victim = cluster.node("n3")
    victim_row = f"{cluster.compute.name}:{ray_cluster.node_ids(cluster.address)[victim.name][:16]}"

    def in_flight_on_victim():
        on_victim = set(Instance.objects.filter(batch_job__name=name, node__name=victim_row)
                        .values_list("name", flat=True))
        running = MiniBatch.objects.filter(job__name=name, status=MiniBatchStatus.RUNNING, instance__in=on_victim)
        done = MiniBatch.objects.filter(job__name=name, status=MiniBatchStatus.COMPLETED).count()
        return done >= 3 and list(running.values_list("pk", flat=True))

    try:
        in_flight = wait_for(in_flight_on_victim, timeout=180, interval=0.05,
                             what="mini-batches in flight on the victim node")
        assert cluster.kill_raylet(victim.name)
        killed_at = time.monotonic()
        job = _settled(owner_api, "steady", name, timeout=240)
        took = time.monotonic() - killed_at
    finally:
        ray_cluster.restart_node(cluster, victim.name)
    assert job["status"] == "Completed", job
    ids = [r["id"] for r in _rows(owner_api, "steady", name)]
    # Every row exactly once: the mini-batches lost with the node were scored again elsewhere.
    assert len(ids) == 300 and set(ids) == {f"row-{i:05d}" for i in range(300)}, (len(ids), took)
    rows = MiniBatch.objects.filter(job__name=name)
    assert set(rows.values_list("status", flat=True)) == {MiniBatchStatus.COMPLETED}
    assert set(MiniBatch.objects.filter(pk__in=in_flight).values_list("status", flat=True)) == {"Completed"}
    # The lost server cost no mini-batch a retry: every one completed on its counted first attempt.
    assert set(rows.values_list("attempts", flat=True)) == {1}, list(rows.values_list("index", "attempts", "error"))
    assert BatchJob.objects.get(name=name).rows_done == 300
