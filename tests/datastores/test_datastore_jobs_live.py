"""Batch jobs that read their input from Azure Blob (Azurite) or S3 (moto's server) and write their
output to the other, on the real worker and model servers: every row exactly once in the stored
output even when a worker child is SIGKILLed mid-job; clear 400s at invoke and failed jobs that name
the cause; literal and extra inputs handed to a score.py; no credential in the worker's log."""

from __future__ import annotations

import csv
import io

import pytest

from endpoints_app.models import BatchJob, MiniBatch
from tests.batch.conftest import iris_csv
from tests.batch.test_jobs_live import (
    assert_exactly_once,
    files_of,
    kill_and_restart_the_worker_mid_mini_batch,
    slow_endpoint,
    wait_job,
)
from tests.datastores.conftest import WS, create
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EP = f"{WS}/batch-endpoints"


def invoke(api, endpoint: str, body: dict, status: int = 202) -> dict:
    response = api.post(f"{EP}/{endpoint}/jobs", body, format="json")
    assert response.status_code == status, response.content
    return response.json()


def rows_of(data: bytes) -> list[dict]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_blob_in_s3_out_every_row_once_with_the_worker_killed(live_worker, owner_api, workspace, tmp_path,
                                                                   azurite, moto_s3):
    container = azurite.container("job-in")
    files = files_of(24, 10)
    for name, body in files.items():
        container.upload_blob(f"rows/{name}", body, overwrite=True)
    s3 = moto_s3.bucket("job-out")
    create(owner_api, azurite.spec("blobs", "job-in"))
    create(owner_api, moto_s3.spec("bucket", "job-out"))
    slow_endpoint(owner_api, workspace, tmp_path, delay="0.3", mini_batch_size=2, instance_count=2,
                  retry_settings={"max_retries": 3, "timeout": 4})
    job = invoke(owner_api, "slow", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml://datastores/blobs/paths/rows"}},
        "outputs": {"score": {"type": "uri_file", "path": "azureml://datastores/bucket/paths/out/scored.csv"}},
    })
    assert job["output_uri"] == "azureml://datastores/bucket/paths/out/scored.csv"
    kill_and_restart_the_worker_mid_mini_batch(live_worker, job["name"], timeout=90)
    done = wait_job(owner_api, "slow", job["name"], timeout=150)
    assert done["status"] == "Completed", done
    assert done["input_files"] == 24 and done["mini_batches_total"] == 12
    stored = s3.get_object(Bucket="job-out", Key="out/scored.csv")["Body"].read()
    assert_exactly_once(rows_of(stored), files, "source", "index")
    assert MiniBatch.objects.filter(job__name=job["name"], attempts__gt=1).exists()
    # The fetched copies are gone once the job has ended; the credentials never reached the log.
    from endpoints_app.datastores.staging import staging_root

    wait_for(lambda: not staging_root(BatchJob.objects.get(name=job["name"])).exists(), timeout=20,
             what="staged inputs removed")
    log = live_worker.log_path.read_text(errors="replace")
    assert moto_s3.secret_access_key not in log and azurite.spec("x", "y")["credentials"]["account_key"] not in log


def test_s3_in_blob_out_with_row_ranges_of_a_large_file(live_worker, owner_api, owner, client, batch_endpoint,
                                                        azurite, moto_s3):
    s3 = moto_s3.bucket("big-in")
    body = iris_csv(12_500, seed=7)
    s3.put_object(Bucket="big-in", Key="day/big.csv", Body=body)
    s3.put_object(Bucket="big-in", Key="day/small.csv", Body=iris_csv(30, seed=8))
    container = azurite.container("big-out")
    create(owner_api, moto_s3.spec("bucket", "big-in"))
    create(owner_api, azurite.spec("blobs", "big-out"))
    batch_endpoint()
    job = invoke(owner_api, "scorer", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml://datastores/bucket/paths/day"}},
        "outputs": {"score": {"type": "uri_folder", "path": "azureml://datastores/blobs/paths/results"}},
    })
    done = wait_job(owner_api, "scorer", job["name"], timeout=120)
    assert done["status"] == "Completed", done
    # 12,500 rows cut into row ranges of 10,000 (STUDIO_BATCH_ROWS_PER_MINI_BATCH), then the small file.
    assert done["mini_batches_total"] == 3 and done["rows_total"] == done["rows_done"] == 12_530
    stored = rows_of(container.download_blob("results/predictions.csv").readall())
    assert len(stored) == 12_530
    assert {(r["file"], int(r["row"])) for r in stored} == (
        {("big.csv", i) for i in range(12_500)} | {("small.csv", i) for i in range(30)})
    # The job's page says where the output went.
    client.force_login(owner)
    page = client.get(f"/jobs/{job['name']}/").content.decode()
    assert 'written to <code class="wrap" id="job-output-uri">azureml://datastores/blobs/paths/results/' \
           'predictions.csv</code>' in page


