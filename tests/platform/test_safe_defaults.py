"""Safe defaults: DEBUG off, one generated SECRET_KEY for every process, JSON errors on every
/api/ path, known hosts only, sign-in throttling, and a clean `check --deploy` in production."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import RequestFactory, override_settings

from portal import errors
from tests.conftest import PASSWORD

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.django_db


def _manage(args: list[str], data_dir: Path, **extra: str) -> subprocess.CompletedProcess:
    """`python manage.py ...` as typed in a plain shell: no DEBUG, no SECRET_KEY."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    env.update(STUDIO_DATA_DIR=str(data_dir), **extra)
    return subprocess.run([sys.executable, "manage.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_it_generates_one_secret_key_that_plain_manage_py_commands_share(tmp_path):
    code = "from django.conf import settings; print(settings.SECRET_KEY, settings.DEBUG)"
    first = _manage(["shell", "-c", code], tmp_path)
    assert first.returncode == 0, first.stderr
    second = _manage(["shell", "-c", code], tmp_path)
    key_file = tmp_path / "secret-key.txt"
    last = [run.stdout.strip().splitlines()[-1].split() for run in (first, second)]
    assert last[0] == last[1] == [key_file.read_text().strip(), "False"]
    assert key_file.stat().st_mode & 0o777 == 0o600


def test_check_deploy_is_clean_with_the_documented_production_settings(tmp_path):
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"], tmp_path,
        SECRET_KEY=secrets.token_urlsafe(50), STUDIO_TLS="1", STUDIO_BEHIND_PROXY="1",
        STUDIO_ALLOWED_HOSTS="studio.example.com",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_a_trailing_slash_gets_a_json_404_naming_the_path_that_exists(owner_api):
    response = owner_api.get("/api/v1/workspaces/")
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "NotFound" and "use /api/v1/workspaces." in error["message"]


def test_a_typo_gets_a_json_404_suggesting_the_near_path(owner_api):
    response = owner_api.get("/api/v1/instance-type")
    assert response.status_code == 404
    assert "/api/v1/instance-types" in response.json()["error"]["message"]


@override_settings(DEBUG=True)
def test_api_404s_are_json_even_with_debug_on(owner_api):
    response = owner_api.get("/api/v2/anything")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "NotFound"


def test_django_level_api_errors_are_json():
    request = RequestFactory().get("/api/v1/workspaces")
    for handler, status in ((errors.server_error, 500), (errors.bad_request, 400)):
        response = handler(request)
        assert response.status_code == status
        assert response["Content-Type"] == "application/json"


def test_an_unknown_host_is_refused(client):
    assert client.get("/login/", HTTP_HOST="evil.example.com").status_code == 400
    assert client.get("/login/", HTTP_HOST="127.0.0.1:8000").status_code == 200


def test_static_files_are_served_with_debug_off(client, settings):
    assert settings.DEBUG is False
    assert client.get("/static/css/studio.css").status_code == 200
    assert client.get("/static/admin/css/base.css").status_code == 200


def test_it_throttles_failed_sign_ins_per_username_and_address(client, owner, reader, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post("/login/", {"username": "olivia", "password": "wrong"})
        assert response.status_code == 200
    assert client.post("/login/", {"username": "olivia", "password": "wrong"}).status_code == 429
    locked = client.post("/login/", {"username": "olivia", "password": PASSWORD})
    assert locked.status_code == 429
    assert b"Too many failed sign-ins" in locked.content and int(locked["Retry-After"]) > 0
    # Another user at the same address still signs in.
    other = client.post("/login/", {"username": "rita", "password": PASSWORD})
    assert other.status_code == 302


@pytest.mark.parametrize("name,value", [
    ("STUDIO_WEB_WORKERS", "two"),
    ("STUDIO_WORKER_CONCURRENCY", "0"),
    ("STUDIO_WORKER_PROCESSES", "17"),
    ("STUDIO_GATEWAY_CLIENT", "curl"),
    ("STUDIO_GATEWAY_POLL_SECONDS", "0"),
    ("STUDIO_GATEWAY_FLUSH_SECONDS", "0"),
    ("STUDIO_METRICS_CACHE_SECONDS", "-1"),
    ("STUDIO_TLS", "maybe"),
    ("LOG_LEVEL", "LOUD"),
])
def test_a_bad_setting_stops_start_up_naming_it(tmp_path, name, value):
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_")}
    env.update(STUDIO_DATA_DIR=str(tmp_path), **{name: value})
    result = subprocess.run([sys.executable, "-m", "portal.supervisor"], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"studio: {name}=") and "README" in result.stderr
