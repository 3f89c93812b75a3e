"""Provisioning time: seconds from the create call to Succeeded, against starting the
same model server by hand and waiting for it to be ready. Goal: studio <= 1.3 x hand + 2 s.

Run: .venv/bin/python bench/provision.py [--models iris-classifier,all-minilm-l6-v2] [--repeat 3]

Makes a throwaway data dir (SQLite and the filesystem broker: the embedded default),
migrates, seeds the catalog, starts a real Celery worker with beat (as `make run`
does), then for each model alternates:
- by hand: the same argv/env the controller would use (runtime.launch.launch_spec),
  Popen, poll the readiness path every 50 ms until it answers 200;
- studio: POST .../deployments through the REST API (in-process client), poll the
  deployment until provisioning_state is Succeeded; then delete it and wait until gone.
Prints one line per model and writes bench/results/provision-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"

from bench.common import wait  # noqa: E402


def ready(port: int, path: str) -> bool:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def by_hand(deployment) -> float:
    from endpoints_app.controller.placement import _bindable
    from endpoints_app.runtime.launch import launch_spec

    port = next(p for p in range(31000, 32000) if _bindable("127.0.0.1", p))
    spec = launch_spec(deployment, port)
    began = time.monotonic()
    proc = subprocess.Popen(spec.argv, env=spec.env, cwd=spec.cwd, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait(lambda: ready(port, spec.ready_path) or proc.poll() is not None, timeout=300, what="ready by hand")
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {spec.argv}")
        return time.monotonic() - began
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def through_studio(api, base: str, model_id: str, name: str) -> float:
    from endpoints_app.models import Deployment

    body = {"name": name, "model": model_id, "instance_type": "Standard_DS1_v2", "instance_count": 1}
    began = time.monotonic()
    response = api.post(f"{base}/deployments", body, format="json")
    assert response.status_code == 202, response.content
    state = wait(
        lambda: (s := Deployment.objects.filter(name=name).values_list("provisioning_state", flat=True).first())
        in ("Succeeded", "Failed") and s,
        timeout=300, what="Succeeded",
    )
    elapsed = time.monotonic() - began
    if state != "Succeeded":
        raise RuntimeError(Deployment.objects.get(name=name).error)
    assert api.delete(f"{base}/deployments/{name}").status_code in (202, 204)
    wait(lambda: not Deployment.objects.filter(name=name).exists(), timeout=120, what="deleted")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="iris-classifier,all-minilm-l6-v2")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="studio-bench-provision-")
    os.environ.update({
        "STUDIO_DATA_DIR": data_dir, "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50),
        "LOG_LEVEL": "WARNING", "STUDIO_NODE_NAME": NODE, "DJANGO_SETTINGS_MODULE": "portal.settings",
    })
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework.test import APIClient

    from endpoints_app.catalog.instance_types import seed_instance_types
    from endpoints_app.catalog.seed import seed_catalog
    from endpoints_app.models import ApiToken, CatalogModel, Deployment, Endpoint, InstanceType, Membership, Workspace
    from portal.supervisor import stop_instances

    call_command("migrate", verbosity=0)
    seed_instance_types()
    seed_catalog()
    workspace = Workspace.objects.create(name="bench")
    user = get_user_model().objects.create_user("bench")
    Membership.objects.create(workspace=workspace, user=user, role="Owner")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ApiToken.objects.create(user=user)[1]}")
    base = "/api/v1/workspaces/bench/online-endpoints/bench"
    assert api.post("/api/v1/workspaces/bench/online-endpoints", {"name": "bench"}, format="json").status_code == 201

    log_path = Path(data_dir) / "worker.log"
    worker = subprocess.Popen(
        [str(Path(sys.executable).parent / "celery"), "-A", "portal", "worker", "-B", "-Q", f"celery,node.{NODE}",
         "-n", f"worker@{NODE}", "-c", "4", "-l", "info"],
        cwd=ROOT, env=dict(os.environ), stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    results = []
    try:
        from endpoints_app.models import Node

        wait(lambda: Node.objects.filter(name=NODE, last_heartbeat__isnull=False).exists(), 90, 0.2, "worker")
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = CatalogModel.objects.get(registry="studio", name=name)
            sample = Deployment(endpoint=Endpoint.objects.get(name="bench"), name="hand", model=model,
                                instance_type=InstanceType.objects.get(name="Standard_DS1_v2"))
            hand, studio = [], []
            for run in range(args.repeat):
                # Alternate the order so page cache and CPU contention favour neither side.
                if run % 2 == 0:
                    hand.append(by_hand(sample))
                    studio.append(through_studio(api, base, model.asset_id, f"run{run}"))
                else:
                    studio.append(through_studio(api, base, model.asset_id, f"run{run}"))
                    hand.append(by_hand(sample))
            h, s = statistics.median(hand), statistics.median(studio)
            goal = 1.3 * h + 2
            row = {"model": name, "format": model.format, "by_hand_s": round(h, 3), "studio_s": round(s, 3),
                   "goal_s": round(goal, 3), "meets_goal": s <= goal, "by_hand_runs": [round(x, 3) for x in hand],
                   "studio_runs": [round(x, 3) for x in studio]}
            results.append(row)
            print(f"{name:28s} by hand {h:6.2f} s   studio {s:6.2f} s   goal <= {goal:6.2f} s   "
                  f"{'OK' if s <= goal else 'MISSED'}", flush=True)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        stop_instances(Path(data_dir))
    out = ROOT / "bench" / "results" / f"provision-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine_cores": os.cpu_count(), "repeat": args.repeat, "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
