"""The data dir's disk full during an upload (a clear 507) and during a batch job (the job says so and waits):
nothing half-written, and the work goes on once space is freed. The disk is a real one: a small tmpfs
mounted for the test (skipped where mounting is not allowed)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings

from bench.faults import wait_until
from endpoints_app.models import BatchJob, DataAsset, datastore_root
from tests.batch.conftest import iris_csv, upload

pytestmark = pytest.mark.django_db


@contextmanager
def mounted_small_disk(mount: Path):
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
        shutil.rmtree(mount, ignore_errors=True)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as out, pytest.raises(OSError):
        while True:
            out.write(b"\0" * 65536)
    return filler


@pytest.fixture
def small_disk():
    with mounted_small_disk(Path(settings.DATA_DIR) / f"small-disk-{uuid.uuid4().hex[:8]}") as mount, \
            override_settings(DATA_DIR=mount):
        yield mount


def test_an_upload_to_a_full_disk_answers_507_leaves_nothing_and_works_once_space_returns(owner_api, small_disk):
    big = iris_csv(80_000)  # about 1.4 MB: more than the disk holds
    assert len(big) > 1024 * 1024

    response = upload(owner_api, "rows", {"a.csv": iris_csv(10), "b.csv": big})

    assert response.status_code == 507, response.content
    assert response.json()["error"]["code"] == "InsufficientStorage"
    assert "storage is full" in response.json()["error"]["message"]
    assert not DataAsset.objects.exists()
    staging = datastore_root() / ".staging"
    assert not (datastore_root() / "team").exists()
    assert not staging.exists() or not any(staging.iterdir())

    # Another writer filled the disk: a small upload fails alike, and succeeds once that space is freed.
    filler = fill(small_disk)
    assert upload(owner_api, "rows", {"a.csv": iris_csv(10)}).status_code == 507
    filler.unlink()
    created = upload(owner_api, "rows", {"a.csv": iris_csv(10)})
    assert created.status_code == 201, created.content
    assert (datastore_root() / "team" / "rows" / "1" / "a.csv").read_bytes() == iris_csv(10)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_batch_job_on_a_full_disk_says_so_writes_nothing_and_completes_once_space_returns(
        live_worker, owner_api, batch_endpoint, make_asset):
    from tests.batch.test_jobs_live import assert_exactly_once, download, files_of, invoke, job_state, wait_job

    batch_endpoint(mini_batch_size=2, instance_count=1)
    files = files_of(4, 30)
    make_asset("rows", files)
    # The jobs' output folder on its own small disk, filled by another writer before the job starts.
    with mounted_small_disk(datastore_root() / "team" / "batch-jobs") as disk:
        filler = fill(disk)
        job = invoke(owner_api, "scorer", "studio:data/rows/versions/1")
        seen = wait_until(lambda: (j := job_state(owner_api, "scorer", job["name"]))["error"] and j, 120,
                          "the job to say its disk is full", interval=0.3,
                          seen=lambda: job_state(owner_api, "scorer", job["name"]))
        assert seen["status"] == "Running", seen
        assert seen["error"].startswith("The studio's disk is full"), seen["error"]
        assert "goes on once space is freed" in seen["error"]
        assert seen["mini_batches_done"] == seen["rows_done"] == 0, seen
        output = disk / job["name"]
        assert not output.exists() or not [p for p in output.rglob("*") if p.is_file()], list(output.rglob("*"))

        filler.unlink()
        done = wait_job(owner_api, "scorer", job["name"], timeout=120)
        assert done["status"] == "Completed", done
        assert done["error"] == ""
        assert done["rows_done"] == done["rows_total"] == 120
        assert_exactly_once(download(owner_api, done), files, "file", "row")
        assert not [p.name for p in output.rglob("*.tmp")]
        assert BatchJob.objects.get(name=job["name"]).mini_batches.filter(status="Completed").count() == 2
