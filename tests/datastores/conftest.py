"""Datastore fixtures: Azurite and moto's S3 server (tests/storage_servers.py), an allowed folder,
and the batch fixtures (models, endpoints, CSV files)."""

from __future__ import annotations

import pytest

from tests.batch.conftest import batch_endpoint, iris, make_asset, node  # noqa: F401
from tests.runtime.conftest import log_dir, seeded_artifacts, seeded_server  # noqa: F401
from tests.storage_servers import azurite, moto_s3  # noqa: F401

WS = "/api/v1/workspaces/team"
DS = f"{WS}/datastores"

# A batch score.py that writes one file per input file to its output folder: by-file/<stem>.txt, upper-cased.
OUTPUT_FOLDER_SCORE = '''
import os
from pathlib import Path


def init():
    global out
    out = os.environ["AZUREML_BI_OUTPUT_PATH"]


def run(mini_batch):
    for path in mini_batch:
        Path(out, "by-file").mkdir(exist_ok=True)
        Path(out, "by-file", Path(path).stem + ".txt").write_text(Path(path).read_text().upper())
    return [Path(p).name for p in mini_batch]
'''


@pytest.fixture
def allowed_root(db, tmp_path):
    """A folder IT allowed (as the admin console would add it)."""
    from endpoints_app.models import AllowedFolder

    root = tmp_path / "shared-data"
    root.mkdir()
    folder = AllowedFolder(path=str(root))
    folder.full_clean()
    folder.save()
    return root


def create(api, spec: dict, status: int = 201) -> dict:
    response = api.post(DS, spec, format="json")
    assert response.status_code == status, response.content
    return response.json()
