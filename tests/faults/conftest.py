"""The fault matrix runs against a whole studio as `make run` starts it (portal/supervisor.py: web with its
embedded gateway, STUDIO_WORKER_PROCESSES Celery workers, beat), on the test database and this session's
broker kind (the filesystem broker, or Redis when CELERY_BROKER_URL says so), in a data dir of its own.
Everything a test does goes through its HTTP API and gateway with a real API token, as a user would.

One studio and one online deployment (two instances of a score.py model) serve the whole module; the
database is cleaned at the end (the tests here do not use pytest-django's per-test flush)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.core.management import call_command

from bench.faults import Load, SupervisedStudio, wait_until

# The batch fixtures, for the batch job on a full disk (test_disk_full.py).
from tests.batch.conftest import batch_endpoint, iris, make_asset, node  # noqa: F401
from tests.live import free_port, make_custom_model, stop_instances, stop_session_worker, worker_env

NODE = "fault-node"
# A restarted part is back within this long (the supervisor's first restart comes after 0.5 s; a Celery
# worker takes a few seconds to boot on a busy 2-core machine).
RESTART_SECONDS = 45
PROVISION_SECONDS = 60
BASE = "/api/v1/workspaces/team/online-endpoints"


class Studio(SupervisedStudio):
    """The supervised studio plus an API session as the workspace owner, and the deployment under test."""

    api: requests.Session
    key: str = ""
    endpoint: str = "faults"
    began: datetime = datetime.now(UTC) - timedelta(minutes=5)

    def call(self) -> requests.Response:
        return requests.post(f"{self.url}/inference/{self.endpoint}/score", json={"data": [1, 2]},
                             headers={"Authorization": f"Bearer {self.key}"}, timeout=30)

    def deployment(self, name: str = "blue") -> dict:
        return self.api.get(f"{self.url}{BASE}/{self.endpoint}/deployments/{name}", timeout=30).json()

    def scale(self, count: int, name: str = "blue") -> requests.Response:
        return self.api.patch(f"{self.url}{BASE}/{self.endpoint}/deployments/{name}", json={"instance_count": count},
                              timeout=30)

    def wait_succeeded(self, timeout: float, name: str = "blue") -> float:
        began = time.monotonic()

        def done() -> bool:
            state = self.deployment(name)
            if state["provisioning_state"] == "Failed":
                raise AssertionError(f"deployment failed: {state.get('error')}")
            return state["provisioning_state"] == "Succeeded"

        wait_until(done, timeout, f"deployment {name} Succeeded", interval=0.2,
                   seen=lambda: (self.deployment(name), self.log_tail(15)))
        return time.monotonic() - began

    def ready_instances(self, name: str = "blue") -> dict[str, int]:
        return {i["name"]: i["pid"] for i in self.deployment(name)["instances"] if i["state"] == "Ready"}

    def usage_requests(self) -> int:
        """Calls the usage API counted on the endpoint under test."""
        answer = self.api.get(f"{self.url}/api/v1/workspaces/team/usage",
                              params={"endpoint": self.endpoint, "from": self.began.isoformat()}, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["totals"]["requests"]

    def settled_usage(self, timeout: float = 30) -> int:
        """The usage count once it stopped moving (every flush of earlier calls landed)."""
        seen: list[int] = []

        def settled() -> bool:
            seen.append(self.usage_requests())
            return len(seen) > 1 and seen[-1] == seen[-2]

        wait_until(settled, timeout, "the usage count to settle", interval=1.5, seen=lambda: seen[-5:])
        return seen[-1]

    def matrix_row(self, fault: str, load: Load | None, recovery: float) -> None:
        """One row of the fault matrix, printed (pytest -s shows it): the fault, this configuration, the
        calls that got no answer or an error, and the seconds until what was hurt was back."""
        from django.db import connection

        config = "PostgreSQL+Redis" if connection.vendor == "postgresql" else "embedded (SQLite, fs broker)"
        lost = "-" if load is None else f"{len(load.failures())} of {sum(load.counts().values())}"
        print(f"\nfault-matrix | {fault} | {config} | {lost} | {recovery:.1f} s")

    def load(self, threads: int = 2) -> Load:
        return Load(self.call, threads=threads)

    def outage(self, stop: Callable[[], None], start: Callable[[], None], scale_while_down: bool,
               down_seconds: float = 3.0) -> tuple[Load, float, float]:
        """A service stopped for `down_seconds` and started again under calls, with a rollout asked for before
        (or, `scale_while_down`, during) the outage; then scaled back. (load, seconds from the restart to the
        rollout's Succeeded, seconds from the stop to it)."""
        with self.load() as load:
            time.sleep(1)
            if not scale_while_down:
                scaled = self.scale(3)
            stop()
            stopped_at = time.monotonic()
            if scale_while_down:
                scaled = self.scale(3)
            assert scaled.status_code in (200, 202), scaled.text
            time.sleep(max(0.0, down_seconds - (time.monotonic() - stopped_at)))
            start()
            took = self.wait_succeeded(PROVISION_SECONDS)
            back = time.monotonic() - stopped_at
            assert len(self.ready_instances()) == 3
            assert self.scale(2).status_code in (200, 202)
            self.wait_succeeded(PROVISION_SECONDS)
            time.sleep(1)
        # The gateway's hot path needs neither the database nor the broker: every call was answered.
        assert load.failures() == [], load.failures()[:10]
        assert load.ok() > 0
        return load, took, back


@pytest.fixture(scope="module")
def studio(django_db_setup, django_db_blocker):
    with running_studio(django_db_blocker, "faults-studio") as running:
        yield running


@contextmanager
def running_studio(django_db_blocker, folder: str, before_start: Callable[[], dict[str, str]] | None = None,
                   **extra_env: str) -> Iterator[Studio]:
    """The supervised studio in `<data dir>/<folder>` (with `extra_env` over the test session's settings),
    its workspace, owner and online deployment; stopped and the database flushed at the end. `before_start`
    runs once its rows are written and returns more settings (a database of its own, copied from them)."""
    from django.contrib.auth import get_user_model

    from endpoints_app.catalog.instance_types import seed_instance_types
    from endpoints_app.models import ApiToken, Membership, Role, RouteVersion, Workspace

    stop_session_worker()
    # Beside the session's data dir (not under pytest's 0700 temporary folders): sandboxed model servers must
    # reach their own folders in it, as in a data dir made by `make run`.
    data_dir = Path(settings.DATA_DIR) / folder
    stop_instances_in(data_dir)
    shutil.rmtree(data_dir, ignore_errors=True)
    env = worker_env(
        STUDIO_NODE_NAME=NODE, STUDIO_HOST="127.0.0.1", STUDIO_WEB_WORKERS="2", STUDIO_WORKER_PROCESSES="2",
        STUDIO_WORKER_CONCURRENCY="3", STUDIO_GATEWAY_FLUSH_SECONDS="0.5", STUDIO_RECONCILE_SECONDS="1",
        STUDIO_DRAIN_SECONDS="1", LOG_LEVEL="INFO", **extra_env,
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    studio = Studio(data_dir=data_dir, port=free_port(), env=env)
    with django_db_blocker.unblock():
        seed_instance_types()
        RouteVersion.objects.get_or_create(pk=1)
        workspace = Workspace.objects.create(name="team", display_name="Team")
        owner = get_user_model().objects.create_user("olivia", password="correct horse battery staple")
        Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
        _, token = ApiToken.objects.create(user=owner)
        model = make_custom_model(workspace, data_dir / "model-code")
        studio.api = requests.Session()
        studio.api.headers["Authorization"] = f"Token {token}"
        if before_start is not None:
            studio.env.update(before_start())
        studio.start()
        try:
            studio.wait_healthy()
            api = studio.api
            assert api.post(f"{studio.url}{BASE}", json={"name": studio.endpoint}, timeout=30).status_code == 201
            body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2",
                    "instance_count": 2, "request_settings": {"max_concurrent_requests_per_instance": 8}}

            def created() -> list[requests.Response]:
                # /healthz answers once web is up; the worker registers its node a few seconds later (longer on
                # a busy machine), and until then a deployment is refused with 409 "No node is online".
                answer = api.post(f"{studio.url}{BASE}/{studio.endpoint}/deployments", json=body, timeout=30)
                return [] if answer.status_code == 409 and "No node is online" in answer.text else [answer]

            [answer] = wait_until(created, 90, "the studio's worker to register its node", interval=0.5)
            assert answer.status_code == 202, answer.text
            studio.wait_succeeded(180)
            studio.key = api.post(f"{studio.url}{BASE}/{studio.endpoint}/list-keys", timeout=30).json()["primary_key"]
            assert studio.call().status_code == 200
            yield studio
        finally:
            studio.stop()
            stop_instances_in(data_dir)
            call_command("flush", interactive=False, verbosity=0)


def stop_instances_in(data_dir: Path) -> None:
    from portal.supervisor import stop_instances as stop_all

    stop_all(data_dir)


__all__ = ["studio", "stop_instances"]
