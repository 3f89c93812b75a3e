"""The Datastores page in a real browser: add an Azure Blob datastore (Azurite) through the form,
browse into a folder and back, see each path's URI, never a credential; a Reader sees the datastore
and no form; a wrong key is shown as the form's error. Screenshots at 1400 and 1024 px."""

from __future__ import annotations

import pytest

from tests.browser.conftest import _page
from tests.storage_servers import AZURITE_ACCOUNT, AZURITE_KEY, azurite  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_add_browse_and_delete_a_blob_datastore(page, live_server, azurite, shoot, browser, reader):  # noqa: F811
    container = azurite.container("browsed")
    container.upload_blob("2026/12/rows.csv", b"a,b\n1,2\n", overwrite=True)
    container.upload_blob("readme.txt", b"hello\n", overwrite=True)
    base = live_server.url
    page.goto(f"{base}/datastores/")
    assert page.inner_text("#datastores-table tr[data-datastore=workspaceblobstore]").startswith("workspaceblobstore")
    page.click("#add-datastore summary")
    page.fill("#ds-name", "lake")
    page.select_option("#ds-type", "azure_blob")
    assert page.is_hidden("fieldset[data-type=s3]") and page.is_visible("fieldset[data-type=azure_blob]")
    page.fill("#ds-account", AZURITE_ACCOUNT)
    page.fill("#ds-container", "browsed")
    page.fill("#ds-account-url", azurite.account_url)
    page.fill("#ds-account-key", "d3Jvbmcga2V5IHdyb25nIGtleSB3cm9uZyBrZXk=")
    page.click("#add-datastore-button")
    assert "refused the credentials" in page.inner_text("#datastore-error")
    assert page.input_value("#ds-account-key") == ""  # a secret typed in is never sent back
    shoot(page, "datastores-wrong-key")
    page.fill("#ds-account-key", AZURITE_KEY)
    page.click("#add-datastore-button")
    page.wait_for_url("**/datastores/lake/")
    assert [r.get_attribute("data-entry") for r in page.query_selector_all("#browse-table tbody tr")] == [
        "2026", "readme.txt"]
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"datastore-root-{width}")
        assert page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth") <= 0
    page.click("#browse-table >> text=2026/")
    page.click("#browse-table >> text=12/")
    assert page.inner_text("#browse-uri") == "azureml://datastores/lake/paths/2026/12"
    assert "azureml://datastores/lake/paths/2026/12/rows.csv" in page.inner_text("#browse-table")
    shoot(page, "datastore-folder")
    page.click("#browse-crumbs >> text=2026")
    assert page.inner_text("#browse-uri") == "azureml://datastores/lake/paths/2026"
    page.goto(f"{base}/datastores/")
    assert AZURITE_KEY not in page.content()
    shoot(page, "datastores-list")

    context, as_reader = _page(browser, live_server, reader, javascript=True)
    as_reader.goto(f"{base}/datastores/")
    assert "lake" in as_reader.inner_text("#datastores-table") and as_reader.query_selector("#add-datastore") is None
    as_reader.goto(f"{base}/datastores/lake/")
    assert as_reader.query_selector("#delete-datastore") is None and AZURITE_KEY not in as_reader.content()
    context.close()

    page.goto(f"{base}/datastores/lake/")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-datastore")
    page.wait_for_url("**/datastores/")
    assert "lake" not in page.inner_text("#datastores-table")




def test_an_asset_in_a_datastore_and_a_score_py_s_output_files_on_their_pages(page, live_server, live_worker,
                                                                              owner_api, workspace, tmp_path, shoot):
    from endpoints_app.models import AllowedFolder
    from tests.datastores.conftest import OUTPUT_FOLDER_SCORE
    from tests.live import make_custom_model, wait_for

    root = tmp_path / "shared"
    (root / "in").mkdir(parents=True)
    for name in ("north", "south"):
        (root / "in" / f"{name}.csv").write_text(f"x\n{name}\n")
    AllowedFolder.objects.create(path=str(root))
    ws = "/api/v1/workspaces/team"
    assert owner_api.post(f"{ws}/datastores", {"name": "shared", "type": "local", "path": str(root)},
                          format="json").status_code == 201
    assert owner_api.post(f"{ws}/data", {"name": "regions", "type": "uri_folder",
                                         "path": "azureml://datastores/shared/paths/in"},
                          format="json").status_code == 201
    model = make_custom_model(workspace, tmp_path / "code", name="charts", source=OUTPUT_FOLDER_SCORE)
    assert owner_api.post(f"{ws}/batch-endpoints", {"name": "charts"}, format="json").status_code == 201
    assert owner_api.post(f"{ws}/batch-endpoints/charts/deployments", {
        "name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
        "settings": {"mini_batch_size": 1}}, format="json").status_code == 201
    base = live_server.url

    page.goto(f"{base}/data/")
    assert "azureml://datastores/shared/paths/in" in page.inner_text("body")
    page.click("text=regions")
    assert page.inner_text("#asset-uri") == "azureml://datastores/shared/paths/in"
    assert "stay in datastore shared" in page.inner_text("#asset-files-elsewhere")
    assert page.query_selector("#files-table") is None  # no empty upload listing for files kept elsewhere
    shoot(page, "data-asset-in-a-datastore")
    page.click("#asset-files-elsewhere >> text=shared")
    page.wait_for_url("**/datastores/shared/**")
    assert [r.get_attribute("data-entry") for r in page.query_selector_all("#browse-table tbody tr")] == [
        "in/north.csv", "in/south.csv"]
    assert page.inner_text("#browse-uri") == "azureml://datastores/shared/paths/in"
    shoot(page, "datastore-browsed-from-an-asset")

    job = owner_api.post(f"{ws}/batch-endpoints/charts/jobs", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml:regions:1"}}}, format="json").json()
    wait_for(lambda: owner_api.get(f"{ws}/batch-endpoints/charts/jobs/{job['name']}").json()["status"]
             in ("Completed", "Failed"), timeout=90, what=f"job {job['name']} ended")
    page.goto(f"{base}/jobs/{job['name']}/")
    files = page.inner_text("#job-output-files")
    assert "by-file/north.txt" in files and "by-file/south.txt" in files, files
    shoot(page, "job-with-score-py-output-files")
    with page.expect_download() as download:
        page.click("#job-output-files >> text=by-file/south.txt")
    assert open(download.value.path()).read() == "X\nSOUTH\n"
