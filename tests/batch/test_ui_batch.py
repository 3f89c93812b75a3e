"""The batch UI through the Django client: the Batch tab, the create form the catalog's Batch
buttons lead to, a batch endpoint's page (default switch, Invoke), the Jobs page and a job's page,
and the Data page. Jobs here stay Queued (no worker); tests/browser/test_batch_browser.py runs
them to the end with a real worker."""

import re

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints_app.models import AuditLog, BatchJob, DataAsset, Endpoint
from tests.batch.conftest import iris_csv

HX = {"HTTP_HX_REQUEST": "true"}

pytestmark = pytest.mark.django_db


def create_form(client, iris, **fields):
    data = {"endpoint_name": "scorer", "name": "blue", "model": iris.asset_id, "instance_type": "Standard_DS1_v2",
            "instance_count": "1", "mini_batch_size": "2", "max_concurrency_per_instance": "1",
            "error_threshold": "-1", "max_retries": "3", "timeout": "30", "output_action": "append_row",
            "output_file_name": "predictions.csv", **fields}
    return client.post("/endpoints/new/batch/", data)


@pytest.fixture
def scorer(owner_client, node, iris):
    response = create_form(owner_client, iris)
    assert response.status_code == 302, response.content.decode()[:2000]
    return Endpoint.objects.get(name="scorer")


def test_it_leads_the_catalogs_batch_button_to_a_working_create_form(owner_client, node, iris):
    page = owner_client.get(f"/catalog/{iris.name}/").content.decode()
    href = re.search(r'href="([^"]+)" data-kind="batch"', page).group(1).replace("&amp;", "&")
    assert href.startswith("/endpoints/new/batch/?model=")

    form = owner_client.get(href).content.decode()
    assert f'value="{iris.asset_id}" selected' in form

    response = create_form(owner_client, iris)
    assert response.status_code == 302 and response["Location"] == "/endpoints/scorer/"
    endpoint = Endpoint.objects.get(name="scorer")
    assert endpoint.kind == "batch" and endpoint.defaults == {"deployment_name": "blue"}
    assert endpoint.deployments.get().batch_settings["mini_batch_size"] == 2
    page = owner_client.get("/endpoints/scorer/").content.decode()
    assert 'id="default-deployment">blue<' in page and 'data-deployment="blue"' in page


def test_the_create_form_offers_ray_computes_and_makes_a_deployment_on_one(owner_client, node, iris):
    from endpoints_app.models import Compute
    from endpoints_app.services.computes import ray_backend_available

    if not ray_backend_available():
        pytest.skip("this studio has no Ray backend: a Ray compute is no choice")
    Compute.objects.create(name="cluster", type="ray", address="10.0.0.5:6379", state="Ready")
    form = owner_client.get(f"/endpoints/new/batch/?model={iris.asset_id}").content.decode()
    assert '<option value="cluster"' in form and '<option value="local"' in form
    response = create_form(owner_client, iris, compute="cluster")
    assert response.status_code == 302, response.content.decode()[:2000]
    assert Endpoint.objects.get(name="scorer").deployments.get().compute.name == "cluster"


def test_it_refuses_a_bad_deployment_naming_the_field_and_leaves_no_endpoint(owner_client, node, iris):
    response = create_form(owner_client, iris, mini_batch_size="0")

    assert response.status_code == 400
    assert "mini_batch_size" in response.content.decode()
    assert not Endpoint.objects.filter(name="scorer").exists()
    assert not AuditLog.objects.filter(action="endpoint.create").exists()


def test_it_lists_batch_endpoints_on_the_batch_tab(owner_client, scorer):
    html = owner_client.get("/endpoints/?kind=batch").content.decode()
    assert "coming" not in html
    assert 'data-endpoint="scorer"' in html and "blue (default)" in html
    assert 'href="/endpoints/new/batch/"' in html


def test_it_switches_the_default_deployment(owner_client, scorer, iris):
    data = {"name": "green", "model": iris.asset_id, "instance_type": "Standard_DS1_v2"}
    assert owner_client.post("/endpoints/scorer/batch/deployments/", data).status_code == 302

    response = owner_client.post("/endpoints/scorer/batch/default/", {"deployment_name": "green"})

    assert response.status_code == 302
    scorer.refresh_from_db()
    assert scorer.defaults == {"deployment_name": "green"}
    bad = owner_client.post("/endpoints/scorer/batch/default/", {"deployment_name": "nope"})
    assert bad.status_code == 400 and "no deployment" in bad.content.decode()


