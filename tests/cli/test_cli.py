"""The `studio` CLI as automation uses it: YAML specs in, JSON out, exit statuses, against a
real web process (REST API + embedded gateway), a real Celery worker and real model servers."""

import json
import re
import stat
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from endpoints_app.models import ApiToken, AuditLog, Deployment, Endpoint
from tests.cli.conftest import cli_env, ok, run_studio
from tests.live import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = ROOT / "examples"

SCORE_PY = """
import json

def init():
    print("tripler ready", flush=True)

def run(raw_data):
    return {"result": [x * 3 for x in json.loads(raw_data)["data"]]}
"""

BROKEN_SCORE_PY = """
import os

def init():
    # Registration runs init() once to check the model; the deployment sets WEIGHTS=missing.
    if os.environ.get("WEIGHTS") == "missing":
        raise RuntimeError("boom: the weights file is missing")

def run(raw_data):
    return raw_data
"""


def _tripler(cli, tmp_path: Path, name: str = "tripler", source: str = SCORE_PY) -> dict:
    with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as archive:
        archive.writestr("score.py", source)
    return ok(cli("model", "create", "-n", name, "--path", f"{name}.zip"))


def test_it_drives_an_endpoint_through_every_online_command(owner_cli, tmp_path):
    cli = owner_cli
    model = _tripler(cli, tmp_path)
    assert model["version"] == 1
    assert ok(cli("model", "show", "-n", "tripler"))["id"] == model["id"]
    assert "tripler" in [m["name"] for m in ok(cli("model", "list", "--search", "tripler"))]

    (tmp_path / "endpoint.yml").write_text("kind: online-endpoint\nname: cli-demo\nauth_mode: key\n")
    (tmp_path / "deployment.yml").write_text(
        "name: blue\nendpoint_name: cli-demo\n"
        f"model: {model['id']}\ninstance_type: Standard_DS1_v2\ninstance_count: 1\n"
    )
    (tmp_path / "sample.json").write_text('{"data": [1, 2]}')

    endpoint = ok(cli("online-endpoint", "create", "-f", "endpoint.yml", "--set", "description=made by the CLI"))
    assert endpoint["provisioning_state"] == "Succeeded" and endpoint["description"] == "made by the CLI"
    created = cli("online-deployment", "create", "-f", "deployment.yml", "--all-traffic")
    deployment = ok(created)
    assert deployment["provisioning_state"] == "Succeeded" and deployment["traffic"] == 100
    assert "Creating" in created.stderr and "Succeeded" in created.stderr  # progress on stderr
    assert ok(cli("online-endpoint", "show", "-n", "cli-demo"))["traffic"] == {"blue": 100}
    assert AuditLog.objects.get(action="endpoint.create").via == AuditLog.Via.CLI
    assert [e["name"] for e in ok(cli("online-endpoint", "list"))] == ["cli-demo"]
    table = cli("online-endpoint", "list", "-o", "table")
    assert table.returncode == 0 and table.stdout.splitlines()[0].startswith("NAME") and "cli-demo" in table.stdout
    assert [d["name"] for d in ok(cli("online-deployment", "list", "-e", "cli-demo"))] == ["blue"]
    assert ok(cli("online-deployment", "show", "-e", "cli-demo", "-n", "blue"))["instance_count"] == 1

    assert ok(cli("online-endpoint", "invoke", "-n", "cli-demo", "--request-file", "sample.json")) == {
        "result": [3, 6]
    }
    assert ok(cli("online-endpoint", "invoke", "-n", "cli-demo", "--request-file", "sample.json",
                  "--deployment-name", "blue")) == {"result": [3, 6]}
    keys = ok(cli("online-endpoint", "get-credentials", "-n", "cli-demo"))
    new = ok(cli("online-endpoint", "regenerate-keys", "-n", "cli-demo", "--key-type", "primary"))
    assert new["primary_key"] != keys["primary_key"]
    assert ok(cli("online-endpoint", "get-credentials", "-n", "cli-demo"))["primary_key"] == new["primary_key"]

    logs = cli("online-deployment", "get-logs", "-e", "cli-demo", "-n", "blue", "--lines", "50")
    assert logs.returncode == 0 and "tripler ready" in logs.stdout

    scaled = ok(cli("online-deployment", "update", "-e", "cli-demo", "-n", "blue", "--set", "instance_count=2"))
    assert scaled["provisioning_state"] == "Succeeded" and scaled["instance_count"] == 2
    assert [i["state"] for i in scaled["instances"]] == ["Ready", "Ready"]
    updated = ok(cli("online-endpoint", "update", "-n", "cli-demo", "--set", "tags.team=ml"))
    assert updated["tags"] == {"team": "ml"}

    # Without --yes and without a terminal to ask on, delete refuses (exit 2) and deletes nothing.
    refused = cli("online-endpoint", "delete", "-n", "cli-demo")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert Endpoint.objects.filter(name="cli-demo").exists()

    # The only deployment, taking all live traffic, stays until the endpoint goes (the API's 409, exit 1).
    kept = cli("online-deployment", "delete", "-e", "cli-demo", "-n", "blue", "--yes")
    assert kept.returncode == 1 and "100% of live traffic" in kept.stderr
    assert Deployment.objects.filter(name="blue").exists()
    assert ok(cli("online-endpoint", "delete", "-n", "cli-demo", "--yes"))["deleted"] is True
    missing = cli("online-endpoint", "show", "-n", "cli-demo")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr and "cli-demo" in missing.stderr