def test_invoke_checks_storage_before_anything_is_written(live_worker, owner_api, batch_endpoint, azurite,
                                                          moto_s3, allowed_root):
    azurite.container("checked").upload_blob("a.csv", iris_csv(3), overwrite=True)
    create(owner_api, azurite.spec("blobs", "checked"))
    batch_endpoint()

    def refused(inputs_path: str, outputs: dict | None = None, field: str = "inputs.input_data.path") -> str:
        body = {"inputs": {"input_data": {"type": "uri_folder", "path": inputs_path}}}
        if outputs is not None:
            body["outputs"] = outputs
        error = invoke(owner_api, "scorer", body, 400)["error"]
        assert error["field"] == field, error
        return error["message"]

    assert "no file or folder" in refused("azureml://datastores/blobs/paths/missing")
    assert "No datastore 'nope'" in refused("azureml://datastores/nope/paths/x")
    assert "'..' is not allowed" in refused("azureml://datastores/blobs/paths/../x")
    good = "azureml://datastores/blobs/paths/"
    assert "has no field 'format'" in refused(good, {"score": {"type": "uri_file", "path": good + "o.csv",
                                                               "format": "csv"}}, "outputs.score.format")
    assert "Unknown output 'extra'" in refused(good, {"extra": {"path": good}}, "outputs.extra")
    gone = azurite.spec("gone", "checked")
    create(owner_api, gone)
    azurite.service().delete_container("checked")
    assert "does not exist" in refused("azureml://datastores/gone/paths/a.csv")
    moto_s3.bucket("fine").put_object(Bucket="fine", Key="dir/a.csv", Body=iris_csv(3))
    create(owner_api, moto_s3.spec("bucket", "fine"))
    assert "does not exist" in refused("azureml://datastores/bucket/paths/dir", {"score": {
        "type": "uri_file", "path": "azureml://datastores/gone/paths/out.csv"}}, "outputs.score.path")
    assert not BatchJob.objects.exists()


def test_a_job_whose_stored_input_cannot_be_scored_fails_naming_the_cause(live_worker, owner_api, batch_endpoint,
                                                                          moto_s3):
    s3 = moto_s3.bucket("bad-columns")
    s3.put_object(Bucket="bad-columns", Key="x.csv", Body=b"a,b\n1,2\n")
    create(owner_api, moto_s3.spec("bucket", "bad-columns"))
    batch_endpoint()
    job = invoke(owner_api, "scorer", {"inputs": {"input_data": {
        "type": "uri_file", "path": "azureml://datastores/bucket/paths/x.csv"}}})
    done = wait_job(owner_api, "scorer", job["name"], timeout=60)
    assert done["status"] == "Failed" and "x.csv: missing columns" in done["error"], done


def test_a_job_whose_output_store_vanished_fails_naming_it(live_worker, owner_api, batch_endpoint, azurite,
                                                           moto_s3):
    moto_s3.bucket("in-ok").put_object(Bucket="in-ok", Key="rows.csv", Body=iris_csv(20))
    azurite.container("out-gone")
    create(owner_api, moto_s3.spec("bucket", "in-ok"))
    create(owner_api, azurite.spec("blobs", "out-gone"))
    batch_endpoint()
    job = invoke(owner_api, "scorer", {
        "inputs": {"input_data": {"type": "uri_file", "path": "azureml://datastores/bucket/paths/rows.csv"}},
        "outputs": {"score": {"type": "uri_file", "path": "azureml://datastores/blobs/paths/p.csv"}}})
    azurite.service().delete_container("out-gone")
    done = wait_job(owner_api, "scorer", job["name"], timeout=60)
    assert done["status"] == "Failed", done
    assert "outputs.score" in done["error"] and "does not exist" in done["error"], done


NAMED_SCORE = '''
import os

def init():
    pass

def run(mini_batch, threshold, labels, flag=False):
    with open(labels[0]) as fh:
        names = fh.read().split()
    return [{"name": os.path.basename(p), "threshold": threshold, "flag": flag, "labels": "|".join(names)}
            for p in mini_batch]
'''


