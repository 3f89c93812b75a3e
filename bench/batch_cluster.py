"""A batch job on a Ray compute against the same job on the local compute, in one run: seconds from the
invoke to Completed, three instances each, the same input (the seeded iris-classifier, FILES CSV files of
ROWS rows, one file per mini-batch); local and Ray runs alternate.

Run: .venv/bin/python bench/batch_cluster.py [--files 30] [--rows 2000] [--repeat 2]

Makes a throwaway studio (bench/common.py: SQLite and the filesystem broker), a real Ray cluster of three
nodes on this machine (tests/ray_cluster.py), the studio's web process (which the nodes fetch artifacts and
inputs from) and a Celery worker with beat. Prints a summary and writes bench/results/batch-cluster-<time>.json."""

from __future__ import annotations

import argparse
import csv
import io
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.cluster import cluster_studio, write_results  # noqa: E402
from bench.common import wait  # noqa: E402

EP = "/api/v1/workspaces/bench/batch-endpoints"


def iris_file(rows: int, seed: int) -> bytes:
    from endpoints_app.catalog.cards import IRIS_COLUMNS

    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(IRIS_COLUMNS)
    for _ in range(rows):
        writer.writerow([round(rng.uniform(4, 8), 1), round(rng.uniform(2, 4.5), 1), round(rng.uniform(1, 7), 1),
                         round(rng.uniform(0.1, 2.5), 1)])
    return out.getvalue().encode()


def run_job(api, endpoint: str) -> float:
    from endpoints_app.models import BatchJob

    began = time.monotonic()
    answer = api.post(f"{EP}/{endpoint}/jobs", {"inputs": {"input_data": {
        "type": "uri_folder", "path": "studio:data/rows/versions/1"}}}, format="json")
    assert answer.status_code == 202, answer.content
    name = answer.json()["name"]
    status = wait(lambda: (s := BatchJob.objects.filter(name=name).values_list("status", flat=True).first())
                  in ("Completed", "Failed", "Canceled") and s, timeout=600, interval=0.1, what=f"job {name}")
    elapsed = time.monotonic() - began
    job = BatchJob.objects.get(name=name)
    if status != "Completed" or job.mini_batches_failed:
        raise RuntimeError(f"job {name} on {endpoint}: {status} {job.error}")
    # Its servers stop between runs, so each run starts them (as every job does).
    wait(lambda: not job.instances.exclude(state__in=("Stopped", "Failed")).exists(), 120, 0.2, "servers stopped")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    results: dict = {"machine_cores": os.cpu_count(), "args": vars(args)}
    with cluster_studio("batch-cluster") as (_cluster, api, _web):
        from django.core.files.uploadedfile import SimpleUploadedFile

        from endpoints_app.models import CatalogModel

        files = [SimpleUploadedFile(f"part-{n:03d}.csv", iris_file(args.rows, n)) for n in range(args.files)]
        assert api.post("/api/v1/workspaces/bench/data", {"name": "rows", "files": files},
                        format="multipart").status_code == 201
        model = CatalogModel.objects.get(registry="studio", name="iris-classifier")
        for kind, compute in (("local", "local"), ("ray", "cluster")):
            assert api.post(EP, {"name": kind}, format="json").status_code == 201
            made = api.post(f"{EP}/{kind}/deployments", {
                "name": "blue", "model": model.asset_id, "instance_type": "Standard_DS1_v2", "instance_count": 3,
                "mini_batch_size": args.rows, "compute": compute}, format="json")
            assert made.status_code == 201, made.content

        times: dict[str, list[float]] = {"local": [], "ray": []}
        for run in range(args.repeat):
            for kind in (("local", "ray") if run % 2 == 0 else ("ray", "local")):
                times[kind].append(run_job(api, kind))
                print(f"{kind}: {times[kind][-1]:.2f} s", flush=True)
        results["invoke_to_completed_s"] = {
            k: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]} for k, v in times.items()}
        local, on_ray = (results["invoke_to_completed_s"][k]["median"] for k in ("local", "ray"))
        results["ray_over_local"] = round(on_ray / local, 3)
        print(f"batch job of {args.files * args.rows} rows ({args.files} mini-batches), 3 instances: invoke -> "
              f"Completed local {local} s, Ray {on_ray} s ({results['ray_over_local']} x; median of {args.repeat})",
              flush=True)
    write_results("batch-cluster", results)


if __name__ == "__main__":
    main()
