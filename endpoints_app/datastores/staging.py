"""The trusted side of jobs whose data lives in other datastores (the worker; no user code here).

Model servers run sandboxed with no network and no credentials, so the worker does the storage work:
- stage_inputs(job): fetch every remote input's files (streamed, each to a temporary file renamed
  into place) into `<workspace>/.job-inputs/<job>/<input>/` of the studio's store, which the job's
  servers read (a few files at once); then check and split input_data into mini-batches exactly as an
  upload would be.
  A file already fetched whole (same size) is not fetched again, so a worker killed mid-way costs
  only the file it was on; one worker stages a job at a time (an advisory lock that dies with it).
- publish_output(job): after the merge, upload the merged output to `outputs.score.path`, one
  streamed upload that the service commits whole (a retried job uploads the same bytes again), and
  for a uri_folder output each file a score.py wrote to its output folder, the same way.
- remove_staged(job): drop the fetched copies once the job has ended."""

from __future__ import annotations

import fcntl
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

from django.conf import settings as conf
from django.db import transaction

from endpoints_app.datastores.storage import StorageError
from endpoints_app.errors import InvalidInput
from endpoints_app.models import BatchJob, JobStatus, MiniBatch, datastore_root

log = logging.getLogger("studio.batch")
FETCH_THREADS = 4


class StagingError(Exception):
    """The job cannot get its inputs or place its output; the message names the input and the cause."""


def staging_root(job: BatchJob) -> Path:
    from endpoints_app.services.batch import STAGING_DIR

    # The workspace's name from output_dir (`<workspace>/batch-jobs/<job>`): no query, so a mini-batch's
    # sending thread can call it.
    return datastore_root() / job.output_dir.split("/", 1)[0] / STAGING_DIR / job.name


def _fetch(job: BatchJob, name: str, value: dict, target: Path) -> None:
    from endpoints_app.services import datastores as ds_svc
    from endpoints_app.services.data import resolve_input

    field = f"inputs.{name}"
    try:
        resolved = resolve_input(job.workspace, {"type": value.get("type"), "path": value.get("path")}, field)
    except InvalidInput as exc:
        raise StagingError(f"{exc.field or field}: {exc.message}") from None
    remote = resolved.remote
    if remote is None:
        return
    try:
        _, store = ds_svc.open_store(job.workspace, remote.datastore, field)
        base = target.resolve()
        wanted: list[tuple[str, Path]] = []
        for path, shown, size in remote.entries:
            local = (target / PurePosixPath(shown)).resolve()
            if base not in local.parents:
                raise StagingError(f"{field}: datastore '{remote.datastore}' names a file {shown!r} that would "
                                   "land outside the job's folder; it is refused.")
            if local.is_file() and local.stat().st_size == size:
                continue  # fetched whole before a restart
            wanted.append((path, local))
        # A few files at once: each one's round trips to the service overlap the others' (the SDK clients
        # are safe to share between threads); every file is still streamed to its own temporary file.
        with ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="fetch") as pool:
            for done in [pool.submit(store.download, path, local) for path, local in wanted]:
                done.result()
    except StorageError as exc:
        raise StagingError(f"{field}: datastore '{remote.datastore}': {exc.message}") from None
    except InvalidInput as exc:
        raise StagingError(f"{field}: {exc.message}") from None
    except OSError as exc:  # the studio's own disk (full, unwritable): say so rather than retry forever
        raise StagingError(f"{field}: could not store a fetched file: {exc.strerror or exc}") from None


