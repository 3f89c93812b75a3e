"""`studio environment create|list|show|get-build-log` as a user runs them, on the example's files."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import ok
from tests.live import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
EXAMPLE = ROOT / "examples" / "environments" / "lightgbm"


def test_the_cli_creates_an_environment_from_the_example_and_waits_for_its_build(owner_cli, tmp_path):
    created = ok(owner_cli("environment", "create", "-f", str(EXAMPLE / "environment.yml")))
    assert created["id"] == "azureml:lightgbm:1" and created["build_state"] == "Succeeded"
    assert created["build"]["requirements"] == ["lightgbm==4.6.0"]
    assert ok(owner_cli("environment", "show", "-n", "lightgbm"))["build"]["state"] == "Succeeded"
    table = owner_cli("environment", "list", "-o", "table")
    assert table.returncode == 0 and "lightgbm" in table.stdout and "Succeeded" in table.stdout
    log = owner_cli("environment", "get-build-log", "-n", "lightgbm")
    assert log.returncode == 0 and "build succeeded" in log.stdout

    (tmp_path / "image.yml").write_text("kind: environment\nname: img\nimage: python:3.11\n")
    refused = owner_cli("environment", "create", "-f", str(tmp_path / "image.yml"))
    assert refused.returncode == 1 and "field: image" in refused.stderr
    (tmp_path / "typo.yml").write_text("kind: environment\nname: typo\nconda_fle: conda.yml\n")
    typo = owner_cli("environment", "create", "-f", str(tmp_path / "typo.yml"))
    assert typo.returncode == 2 and "conda_fle" in typo.stderr
    assert [e["name"] for e in json.loads(owner_cli("environment", "list").stdout)] == ["lightgbm"]
