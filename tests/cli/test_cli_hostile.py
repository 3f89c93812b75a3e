"""The CLI gets the API's refusal of hostile deployment specs (exit 1, the field named): variables
that change how the loader or Python starts, and a batch deployment's code outside its workspace."""

import pytest

from endpoints_app.models import ApiToken, Deployment
from tests.cli.conftest import ok, run_studio

pytestmark = pytest.mark.django_db(transaction=True)


def test_it_exits_1_naming_a_refused_variable_or_code_folder(live_web, owner, seeded_catalog, tmp_path):
    token = ApiToken.objects.create(user=owner)[1]
    (tmp_path / "endpoint.yml").write_text("name: hostile-online\n")
    (tmp_path / "batch.yml").write_text("name: hostile-batch\n")
    assert ok(run_studio(live_web, token, "online-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path))
    assert ok(run_studio(live_web, token, "batch-endpoint", "create", "-f", "batch.yml", cwd=tmp_path))
    (tmp_path / "deployment.yml").write_text(
        "name: blue\nendpoint_name: hostile-online\nmodel: iris-classifier\ninstance_type: Standard_DS1_v2\n"
        "environment_variables:\n  PYTHONPATH: .\n  WORKERS: '2'\n")
    (tmp_path / "batch-deployment.yml").write_text(
        "name: blue\nendpoint_name: hostile-batch\nmodel: iris-classifier\ninstance_type: Standard_DS1_v2\n"
        "code_configuration:\n  code: .\n  scoring_script: score.py\n")

    online = run_studio(live_web, token, "online-deployment", "create", "-f", "deployment.yml", cwd=tmp_path)
    batch = run_studio(live_web, token, "batch-deployment", "create", "-f", "batch-deployment.yml", cwd=tmp_path)

    assert online.returncode == 1, online.stderr
    assert "HTTP 400" in online.stderr and "(field: environment_variables.PYTHONPATH)" in online.stderr
    assert batch.returncode == 1, batch.stderr
    assert "HTTP 400" in batch.stderr and "(field: code_configuration.code)" in batch.stderr
    assert not Deployment.objects.exists()
