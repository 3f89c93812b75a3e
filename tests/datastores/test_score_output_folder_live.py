"""A batch score.py's output folder (AZUREML_BI_OUTPUT_PATH), on the real worker and sandboxed model
servers: what run() writes there reaches the job's outputs and a uri_folder datastore output once (a
retried mini-batch's half-written file never does); a hostile score.py that plants a link, sends a
tar naming a path outside the folder or writes outside its folder gets a failed mini-batch naming the
cause and nothing lands anywhere else; the folder is a bounded tmpfs; logging_level, settings.* and
resources.instance_count from a cloud deployment.yml are honoured; compute and other fields the studio
does not act on are 400s naming them."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.models import BatchJob, Deployment
from tests.batch.test_jobs_live import wait_job
from tests.datastores.conftest import WS, create
from tests.datastores.test_datastore_jobs_live import invoke, rows_of
from tests.live import make_custom_model

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"

SCORE = '''
import io
import json
import logging
import os
import tarfile
import time
from pathlib import Path


def init():
    global out
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]


def _evil_pack_once():
    import endpoints_app.runtime.batch as server_side

    original = server_side.pack_output

    def evil(folder, rows):
        server_side.pack_output = original
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, body in (("rows.csv", rows), ("output/../../../../evil.txt", b"pwned")):
                info = tarfile.TarInfo(name)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        return buf.getvalue()

    server_side.pack_output = evil


def _try_write(folder):
    try:
        Path(folder, "planted.txt").write_text("x")
        return "written"
    except OSError as exc:
        return type(exc).__name__


def run(mini_batch):
    logging.debug("score.py debug line for %s", ",".join(Path(p).name for p in mini_batch))
    # Two mini-batches at once on this server (max_concurrency_per_instance 2) would meet here.
    busy = Path("/tmp/busy")
    overlapped = busy.exists()
    busy.write_text("1")
    time.sleep(0.3)
    busy.unlink()
    results = []
    for path in mini_batch:
        name = Path(path).stem
        text = Path(path).read_text()
        row = {"name": name, "folder_bytes": "", "code_dir": "", "input_dir": "", "overlapped": overlapped}
        if name == "flaky" and not Path("/tmp/flaky-seen").exists():
            Path("/tmp/flaky-seen").write_text("1")
            Path(out, "flaky.out.csv").write_text("HALF")
            raise ValueError("the first attempt fails after writing half a file")
        if name == "symlink":
            os.symlink("/etc/passwd", os.path.join(out, "leak"))
        if name == "traversal":
            _evil_pack_once()
        if name == "escape":
            stat = os.statvfs(out)
            row["folder_bytes"] = stat.f_blocks * stat.f_frsize
            row["code_dir"] = _try_write(os.path.dirname(os.path.abspath(__file__)))
            row["input_dir"] = _try_write(os.path.dirname(path))
        Path(out, name + ".out.csv").write_text(text.upper())
        Path(out, "sub").mkdir(exist_ok=True)
        Path(out, "sub", name + ".txt").write_text(name)
        results.append(row)
    return results
'''


def test_a_score_py_output_folder_reaches_the_job_and_the_datastore_once(live_worker, owner_api, owner, client,
                                                                         workspace, tmp_path, node, make_asset,
                                                                         allowed_root):
    make_asset("inputs", {f"{n}.csv": f"x\n{n}\n".encode()
                          for n in ("a", "flaky", "symlink", "traversal", "escape")})
    create(owner_api, {"name": "shared", "type": "local", "path": str(allowed_root)})
    model = make_custom_model(workspace, tmp_path / "code", name="writer", source=SCORE)
    assert owner_api.post(EP, {"name": "writer"}, format="json").status_code == 201
    # As the cloud CLI's deployment.yml writes it: settings.*, resources.instance_count, type: model.
    created = owner_api.post(f"{EP}/writer/deployments", {
        "name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2", "type": "model",
        "resources": {"instance_count": 1},
        "settings": {"mini_batch_size": 1, "output_action": "append_row", "logging_level": "debug",
                     "max_concurrency_per_instance": 2,
                     "retry_settings": {"max_retries": 1, "timeout": 30}, "error_threshold": -1},
    }, format="json")
    assert created.status_code == 201, created.content
    stored = Deployment.objects.get(name="blue", endpoint__name="writer").batch_settings
    assert stored["mini_batch_size"] == 1 and stored["logging_level"] == "debug"
    assert stored["retry_settings"]["max_retries"] == 1

    job = invoke(owner_api, "writer", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml:inputs:1"}},
        "outputs": {"score": {"type": "uri_folder", "path": "azureml://datastores/shared/paths/scored"}},
    })
    done = wait_job(owner_api, "writer", job["name"], timeout=120)
    assert done["status"] == "Completed", done
    failures = {tuple(f["files"]): f["error"] for f in done["failures"]}
    assert set(failures) == {("symlink.csv",), ("traversal.csv",)}, failures
    assert "'leak', a link; only regular files are kept" in failures[("symlink.csv",)]
    assert "points outside the output folder" in failures[("traversal.csv",)]

    kept = ["a.out.csv", "escape.out.csv", "flaky.out.csv", "sub/a.txt", "sub/escape.txt", "sub/flaky.txt"]
    assert sorted(done["outputs"]) == sorted(["predictions.csv", *kept])
    response = owner_api.get(f"{EP}/writer/jobs/{job['name']}/outputs/flaky.out.csv")
    assert b"".join(response.streaming_content) == b"X\nFLAKY\n"  # the retry's file, not the half one
    response = owner_api.get(f"{EP}/writer/jobs/{job['name']}/outputs/sub/a.txt")
    assert b"".join(response.streaming_content) == b"a"
    assert owner_api.get(f"{EP}/writer/jobs/{job['name']}/outputs/..%2F..%2Fsecret").status_code in (400, 404)
    # The job's page lists them for download.
    client.force_login(owner)
    page = client.get(f"/jobs/{job['name']}/").content.decode()
    assert 'id="job-output-files"' in page and f'href="/jobs/{job["name"]}/outputs/sub/a.txt"' in page
    assert client.get(f"/jobs/{job['name']}/outputs/sub/flaky.txt").status_code == 200

    # The datastore's folder holds each file once, and nothing else.
    published = sorted(p.relative_to(allowed_root / "scored").as_posix()
                       for p in (allowed_root / "scored").rglob("*") if p.is_file())
    assert published == sorted(["predictions.csv", *kept])
    assert (allowed_root / "scored" / "flaky.out.csv").read_text() == "X\nFLAKY\n"
    # No escape landed anywhere: not in the data dir, not beside the datastore.
    data_dir = Path(settings.DATA_DIR)
    assert not [p for root in (data_dir, allowed_root.parent) for p in root.rglob("evil.txt")]
    assert not list(data_dir.rglob("leak")) and not list(data_dir.rglob("planted.txt"))

    # What the escape attempt saw: a bounded tmpfs, and no other place it could write.
    job_row = BatchJob.objects.get(name=job["name"])
    rows = {r["name"]: r for r in rows_of((allowed_root / "scored" / "predictions.csv").read_bytes())}
    assert sorted(rows) == ["a", "escape", "flaky"]
    # run() calls on one server took turns, each on its own empty folder.
    assert {r["overlapped"] for r in rows.values()} == {"False"}
    seen = rows["escape"]
    assert int(seen["folder_bytes"]) == 256 * 1024 * 1024, seen
    assert seen["code_dir"] != "written" and seen["input_dir"] != "written", seen
    # logging_level debug reached the model server: the score.py's debug line is in its log.
    assert "score.py debug line for a.csv" in _instance_logs(job_row)

    # A uri_file output holds one file: a score.py that wrote files fails the job naming why, and
    # nothing is written to the datastore.
    job = invoke(owner_api, "writer", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml:inputs:1"}},
        "outputs": {"score": {"type": "uri_file", "path": "azureml://datastores/shared/paths/one.csv"}},
    })
    done = wait_job(owner_api, "writer", job["name"], timeout=120)
    assert done["status"] == "Failed" and "use type uri_folder" in done["error"], done
    assert not (allowed_root / "one.csv").exists()


def _instance_logs(job: BatchJob) -> str:
    from endpoints_app.controller.process import log_path

    return "".join(log_path(i.name).read_text(errors="replace") for i in job.instances.all()
                   if log_path(i.name).exists())