def test_literal_and_extra_inputs_reach_a_score_py(live_worker, owner_api, workspace, tmp_path, node, azurite,
                                                   make_asset):
    container = azurite.container("named")
    container.upload_blob("labels/names.txt", b"setosa versicolor\n", overwrite=True)
    create(owner_api, azurite.spec("blobs", "named"))
    make_asset("some-files", {"a.csv": b"x\n1\n", "b.csv": b"x\n2\n"})
    model = make_custom_model(workspace, tmp_path / "code", name="named-inputs", source=NAMED_SCORE)
    assert owner_api.post(EP, {"name": "named"}, format="json").status_code == 201
    assert owner_api.post(f"{EP}/named/deployments", {"name": "blue", "model": f"{model.name}:1",
                                                      "instance_type": "Standard_DS1_v2"},
                          format="json").status_code == 201
    job = invoke(owner_api, "named", {"inputs": {
        "input_data": {"type": "uri_folder", "path": "azureml:some-files:1"},
        "threshold": {"type": "number", "default": 0.75},
        "flag": {"type": "boolean", "default": True},
        "labels": {"type": "uri_folder", "path": "azureml://datastores/blobs/paths/labels"},
    }})
    done = wait_job(owner_api, "named", job["name"], timeout=90)
    assert done["status"] == "Completed", done
    assert done["inputs"]["threshold"] == {"type": "number", "default": 0.75}
    response = owner_api.get(f"{EP}/named/jobs/{job['name']}/outputs/predictions.csv")
    rows = rows_of(b"".join(response.streaming_content))
    assert {(r["name"], r["threshold"], r["flag"], r["labels"]) for r in rows} == {
        ("a.csv", "0.75", "True", "setosa|versicolor"), ("b.csv", "0.75", "True", "setosa|versicolor")}
    bad = owner_api.post(f"{EP}/named/jobs", {"inputs": {
        "input_data": {"type": "uri_folder", "path": "azureml:some-files:1"},
        "threshold": {"type": "number", "default": "high"}}}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "inputs.threshold.default"


def test_a_local_folder_datastore_in_and_out_and_no_symlink_out(live_worker, owner_api, batch_endpoint, allowed_root,
                                                                tmp_path):
    (allowed_root / "in").mkdir()
    (allowed_root / "in" / "rows.csv").write_bytes(iris_csv(25, seed=3))
    secret = tmp_path / "not-shared.csv"
    secret.write_bytes(iris_csv(5, seed=4))
    (allowed_root / "in-escape").symlink_to(tmp_path)
    create(owner_api, {"name": "shared", "type": "local", "path": str(allowed_root)})
    batch_endpoint()
    refused = invoke(owner_api, "scorer", {"inputs": {"input_data": {
        "type": "uri_file", "path": "azureml://datastores/shared/paths/in-escape/not-shared.csv"}}}, 400)
    assert "resolves outside the datastore's folder" in refused["error"]["message"]
    job = invoke(owner_api, "scorer", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml://datastores/shared/paths/in"}},
        "outputs": {"score": {"type": "uri_file", "path": "azureml://datastores/shared/paths/out/scores.csv"}}})
    done = wait_job(owner_api, "scorer", job["name"], timeout=60)
    assert done["status"] == "Completed", done
    stored = rows_of((allowed_root / "out" / "scores.csv").read_bytes())
    assert sorted(int(r["row"]) for r in stored) == list(range(25))
    assert not list((allowed_root / "out").glob(".*"))  # no temporary file left beside it


def test_unknown_job_fields_are_400s_not_ignored(live_worker, owner_api, batch_endpoint, make_asset):
    make_asset("plain", {"a.csv": iris_csv(3)})
    batch_endpoint()
    good = {"type": "uri_folder", "path": "azureml:plain:1"}
    for body, field in (({"inputs": {"input_data": good}, "description": "x"}, "description"),
                        ({"inputs": {"input_data": {**good, "format": "csv"}}}, "inputs.input_data.format"),
                        ({"inputs": {"input_data": good, "n": {"type": "integer", "default": 1, "path": "x"}}},
                         "inputs.n.path"),
                        # A catalog model scores input_data only; more inputs are for a score.py.
                        ({"inputs": {"input_data": good, "n": {"type": "integer", "default": 1}}}, "inputs.n")):
        error = invoke(owner_api, "scorer", body, 400)["error"]
        assert error["field"] == field, error
    assert not BatchJob.objects.exists()
