"""A REAL Celery worker (with beat) for tests that provision model servers.

The worker is a subprocess (`.venv/bin/celery -A portal worker -B`) pointed at the
test database and the same broker, data dir and SECRET_KEY as the test process,
on its own node `test-node` (queue `node.test-node`), reconciling every second.

    from tests.live import make_custom_model, wait_for

    @pytest.mark.django_db(transaction=True)
    def test_something(live_worker, owner_api, workspace):
        ...  # create an endpoint and a deployment; the worker provisions it

`live_worker_process` (session) starts the worker once and pauses it (the
controller's pause file), so it leaves alone the rows other tests make; `live_worker`
(per test) registers the node row again after each transactional flush, resumes the
controller and, at teardown, pauses it and stops every model server the test left
behind. `live_worker.restart()` stops and starts the worker (model servers keep running)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NODE_NAME = "test-node"
NODE_CORES = 8
NODE_MEMORY_GB = 32


def database_url() -> str:
    """The test database as a URL for child processes (SQLite file or the PostgreSQL test DB)."""
    s = connection.settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{s['NAME']}"
    auth = ""
    if s.get("USER"):
        auth = quote(s["USER"], safe="")
        if s.get("PASSWORD"):
            auth += ":" + quote(s["PASSWORD"], safe="")
        auth += "@"
    return f"postgresql://{auth}{s.get('HOST') or 'localhost'}:{s.get('PORT') or 5432}/{s['NAME']}"


def worker_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": database_url(),
        "STUDIO_DATA_DIR": str(settings.DATA_DIR),
        "SECRET_KEY": settings.SECRET_KEY,
        "DEBUG": "0",  # as in production: JSON/HTML error pages, no query log
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "STUDIO_NODE_NAME": NODE_NAME,
        "STUDIO_NODE_CORES": str(NODE_CORES),
        "STUDIO_NODE_MEMORY_GB": str(NODE_MEMORY_GB),
        "STUDIO_RECONCILE_SECONDS": "1",
        "STUDIO_DRAIN_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
        "PYTHONUNBUFFERED": "1",
    })
    if settings.REDIS_URL:
        env["REDIS_URL"] = settings.REDIS_URL
    # Only the browser tests' own process may relax Django's async safety: a database call on a
    # gateway's event loop must fail here as it would in production.
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    env.update(extra)
    return env


def purge_broker() -> None:
    """Forget messages a previous run left behind (tasks about rows that no longer exist)."""
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = Path(settings.CELERY_BROKER_TRANSPORT_OPTIONS["data_folder_in"])
        for path in folder.glob("*"):
            path.unlink(missing_ok=True)
        return
    from portal.celery import app

    with app.connection_for_write() as conn:
        for queue in ("celery", f"node.{NODE_NAME}"):
            try:
                conn.default_channel.queue_purge(queue)
            except Exception:  # a queue that was never declared has nothing to purge
                pass


def stop_session_worker() -> None:
    """Stop this session's live worker if it runs (tests that start a studio of their own on the same Redis
    queues); the `live_worker` fixture starts it again when a later test needs it."""
    marker = f"STUDIO_DATA_DIR={settings.DATA_DIR}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = entry.joinpath("cmdline").read_bytes().replace(b"\0", b" ")
            environ = entry.joinpath("environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"celery" in argv and f"worker@{NODE_NAME}".encode() in argv and marker in environ:
            try:
                os.killpg(int(entry.name), signal.SIGTERM)
            except ProcessLookupError:
                pass


def pause_file() -> Path:
    from endpoints_app.controller.tasks import PAUSE_FILE

    return Path(settings.DATA_DIR) / "run" / PAUSE_FILE


def pause_controller() -> None:
    """Between the tests that use it, the worker leaves alone the rows other tests make."""
    pause_file().parent.mkdir(parents=True, exist_ok=True)
    pause_file().touch()


def resume_controller() -> None:
    pause_file().unlink(missing_ok=True)


def stop_instances() -> None:
    """Stop every model server with a pid file (what `make run` does at shutdown)."""
    from portal.supervisor import stop_instances as stop_all

    stop_all(Path(settings.DATA_DIR))


class LiveWorker:
    def __init__(self, node_name: str = NODE_NAME) -> None:
        self.node_name = node_name
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(settings.DATA_DIR) / "logs" / f"{node_name}-worker.log"

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        schedule = Path(settings.DATA_DIR) / f"{self.node_name}-celerybeat-schedule"
        for stale in schedule.parent.glob(schedule.name + "*"):
            stale.unlink(missing_ok=True)
        argv = [
            str(BIN / "celery"), "-A", "portal", "worker",
            "-Q", f"celery,node.{self.node_name}", "-n", f"worker@{self.node_name}",
            "-c", "3", "-l", "info",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]
        if self.node_name == NODE_NAME:
            # One beat for the whole test installation, as in production.
            argv += ["-B", "-s", str(schedule)]
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=worker_env(STUDIO_NODE_NAME=self.node_name), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.started_at = timezone.now()

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the worker registered its node (a heartbeat after this start)."""
        from endpoints_app.models import Node

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited with {self.proc.returncode}; see {self.log_path}")
            if Node.objects.filter(name=self.node_name, last_heartbeat__gte=self.started_at).exists():
                return
            time.sleep(0.2)
        raise TimeoutError(f"celery worker did not register node {self.node_name}; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # pool processes left in its group
        except ProcessLookupError:
            pass

    def restart(self) -> None:
        self.stop()
        self.start()
        self.wait_ready()

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def register_test_node():
    from endpoints_app.models import Node

    node, _ = Node.objects.update_or_create(
        name=NODE_NAME,
        defaults={
            "host": "127.0.0.1",
            "cores": NODE_CORES,
            "memory_gb": Decimal(NODE_MEMORY_GB),
            "queue": f"node.{NODE_NAME}",
            "last_heartbeat": timezone.now(),
        },
    )
    return node


@pytest.fixture(scope="session")
def live_worker_process(django_db_setup, django_db_blocker):
    with django_db_blocker.unblock():
        stop_instances()
        purge_broker()
        resume_controller()
        worker = LiveWorker()
        worker.start()
        try:
            worker.wait_ready()
        except Exception:
            worker.stop()
            raise
        pause_controller()
    yield worker
    with django_db_blocker.unblock():
        worker.stop()
        stop_instances()
        resume_controller()


@pytest.fixture
def live_worker(live_worker_process, transactional_db):
    """The session's worker, with its node registered in this test's (freshly flushed) database."""
    from endpoints_app.models import Endpoint, RouteVersion

    if live_worker_process.proc.poll() is not None:
        resume_controller()
        live_worker_process.start()
        live_worker_process.wait_ready()
    register_test_node()
    RouteVersion.objects.get_or_create(pk=1)
    resume_controller()
    yield live_worker_process
    # Pause, drop the rows, then stop the processes: nothing restarts what we stop.
    pause_controller()
    wait_quiet_database()
    Endpoint.objects.all().delete()
    stop_instances()


def wait_quiet_database(timeout: float = 30) -> None:
    """Once paused, until no other session of the test database is inside a transaction: a pass that began
    before the pause ends before the test's flush, which it could otherwise deadlock (seen on CI with a pass
    talking to Ray). Best effort: after `timeout` the flush goes ahead as before."""
    from django.db import connection

    if connection.vendor != "postgresql":
        time.sleep(0.3)  # SQLite: a pass in progress notices the pause at its next step
        return

    def quiet() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                           " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")
            return cursor.fetchone()[0] == 0

    try:
        wait_for(quiet, timeout=timeout, what="the worker's transactions to end")
    except TimeoutError:
        pass


