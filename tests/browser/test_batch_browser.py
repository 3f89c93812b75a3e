"""Batch scoring in a real browser with a real worker and real model servers: from the
catalog's Batch button to a batch endpoint, upload CSV files and invoke, watch the job's
progress reach 100%, download predictions.csv; then every link of the Batch pages leads to a
page, never to an error page. Screenshots of every page at 1400 and 1024 px."""

from __future__ import annotations

import csv
import io
import random
from urllib.parse import urljoin, urlparse

import pytest

from endpoints_app.catalog.cards import IRIS_COLUMNS
from endpoints_app.models import BatchJob, CatalogModel

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WIDTHS = (1400, 1024)
FILES = {"a.csv": 40, "b.csv": 25, "c.csv": 7}


def iris_rows(rows: int, seed: int, bad_row: bool = False) -> str:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(IRIS_COLUMNS)
    for _ in range(rows):
        writer.writerow([round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1), round(rng.uniform(1, 7), 1),
                         round(rng.uniform(0.1, 2.5), 1)])
    if bad_row:
        writer.writerow(["not a number", 1, 1, 1])
    return out.getvalue()


@pytest.fixture
def iris(db):
    from endpoints_app.catalog.seed import seed_catalog

    seed_catalog()
    return CatalogModel.objects.get(registry="studio", name="iris-classifier")


