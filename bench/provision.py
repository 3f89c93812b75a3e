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
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"

from bench.common import owner_api, setup_studio, start_by_hand, start_worker, stop_studio, wait  # noqa: E402


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

    data_dir = setup_studio("provision", STUDIO_NODE_NAME=NODE)
    from endpoints_app.models import CatalogModel, Deployment, Endpoint, InstanceType

    api = owner_api()
    base = "/api/v1/workspaces/bench/online-endpoints/bench"
    created = api.post("/api/v1/workspaces/bench/online-endpoints", {"name": "bench"}, format="json")
    assert created.status_code == 201, created.content

    worker = start_worker(data_dir, NODE)
    results = []
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            model = CatalogModel.objects.get(registry="studio", name=name)
            sample = Deployment(endpoint=Endpoint.objects.get(name="bench"), name="hand", model=model,
                                instance_type=InstanceType.objects.get(name="Standard_DS1_v2"))
            hand, studio = [], []
            for run in range(args.repeat):
                # Alternate the order so page cache and CPU contention favour neither side.
                if run % 2 == 0:
                    hand.append(start_by_hand(sample))
                    studio.append(through_studio(api, base, model.asset_id, f"run{run}"))
                else:
                    studio.append(through_studio(api, base, model.asset_id, f"run{run}"))
                    hand.append(start_by_hand(sample))
            h, s = statistics.median(hand), statistics.median(studio)
            goal = 1.3 * h + 2
            row = {"model": name, "format": model.format, "by_hand_s": round(h, 3), "studio_s": round(s, 3),
                   "goal_s": round(goal, 3), "meets_goal": s <= goal, "by_hand_runs": [round(x, 3) for x in hand],
                   "studio_runs": [round(x, 3) for x in studio]}
            results.append(row)
            print(f"{name:28s} by hand {h:6.2f} s   studio {s:6.2f} s   goal <= {goal:6.2f} s   "
                  f"{'OK' if s <= goal else 'MISSED'}", flush=True)
    finally:
        stop_studio(data_dir, [worker])
    out = ROOT / "bench" / "results" / f"provision-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine_cores": os.cpu_count(), "repeat": args.repeat, "results": results}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