def stage_inputs(job: BatchJob) -> str:
    """Fetch and split a job's remote inputs; "staged", or "busy" while another worker does it.
    Raises StagingError when an input cannot be fetched or scored."""
    from endpoints_app.services import batch as batch_svc
    from endpoints_app.services.data import ResolvedInput

    root = staging_root(job)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return "busy"
        job.refresh_from_db(fields=["inputs_staged", "status"])
        if job.inputs_staged or job.status != JobStatus.RUNNING:
            return "staged"
        for name, value in job.inputs.items():
            if name == "input_data" or value.get("remote"):
                _fetch(job, name, value, root / name)
        if not job.input_path.startswith(f"{job.output_dir.split('/', 1)[0]}/{root.parent.name}/"):
            # input_data is in the studio's own store and was split at invoke: only other inputs were fetched.
            BatchJob.objects.filter(pk=job.pk).update(inputs_staged=True)
            job.inputs_staged = True
            return "staged"
        folder = root / "input_data"
        files = sorted((p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")),
                       key=lambda p: p.relative_to(folder).as_posix()) if folder.is_dir() else []
        resolved = ResolvedInput(asset=None, kind=job.inputs["input_data"].get("type", "uri_folder"),
                                 relative_path=job.input_path,
                                 files=[(p, p.relative_to(folder).as_posix()) for p in files])
        try:
            rows = batch_svc._check_input_files(job.deployment.model, resolved, "inputs.input_data.path")
        except InvalidInput as exc:
            raise StagingError(f"inputs.input_data: {exc.message}") from None
        max_rows = int(getattr(conf, "STUDIO_BATCH_ROWS_PER_MINI_BATCH", 10_000))
        batches = batch_svc.split(resolved, rows, int(job.settings["mini_batch_size"]), max_rows)
        with transaction.atomic():
            locked = BatchJob.objects.select_for_update().filter(pk=job.pk, inputs_staged=False).first()
            if locked is None:
                return "staged"
            MiniBatch.objects.bulk_create(
                [MiniBatch(job=job, index=i, items=b["items"], rows=b["rows"], output_part=f"parts/{i:06d}.csv")
                 for i, b in enumerate(batches)], batch_size=1000)
            BatchJob.objects.filter(pk=job.pk).update(inputs_staged=True, mini_batches_total=len(batches),
                                                      rows_total=sum(r or 0 for r in rows), input_files=len(files))
        job.inputs_staged, job.mini_batches_total = True, len(batches)
        log.info("batch job %s: fetched %s input files into %s mini-batches", job.name, len(files), len(batches))
        return "staged"


def staged_inputs(job: BatchJob) -> dict:
    """What a score.py's run() gets beside the mini-batch: literal values, and each other uri input's
    file paths (relative to the studio's store, as mini-batch items are)."""
    out: dict = {}
    root = datastore_root().resolve()
    for name, value in (job.inputs or {}).items():
        if name == "input_data":
            continue
        if "default" in value:
            out[name] = {"value": value["default"]}
        elif value.get("remote"):
            folder = staging_root(job) / name
            out[name] = {"paths": sorted(p.resolve().relative_to(root).as_posix() for p in folder.rglob("*")
                                         if p.is_file() and not p.name.startswith("."))}
        elif value.get("local"):
            target = root / value["local"]
            paths = [target] if target.is_file() else sorted(p for p in target.rglob("*") if p.is_file())
            out[name] = {"paths": [p.relative_to(root).as_posix() for p in paths]}
    return out


def publish_output(job: BatchJob) -> None:
    """Upload the merged output file to the job's outputs.score.path (nothing to do without one), and
    for a uri_folder output the files its score.py wrote, beside it under their own names."""
    from endpoints_app.controller import outputs
    from endpoints_app.services import datastores as ds_svc

    if not job.output_uri:
        return
    source = job.output_root / job.output_file_name
    written = outputs.listed(job.output_root, job.output_file_name)
    store_name, path = ds_svc.split_uri(job.output_uri, "outputs.score.path")
    if written and (job.outputs.get("score") or {}).get("type") == "uri_file":
        raise StagingError(f"outputs.score: score.py wrote {len(written)} files to its output folder "
                           f"({written[0]}...); a uri_file output holds one file: use type uri_folder.")
    folder = path.rsplit("/", 1)[0] + "/" if "/" in path else ""
    try:
        _, store = ds_svc.open_store(job.workspace, store_name, "outputs.score.path")
        if source.is_file():
            store.upload(source, path)
        for name in written:
            store.upload(job.output_root / name, folder + name)
    except StorageError as exc:
        raise StagingError(f"outputs.score: datastore '{store_name}': {exc.message}") from None
    except InvalidInput as exc:
        raise StagingError(f"outputs.score: {exc.message}") from None


def remove_staged(job: BatchJob) -> None:
    shutil.rmtree(staging_root(job), ignore_errors=True)
