"""Datastores through the REST API: Azure Blob (Azurite), S3 (moto's server) and allowed local folders;
hostile paths refused; credentials never answered, never stored in clear, never logged."""

from __future__ import annotations

import io
import logging
import os
from datetime import UTC

import pytest
from django.core.management import call_command
from django.test import override_settings

from endpoints_app.models import AllowedFolder, Datastore
from tests.conftest import api_client_for
from tests.datastores.conftest import DS, WS, create

pytestmark = pytest.mark.django_db


# -- hostile local paths first ------------------------------------------------------------------------

def test_it_refuses_a_local_folder_outside_the_allowlist(owner_api, allowed_root, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    error = create(owner_api, {"name": "mine", "type": "local", "path": str(outside)}, 400)["error"]
    assert error["field"] == "path" and "not under a folder IT allows" in error["message"]
    assert not Datastore.objects.exists()


def test_it_refuses_dot_dot_out_of_an_allowed_root(owner_api, allowed_root):
    sneaky = f"{allowed_root}/../../etc"
    assert create(owner_api, {"name": "up", "type": "local", "path": sneaky}, 400)["error"]["field"] == "path"


def test_it_refuses_a_symlink_in_an_allowed_root_that_points_out(owner_api, allowed_root, tmp_path):
    target = tmp_path / "secret"
    target.mkdir()
    (allowed_root / "link").symlink_to(target)
    error = create(owner_api, {"name": "link", "type": "local", "path": str(allowed_root / "link")}, 400)["error"]
    assert "not under a folder IT allows" in error["message"]


def test_it_refuses_relative_paths_and_the_studios_data_folder(owner_api, allowed_root, settings):
    assert create(owner_api, {"name": "rel", "type": "local", "path": "shared-data"}, 400)["error"]["field"] == "path"
    AllowedFolder.objects.create(path=str(os.path.dirname(os.path.realpath(settings.DATA_DIR))))  # too wide
    error = create(owner_api, {"name": "data", "type": "local", "path": str(settings.DATA_DIR)}, 400)["error"]
    assert "overlaps the studio's own data folder" in error["message"]


def test_the_allowlist_refuses_the_data_folder_and_the_root(settings):
    from django.core.exceptions import ValidationError

    for path in (str(settings.DATA_DIR), "/", "relative/path"):
        with pytest.raises(ValidationError):
            AllowedFolder(path=path).full_clean()


def test_browse_hides_symlinks_out_and_refuses_dot_dot(owner_api, allowed_root, tmp_path):
    (allowed_root / "in").mkdir()
    (allowed_root / "in" / "a.csv").write_text("x\n1\n")
    outside = tmp_path / "outside.csv"
    outside.write_text("secret\n")
    (allowed_root / "in" / "escape.csv").symlink_to(outside)
    create(owner_api, {"name": "shared", "type": "local", "path": str(allowed_root)})
    listed = owner_api.get(f"{DS}/shared/browse", {"path": "in"}).json()
    assert [e["name"] for e in listed] == ["a.csv"]
    response = owner_api.get(f"{DS}/shared/browse", {"path": "in/../.."})
    assert response.status_code == 400 and "'..' is not allowed" in response.json()["error"]["message"]


def test_a_local_datastore_stops_when_it_leaves_the_allowlist(owner_api, allowed_root):
    (allowed_root / "a.csv").write_text("x\n1\n")
    create(owner_api, {"name": "shared", "type": "local", "path": str(allowed_root)})
    assert owner_api.get(f"{DS}/shared/browse").status_code == 200
    AllowedFolder.objects.all().delete()
    response = owner_api.get(f"{DS}/shared/browse")
    assert response.status_code == 400 and "not under a folder IT allows" in response.json()["error"]["message"]


# -- Azure Blob and S3 ----------------------------------------------------------------------------------

def test_it_creates_lists_browses_and_deletes_an_azure_blob_datastore(owner_api, azurite):
    container = azurite.container("rows")
    container.upload_blob("in/a.csv", b"x\n1\n", overwrite=True)
    container.upload_blob("top.txt", b"hi\n", overwrite=True)
    made = create(owner_api, azurite.spec("blobs", "rows", description="team data"))
    assert made["type"] == "azure_blob" and made["has_credentials"] is True
    assert made["credential_type"] == "account_key" and made["container_name"] == "rows"
    names = [d["name"] for d in owner_api.get(DS).json()]
    assert names == ["workspaceblobstore", "blobs"]
    root = owner_api.get(f"{DS}/blobs/browse").json()
    assert [(e["name"], e["type"]) for e in root] == [("in", "folder"), ("top.txt", "file")]
    inner = owner_api.get(f"{DS}/blobs/browse", {"path": "in"}).json()
    assert inner == [{"name": "a.csv", "path": "in/a.csv", "type": "file", "size": 4,
                      "uri": "azureml://datastores/blobs/paths/in/a.csv"}]
    assert owner_api.delete(f"{DS}/blobs").status_code == 204
    assert owner_api.get(f"{DS}/blobs").status_code == 404


def test_a_sas_token_works_too(owner_api, azurite):
    from datetime import datetime, timedelta

    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from tests.storage_servers import AZURITE_ACCOUNT, AZURITE_KEY

    azurite.container("sas").upload_blob("one.csv", b"x\n1\n", overwrite=True)
    sas = generate_container_sas(AZURITE_ACCOUNT, "sas", account_key=AZURITE_KEY,
                                 permission=ContainerSasPermissions(read=True, list=True, write=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    spec = azurite.spec("viasas", "sas")
    spec["credentials"] = {"sas_token": sas}
    assert create(owner_api, spec)["credential_type"] == "sas_token"
    assert [e["name"] for e in owner_api.get(f"{DS}/viasas/browse").json()] == ["one.csv"]


def test_wrong_credentials_and_missing_containers_are_clear_400s(owner_api, azurite, moto_s3):
    azurite.container("exists")
    bad_key = azurite.spec("bad", "exists")
    bad_key["credentials"] = {"account_key": "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk="}
    error = create(owner_api, bad_key, 400)["error"]
    assert error["field"] == "credentials" and "refused the credentials" in error["message"]
    error = create(owner_api, azurite.spec("nocontainer", "no-such-container"), 400)["error"]
    assert error["field"] == "container_name" and "does not exist" in error["message"]
    moto_s3.bucket("real")
    wrong = moto_s3.spec("s3bad", "real")
    wrong["credentials"]["secret_access_key"] = "not-the-secret"
    error = create(owner_api, wrong, 400)["error"]
    assert error["field"] == "credentials" and "refused the credentials" in error["message"]
    error = create(owner_api, moto_s3.spec("nobucket", "no-such-bucket"), 400)["error"]
    assert error["field"] == "bucket" and "does not exist" in error["message"]
    assert not Datastore.objects.exists()


@pytest.mark.parametrize("spec, field", [
    ({"name": "x", "type": "ftp"}, "type"),
    ({"name": "workspaceblobstore", "type": "s3", "bucket": "b"}, "name"),
    ({"name": "x", "type": "s3", "bucket": "b", "account_key": "k"}, "account_key"),
    ({"name": "x", "type": "s3", "bucket": "b", "credentials": {"account_key": "k"}}, "credentials.account_key"),
    ({"name": "x", "type": "azure_blob", "account_name": "a", "container_name": "c",
      "account_url": "ftp://host/a"}, "account_url"),
    ({"name": "bad name!", "type": "s3", "bucket": "b"}, "name"),
])
def test_bad_specs_get_400_naming_the_field(owner_api, spec, field):
    response = owner_api.post(DS, spec, format="json")
    assert response.status_code in (400, 409), response.content
    assert response.json()["error"]["field"] == field


def test_s3_datastore_with_moto(owner_api, moto_s3):
    client = moto_s3.bucket("scores")
    client.put_object(Bucket="scores", Key="2026/rows.csv", Body=b"x\n1\n2\n")
    made = create(owner_api, moto_s3.spec("bucket", "scores"))
    assert made["type"] == "s3" and made["bucket"] == "scores" and made["credential_type"] == "access_key"
    assert owner_api.get(f"{DS}/bucket/browse", {"path": "2026"}).json()[0]["size"] == 6


# -- credentials ---------------------------------------------------------------------------------------

def test_credentials_are_never_answered_stored_in_clear_or_logged(owner_api, reader, azurite, moto_s3, caplog):
    caplog.set_level(logging.DEBUG)
    azurite.container("secretive")
    moto_s3.bucket("secretive")
    create(owner_api, azurite.spec("blob", "secretive"))
    create(owner_api, moto_s3.spec("s3", "secretive"))
    owner_api.get(f"{DS}/blob/browse")
    owner_api.get(f"{DS}/s3/browse")
    secrets = [azurite.spec("x", "y")["credentials"]["account_key"], moto_s3.secret_access_key]
    reader_api = api_client_for(reader)
    answers = [owner_api.get(DS).content, owner_api.get(f"{DS}/blob").content, owner_api.get(f"{DS}/s3").content,
               reader_api.get(DS).content, reader_api.get(f"{DS}/s3").content]
    dump = io.StringIO()
    call_command("dumpdata", "endpoints_app", stdout=dump)
    for secret in secrets:
        for answer in answers:
            assert secret.encode() not in answer
        assert secret not in dump.getvalue()
        assert secret not in caplog.text
    assert reader_api.get(f"{DS}/s3").json()["has_credentials"] is True
    assert reader_api.post(DS, moto_s3.spec("mine", "secretive"), format="json").status_code == 403
    assert reader_api.delete(f"{DS}/s3").status_code == 403


def test_credentials_follow_the_secret_key_rotation(owner_api, moto_s3, settings):
    moto_s3.bucket("rotating")
    create(owner_api, moto_s3.spec("s3", "rotating"))
    old = settings.SECRET_KEY
    stored = Datastore.objects.get(name="s3").credentials_encrypted
    with override_settings(SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[old]):
        assert owner_api.get(f"{DS}/s3/browse").status_code == 200
        rotated = Datastore.objects.get(name="s3").credentials_encrypted
        assert rotated != stored  # re-encrypted under the new secret on first use
    with override_settings(SECRET_KEY="a-new-secret-key-" + "x" * 40, SECRET_KEY_FALLBACKS=[]):
        assert owner_api.get(f"{DS}/s3/browse").status_code == 200
    with override_settings(SECRET_KEY="yet-another-secret-" + "y" * 40, SECRET_KEY_FALLBACKS=[]):
        response = owner_api.get(f"{DS}/s3/browse")
        assert response.status_code == 400 and "no longer in force" in response.json()["error"]["message"]


def test_outsiders_see_no_datastores(outsider, owner_api, moto_s3):
    moto_s3.bucket("private")
    create(owner_api, moto_s3.spec("s3", "private"))
    assert api_client_for(outsider).get(DS).status_code == 404


# -- data assets that point at storage ------------------------------------------------------------------

def test_a_data_asset_can_point_at_a_datastore_path(owner_api, owner, client, azurite):
    container = azurite.container("assets")
    container.upload_blob("set/a.csv", b"x\n1\n", overwrite=True)
    container.upload_blob("set/b.csv", b"x\n2\n", overwrite=True)
    create(owner_api, azurite.spec("blobs", "assets"))
    response = owner_api.post(f"{WS}/data", {"name": "remote-rows", "type": "uri_folder",
                                             "path": "azureml://datastores/blobs/paths/set"}, format="json")
    assert response.status_code == 201, response.content
    asset = response.json()
    assert asset["uri"] == "azureml://datastores/blobs/paths/set" and asset["datastore"] == "blobs"
    assert asset["file_count"] == 2 and asset["size_bytes"] == 8
    missing = owner_api.post(f"{WS}/data", {"name": "nothing", "path": "azureml://datastores/blobs/paths/none"},
                             format="json")
    assert missing.status_code == 400 and "no file or folder" in missing.json()["error"]["message"]
    # While an asset points at it, the datastore stays.
    assert owner_api.delete(f"{DS}/blobs").status_code == 409
    # The Data page and the asset's page say where it lives.
    client.force_login(owner)
    assert "azureml://datastores/blobs/paths/set" in client.get("/data/").content.decode()
    page = client.get("/data/remote-rows/versions/1/").content.decode()
    assert 'id="asset-uri">azureml://datastores/blobs/paths/set<' in page


def test_the_builtin_datastore_names_uploaded_files_too(owner_api, batch_endpoint, make_asset):
    make_asset("rows", {"a.csv": b"sepal_length,sepal_width,petal_length,petal_width\n5,3,1,0.2\n"})
    batch_endpoint()
    browse = owner_api.get(f"{DS}/workspaceblobstore/browse", {"path": "rows/1"}).json()
    assert [e["uri"] for e in browse] == ["azureml://datastores/workspaceblobstore/paths/rows/1/a.csv"]
    response = owner_api.post(f"{WS}/batch-endpoints/scorer/jobs", {"inputs": {"input_data": {
        "type": "uri_folder", "path": "azureml://datastores/workspaceblobstore/paths/rows/1"}}}, format="json")
    assert response.status_code == 202, response.content
    assert response.json()["input_files"] == 1 and response.json()["rows_total"] == 1
    hidden = owner_api.get(f"{DS}/workspaceblobstore/browse").json()
    assert not any(e["name"].startswith(".") for e in hidden)
    assert owner_api.delete(f"{DS}/workspaceblobstore").status_code == 409