def test_it_exits_1_with_the_api_message_and_field(live_web, owner, reader, tmp_path):
    (tmp_path / "endpoint.yml").write_text("name: not-allowed\n")
    as_reader = run_studio(live_web, ApiToken.objects.create(user=reader)[1], "online-endpoint", "create",
                           "-f", "endpoint.yml", cwd=tmp_path)
    assert as_reader.returncode == 1
    assert "HTTP 403" in as_reader.stderr and "Contributor" in as_reader.stderr

    token = ApiToken.objects.create(user=owner)[1]
    (tmp_path / "endpoint.yml").write_text("name: Bad_Name\n")
    bad = run_studio(live_web, token, "online-endpoint", "create", "-f", "endpoint.yml", cwd=tmp_path)
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr and "(field: name)" in bad.stderr

    wrong_token = run_studio(live_web, "not-a-token", "online-endpoint", "list", cwd=tmp_path)
    assert wrong_token.returncode == 1 and "HTTP 401" in wrong_token.stderr


def test_it_fails_a_deployment_that_cannot_start_with_the_error_and_log_tail(owner_cli, tmp_path):
    model = _tripler(owner_cli, tmp_path, "broken", BROKEN_SCORE_PY)
    ok(owner_cli("online-endpoint", "create", "-n", "cli-broken"))
    result = owner_cli("online-deployment", "create", "-e", "cli-broken", "-n", "blue", "--set", f"model={model['id']}",
                       "--set", "instance_type=Standard_DS1_v2", "--set", "environment_variables.WEIGHTS=missing")
    assert result.returncode == 1, result.stderr
    assert "is Failed" in result.stderr
    assert "last log lines" in result.stderr and "boom: the weights file is missing" in result.stderr
    assert json.loads(result.stdout)["provisioning_state"] == "Failed"


def test_it_returns_at_once_with_no_wait(owner_cli, tmp_path, seeded_catalog):
    ok(owner_cli("online-endpoint", "create", "-n", "cli-nowait"))
    started = time.monotonic()
    created = ok(owner_cli("online-deployment", "create", "-e", "cli-nowait", "-n", "blue", "--no-wait",
                           "--set", "model=iris-classifier:1", "--set", "instance_type=Standard_DS1_v2"))
    assert created["provisioning_state"] == "Creating"
    assert time.monotonic() - started < 10
    deployment = Deployment.objects.get(name="blue")
    for _ in range(120):
        deployment.refresh_from_db()
        if deployment.provisioning_state == "Succeeded":
            break
        time.sleep(1)
    assert deployment.provisioning_state == "Succeeded"
    deleting = ok(owner_cli("online-endpoint", "delete", "-n", "cli-nowait", "--yes", "--no-wait"))
    assert deleting["provisioning_state"] == "Deleting"


