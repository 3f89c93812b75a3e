"""`studio datastore create|show|list|browse|delete` from YAML files as the cloud CLI writes them,
`studio data create` pointing at a datastore path, and `studio batch-endpoint invoke --input
azureml://datastores/... --set outputs.score.path=...` then `studio job download`, against a real
web process, worker and model servers, with Azurite and moto's S3 server."""

from __future__ import annotations

import csv
import io

import pytest

from tests.batch.conftest import iris_csv
from tests.cli.conftest import live_web, owner_cli, seeded_catalog  # noqa: F401, F811
from tests.datastores.conftest import OUTPUT_FOLDER_SCORE, batch_endpoint  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def fails(result, code: int = 1) -> str:
    assert result.returncode == code, (result.stdout, result.stderr)
    return result.stderr


def test_the_datastore_commands_and_a_job_between_two_stores(owner_cli, tmp_path, azurite, moto_s3,  # noqa: F811
                                                             batch_endpoint):  # noqa: F811
    from tests.cli.conftest import ok

    cli = owner_cli
    container = azurite.container("cli-in")
    container.upload_blob("rows/a.csv", iris_csv(15, seed=1), overwrite=True)
    container.upload_blob("rows/b.csv", iris_csv(5, seed=2), overwrite=True)
    s3 = moto_s3.bucket("cli-out")
    (tmp_path / "blob.yml").write_text(
        "$schema: https://azuremlschemas.azureedge.net/latest/azureBlob.schema.json\n"
        "name: inputs\ntype: azure_blob\ndescription: rows to score\n"
        f"account_name: devstoreaccount1\ncontainer_name: cli-in\naccount_url: {azurite.account_url}\n"
        f"credentials:\n  account_key: {azurite.spec('x', 'y')['credentials']['account_key']}\n")
    (tmp_path / "s3.yml").write_text(
        f"name: results\ntype: s3\nbucket: cli-out\nendpoint_url: {moto_s3.endpoint_url}\nregion: us-east-1\n"
        f"credentials:\n  access_key_id: {moto_s3.access_key_id}\n  secret_access_key: {moto_s3.secret_access_key}\n")
    made = ok(cli("datastore", "create", "-f", "blob.yml"))
    assert made["name"] == "inputs" and made["has_credentials"] and "credentials" not in made
    assert moto_s3.secret_access_key not in cli("datastore", "create", "-f", "s3.yml").stdout
    assert [d["name"] for d in ok(cli("datastore", "list"))] == ["workspaceblobstore", "inputs", "results"]
    assert "results" in cli("datastore", "list", "-o", "table").stdout
    assert ok(cli("datastore", "show", "-n", "results"))["bucket"] == "cli-out"
    assert [e["name"] for e in ok(cli("datastore", "browse", "-n", "inputs", "--path", "rows"))] == ["a.csv", "b.csv"]
    # A spec with a field the type does not have: exit 2 (spec) or 1 (API), naming it.
    (tmp_path / "bad.yml").write_text("name: bad\ntype: s3\nbucket: b\ncontainer_name: c\n")
    assert "container_name" in fails(cli("datastore", "create", "-f", "bad.yml"))

    asset = ok(cli("data", "create", "-n", "remote-rows", "--path", "azureml://datastores/inputs/paths/rows"))
    assert asset["uri"] == "azureml://datastores/inputs/paths/rows" and asset["file_count"] == 2

    batch_endpoint()
    job = ok(cli("batch-endpoint", "invoke", "-n", "scorer", "--input", "azureml://datastores/inputs/paths/rows",
                 "--set", "outputs.score.path=azureml://datastores/results/paths/scores/",
                 "--set", "outputs.score.type=uri_folder"))
    assert job["status"] == "Completed", job
    assert job["output_uri"] == "azureml://datastores/results/paths/scores/predictions.csv"
    stored = s3.get_object(Bucket="cli-out", Key="scores/predictions.csv")["Body"].read().decode()
    assert len(list(csv.DictReader(io.StringIO(stored)))) == 20
    ok(cli("job", "download", "-n", job["name"], "-p", "out"))
    assert (tmp_path / "out" / "predictions.csv").read_text() == stored
    # The data asset that points at the Blob container is a job input too.
    again = ok(cli("batch-endpoint", "invoke", "-n", "scorer", "--input", "azureml:remote-rows:1"))
    assert again["status"] == "Completed" and again["rows_done"] == 20

    assert "points at datastore" in fails(cli("datastore", "delete", "-n", "inputs", "--yes"))
    assert ok(cli("datastore", "delete", "-n", "results", "--yes")) == {"name": "results", "deleted": True}
    assert "No datastore 'results'" in fails(cli("datastore", "show", "-n", "results"))


