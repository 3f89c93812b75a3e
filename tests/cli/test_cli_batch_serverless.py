"""The `studio` CLI for data, batch endpoints and jobs, marketplace subscriptions and serverless
endpoints, against a real web process (REST API + embedded gateway), a real Celery worker and
real model servers: the examples' README run as written, every command, and `apply` twice."""

import csv
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from endpoints_app.models import AuditLog, BatchJob, DataAsset, Deployment, Endpoint, MarketplaceSubscription
from tests.cli.conftest import cli_env, ok
from tests.live import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = ROOT / "examples"
MINILM = "studio://registries/studio/models/all-minilm-l6-v2/versions/1"


def _readme_blocks() -> list[str]:
    text = (EXAMPLES / "README.md").read_text()
    section = text[text.index("## Batch and serverless"):]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def _run_block(owner_cli, block: str, cwd: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    """The README's lines as a user pastes them into bash, `studio` being this checkout's CLI."""
    env = cli_env(owner_cli.url, owner_cli.token, tmp_path)
    wrapper = f'studio() {{ "{sys.executable}" -m studio_client "$@"; }}\n'
    result = subprocess.run(["bash", "-c", f"set -euo pipefail\n{wrapper}{block}"], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{block}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def _input_rows(folder: Path) -> int:
    return sum(len(f.read_text().splitlines()) - 1 for f in folder.glob("*.csv"))


def test_it_runs_the_batch_example_of_the_readme_and_every_batch_command(owner_cli, tmp_path,
                                                                          seeded_catalog):
    cli = owner_cli
    shutil.copytree(EXAMPLES, tmp_path / "examples")  # the README's relative paths, and out/ lands here
    batch_block = _readme_blocks()[0]

    started = time.monotonic()
    _run_block(cli, batch_block, tmp_path, tmp_path)
    elapsed = time.monotonic() - started
    predictions = tmp_path / "out" / "predictions.csv"
    with open(predictions, newline="") as fh:
        rows = list(csv.reader(fh))
    expected = _input_rows(EXAMPLES / "batch" / "iris-classifier" / "inputs")
    assert expected == 20
    # A header, then one line per input row.
    job = BatchJob.objects.get()
    assert len(rows) == expected + 1, (rows, json.dumps(ok(cli("job", "show", "-n", job.name)), indent=1))
    assert job.status == "Completed" and job.rows_done == expected and job.rows_failed == 0
    assert AuditLog.objects.get(action="job.create").via == AuditLog.Via.CLI
    print(f"\nbatch example of examples/README.md (data, endpoint, deployment, job to Completed, download): "
          f"{elapsed:.1f} s")

    # data create|list|show
    asset = ok(cli("data", "show", "-n", "iris-inputs"))
    assert asset["id"] == "studio:data/iris-inputs/versions/1" and asset["file_count"] == 2
    (tmp_path / "more.csv").write_text("sepal_length,sepal_width,petal_length,petal_width\n5.0,3.4,1.5,0.2\n")
    second = ok(cli("data", "create", "-n", "iris-inputs", "--path", "more.csv"))
    assert second["id"] == "studio:data/iris-inputs/versions/2" and second["file_count"] == 1
    assert ok(cli("data", "show", "-n", "iris-inputs"))["version"] == 2
    assert ok(cli("data", "show", "-n", "iris-inputs", "-v", "1"))["file_count"] == 2
    assert {(d["name"], d["version"]) for d in ok(cli("data", "list"))} >= {("iris-inputs", 2)}
    assert "iris-inputs" in cli("data", "list", "-o", "table").stdout
    assert DataAsset.objects.filter(name="iris-inputs").count() == 2

    # batch-endpoint show|list|update, batch-deployment show|list|update
    endpoint = ok(cli("batch-endpoint", "show", "-n", "iris-batch"))
    assert endpoint["defaults"] == {"deployment_name": "main"} and endpoint["deployments"] == ["main"]
    assert endpoint["scoring_uri"].endswith("/inference/iris-batch/jobs")
    assert [e["name"] for e in ok(cli("batch-endpoint", "list"))] == ["iris-batch"]
    assert ok(cli("batch-endpoint", "update", "-n", "iris-batch", "--set", "description=nightly"))[
        "description"] == "nightly"
    deployment = ok(cli("batch-deployment", "show", "-e", "iris-batch", "-n", "main"))
    assert deployment["is_default"] is True and deployment["output_file_name"] == "predictions.csv"
    assert [d["name"] for d in ok(cli("batch-deployment", "list", "-e", "iris-batch"))] == ["main"]
    updated = ok(cli("batch-deployment", "update", "-e", "iris-batch", "-n", "main", "--set", "mini_batch_size=1"))
    assert updated["mini_batch_size"] == 1

    # invoke with flags on the new data version, then job list|show|download with the endpoint named
    second_job = ok(cli("batch-endpoint", "invoke", "-n", "iris-batch", "--input", second["id"]))
    assert second_job["status"] == "Completed" and second_job["rows_done"] == 1
    listed = ok(cli("job", "list", "-e", "iris-batch"))
    assert {j["name"] for j in listed} == {job.name, second_job["name"]}
    assert ok(cli("job", "show", "-e", "iris-batch", "-n", job.name))["rows_done"] == expected
    # Without -e: the workspace's jobs (names are unique in it), filtered by status.
    assert {j["name"] for j in ok(cli("job", "list", "--status", "Completed"))} == {job.name, second_job["name"]}
    assert ok(cli("job", "list", "--status", "Running")) == []
    got = ok(cli("job", "download", "-e", "iris-batch", "-n", second_job["name"], "--output-dir", "second"))
    assert len((tmp_path / "second" / "predictions.csv").read_text().splitlines()) == 2
    assert got["downloaded"] == [str(Path("second") / "predictions.csv")]

    # cancel: a job sent with --no-wait, canceled at once
    (tmp_path / "big.csv").write_text(
        "sepal_length,sepal_width,petal_length,petal_width\n" + "5.1,3.5,1.4,0.2\n" * 2000)
    big = ok(cli("data", "create", "-n", "iris-big", "--path", "big.csv"))
    queued = ok(cli("batch-endpoint", "invoke", "-n", "iris-batch", "--input", big["id"], "--no-wait"))
    assert queued["status"] in ("Queued", "Running")
    refused = cli("job", "cancel", "-n", queued["name"])
    assert refused.returncode == 2 and "--yes" in refused.stderr
    canceled = ok(cli("job", "cancel", "-n", queued["name"], "--yes"))
    assert canceled["status"] in ("Canceling", "Canceled"), canceled
    for _ in range(60):
        if ok(cli("job", "show", "-n", queued["name"]))["status"] == "Canceled":
            break
        time.sleep(1)
    assert BatchJob.objects.get(name=queued["name"]).status == "Canceled"
    not_yet = cli("job", "download", "-n", queued["name"])
    assert not_yet.returncode == 2 and "predictions.csv" in not_yet.stderr

    # delete
    # Its servers may still be stopping from the canceled job (then the CLI shows Deleting): delete
    # returns once the deployment is gone either way.
    deleted = cli("batch-deployment", "delete", "-e", "iris-batch", "-n", "main", "--yes")
    assert ok(deleted)["deleted"] is True
    assert not Deployment.objects.filter(endpoint__name="iris-batch", name="main").exists()
    assert ok(cli("batch-endpoint", "show", "-n", "iris-batch"))["defaults"] == {}
    assert ok(cli("batch-endpoint", "delete", "-n", "iris-batch", "--yes"))["deleted"] is True
    gone = cli("batch-endpoint", "show", "-n", "iris-batch")
    assert gone.returncode == 1 and "iris-batch" in gone.stderr


def test_it_runs_the_serverless_example_of_the_readme_and_every_serverless_command(owner_cli, tmp_path,
                                                                                    seeded_catalog):
    cli = owner_cli
    serverless_block = _readme_blocks()[1]
    started = time.monotonic()
    result = _run_block(cli, serverless_block, ROOT, tmp_path)
    elapsed = time.monotonic() - started
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(answer["data"]) == 2 and answer["usage"]["prompt_tokens"] > 0
    print(f"\nserverless example of examples/README.md (subscribe, create, first embeddings): {elapsed:.1f} s")

    subscription = ok(cli("marketplace-subscription", "show", "-n", "all-minilm-l6-v2"))
    assert subscription["model_id"] == MINILM
    assert [s["name"] for s in ok(cli("marketplace-subscription", "list"))] == ["all-minilm-l6-v2"]
    wrong = cli("marketplace-subscription", "create", "--model-id", MINILM, "-n", "my-offer")
    assert wrong.returncode == 1 and "all-minilm-l6-v2" in wrong.stderr and "field: name" in wrong.stderr

    endpoint = ok(cli("serverless-endpoint", "show", "-n", "minilm-serverless"))
    assert endpoint["model_id"] == MINILM and endpoint["provisioning_state"] == "Succeeded"
    assert [e["name"] for e in ok(cli("serverless-endpoint", "list"))] == ["minilm-serverless"]
    keys = ok(cli("serverless-endpoint", "get-credentials", "-n", "minilm-serverless"))
    new = ok(cli("serverless-endpoint", "regenerate-keys", "-n", "minilm-serverless", "--key-type", "secondary"))
    assert new["secondary_key"] != keys["secondary_key"]
    assert ok(cli("serverless-endpoint", "get-credentials", "-n", "minilm-serverless"))["secondary_key"] == \
        new["secondary_key"]
    # The new key works on the gateway at once; the old one no longer does.
    url = endpoint["scoring_uri"] + "/embeddings"
    body = {"input": ["one more sentence"]}
    fresh = requests.post(url, json=body, headers={"Authorization": f"Bearer {new['secondary_key']}"}, timeout=60)
    assert fresh.status_code == 200, fresh.text
    stale = requests.post(url, json=body, headers={"Authorization": f"Bearer {keys['secondary_key']}"}, timeout=60)
    assert stale.status_code == 401

    unified = ok(cli("workspace", "list-inference-keys"))
    assert unified["primary_key"] and unified["base_url"]

    assert ok(cli("serverless-endpoint", "delete", "-n", "minilm-serverless", "--yes"))["deleted"] is True
    assert not Endpoint.objects.filter(name="minilm-serverless").exists()
    assert ok(cli("marketplace-subscription", "delete", "-n", "all-minilm-l6-v2", "--yes"))["deleted"] is True
    assert ok(cli("marketplace-subscription", "list")) == []
    assert not MarketplaceSubscription.objects.filter(deleted_at__isnull=True).exists()
    missing = cli("serverless-endpoint", "show", "-n", "minilm-serverless")
    assert missing.returncode == 1 and "minilm-serverless" in missing.stderr


def test_apply_manages_a_serverless_folder_and_a_batch_folder_idempotently(owner_cli, seeded_catalog):
    cli = owner_cli
    serverless = EXAMPLES / "apply" / "minilm-serverless"
    dry = cli("apply", "-f", str(serverless), "--dry-run")
    assert [(s["kind"], s["name"], s["action"]) for s in ok(dry)["plan"]] == [
        ("marketplace-subscription", "all-minilm-l6-v2", "create"),
        ("serverless-endpoint", "minilm-declared", "create"),
    ]
    assert ok(cli("marketplace-subscription", "list")) == []
    assert not MarketplaceSubscription.objects.exists()
    assert ok(cli("apply", "-f", str(serverless)))["changes"] == 2
    assert Endpoint.objects.get(name="minilm-declared").provisioning_state == "Succeeded"
    again = cli("apply", "-f", str(serverless))
    assert ok(again)["changes"] == 0 and "0 to create, 0 to update, 2 unchanged" in again.stderr

    batch = EXAMPLES / "apply" / "iris-batch"
    plan = ok(cli("apply", "-f", str(batch), "--dry-run"))
    assert [(s["kind"], s["action"]) for s in plan["plan"]] == [
        ("batch-endpoint", "create"), ("batch-deployment", "create"), ("batch-defaults", "update"),
    ]
    assert not Endpoint.objects.filter(name="iris-batch-declared").exists()
    assert ok(cli("apply", "-f", str(batch)))["changes"] == 3
    endpoint = Endpoint.objects.get(name="iris-batch-declared")
    assert endpoint.defaults == {"deployment_name": "main"}
    assert endpoint.deployments.get(name="main").provisioning_state == "Succeeded"
    again = cli("apply", "-f", str(batch))
    assert ok(again)["changes"] == 0 and "0 to create, 0 to update, 2 unchanged" in again.stderr


def test_every_batch_example_scores_its_inputs(owner_cli, tmp_path, seeded_catalog):
    """examples/batch/<model>/ for each model that scores files: data, endpoint, deployment, job."""
    cli = owner_cli
    folders = sorted(p for p in (EXAMPLES / "batch").iterdir() if p.is_dir() and p.name != "iris-classifier")
    assert [f.name for f in folders] == ["all-minilm-l6-v2", "breast-cancer-onnx", "diabetes-regressor",
                                         "digits-classifier"]
    for folder in folders:
        ok(cli("data", "create", "-f", str(folder / "data.yml")))
        ok(cli("batch-endpoint", "create", "-f", str(folder / "endpoint.yml")))
        ok(cli("batch-deployment", "create", "-f", str(folder / "deployment.yml")))
        invoked = cli("batch-endpoint", "invoke", "-f", str(folder / "job.yml"))
        job = ok(invoked)
        assert job["status"] == "Completed" and job["rows_failed"] == 0 and job["rows_done"] > 0, (folder.name, job)
        out = tmp_path / folder.name
        ok(cli("job", "download", "-n", job["name"], "--output-dir", str(out)))
        lines = (out / "predictions.csv").read_text().splitlines()
        assert len(lines) == job["rows_done"] + 1, (folder.name, lines[:3])
