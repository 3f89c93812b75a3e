"""A real three-node Ray cluster on 127.0.0.1 (tests/ray_cluster.py) and the studio in front of it:
the session's live worker (its Ray driver on 127.0.0.1) and the studio's web + gateway process
(portal.asgi), which Ray nodes fetch artifacts from and clients call."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from tests import ray_cluster
from tests.live import BIN, ROOT, _answers, free_port, pause_controller, resume_controller, wait_for, worker_env

BASE = "/api/v1/workspaces/team/online-endpoints"


@pytest.fixture(scope="session")
def ray_cluster_session():
    cluster = ray_cluster.start(("n1", "n2", "n3"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def studio_web(live_worker_process, django_db_blocker, tmp_path_factory):
    """portal.asgi (Django + gateway) on the test database; the worker restarted to know its URL."""
    import requests

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    os.environ["STUDIO_INTERNAL_URL"] = url
    os.environ["STUDIO_RAY_NODE_IP"] = "127.0.0.1"
    # Serverless pools run on the compute named `cluster` (the `cluster` fixture's) where one exists.
    os.environ["STUDIO_SERVERLESS_COMPUTE"] = "cluster"
    log_path = tmp_path_factory.mktemp("studio-web") / "web.log"
    log = open(log_path, "wb")
    argv = [str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan", "on",
            "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    with django_db_blocker.unblock():
        proc = subprocess.Popen(argv, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            wait_for(lambda: _answers(requests, url + "/healthz") or proc.poll() is not None, timeout=60,
                     what="the studio's web process")
            assert proc.poll() is None, log_path.read_text()
            resume_controller()  # a paused worker does not register its node, which restart() waits for
            live_worker_process.restart()
            pause_controller()
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()


@pytest.fixture
def cluster(ray_cluster_session, studio_web, live_worker):
    """The cluster as a `ray` compute named `cluster`; at the end, every actor a test left goes."""
    from endpoints_app.models.computes import Compute

    Compute.local()
    compute = Compute.objects.create(name="cluster", type="ray", address=ray_cluster_session.address,
                                     state="Ready")
    ray_cluster_session.compute = compute
    ray_cluster_session.web = studio_web
    yield ray_cluster_session
    pause_controller()
    time.sleep(0.3)
    ray_cluster.kill_actors(ray_cluster_session.address)


def deploy_on(api, compute, endpoint: str, name: str, model: str, count: int, create_endpoint: bool = True,
              timeout: float = 120, **spec) -> dict:
    """A deployment on `compute` (`compute:` in its spec; `spec` adds or overrides fields), once
    Succeeded or Failed."""
    if create_endpoint:
        assert api.post(BASE, {"name": endpoint}, format="json").status_code == 201
    body = {"name": name, "model": model, "instance_type": "Standard_DS1_v2", "instance_count": count,
            "compute": compute.name, **spec}
    answer = api.post(f"{BASE}/{endpoint}/deployments", body, format="json")
    assert answer.status_code == 202, answer.content
    return wait_for(
        lambda: (d := api.get(f"{BASE}/{endpoint}/deployments/{name}").json())["provisioning_state"]
        in ("Succeeded", "Failed") and d, timeout=timeout, what=f"{endpoint}/{name} provisioned")


class Load:
    """One client in a loop through the gateway (so at most one request is in flight at a time)."""

    def __init__(self, url: str, key: str, body: dict | None = None) -> None:
        self.url, self.key, self.body = url, key, body if body is not None else {"data": [1]}
        self.statuses: list[tuple[float, int, str]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        import requests

        with requests.Session() as session:
            while not self.stopping.is_set():
                try:
                    r = session.post(self.url, json=self.body, headers={"Authorization": f"Bearer {self.key}"},
                                     timeout=10)
                    self.statuses.append((time.monotonic(), r.status_code, r.text[:200]))
                except requests.RequestException as exc:
                    self.statuses.append((time.monotonic(), 0, str(exc)[:200]))

    def start(self) -> Load:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)

    def failures(self) -> list[tuple[float, int, str]]:
        return [s for s in self.statuses if s[1] != 200]