def wait_for(condition: Callable[[], object], timeout: float = 60, interval: float = 0.1, what: str = "condition"):
    """Poll until `condition()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


SCORE_PY = '''
import json
import os

def init():
    global factor
    factor = float(os.environ.get("FACTOR", "2"))
    print("score.py init done, factor", factor, flush=True)

def run(raw_data):
    data = json.loads(raw_data)["data"]
    return {"result": [x * factor for x in data], "uid": os.getuid()}
'''


def served_by(instance: dict) -> int:
    """The uid SCORE_PY answers with when the instance's own process serves it: its sandbox's uid (the
    uid of the process the controller recorded), unique among live sandboxes when the studio is root."""
    from endpoints_app.runtime import sandbox

    return sandbox.uid_of(instance["pid"])


def score_instance(instance: dict, data) -> dict:
    """Straight to the model server over its own socket, with the instance secret the gateway sends."""
    from endpoints_app.instance_auth import auth_header
    from tests.runtime.conftest import over_socket

    answer = over_socket(instance["name"], "POST", "/score", auth_header(instance["name"], instance["port"]),
                         json_body={"data": data}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def make_custom_model(workspace, folder: Path, name: str = "doubler", source: str = SCORE_PY, version: int = 1):
    """A workspace model made of a score.py (format custom), as a user registers one."""
    from endpoints_app.models import CatalogModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "score.py").write_text(textwrap.dedent(source))
    return CatalogModel.objects.create(
        registry=workspace.name,
        workspace=workspace,
        name=name,
        version=version,
        task="custom",
        format="custom",
        license="MIT",
        artifact_path=str(folder),
        scoring_script="score.py",
        deployment_kinds=["online", "batch"],
        sample_request={"data": [1, 2, 3]},
    )


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live_gateway(live_worker, tmp_path):
    """The gateway as its own process (uvicorn) on the test database; yields its base URL."""
    yield from _run_gateway(tmp_path, workers=1)


@pytest.fixture
def live_gateway_workers(live_worker, tmp_path):
    """The gateway as production runs it: gunicorn with three uvicorn workers, each with its own route table."""
    yield from _run_gateway(tmp_path, workers=3)


def _run_gateway(tmp_path, workers: int, **env: str):
    import requests

    port = free_port()
    if workers == 1:
        argv = [str(BIN / "uvicorn"), "endpoints_app.gateway.asgi:application", "--port", str(port), "--lifespan",
                "on", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    else:
        argv = [str(BIN / "gunicorn"), "endpoints_app.gateway.asgi:application", "-k",
                "portal.workers.StudioUvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                "--graceful-timeout", "5"]
    log = open(tmp_path / "gateway.log", "wb")  # closed below, after the process
    proc = subprocess.Popen(argv, cwd=ROOT, env=worker_env(**env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(requests, url + "/inference/") or proc.poll() is not None, timeout=60,
                 what="the gateway")
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited; see {tmp_path / 'gateway.log'}")
        if workers > 1:
            from endpoints_app.models import GatewayWorker

            # Every worker has loaded its table and said so (gunicorn starts them one after another).
            wait_for(lambda: GatewayWorker.objects.count() >= workers, timeout=60, what="gateway workers' heartbeats")
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _answers(requests, url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.RequestException:  # refused, or a worker still starting (a busy machine): not yet
        return False