def test_it_walks_the_blue_green_rollout_of_the_examples_readme(owner_cli, tmp_path, seeded_catalog):
    """Runs the README's commands themselves, step by step, and checks the endpoint after each."""
    text = (EXAMPLES / "README.md").read_text()
    block = re.search(r"## Blue/green rollout.*?```sh\n(.*?)```", text, re.S).group(1)
    steps = re.split(r"\n(?=# \d\.)", block.strip())
    assert len(steps) == 6
    env = cli_env(owner_cli.url, owner_cli.token, tmp_path)
    wrapper = f'studio() {{ "{sys.executable}" -m studio_client "$@"; }}\n'
    cwd = ROOT

    def run(step: str) -> subprocess.CompletedProcess:
        nonlocal cwd
        script = f"set -euo pipefail\n{wrapper}{step}\npwd > {tmp_path / 'cwd'}\n"
        result = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                                timeout=600, stdin=subprocess.DEVNULL)
        assert result.returncode == 0, f"{step}\n{result.stdout}\n{result.stderr}"
        cwd = Path((tmp_path / "cwd").read_text().strip())
        return result

    def endpoint() -> Endpoint:
        return Endpoint.objects.get(name="iris-bg")

    started = time.monotonic()
    first = run(steps[0])
    assert endpoint().traffic == {"blue": 100}
    assert '"result"' in first.stdout or "setosa" in first.stdout
    run(steps[1])
    assert endpoint().traffic == {"blue": 100, "green": 0}
    assert Deployment.objects.get(name="green").provisioning_state == "Succeeded"
    run(steps[2])
    assert endpoint().mirror_traffic == {"green": 10}
    run(steps[3])
    assert endpoint().traffic == {"blue": 90, "green": 10} and endpoint().mirror_traffic == {}
    run(steps[4])
    assert endpoint().traffic == {"blue": 0, "green": 100}
    last = run(steps[5])
    assert [d.name for d in endpoint().deployments.all()] == ["green"]
    assert "green=100" in last.stdout
    print(f"\nblue/green walk-through from examples/README.md: {time.monotonic() - started:.1f} s")


def test_apply_creates_then_changes_nothing_the_second_time(owner_cli, tmp_path, seeded_catalog):
    folder = EXAMPLES / "apply" / "iris"
    dry = owner_cli("apply", "-f", str(folder), "--dry-run")
    plan = ok(dry)
    assert plan["dry_run"] is True and plan["changes"] == 3
    assert [(s["kind"], s["action"]) for s in plan["plan"]] == [
        ("online-endpoint", "create"), ("online-deployment", "create"), ("traffic", "update"),
    ]
    assert "+ create online-endpoint iris-declared" in dry.stderr
    assert not Endpoint.objects.filter(name="iris-declared").exists()

    first = ok(owner_cli("apply", "-f", str(folder)))
    assert first["changes"] == 3
    endpoint = Endpoint.objects.get(name="iris-declared")
    assert endpoint.traffic == {"main": 100} and endpoint.tags == {"team": "automation"}
    deployment = Deployment.objects.get(endpoint=endpoint, name="main")
    assert deployment.provisioning_state == "Succeeded"
    assert deployment.environment_variables == {"MODEL_NOTE": "declared-by-apply"}

    second = owner_cli("apply", "-f", str(folder))
    assert ok(second)["changes"] == 0
    assert {s["action"] for s in ok(second)["plan"]} == {"unchanged"}
    assert "0 to create, 0 to update, 2 unchanged" in second.stderr

    # A changed field is an update of that field alone.
    changed = tmp_path / "changed"
    changed.mkdir()
    (changed / "endpoint.yml").write_text((folder / "endpoint.yml").read_text())
    (changed / "deployment.yml").write_text(
        (folder / "deployment.yml").read_text().replace("request_timeout_ms: 3000", "request_timeout_ms: 4000")
    )
    third = ok(owner_cli("apply", "-f", str(changed)))
    assert [(s["kind"], s["action"], s.get("fields")) for s in third["plan"]] == [
        ("online-endpoint", "unchanged", None), ("online-deployment", "update", ["request_settings"]),
    ]
    deployment.refresh_from_db()
    assert deployment.request_settings["request_timeout_ms"] == 4000
    assert ok(owner_cli("apply", "-f", str(changed)))["changes"] == 0


