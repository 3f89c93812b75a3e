"""Helpers the benchmark scripts share (each script puts the repo root on sys.path)."""

import http.client
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of raw timings."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def wait(condition, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll until `condition()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(what)


# -- a throwaway studio in the bench's own process --------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[1]


def setup_studio(prefix: str, **env: str) -> Path:
    """A fresh data dir on the embedded default (SQLite, the filesystem broker), DEBUG off; Django set
    up in this process, migrated, with the instance types and the catalog seeded. `env` adds settings."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"studio-bench-{prefix}-"))
    os.environ.update({
        "STUDIO_DATA_DIR": str(data_dir), "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50),
        "LOG_LEVEL": "WARNING", "DJANGO_SETTINGS_MODULE": "portal.settings",
        "STUDIO_ALLOWED_HOSTS": "testserver",  # the host name of the in-process REST client (owner_api)
        **env,
    })
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)

    import django

    django.setup()
    from django.core.management import call_command

    from endpoints_app.catalog.instance_types import seed_instance_types
    from endpoints_app.catalog.seed import seed_catalog

    call_command("migrate", verbosity=0)
    seed_instance_types()
    seed_catalog()
    return data_dir


def owner_api(password: str | None = None):
    """Workspace `bench` and its owner `bench`, and a REST client holding the owner's API token."""
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    from endpoints_app.models import ApiToken, Membership, Workspace

    workspace = Workspace.objects.create(name="bench")
    user = get_user_model().objects.create_user("bench", password=password)
    Membership.objects.create(workspace=workspace, user=user, role="Owner")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {ApiToken.objects.create(user=user)[1]}")
    return api


def start_process(argv: list[str], log_path: Path) -> subprocess.Popen:
    """A studio process (worker, web) from the venv's bin, in its own process group, logging to a file."""
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(Path(sys.executable).parent / argv[0]), *argv[1:]], cwd=ROOT,
                                env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_worker(data_dir: Path, node: str, level: str = "info") -> subprocess.Popen:
    """A Celery worker with beat, as `make run` starts it, registered as `node`; returns once it heartbeats."""
    from endpoints_app.models import Node

    worker = start_process(["celery", "-A", "portal", "worker", "-B", "-Q", f"celery,node.{node}",
                            "-n", f"worker@{node}", "-c", "4", "-l", level], data_dir / "worker.log")
    wait(lambda: Node.objects.filter(name=node, last_heartbeat__isnull=False).exists() or worker.poll() is not None,
         90, 0.2, "worker")
    if worker.poll() is not None:
        raise RuntimeError(f"the worker exited; see {data_dir / 'worker.log'}")
    return worker


def stop_studio(data_dir: Path, processes: list[subprocess.Popen]) -> None:
    """Stop the processes (SIGTERM, then SIGKILL after 20 s) and every model server they started."""
    from portal.supervisor import stop_instances

    for proc in processes:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    stop_instances(data_dir)


def ready(port: int, path: str, headers: dict[str, str] | None = None) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path, headers=headers or {})
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def start_by_hand(deployment, count: int = 1) -> float:
    """Seconds from the start to the first ready server, starting `count` of the deployment's model
    server by hand at once, as the controller would: same argv, environment and sandbox (each on its
    own socket, reached as the controller's probes reach it)."""
    from django.conf import settings

    from endpoints_app.controller.placement import _bindable
    from endpoints_app.runtime import channel, sandbox
    from endpoints_app.runtime.launch import launch_spec

    # The studio's own instance port range (STUDIO_INSTANCE_PORT_MIN/MAX), from its top down: runs
    # that share a machine keep to their own ranges (the port names the instance and its secret).
    low, high = settings.STUDIO_INSTANCE_PORTS
    ports = [p for p in range(high, low - 1, -1) if _bindable("127.0.0.1", p)][:count]
    names = [f"by-hand-{port}" for port in ports]
    specs = [launch_spec(deployment, port, name=name) for port, name in zip(ports, names, strict=True)]
    began = time.monotonic()
    for spec in specs:
        sandbox.prepare(spec.sandbox)
    procs = [sandbox.popen(spec.sandbox, spec.argv, spec.env, spec.cwd, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL) for spec in specs]

    def ready_over_socket(name: str, spec) -> bool:
        conn = channel.connection(Path(settings.DATA_DIR), name, 2)
        try:
            conn.request("GET", spec.ready_path, headers=spec.probe_headers)
            return conn.getresponse().status == 200
        except OSError:
            return False
        finally:
            conn.close()

    try:
        servers = list(zip(names, specs, strict=True))
        wait(lambda: any(ready_over_socket(name, spec) for name, spec in servers)
             or all(p.poll() is not None for p in procs), 300, 0.05, "ready by hand")
        if all(p.poll() is not None for p in procs):
            raise RuntimeError(f"the server exited with {procs[0].returncode}: {specs[0].argv}")
        return time.monotonic() - began
    finally:
        for proc, spec in zip(procs, specs, strict=True):
            if proc.poll() is None:
                sandbox.signal_sandbox(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sandbox.signal_sandbox(proc.pid, signal.SIGKILL)
            sandbox.remove(spec.sandbox)
