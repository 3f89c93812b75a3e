"""Fixtures for the `studio` CLI tests: the whole web process (REST API + embedded gateway) on
the test database with a real worker, and a runner for the CLI as a user runs it (a separate
Python process that imports studio_client only)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.live import BIN, ROOT, free_port, wait_for, worker_env


@pytest.fixture
def live_web(live_worker, tmp_path):
    """The whole web process (Django + the embedded gateway) on the test database."""
    yield from start_web(tmp_path)


def start_web(tmp_path: Path, **env: str):
    """Start the web process with `env` added to the worker's environment; yields its URL."""
    port = free_port()
    log = open(tmp_path / "web.log", "wb")
    proc = subprocess.Popen(
        [str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan", "on", "--no-access-log"],
        cwd=ROOT, env=worker_env(**env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:  # not up yet, or busy booting workers
            return False

    try:
        wait_for(healthy, timeout=60, what="the web process")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


def cli_env(url: str, token: str | None, tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STUDIO_") and k != "DJANGO_SETTINGS_MODULE"}
    env.update({"PYTHONPATH": str(ROOT), "STUDIO_URL": url, "STUDIO_WORKSPACE": "team",
                "STUDIO_CONFIG": str(tmp_path / "studio-config.json")})
    if token:
        env["STUDIO_TOKEN"] = token
    env.update(extra)
    return env


def run_studio(url: str, token: str | None, *args: str, cwd: Path, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """`studio ARGS` exactly as a shell runs it (stdin is not a terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "studio_client", *args], cwd=cwd, env=env or cli_env(url, token, cwd),
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def ok(result: subprocess.CompletedProcess):
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    try:
        return json.loads(result.stdout)
    except ValueError:
        return result.stdout


@pytest.fixture
def seeded_catalog(db):
    from endpoints_app.catalog.seed import seed_catalog

    return {m.name: m for m in seed_catalog()}


@pytest.fixture
def owner_cli(live_web, owner, tmp_path):
    """`studio ARGS` as the workspace's owner, with an API token of theirs."""
    from endpoints_app.models import ApiToken

    token = ApiToken.objects.create(user=owner)[1]

    def cli(*args: str, cwd: Path = tmp_path):
        return run_studio(live_web, token, *args, cwd=cwd)

    cli.token, cli.url = token, live_web
    return cli
