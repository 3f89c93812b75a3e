"""Batch fixtures: the seeded catalog's tabular models, CSV files, data assets made through the
API, and a batch endpoint with a deployment."""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from endpoints_app.catalog.cards import IRIS_COLUMNS
from endpoints_app.models import CatalogModel
from tests.live import register_test_node

# Real model servers started from the seed's artifacts (tests/runtime/conftest.py).
from tests.runtime.conftest import log_dir, seeded_artifacts, seeded_server  # noqa: F401

WS = "/api/v1/workspaces/team"


@pytest.fixture
def node(db):
    """A live node row, so admission and placement see capacity."""
    return register_test_node()


@pytest.fixture
def iris(db):
    """The catalog's iris classifier with its real artifact (trained once, cached in the data dir)."""
    from endpoints_app.catalog.seed import seed_catalog

    seed_catalog()
    return CatalogModel.objects.get(registry="studio", name="iris-classifier")


def iris_csv(rows: int, seed: int = 0, columns: list[str] | None = None) -> bytes:
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns or IRIS_COLUMNS)
    for _ in range(rows):
        writer.writerow([round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1), round(rng.uniform(1, 7), 1),
                         round(rng.uniform(0.1, 2.5), 1)])
    return out.getvalue().encode()


def upload(api, name: str, files: dict[str, bytes]):
    """POST /data with multipart files; returns the response."""
    payload = {"name": name, "files": [SimpleUploadedFile(fname, body) for fname, body in files.items()]}
    return api.post(f"{WS}/data", payload, format="multipart")


@pytest.fixture
def make_asset(owner_api):
    def make(name: str, files: dict[str, bytes]) -> dict:
        response = upload(owner_api, name, files)
        assert response.status_code == 201, response.content
        return response.json()

    return make


@pytest.fixture
def batch_endpoint(owner_api, node, iris):
    """Batch endpoint `scorer` with deployment `blue` (iris), its default."""

    def make(name: str = "scorer", deployment: str = "blue", model: str | None = None, **settings) -> dict:
        assert owner_api.post(f"{WS}/batch-endpoints", {"name": name}, format="json").status_code == 201
        body = {"name": deployment, "model": model or iris.asset_id, "instance_type": "Standard_DS1_v2", **settings}
        created = owner_api.post(f"{WS}/batch-endpoints/{name}/deployments", body, format="json")
        assert created.status_code == 201, created.content
        return created.json()

    return make


def read_output(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))