def test_apply_checks_every_deployment_before_its_first_change(owner_cli, tmp_path, seeded_catalog):
    folder = tmp_path / "too-big"
    folder.mkdir()
    (folder / "endpoint.yml").write_text("kind: online-endpoint\nname: too-big\n")
    for name, count in (("blue", 2), ("green", 1)):  # 8 + 4 cores: each fits the 8-core node alone
        (folder / f"{name}.yml").write_text(
            f"kind: online-deployment\nname: {name}\nendpoint_name: too-big\nmodel: iris-classifier\n"
            f"instance_type: Standard_DS3_v2\ninstance_count: {count}\n")
    refused = owner_cli("apply", "-f", str(folder))
    assert refused.returncode == 1 and "Not enough capacity" in refused.stderr, refused.stderr
    assert not Endpoint.objects.filter(name="too-big").exists()
    dry = owner_cli("apply", "-f", str(folder), "--dry-run")
    assert dry.returncode == 1 and "Not enough capacity" in dry.stderr


def test_it_manages_members_and_reads_usage_and_workspaces(owner_cli, tmp_path, django_user_model):
    django_user_model.objects.create_user("newbie", password="x" * 12)
    assert {m["username"] for m in ok(owner_cli("members", "list"))} == {"olivia"}
    assert ok(owner_cli("members", "add", "-u", "newbie", "--role", "Reader"))["role"] == "Reader"
    assert ok(owner_cli("members", "update", "-u", "newbie", "--role", "Contributor"))["role"] == "Contributor"
    assert ok(owner_cli("members", "show", "-u", "newbie"))["role"] == "Contributor"
    refused = owner_cli("members", "remove", "-u", "newbie")
    assert refused.returncode == 2
    assert ok(owner_cli("members", "remove", "-u", "newbie", "--yes"))["removed"] is True
    assert {m["username"] for m in ok(owner_cli("members", "list"))} == {"olivia"}
    bad_role = owner_cli("members", "add", "-u", "newbie", "--role", "Admin")
    assert bad_role.returncode == 2  # argparse: not a role

    usage = ok(owner_cli("usage", "--interval", "1h"))
    assert set(usage["totals"]) >= {"requests", "status_2xx", "cost", "instance_hours"}
    assert ok(owner_cli("workspace", "list")) == [{"name": "team", "display_name": "Team", "role": "Owner"}]
    types = owner_cli("instance-type", "list", "-o", "table")
    assert types.returncode == 0 and "Standard_DS1_v2" in types.stdout and "PRICE_PER_HOUR" in types.stdout


def test_login_writes_a_private_config_that_later_commands_use(live_web, owner, tmp_path):
    token = ApiToken.objects.create(user=owner)[1]
    env = cli_env(live_web, None, tmp_path)
    del env["STUDIO_URL"], env["STUDIO_WORKSPACE"]
    login = run_studio("", None, "login", "--url", live_web, "-w", "team", "--token", token, cwd=tmp_path, env=env)
    assert ok(login)["workspace"] == "team"
    config = tmp_path / "studio-config.json"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"url": live_web, "workspace": "team", "token": token}
    assert ok(run_studio("", None, "online-endpoint", "list", cwd=tmp_path, env=env)) == []

    wrong = run_studio("", None, "login", "--url", live_web, "-w", "nope", "--token", token, cwd=tmp_path, env=env)
    assert wrong.returncode == 2 and "not a member of workspace 'nope'" in wrong.stderr


def test_the_readme_cli_block_runs_as_written(owner_cli, tmp_path, seeded_catalog):
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## CLI and Python client.*?```sh\n(.*?)```", text, re.S).group(1)
    env = cli_env(owner_cli.url, owner_cli.token, tmp_path)
    script = f'set -euo pipefail\nstudio() {{ "{sys.executable}" -m studio_client "$@"; }}\n{block}'
    result = subprocess.run(["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert "iris-online" in result.stdout and '"changes": 3' in result.stdout
    assert not Endpoint.objects.filter(name="iris-online").exists()
