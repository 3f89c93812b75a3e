"""Data assets through the API: versioned uploads, list and get with size and file count, a
preview of the first rows, upload limits, and roles."""

from pathlib import Path

import pytest
from django.test import override_settings

from endpoints_app.models import DataAsset, datastore_root
from tests.batch.conftest import WS, iris_csv, upload

pytestmark = pytest.mark.django_db


def test_it_stores_files_as_versioned_assets(owner_api, make_asset):
    first = make_asset("iris-rows", {"a.csv": iris_csv(5), "b.csv": iris_csv(7, seed=1)})
    assert first["id"] == "studio:data/iris-rows/versions/1"
    assert first["type"] == "uri_folder" and first["file_count"] == 2
    assert first["size_bytes"] == len(iris_csv(5)) + len(iris_csv(7, seed=1))
    second = make_asset("iris-rows", {"c.csv": iris_csv(3)})
    assert second["id"] == "studio:data/iris-rows/versions/2"

    folder = datastore_root() / "team" / "iris-rows" / "1"
    assert sorted(p.name for p in folder.iterdir()) == ["a.csv", "b.csv"]
    assert (folder / "a.csv").read_bytes() == iris_csv(5)

    listed = owner_api.get(f"{WS}/data").json()
    assert [(a["name"], a["version"], a["file_count"]) for a in listed] == [("iris-rows", 2, 1), ("iris-rows", 1, 2)]
    assert owner_api.get(f"{WS}/data/iris-rows").json()["version"] == 2
    assert owner_api.get(f"{WS}/data/iris-rows/versions/1").json()["file_count"] == 2
    assert owner_api.get(f"{WS}/data/iris-rows/versions/9").status_code == 404


def test_it_previews_the_first_rows_of_a_csv(owner_api, make_asset):
    make_asset("iris-rows", {"a.csv": iris_csv(30)})
    preview = owner_api.get(f"{WS}/data/iris-rows/versions/1/preview?rows=5").json()
    assert preview["file"] == "a.csv"
    assert preview["columns"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert len(preview["rows"]) == 5 and len(preview["rows"][0]) == 4


def test_it_refuses_uploads_over_the_limit_and_leaves_nothing(owner_api):
    with override_settings(STUDIO_MAX_UPLOAD_BYTES=1000):
        response = upload(owner_api, "big", {"a.csv": iris_csv(20), "b.csv": iris_csv(200)})
    assert response.status_code == 413, response.content
    assert response.json()["error"]["field"] == "files"
    assert not DataAsset.objects.exists()
    assert not (datastore_root() / "team" / "big").exists()
    staging = datastore_root() / ".staging"
    assert not staging.exists() or not any(staging.iterdir())


@pytest.mark.parametrize(
    ("name", "files", "field"),
    [("", {"a.csv": b"x\n"}, "name"), ("bad/name", {"a.csv": b"x\n"}, "name"), ("ok", {}, "files")],
)
def test_it_names_the_field_of_a_bad_upload(owner_api, name, files, field):
    response = upload(owner_api, name, files)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not DataAsset.objects.exists()


def test_it_checks_roles(reader_api, outsider_api, make_asset):
    make_asset("iris-rows", {"a.csv": iris_csv(3)})
    assert upload(reader_api, "mine", {"a.csv": iris_csv(3)}).status_code == 403
    assert reader_api.get(f"{WS}/data").status_code == 200
    assert outsider_api.get(f"{WS}/data").status_code == 404
    assert outsider_api.get(f"{WS}/data/iris-rows").status_code == 404
    assert Path(datastore_root()).exists()
