"""Batch scoring throughput: rows per second of a batch job over 100,000 rows in 20 CSV files,
against one process that reads the same files and calls model.predict on them in a loop, in
the same run. Goals: job rate >= 0.8 x (single-process rate x cores used), and the job's fixed
overhead (invoke -> first mini-batch scored) under 3 s.

Run: .venv/bin/python bench/batch.py [--model iris-classifier] [--files 20] [--rows 100000]
                                     [--instances 2] [--repeat 3]

Makes a throwaway data dir (SQLite and the filesystem broker: the embedded default), migrates,
seeds the catalog, starts a real Celery worker with beat (as `make run` does), uploads the files
as a data asset through the REST API, and creates a batch endpoint whose deployment runs
`--instances` model servers (one scoring thread each: cores used = instances, at most the
machine's cores). Each round, alternating the order:
- single process: for each file, read it (the same CSV reader the model server uses), call
  model.predict, write one output row per input row (file, row, prediction) to a CSV;
- studio: invoke the endpoint (POST .../jobs), poll until Completed; check the output has every
  input row once. Rate = rows / (job finished - first mini-batch started); fixed overhead =
  first mini-batch finished - invoke (model servers start from zero: none runs between jobs),
  next to the same servers' cold start by hand (as many at once, time to the first ready).
Prints the figures and writes bench/results/batch-<time>.json.

With --azurite: the same files also in an Azure Blob container on Azurite (the Azure Storage
emulator, installed by `make install-test`), named by a datastore; each round runs one job on the
built-in data asset and one on azureml://datastores/blobs/paths/rows (alternating the order), and
compares their rows per second end to end (invoke -> Completed: the Azurite job includes fetching its
files). Goal: the Azurite job's rate >= 0.8 x the built-in one's."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"

from bench.common import owner_api, setup_studio, start_by_hand, start_worker, stop_studio, wait  # noqa: E402


def make_files(folder: Path, columns: list[str], files: int, rows: int) -> list[Path]:
    rng = random.Random(7)
    per_file = rows // files
    paths = []
    for i in range(files):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for _ in range(per_file):
            writer.writerow([round(rng.uniform(0, 8), 2) for _ in columns])
        path = folder / f"part-{i:03d}.csv"
        path.write_text(out.getvalue())
        paths.append(path)
    return paths


def single_process(model_path: str, files: list[Path], out_dir: Path) -> tuple[float, int]:
    """Seconds and rows for read + model.predict + write, file by file, in this process."""
    import joblib

    from endpoints_app.runtime import batchio

    model = joblib.load(model_path)
    names = getattr(model, "studio_feature_names", None)
    out_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    rows = 0
    with open(out_dir / "predictions.csv", "w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["file", "row", "prediction"])
        for path in files:
            matrix = batchio.read_matrix(path, 0, None, names)
            predictions = model.predict(matrix).tolist()
            writer.writerows([path.name, i, p] for i, p in enumerate(predictions))
            rows += len(predictions)
    return time.perf_counter() - began, rows


def studio_job(api, asset: str, expected_rows: int, instances: int) -> dict:
    from endpoints_app.models import BatchJob, MiniBatch

    body = {"inputs": {"input_data": {"type": "uri_folder", "path": asset}},
            "settings": {"mini_batch_size": 1, "instance_count": instances}}
    began = time.time()
    response = api.post("/api/v1/workspaces/bench/batch-endpoints/bench/jobs", body, format="json")
    assert response.status_code == 202, response.content
    name = response.json()["name"]
    wait(lambda: BatchJob.objects.filter(name=name, status__in=("Completed", "Failed", "Canceled")).exists(),
         timeout=600, interval=0.05, what="job done")
    job = BatchJob.objects.get(name=name)
    if job.status != "Completed":
        raise RuntimeError(f"job {name} {job.status}: {job.error}")
    batches = list(MiniBatch.objects.filter(job=job))
    first_start = min(m.started_at for m in batches).timestamp()
    first_done = min(m.finished_at for m in batches).timestamp()
    seen = set()
    with open(job.output_root / job.output_file_name, newline="") as fh:
        for row in csv.DictReader(fh):
            key = (row["file"], row["row"])
            if key in seen:
                raise RuntimeError(f"duplicate output row {key}")
            seen.add(key)
    if len(seen) != expected_rows:
        raise RuntimeError(f"output has {len(seen)} rows, expected {expected_rows}")
    scoring_s = job.finished_at.timestamp() - first_start
    return {"job": name, "rows": job.rows_done, "total_s": round(job.finished_at.timestamp() - began, 3),
            "scoring_s": round(scoring_s, 3), "rows_per_s": job.rows_done / scoring_s,
            "overhead_s": round(first_done - began, 3), "mini_batches": len(batches)}


def studio_job_end_to_end(api, path: str, expected_rows: int, instances: int) -> float:
    """Rows per second from invoke to Completed (what a user waits for)."""
    result = studio_job(api, path, expected_rows, instances)
    return result["rows"] / result["total_s"]


def compare_datastores(api, files: list[Path], asset: str, rows_total: int, args) -> None:
    from tests.storage_servers import start_azurite, stop

    azurite, proc, folder = start_azurite()
    try:
        container = azurite.container("bench")
        for path in files:
            with open(path, "rb") as fh:
                container.upload_blob(f"rows/{path.name}", fh, overwrite=True)
        created = api.post("/api/v1/workspaces/bench/datastores", azurite.spec("blobs", "bench"), format="json")
        assert created.status_code == 201, created.content
        rates: dict[str, list[float]] = {"builtin": [], "azurite": []}
        paths = {"builtin": asset, "azurite": "azureml://datastores/blobs/paths/rows"}
        for run in range(args.repeat):
            for side in (("builtin", "azurite") if run % 2 == 0 else ("azurite", "builtin")):
                wait(lambda: not _running_batch_servers(), 60, 0.2, "batch servers stopped")
                rate = studio_job_end_to_end(api, paths[side], rows_total, args.instances)
                rates[side].append(rate)
                print(f"round {run + 1}: {side:8s} {rate:10,.0f} rows/s end to end", flush=True)
    finally:
        stop(proc)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
    builtin, blob = statistics.median(rates["builtin"]), statistics.median(rates["azurite"])
    print(f"\nmodel {args.model}, {rows_total:,} rows in {args.files} files, {args.instances} instances")
    print(f"built-in datastore {builtin:10,.0f} rows/s (median of {len(rates['builtin'])}, invoke -> Completed)")
    print(f"Azure Blob (Azurite) {blob:8,.0f} rows/s = {blob / builtin:.2f} x built-in   goal >= 0.80   "
          f"{'OK' if blob >= 0.8 * builtin else 'MISSED'}   load average {os.getloadavg()[0]:.1f}")
    out = ROOT / "bench" / "results" / f"batch-azurite-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "rows": rows_total, "files": args.files,
                               "instances": args.instances, "rates": rates, "ratio": blob / builtin}, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="iris-classifier")
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--instances", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--azurite", action="store_true",
                        help="compare inputs on Azurite (Azure Blob) with the built-in datastore")
    args = parser.parse_args()

    data_dir = setup_studio("batch", STUDIO_NODE_NAME=NODE, STUDIO_MAX_UPLOAD_MB="1000")
    from django.core.files.uploadedfile import SimpleUploadedFile

    from endpoints_app.models import CatalogModel, Deployment
    from endpoints_app.runtime.launch import resolve_artifact
    from endpoints_app.services.batch import expected_columns

    api = owner_api()
    model = CatalogModel.objects.get(registry="studio", name=args.model)
    if model.format != "sklearn":
        raise SystemExit("--model must be a scikit-learn catalog model (the reference calls model.predict)")
    files = make_files(Path(tempfile.mkdtemp(prefix="batch-input-", dir=data_dir)), expected_columns(model),
                       args.files, args.rows)
    rows_total = (args.rows // args.files) * args.files
    uploads = [SimpleUploadedFile(p.name, p.read_bytes()) for p in files]
    created = api.post("/api/v1/workspaces/bench/data", {"name": "bench-rows", "files": uploads}, format="multipart")
    assert created.status_code == 201, created.content
    asset = created.json()["id"]
    assert api.post("/api/v1/workspaces/bench/batch-endpoints", {"name": "bench"}, format="json").status_code == 201
    deployment = {"name": "blue", "model": model.asset_id, "instance_type": "Standard_DS1_v2",
                  "instance_count": args.instances}
    assert api.post("/api/v1/workspaces/bench/batch-endpoints/bench/deployments", deployment,
                    format="json").status_code == 201

    worker = start_worker(data_dir, NODE)
    if args.azurite:
        try:
            compare_datastores(api, files, asset, rows_total, args)
        finally:
            stop_studio(data_dir, [worker])
        return
    cores_used = min(args.instances, os.cpu_count() or 1)
    singles, jobs, starts = [], [], []
    try:
        artifact = str(resolve_artifact(model.artifact_path))
        for run in range(args.repeat):
            order = ("single", "studio") if run % 2 == 0 else ("studio", "single")
            for side in order:
                if side == "single":
                    starts.append(start_by_hand(Deployment.objects.get(name="blue"), args.instances))
                    seconds, rows = single_process(artifact, files, Path(data_dir) / "single")
                    singles.append(rows / seconds)
                    print(f"round {run + 1}: single process {rows / seconds:10,.0f} rows/s ({seconds:.2f} s)",
                          flush=True)
                else:
                    # Scale to zero between jobs: the next job starts its model servers again.
                    wait(lambda: not _running_batch_servers(), 60, 0.2, "batch servers stopped")
                    result = studio_job(api, asset, rows_total, args.instances)
                    jobs.append(result)
                    print(f"round {run + 1}: studio job     {result['rows_per_s']:10,.0f} rows/s "
                          f"({result['scoring_s']:.2f} s scoring, {result['total_s']:.2f} s in all, "
                          f"overhead {result['overhead_s']:.2f} s)", flush=True)
    finally:
        stop_studio(data_dir, [worker])

    single = statistics.median(singles)
    job_rate = statistics.median(j["rows_per_s"] for j in jobs)
    overhead = statistics.median(j["overhead_s"] for j in jobs)
    target = 0.8 * single * cores_used
    print(f"\nmodel {args.model}, {rows_total:,} rows in {args.files} files, {args.instances} instances, "
          f"{cores_used} cores used, machine cores {os.cpu_count()}")
    print(f"single process  {single:10,.0f} rows/s (median of {len(singles)})")
    print(f"studio job      {job_rate:10,.0f} rows/s = {job_rate / single:.2f} x single = "
          f"{job_rate / (single * cores_used):.2f} x (single x {cores_used} cores)   goal >= 0.80   "
          f"{'OK' if job_rate >= target else 'MISSED'}")
    start = statistics.median(starts)
    print(f"fixed overhead  {overhead:10.2f} s invoke -> first mini-batch scored   goal < 3 s   "
          f"{'OK' if overhead < 3 else 'MISSED'}")
    print(f"  of which      {start:10.2f} s is the model servers' own cold start ({args.instances} started by "
          f"hand at once, first ready, same run); the studio adds {overhead - start:.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}")
    out = ROOT / "bench" / "results" / f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "model": args.model, "rows": rows_total, "files": args.files, "instances": args.instances,
        "cores_used": cores_used, "machine_cores": os.cpu_count(), "single_rows_per_s": singles,
        "jobs": jobs, "ratio_to_single_x_cores": job_rate / (single * cores_used), "overhead_s": overhead,
        "cold_start_s": starts, "load_average": os.getloadavg(),
    }, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


def _running_batch_servers() -> bool:
    from endpoints_app.models import Instance

    return Instance.objects.filter(deployment__endpoint__kind="batch").exclude(
        state__in=("Stopped", "Failed")).exists()


if __name__ == "__main__":
    main()
