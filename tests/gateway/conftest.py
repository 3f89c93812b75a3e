"""Gateway tests drive real processes: the gateway (uvicorn, or gunicorn with
several workers) and upstream model servers, all sharing the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from endpoints_app import keys
from endpoints_app.instance_auth import instance_secret
from endpoints_app.models import (
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    InstanceType,
    Node,
    RouteVersion,
)
from tests.live import free_port, worker_env  # noqa: F401 - free_port: test modules import it from here

ROOT = Path(__file__).resolve().parents[2]
UPSTREAM = Path(__file__).with_name("upstream.py")
BIN = Path(sys.executable).parent
TEST_MAX_PAYLOAD = 65536

INPUT_SCHEMA = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"type": "array", "items": {"type": "number"}}},
}
OUTPUT_SCHEMA = {"type": "object", "properties": {"predictions": {"type": "array", "items": {"type": "number"}}}}


def child_env(**extra: str) -> dict[str, str]:
    """Environment of gateway and server processes: the live worker's (test database, data dir,
    SECRET_KEY) with quick usage flushes and a small payload limit."""
    defaults = {"STUDIO_GATEWAY_FLUSH_SECONDS": "0.5", "STUDIO_GATEWAY_MAX_PAYLOAD_BYTES": str(TEST_MAX_PAYLOAD)}
    return worker_env(**{**defaults, **extra})


def wait_http(url: str, timeout: float = 60.0, proc: subprocess.Popen | None = None, ok: bool = False) -> None:
    """Until the URL answers (with a 2xx if ok)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).ok or not ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise TimeoutError(url)


class Processes:
    """Processes a test started; each runs in its own session and is stopped at teardown."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen] = []

    def start(self, argv: list[str], env: dict[str, str] | None = None, name: str = "proc") -> subprocess.Popen:
        log = open(self.log_dir / f"{name}-{len(self.started)}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, env=env or child_env(), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        proc.log_file = log
        self.started.append(proc)
        return proc

    def upstream(self, bias: float = 0.0, delay_ms: float = 0.0) -> tuple[int, subprocess.Popen]:
        port = free_port()
        proc = self.start([sys.executable, str(UPSTREAM), "--port", str(port), "--bias", str(bias),
                           "--delay-ms", str(delay_ms)], name="upstream")
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc=proc)
        return port, proc

    def sklearn_server(self, artifact: Path, secret_for: str | None = None) -> tuple[int, subprocess.Popen]:
        """The studio's real model server on a scikit-learn model; with `secret_for` (an instance name) it
        takes that instance's secret, as the controller starts it."""
        port = free_port()
        env = child_env()
        if secret_for:
            env["STUDIO_INSTANCE_SECRET"] = instance_secret(secret_for, port)
        proc = self.start([sys.executable, "-m", "endpoints_app.runtime.server", "--format", "sklearn",
                           "--artifact", str(artifact), "--port", str(port), "--threads", "2"], env=env,
                          name="model")
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc=proc, ok=True)
        return port, proc

    def gateway(self, workers: int = 1, **env: str) -> tuple[str, subprocess.Popen]:
        port = free_port()
        if workers == 1:
            argv = [str(BIN / "uvicorn"), "endpoints_app.gateway.asgi:application", "--port", str(port),
                    "--lifespan", "on", "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
        else:
            argv = [str(BIN / "gunicorn"), "endpoints_app.gateway.asgi:application", "-k",
                    "uvicorn_worker.UvicornWorker", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                    "--graceful-timeout", "10"]
        proc = self.start(argv, env=child_env(**env), name="gateway")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/inference/", proc=proc)
        return url, proc

    def stop(self, proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.log_file.close()

    def stop_all(self) -> None:
        for proc in reversed(self.started):
            if proc.poll() is None:
                self.stop(proc, timeout=5)
            elif not proc.log_file.closed:
                proc.log_file.close()


@pytest.fixture
def procs(tmp_path):
    processes = Processes(tmp_path)
    yield processes
    processes.stop_all()


@pytest.fixture
def node(db):
    return Node.objects.create(name="local", host="127.0.0.1", cores=2, memory_gb=4, queue="node.local")


@pytest.fixture
def catalog_model(db):
    return CatalogModel.objects.create(
        name="tiny-regressor", task="regression", format="custom", license="MIT",
        input_schema=INPUT_SCHEMA, output_schema=OUTPUT_SCHEMA,
        sample_request={"data": [1, 2]}, sample_response={"predictions": [1, 2]}, deployment_kinds=["online"],
    )


def set_key(endpoint: Endpoint, slot: str) -> str:
    """Give the endpoint a new key in that slot (as regenerate-keys does) and return it."""
    nonce = keys.new_nonce()
    setattr(endpoint, f"{slot}_key_nonce", nonce)
    endpoint.save(update_fields=[f"{slot}_key_nonce"])
    return keys.derive_key(nonce)


@pytest.fixture
def make_endpoint(workspace, node, catalog_model):
    """make_endpoint("name", {"blue": ([port, ...], traffic%, request_settings)}, mirror={...}) -> (endpoint, keys)"""

    def make(name: str, deployments: dict, mirror: dict | None = None, auth_mode: str = "key",
             states: dict[str, str] | None = None) -> tuple[Endpoint, dict[str, str]]:
        endpoint = Endpoint.objects.create(
            workspace=workspace, name=name, auth_mode=auth_mode, provisioning_state="Succeeded",
            traffic={d: spec[1] for d, spec in deployments.items()}, mirror_traffic=mirror or {},
        )
        creds = {"primary": set_key(endpoint, "primary"), "secondary": set_key(endpoint, "secondary")}
        instance_type = InstanceType.objects.first()
        for dep_name, (ports, _traffic, request_settings) in deployments.items():
            deployment = Deployment.objects.create(
                endpoint=endpoint, name=dep_name, model=catalog_model, instance_type=instance_type,
                instance_count=len(ports), request_settings=request_settings, provisioning_state="Succeeded",
            )
            for index, port in enumerate(ports):
                Instance.objects.create(
                    deployment=deployment, name=f"{name}-{dep_name}-{index}", node=node, port=port,
                    state=(states or {}).get(dep_name, InstanceState.READY),
                )
        RouteVersion.bump()
        return endpoint, creds

    return make


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