def shoot_widths(page, shoot, name: str) -> None:
    """A screenshot at each width; the page must not scroll sideways at either."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"batch-{name}-{width}")
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, f"{name} scrolls sideways by {overflow}px at {width}px"
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def create_endpoint_from_catalog(page, base: str, iris, name: str, mini_batch_size: str = "1",
                                 max_retries: str = "3") -> None:
    page.goto(f"{base}/catalog/{iris.name}/")
    page.click("#deploy a[data-kind=batch]")
    page.wait_for_url("**/endpoints/new/batch/**")
    assert page.input_value("#dep-model") == iris.asset_id
    page.fill("#endpoint-name", name)
    page.fill("#dep-mbs", mini_batch_size)
    page.fill("#dep-retries", max_retries)
    page.click("form.form-card button.primary")
    page.wait_for_url(f"**/endpoints/{name}/")


def invoke_with_uploads(page, tmp_path, files: dict[str, str], asset_name: str) -> str:
    paths = []
    for file_name, body in files.items():
        path = tmp_path / file_name
        path.write_text(body)
        paths.append(str(path))
    page.check("input[name=source][value=upload]")
    page.set_input_files("#invoke-files", paths)
    page.fill("#invoke-asset-name", asset_name)
    page.click("#invoke-button")
    page.wait_for_url("**/jobs/*/")
    return page.url.rstrip("/").rsplit("/", 1)[-1]


def test_upload_invoke_watch_progress_and_download_predictions(page, live_server, live_worker, iris, tmp_path,
                                                               shoot):
    base = live_server.url
    create_endpoint_from_catalog(page, base, iris, "iris-batch")
    assert page.inner_text("#default-deployment") == "blue"
    shoot_widths(page, shoot, "endpoint")

    files = {name: iris_rows(rows, seed) for seed, (name, rows) in enumerate(FILES.items())}
    job_name = invoke_with_uploads(page, tmp_path, files, "iris-rows")
    assert page.get_attribute("#job-live", "data-polling") == "true"
    shoot(page, "batch-job-running")

    # The page polls itself; progress climbs to 100% and the polling stops.
    page.wait_for_function("document.querySelector('#job-status')?.textContent === 'Completed'", timeout=180_000)
    assert page.inner_text("#job-percent") == "100.0%"
    total = sum(FILES.values())
    assert page.inner_text("#job-rows") == f"{total} / {total}"
    assert page.inner_text("#job-mini-batches") == "3 / 0 / 3"
    assert page.get_attribute("#job-live", "data-polling") is None
    shoot_widths(page, shoot, "job-completed")

    with page.expect_download() as info:
        page.click("#download-output")
    download = info.value
    assert download.suggested_filename == "predictions.csv"
    rows = list(csv.DictReader(open(download.path(), newline="")))
    assert len(rows) == total
    # Every input row exactly once, by file and row number, each with a species.
    assert {(r["file"], int(r["row"])) for r in rows} == {(f, i) for f, n in FILES.items() for i in range(n)}
    assert {r["prediction"] for r in rows} <= {"setosa", "versicolor", "virginica", "0", "1", "2"}, rows[:3]

    job = BatchJob.objects.get(name=job_name)
    assert job.status == "Completed" and job.rows_done == total
    for path, name in (("/jobs/?endpoint=iris-batch", "jobs"), ("/data/", "data"),
                       ("/data/iris-rows/versions/1/", "asset"), ("/endpoints/?kind=batch", "batch-tab"),
                       (f"/jobs/{job_name}/logs/", "job-log"), ("/endpoints/new/batch/", "create"),
                       ("/usage/", "usage")):
        page.goto(base + path)
        shoot_widths(page, shoot, name)


def test_every_link_of_the_batch_pages_leads_to_a_page(page, live_server, live_worker, iris, tmp_path, shoot):
    base = live_server.url
    create_endpoint_from_catalog(page, base, iris, "iris-links", mini_batch_size="1", max_retries="0")
    # Upload on the Data page, see the preview, then invoke on the asset.
    paths = []
    for file_name, body in {"good.csv": iris_rows(5, 1), "bad.csv": iris_rows(3, 2, bad_row=True)}.items():
        (tmp_path / file_name).write_text(body)
        paths.append(str(tmp_path / file_name))
    page.goto(f"{base}/data/")
    page.fill("#asset-name", "mixed")
    page.set_input_files("#asset-files", paths)
    page.click("#upload-button")
    page.wait_for_url("**/data/mixed/versions/1/")
    assert page.inner_text("#preview-table thead").lower().split() == IRIS_COLUMNS
    # The first file by name is previewed: bad.csv, its 3 rows and the bad one.
    assert len(page.query_selector_all("#preview-table tbody tr")) == 3 + 1
    assert "not a number" in page.inner_text("#preview-table")
    page.goto(f"{base}/endpoints/iris-links/")
    page.check("input[name=source][value=asset]")
    page.select_option("#invoke-asset", "studio:data/mixed/versions/1")
    page.click("#invoke-button")
    page.wait_for_url("**/jobs/*/")
    job_name = page.url.rstrip("/").rsplit("/", 1)[-1]
    page.wait_for_function(
        "['Completed', 'Failed'].includes(document.querySelector('#job-status')?.textContent)", timeout=180_000
    )
    page.wait_for_selector("#failures-table")
    assert "bad.csv" in page.inner_text("#failures-table") and "good.csv" not in page.inner_text("#failures-table")
    assert page.inner_text("#job-mini-batches") == "1 / 1 / 2"
    shoot_widths(page, shoot, "job-with-failures")

    start = ["/endpoints/?kind=batch", "/endpoints/iris-links/", "/jobs/", f"/jobs/{job_name}/", "/data/",
             "/data/mixed/versions/1/", f"/jobs/{job_name}/logs/"]
    batch_area = ("/endpoints/iris-links/", "/jobs/", "/data/", "/endpoints/?kind=batch")
    seen: set[str] = set()
    queue = list(start)
    visited = 0
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        response = page.request.get(base + path)
        body = response.text() if "text/html" in response.headers.get("content-type", "") else ""
        assert response.status < 400, (path, response.status)
        assert "Traceback" not in body, path
        visited += 1
        if not body or not path.startswith(batch_area):
            continue  # follow the links of the Batch pages only, not of every page they lead to
        page.goto(base + path)
        for href in page.eval_on_selector_all("a[href]", "els => els.map(e => e.getAttribute('href'))"):
            target = urlparse(urljoin(base + path, href))
            if target.netloc != urlparse(base).netloc or href.startswith("#"):
                continue
            link = target.path + (f"?{target.query}" if target.query else "")
            if link.startswith(("/admin/", "/api/docs")) or link in seen:
                continue
            queue.append(link)
    assert visited >= 15, seen