@pytest.mark.parametrize(("text", "path", "line", "words"), [
    ("name: d\ntype: s3\nbucket: b\ncontainer: c\n", "container", 4, "unknown field"),
    ("name: d\ntype: ftp\n", "type", 2, "azure_blob, s3, local"),
    ("name: d\ntype: s3\ncredentials:\n  password: x\n", "credentials.password", 4, "unknown field"),
    ("type: s3\nbucket: b\n", "name", 1, "is required"),
])
def test_a_broken_datastore_spec_exits_2_naming_the_field_and_line(tmp_path, text, path, line, words):
    from tests.cli.test_specs import studio

    (tmp_path / "ds.yml").write_text(text)
    result = studio(tmp_path, "datastore", "create", "-f", "ds.yml")
    assert result.returncode == 2, result.stderr
    assert f"ds.yml:{line}: {path}:" in result.stderr and words in result.stderr, result.stderr




def test_job_download_fetches_the_files_a_score_py_wrote_with_their_folders(owner_cli, owner_api, workspace,  # noqa: F811
                                                                            tmp_path, allowed_root):
    from tests.cli.conftest import ok
    from tests.live import make_custom_model

    (allowed_root / "in").mkdir()
    for name in ("a", "b"):
        (allowed_root / "in" / f"{name}.csv").write_text(f"x\n{name}\n")
    ok(owner_cli("datastore", "create", "--set", "name=shared", "--set", "type=local",
                 "--set", f"path={allowed_root}"))
    model = make_custom_model(workspace, tmp_path / "code", name="writer", source=OUTPUT_FOLDER_SCORE)
    assert owner_api.post("/api/v1/workspaces/team/batch-endpoints", {"name": "writer"},
                          format="json").status_code == 201
    # A deployment.yml as the cloud CLI writes it: an unknown compute is refused naming it, the nesting is read.
    deployment = ("$schema: https://azuremlschemas.azureedge.net/latest/modelBatchDeployment.schema.json\n"
                  f"endpoint_name: writer\nname: blue\ntype: model\nmodel: azureml:{model.name}:1\n"
                  "instance_type: Standard_DS1_v2\nresources:\n  instance_count: 1\n"
                  "settings:\n  mini_batch_size: 1\n  output_action: summary_only\n  logging_level: info\n"
                  "  retry_settings:\n    max_retries: 2\n    timeout: 60\n")
    (tmp_path / "deployment.yml").write_text(deployment + "compute: azureml:batch-cluster\n")
    assert "No compute 'azureml:batch-cluster'" in fails(owner_cli("batch-deployment", "create", "-f",
                                                                   "deployment.yml"))
    (tmp_path / "deployment.yml").write_text(deployment)
    made = ok(owner_cli("batch-deployment", "create", "-f", "deployment.yml"))
    assert made["mini_batch_size"] == 1 and made["retry_settings"] == {"max_retries": 2, "timeout": 60}, made
    assert made["logging_level"] == "info" and made["output_action"] == "summary_only"
    job = ok(owner_cli("batch-endpoint", "invoke", "-n", "writer", "--input", "azureml://datastores/shared/paths/in",
                       "--set", "outputs.score.path=azureml://datastores/shared/paths/out",
                       "--set", "outputs.score.type=uri_folder"))
    assert job["status"] == "Completed", job
    # summary_only: no merged file, the score.py's files only, in the job and in the datastore's folder.
    assert sorted(job["outputs"]) == ["by-file/a.txt", "by-file/b.txt"]
    assert sorted(p.name for p in (allowed_root / "out" / "by-file").iterdir()) == ["a.txt", "b.txt"]
    assert not (allowed_root / "out" / "predictions.csv").exists()
    got = ok(owner_cli("job", "download", "-n", job["name"], "-p", "fetched"))
    assert sorted(got["downloaded"]) == ["fetched/by-file/a.txt", "fetched/by-file/b.txt"]
    assert (tmp_path / "fetched" / "by-file" / "b.txt").read_text() == "X\nB\n"
