"""A CI pipeline with no personal token: `studio login` with a service principal's client credentials,
then the CLI fetches tokens from the real OpenID provider by itself, creates an aad_token endpoint and
a deployment, and invokes it with its identity token."""

import json
import os
import stat
import zipfile

import pytest

from endpoints_app.models import AuditLog
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.identity import do_grant_service_principal
from tests.cli.conftest import cli_env, ok, run_studio, start_web
from tests.identity_provider import CLIENTS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SCORE_PY = """
import json

def init():
    pass

def run(raw_data):
    return {"result": [x * 3 for x in json.loads(raw_data)["data"]]}
"""


@pytest.fixture
def web_with_provider(live_worker, identity_provider, tmp_path):
    yield from start_web(tmp_path, **identity_provider.env())


def test_a_service_principal_logs_in_with_client_credentials_and_deploys(
        web_with_provider, identity_provider, workspace, owner, tmp_path):
    do_grant_service_principal(SYSTEM, workspace, "ci-pipeline", "Contributor")
    env = cli_env(web_with_provider, None, tmp_path)

    def cli(*args: str):
        return run_studio(web_with_provider, None, *args, cwd=tmp_path, env=env)

    login = ok(cli("login", "--issuer", identity_provider.issuer, "--client-id", "ci-pipeline",
                   "--client-secret", CLIENTS["ci-pipeline"]))
    config = tmp_path / "studio-config.json"
    assert login["client_id"] == "ci-pipeline" and login["config"] == str(config)
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    assert "token" not in json.loads(config.read_text())

    with zipfile.ZipFile(tmp_path / "tripler.zip", "w") as archive:
        archive.writestr("score.py", SCORE_PY)
    model = ok(cli("model", "create", "-n", "tripler", "--path", "tripler.zip"))
    (tmp_path / "endpoint.yml").write_text("name: from-ci\nauth_mode: aad_token\n")
    (tmp_path / "deployment.yml").write_text(
        f"name: blue\nendpoint_name: from-ci\nmodel: {model['id']}\ninstance_type: Standard_DS1_v2\n"
        "instance_count: 1\n")
    (tmp_path / "sample.json").write_text('{"data": [1, 2]}')
    assert ok(cli("online-endpoint", "create", "-f", "endpoint.yml"))["auth_mode"] == "aad_token"
    assert ok(cli("online-deployment", "create", "-f", "deployment.yml", "--all-traffic"))["provisioning_state"] \
        == "Succeeded"
    assert ok(cli("online-endpoint", "invoke", "-n", "from-ci", "--request-file", "sample.json")) == \
        {"result": [3, 6]}

    created = AuditLog.objects.get(action="endpoint.create")
    assert created.via == AuditLog.Via.CLI and created.details["identity"] == "service principal ci-pipeline"

    # Wrong secret: the provider's refusal, exit 2, nothing stored.
    config.unlink()
    wrong = cli("login", "--issuer", identity_provider.issuer, "--client-id", "ci-pipeline", "--client-secret", "no")
    assert wrong.returncode == 2 and "invalid_client" in wrong.stderr and not config.exists()