def test_it_invokes_on_uploaded_files_and_shows_the_job_polling(owner_client, scorer):
    files = [SimpleUploadedFile("a.csv", iris_csv(5)), SimpleUploadedFile("b.csv", iris_csv(3, seed=1))]

    response = owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "upload", "asset_name": "rows",
                                                                     "files": files})

    job = BatchJob.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/jobs/{job.name}/"
    assert job.input_asset == DataAsset.objects.get(name="rows") and job.rows_total == 8
    page = owner_client.get(f"/jobs/{job.name}/").content.decode()
    assert 'id="job-status">Queued<' in page and 'hx-trigger="every 1s"' in page
    assert 'id="cancel-job"' in page and "download-output" not in page
    partial = owner_client.get(f"/jobs/{job.name}/", **HX).content.decode()
    assert partial.lstrip().startswith('<section id="job-live"')


def test_it_names_the_problem_when_an_asset_has_the_wrong_columns(owner_client, scorer, make_asset):
    asset = make_asset("wrong", {"x.csv": iris_csv(3, columns=["a", "b", "c", "d"])})

    response = owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})

    assert response.status_code == 400
    assert "missing columns" in response.content.decode()
    assert not BatchJob.objects.exists()


def test_it_cancels_a_job_and_stops_polling(owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    job = BatchJob.objects.get()

    partial = owner_client.post(f"/jobs/{job.name}/cancel/", **HX).content.decode()

    job.refresh_from_db()
    assert job.status == "Canceled"
    assert 'id="job-status">Canceled<' in partial and "every 1s" not in partial
    assert owner_client.get(f"/jobs/{job.name}/outputs/predictions.csv").status_code == 404


def test_it_filters_jobs_by_state_and_endpoint(owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    for _ in range(2):
        owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    first, second = BatchJob.objects.order_by("created_at")
    owner_client.post(f"/jobs/{first.name}/cancel/")

    canceled = owner_client.get("/jobs/?status=Canceled", **HX).content.decode()
    queued = owner_client.get("/jobs/?status=Queued&endpoint=scorer").content.decode()
    other = owner_client.get("/jobs/?endpoint=elsewhere").content.decode()

    assert canceled.lstrip().startswith('<section id="job-rows"')
    assert f'data-job="{first.name}"' in canceled and f'data-job="{second.name}"' not in canceled
    assert f'data-job="{second.name}"' in queued and f'data-job="{first.name}"' not in queued
    assert "No jobs match" in other


def test_readers_see_jobs_but_cannot_invoke_or_cancel(client, reader, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    client.force_login(reader)
    page = client.get("/endpoints/scorer/").content.decode()
    assert "Invoking needs the Contributor role" in page
    assert client.post("/endpoints/scorer/batch/invoke/", {"asset": asset["id"]}).status_code == 403
    assert not BatchJob.objects.exists()


def test_outsiders_get_404_for_jobs_and_assets(client, outsider, owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    job = BatchJob.objects.get()
    client.force_login(outsider)
    assert client.get(f"/jobs/{job.name}/").status_code == 404
    assert client.get(f"/jobs/{job.name}/logs/").status_code == 404
    assert client.post(f"/jobs/{job.name}/cancel/").status_code == 404


def test_it_uploads_many_files_and_previews_a_csv(owner_client, workspace):
    files = [SimpleUploadedFile("a.csv", iris_csv(30)), SimpleUploadedFile("b.csv", iris_csv(2, seed=3))]

    response = owner_client.post("/data/upload/", {"name": "rows", "files": files})

    assert response.status_code == 302 and response["Location"] == "/data/rows/versions/1/"
    listing = owner_client.get("/data/").content.decode()
    row = re.search(r'<tr data-asset="rows:1">.*?</tr>', listing, re.S).group(0)
    assert ">2<" in row and "studio:data/rows/versions/1" in row
    page = owner_client.get("/data/rows/versions/1/").content.decode()
    assert "<th>sepal_length</th>" in page and page.count("<tr>") >= 20  # header + 20 preview rows
    assert "The first 20 rows" in page
    other = owner_client.get("/data/rows/versions/1/?file=b.csv").content.decode()
    assert "Preview: b.csv" in other and "The first 2 rows" in other


def test_it_refuses_an_upload_without_files_naming_the_problem(owner_client, workspace):
    response = owner_client.post("/data/upload/", {"name": "rows"})
    assert response.status_code == 400 and "at least one file" in response.content.decode()
    assert not DataAsset.objects.exists()


def test_it_shows_keys_for_the_scoring_uri_to_contributors_only(owner_client, client, reader, scorer):
    from endpoints_app.services import keys as key_svc

    page = owner_client.get("/endpoints/scorer/").content.decode()
    assert "/inference/scorer/jobs" in page and 'id="reveal-credentials"' in page
    assert key_svc.get_keys(scorer)["primary_key"] not in page

    partial = owner_client.post("/endpoints/scorer/batch/credentials/", **HX).content.decode()

    assert partial.lstrip().startswith('<section class="card" id="consume"')
    assert key_svc.get_keys(scorer)["primary_key"] in partial
    client.force_login(reader)
    assert client.post("/endpoints/scorer/batch/credentials/").status_code == 403


def test_the_jobs_page_query_count_does_not_grow_with_jobs(owner_client, scorer, make_asset):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    asset = make_asset("rows", {"a.csv": iris_csv(4)})

    def queries() -> int:
        owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
        with CaptureQueriesContext(connection) as captured:
            assert owner_client.get("/jobs/").status_code == 200
        return len(captured)

    first = queries()
    for _ in range(3):
        queries()
    assert queries() == first


def test_the_sidebar_leads_to_jobs_and_data(owner_client, workspace):
    html = owner_client.get("/").content.decode()
    nav = re.search(r'<nav class="sidenav".*?</nav>', html, re.S).group(0)
    assert 'href="/jobs/"' in nav and 'href="/data/"' in nav
    assert owner_client.get("/jobs/").status_code == 200 and owner_client.get("/data/").status_code == 200


def test_the_usage_page_lists_the_months_jobs_with_their_cost(owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    job = BatchJob.objects.get()

    html = owner_client.get("/usage/").content.decode()

    row = re.search(rf'<tr data-job="{job.name}">.*?</tr>', html, re.S).group(0)
    assert f'href="/jobs/{job.name}/"' in row and "scorer" in row and "$0.0000" in row


def test_the_online_wizard_sends_batch_deployments_to_the_batch_form(owner_client, node, iris):
    html = owner_client.get("/endpoints/new/", {"kind": "batch", "model": iris.asset_id}).content.decode()
    assert "coming" not in html and 'href="/endpoints/new/batch/?model=studio%3A//registries/' in html


def test_jobs_of_a_deleted_endpoint_stay_listed_without_a_dead_link(owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    job = BatchJob.objects.get()

    assert owner_client.post("/endpoints/scorer/batch/delete/").status_code == 302

    job.refresh_from_db()
    assert job.status == "Canceled"
    listing = owner_client.get("/jobs/").content.decode()
    page = owner_client.get(f"/jobs/{job.name}/").content.decode()
    assert f'data-job="{job.name}"' in listing and "scorer <span" in listing
    assert 'href="/endpoints/scorer/"' not in listing and 'href="/endpoints/scorer/"' not in page


def test_the_endpoint_pages_jobs_poll_while_a_job_runs(owner_client, scorer, make_asset):
    asset = make_asset("rows", {"a.csv": iris_csv(4)})
    assert 'hx-trigger="every 2s"' not in owner_client.get("/endpoints/scorer/").content.decode()
    owner_client.post("/endpoints/scorer/batch/invoke/", {"source": "asset", "asset": asset["id"]})
    job = BatchJob.objects.get()

    page = owner_client.get("/endpoints/scorer/").content.decode()
    partial = owner_client.get("/endpoints/scorer/", **HX).content.decode()

    assert 'id="endpoint-jobs" hx-get="/endpoints/scorer/" hx-trigger="every 2s"' in page
    assert partial.lstrip().startswith('<section id="endpoint-jobs"') and f'data-job="{job.name}"' in partial
