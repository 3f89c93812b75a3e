"""Batch jobs in the controller: level-triggered, idempotent steps that drive jobs to their end.
Their Celery tasks are in controller/tasks.py; a step never sends a message itself, it puts what is
to be sent (mini-batches to run, other nodes to converge) in an Outbox that the task sends when the
step is over, so this module imports no task. Instances are reconcile's (same states, names and
node converge): a job's instances are Instance rows with batch_job set.

- admit(): Queued jobs start in order of creation while capacity lasts (at most
  STUDIO_BATCH_MAX_RUNNING_JOBS running, and the free cores of the job's compute: the local nodes, or
  a Ray cluster's live nodes as Ray counts them); a job that does not fit holds the jobs behind it on
  its compute (strict order), unless no job runs there at all.
- advance(job): one short step of a Running job: take back mini-batches whose task died (lease
  expired), keep `instance_count` model servers for it (Instance rows with batch_job set, which the
  node's converge loop launches, probes and restarts), hand Pending mini-batches to Celery up to
  ready instances x max_concurrency_per_instance, and finish the job when every mini-batch is done
  (merge the parts, stop the servers) or when failures pass error_threshold.
- run_mini_batch(): one mini-batch, scored by one of the job's instances (POST /batch, its input files
  first made readable by that instance alone: its backend's batch_inputs), its output
  written to its own part file (temp file + rename, so a rerun rewrites the same bytes), and what a
  score.py wrote to its output folder to the part's own folder (controller/outputs.py), before the
  row says Completed. The merge reads Completed parts in index order, so a task killed at any point
  loses no row and duplicates none.
- stop_idle_instances(): no batch model server runs without a running job.

Every step may run twice or concurrently: claims are conditional updates. A message lost between a
claim and its send (the task died) is taken back when the claim's lease passes (reclaim).

Backend-blind: where a job's instances run (the local compute or a Ray cluster) is the deployment's
compute, and this module asks its backend (backends.py) to place them, count cores, move inputs and
connect; the steps, claims and retries are the same on every compute."""

from __future__ import annotations

import csv
import http.client
import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, OuterRef, Q, Sum
from django.utils import timezone

from endpoints_app import csvsafe
from endpoints_app.audit import SYSTEM, record
from endpoints_app.controller import backends, outputs, placement
from endpoints_app.controller import reconcile as rc
from endpoints_app.controller.reconcile import ACTIVE
from endpoints_app.datastores import staging
from endpoints_app.instance_auth import RAY_QUEUE_PREFIX, auth_header, secret_port
from endpoints_app.models import (
    BatchJob,
    Compute,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    JobStatus,
    MiniBatch,
    MiniBatchStatus,
    Node,
    ProvisioningState,
)

log = logging.getLogger("studio.batch")

# A dispatched mini-batch's task must start within this long (plus its timeout), or it is taken back
# (its message died with a worker); a late task then finds its attempt superseded and does nothing.
QUEUE_GRACE = timedelta(seconds=10)
# Once its task runs, the mini-batch is taken back this long after its timeout.
RUN_GRACE = timedelta(seconds=5)
# A mini-batch task goes on with the job's next mini-batches for this long, then hands back its slot.
CHAIN_SECONDS = 2.0


@dataclass
class Outbox:
    """What a step wants sent once it is over; the Celery task that ran it sends it (tasks.send)."""

    mini_batches: list[tuple[int, int]] = field(default_factory=list)  # (mini-batch id, attempt)
    # (another node's name, its queue, deployment id): the node's row was read already, the task reads none
    converge: set[tuple[str, str, int]] = field(default_factory=set)


def max_running_jobs() -> int:
    return settings.STUDIO_BATCH_MAX_RUNNING_JOBS


# -- admission ---------------------------------------------------------------------------------------

def _free_cores(compute_id: int, total: int, running: list[BatchJob]) -> int:
    """Cores a compute (`total`: what its live nodes offer) has left once its running jobs hold their
    full instance count (their servers may not exist yet) and its other instances hold theirs."""
    others = Instance.objects.filter(deployment__compute_id=compute_id, state__in=placement.RUNNING_STATES).exclude(
        batch_job__in=running
    ).values_list("deployment__instance_type__cores", flat=True)
    reserved = sum(int(j.settings.get("instance_count", 1)) * j.deployment.instance_type.cores for j in running)
    return total - sum(others) - reserved


def _total_cores() -> dict[int, int]:
    """Cores each compute with a queued job offers, asked of its backend before any lock is taken (a Ray
    cluster is asked over the network)."""
    ids = set(BatchJob.objects.filter(status=JobStatus.QUEUED).values_list("deployment__compute_id", flat=True))
    return {c.pk: backends.for_compute(c).total_cores() for c in Compute.objects.filter(pk__in=ids)}


def admit() -> list[int]:
    """Start Queued jobs in order while there is room; returns the ids started."""
    started: list[int] = []
    if not BatchJob.objects.filter(status=JobStatus.QUEUED).exists():
        return started
    totals = _total_cores()
    with transaction.atomic():
        jobs = list(
            BatchJob.objects.select_for_update(of=("self",))
            .select_related("deployment__instance_type", "deployment__compute")
            .filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
            .order_by("created_at", "pk")
        )
        running = [j for j in jobs if j.status == JobStatus.RUNNING]
        queued = [j for j in jobs if j.status == JobStatus.QUEUED]
        if not queued:
            return started
        slots = max_running_jobs() - len(running)
        free: dict[int, int] = {}
        busy = {j.deployment.compute_id for j in running}
        waiting: set[int] = set()  # computes where a job that does not fit holds the ones behind it
        types = {j.pk: j.deployment.instance_type for j in queued}
        now = timezone.now()
        for job in queued:
            if slots <= 0:
                break
            compute_id = job.deployment.compute_id
            if compute_id in waiting:
                continue
            if compute_id not in free:
                free[compute_id] = _free_cores(compute_id, totals.get(compute_id, 0),
                                               [j for j in running if j.deployment.compute_id == compute_id])
            need = int(job.settings.get("instance_count", 1)) * types[job.pk].cores
            if need > free[compute_id] and compute_id in busy:
                waiting.add(compute_id)  # strict order: later jobs on this compute wait behind this one
                continue
            job.status = JobStatus.RUNNING
            job.started_at = now
            job.save(update_fields=["status", "started_at", "updated_at"])
            record(SYSTEM, "job.start", job, job.workspace)
            started.append(job.pk)
            slots -= 1
            free[compute_id] -= need
            busy.add(compute_id)
    return started


# -- instances ---------------------------------------------------------------------------------------

def ensure_instances(job: BatchJob) -> list[Instance]:
    """Keep instance_count live model servers for a running job; returns them."""
    deployment = job.deployment
    with transaction.atomic():
        BatchJob.objects.select_for_update().filter(pk=job.pk).first()  # one planner per job at a time
        live = list(Instance.objects.filter(batch_job=job, state__in=ACTIVE).select_related("node"))
        wanted = int(job.settings.get("instance_count", 1))
        for _ in range(wanted - len(live)):
            node = backends.for_deployment(deployment).place(deployment)
            if node is None:
                log.warning("no live node for an instance of batch job %s", job.name)
                break
            live.append(Instance.objects.create(
                deployment=deployment, batch_job=job, name=rc.instance_name(job.name[:48]), node=node,
                generation=deployment.generation, state=InstanceState.STARTING,
            ))
    return live


def converge(instances: list[Instance], out: Outbox) -> None:
    """Launch and probe the job's instances now rather than at the next reconcile pass: on this
    node directly, on other nodes through their queue (the outbox), on a Ray compute through this
    worker's driver (any worker converges those)."""
    local = settings.STUDIO_NODE_NAME
    nodes = {i.node_id: i.node for i in instances}
    deployment_ids = {i.deployment_id for i in instances}
    for deployment_id in {i.deployment_id for i in instances if i.node.queue.startswith(RAY_QUEUE_PREFIX)}:
        rc.converge_clusters(deployment_id=deployment_id)
    for node in nodes.values():
        if node.queue.startswith(RAY_QUEUE_PREFIX):
            continue
        for deployment_id in deployment_ids:
            if node.name == local:
                rc.converge_node(node, deployment_id=deployment_id)
            else:
                out.converge.add((node.name, node.queue, deployment_id))


def ready_or_answering(job_id: int) -> set[int]:
    """Ids of the job's instances that are Ready, or Starting and already answering their readiness
    path (a cheap probe; the converge pass then records them Ready)."""
    from endpoints_app.controller import process

    found = set()
    for pk, state, host, port in Instance.objects.filter(
        batch_job_id=job_id, state__in=(InstanceState.STARTING, InstanceState.READY)
    ).values_list("pk", "state", "node__host", "port"):
        if state == InstanceState.READY or (port and process.probe(host, port, "/health/ready", 0.5)):
            found.add(pk)
    return found


def ready_ids(job_id: int) -> set[int]:
    return set(Instance.objects.filter(batch_job_id=job_id, state=InstanceState.READY).values_list("pk", flat=True))


def stop_job_instances(job: BatchJob) -> int:
    now = timezone.now()
    return Instance.objects.filter(batch_job=job, state__in=ACTIVE).update(
        state=InstanceState.STOPPING, stop_requested_at=now
    )


def stop_idle_instances() -> int:
    """Stop batch-deployment instances whose job is over (or that have no job)."""
    now = timezone.now()
    idle = Instance.objects.filter(deployment__endpoint__kind=Endpoint.Kind.BATCH, state__in=ACTIVE).filter(
        Q(batch_job__isnull=True) | ~Q(batch_job__status=JobStatus.RUNNING)
    )
    return idle.update(state=InstanceState.STOPPING, stop_requested_at=now)


def finish_deletes() -> None:
    """A batch deployment deleted while its servers were still running goes once they have stopped
    (the online reconcile pass plans online and serverless deployments only)."""
    live = Instance.objects.filter(deployment=OuterRef("pk"), state__in=(*ACTIVE, InstanceState.STOPPING))
    for deployment in Deployment.objects.filter(
        endpoint__kind=Endpoint.Kind.BATCH, provisioning_state=ProvisioningState.DELETING
    ).exclude(Exists(live)):
        deployment.mark_deleted()


def _stop_here() -> None:
    """Signal stopping instances on this node and on Ray computes now (the reconcile pass would within
    seconds)."""
    for deployment_id in set(
        Instance.objects.filter(state=InstanceState.STOPPING, deployment__endpoint__kind="batch",
                                deployment__compute__type=Compute.Type.RAY).values_list("deployment_id", flat=True)
    ):
        rc.converge_clusters(deployment_id=deployment_id)
    node = Node.objects.filter(name=settings.STUDIO_NODE_NAME).first()
    if node is None:
        return
    for deployment_id in set(
        Instance.objects.filter(node=node, state=InstanceState.STOPPING, deployment__endpoint__kind="batch")
        .values_list("deployment_id", flat=True)
    ):
        rc.converge_node(node, deployment_id=deployment_id)


# -- one step of a job ------------------------------------------------------------------------------

def _timeout(job: BatchJob) -> int:
    return int((job.settings.get("retry_settings") or {}).get("timeout", 30))


def _max_attempts(job: BatchJob) -> int:
    return 1 + int((job.settings.get("retry_settings") or {}).get("max_retries", 3))


def reclaim(job: BatchJob) -> int:
    """Running mini-batches whose lease passed (their task died) go back to Pending, or fail
    when they have used every attempt."""
    now = timezone.now()
    expired = list(job.mini_batches.filter(status=MiniBatchStatus.RUNNING, lease_until__lt=now))
    for mb in expired:
        status = MiniBatchStatus.PENDING if mb.attempts < _max_attempts(job) else MiniBatchStatus.FAILED
        message = f"attempt {mb.attempts} did not finish within {_timeout(job)} s (its worker stopped)"
        MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=mb.attempts).update(
            status=status, lease_until=None, error=message,
            finished_at=now if status == MiniBatchStatus.FAILED else None,
        )
        log.warning("batch job %s mini-batch %s: %s", job.name, mb.index, message)
    return len(expired)


def dispatch(job: BatchJob, ready: list[Instance], out: Outbox) -> int:
    """Claim Pending mini-batches for Celery (the outbox), up to ready instances x max_concurrency_per_instance."""
    if not ready:
        return 0
    per_instance = int(job.settings.get("max_concurrency_per_instance", 1))
    load = {i.name: 0 for i in ready}
    for name, n in job.mini_batches.filter(status=MiniBatchStatus.RUNNING).values_list("instance").annotate(
        n=Count("pk")
    ):
        if name in load:
            load[name] += n
    # Room per server: a mini-batch a chain claimed ahead has no instance yet, so it takes no slot.
    room = sum(max(0, per_instance - n) for n in load.values())
    if room <= 0:
        return 0
    sent = 0
    lease = timezone.now() + timedelta(seconds=_timeout(job)) + QUEUE_GRACE
    for mb in job.mini_batches.filter(status=MiniBatchStatus.PENDING).order_by("index")[:room]:
        instance = min(load, key=load.get)
        if load[instance] >= per_instance:
            break
        attempt = mb.attempts + 1
        claimed = MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.PENDING, attempts=mb.attempts).update(
            status=MiniBatchStatus.RUNNING, attempts=attempt, instance=instance, lease_until=lease,
            started_at=timezone.now(),
        )
        if claimed:
            load[instance] += 1
            sent += 1
            out.mini_batches.append((mb.pk, attempt))
    return sent


def _failed_items(job: BatchJob) -> tuple[int, list[str]]:
    files: list[str] = []
    for items in job.mini_batches.filter(status=MiniBatchStatus.FAILED).values_list("items", flat=True):
        files.extend(f"{i['file']}" + (f" rows {i['start']}-{i['stop'] - 1}" if i.get("stop") is not None else "")
                     for i in items)
    return len(files), files


def refresh_counts(job: BatchJob) -> dict:
    rows = job.mini_batches.values("status").annotate(n=Count("pk"), rows=Sum("rows"), out=Sum("rows_out"))
    by = {r["status"]: r for r in rows}

    def n(status: str) -> int:
        return int((by.get(status) or {}).get("n") or 0)

    counts = {
        "mini_batches_done": n(MiniBatchStatus.COMPLETED),
        "mini_batches_failed": n(MiniBatchStatus.FAILED),
        "rows_done": int((by.get(MiniBatchStatus.COMPLETED) or {}).get("out") or 0),
        "rows_failed": int((by.get(MiniBatchStatus.FAILED) or {}).get("rows") or 0),
    }
    BatchJob.objects.filter(pk=job.pk).update(**counts, updated_at=timezone.now())
    for key, value in counts.items():
        setattr(job, key, value)
    return counts


def settle_cost(job: BatchJob) -> None:
    from endpoints_app.metering.costs import batch_job_cost

    hours, cost = batch_job_cost(job.pk)
    job.instance_seconds = float(hours * 3600)
    job.cost = cost.quantize(Decimal("0.000001"))
    BatchJob.objects.filter(pk=job.pk).update(instance_seconds=job.instance_seconds, cost=job.cost)


def merge_outputs(job: BatchJob) -> int:
    """Concatenate the Completed parts in index order into the output file (temp + rename)."""
    root = job.output_root
    root.mkdir(parents=True, exist_ok=True)
    outputs.merge(root, list(job.mini_batches.filter(status=MiniBatchStatus.COMPLETED).order_by("index")
                             .values_list("output_part", flat=True)))
    if job.settings.get("output_action") == "summary_only":
        return 0
    target = root / job.output_file_name
    tmp = root / f".{job.output_file_name}.{os.getpid()}.tmp"
    rows = 0
    header_written = False
    try:
        with open(tmp, "wb") as out:
            for part in job.mini_batches.filter(status=MiniBatchStatus.COMPLETED).order_by("index").values_list(
                "output_part", "rows_out"
            ):
                with open(root / part[0], "rb") as fh:
                    header = fh.readline()
                    if not header:
                        continue
                    if not header_written:
                        out.write(header)
                        header_written = True
                    shutil.copyfileobj(fh, out, 1024 * 1024)
                    rows += part[1]
            if not header_written:
                out.write(b"file,row,prediction\n")
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: nothing half-written stays
        raise
    os.replace(tmp, target)
    return rows


# What a running job's error says while the studio's disk refuses its output (cleared once it writes again).
DISK_FULL = "The studio's disk is full"


def _disk_full(job: BatchJob, what: str, exc: OSError) -> None:
    """Say so on the running job; its work is kept and goes on once space returns."""
    message = (f"{DISK_FULL}: {what} could not be written ({exc.strerror or exc}); the job goes on once space "
               "is freed.")
    log.error("batch job %s: %s", job.name, message)
    BatchJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(error=message, updated_at=timezone.now())
    job.error = message


def _disk_ok(job: BatchJob) -> None:
    if job.error.startswith(DISK_FULL):
        BatchJob.objects.filter(pk=job.pk, error__startswith=DISK_FULL).update(error="")
        job.error = ""


def _end(job: BatchJob, status: str, error: str = "") -> None:
    """Finish a running job and, if this step was the one that finished it, stop its servers here, settle
    its cost and let the jobs queued behind it in."""
    if _finish(job, status, error):
        _stop_here()
        settle_cost(job)
        admit()


def _finish(job: BatchJob, status: str, error: str = "") -> bool:
    now = timezone.now()
    with transaction.atomic():
        updated = BatchJob.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(
            status=status, finished_at=now, error=error[:8000], updated_at=now
        )
        if updated:
            job.mini_batches.filter(status__in=(MiniBatchStatus.PENDING, MiniBatchStatus.RUNNING)).update(
                status=MiniBatchStatus.CANCELED, finished_at=now, lease_until=None
            )
            stop_job_instances(job)
            job.status = status
            record(SYSTEM, f"job.{status.lower()}", job, job.workspace, error=error[:500])
    if updated:
        staging.remove_staged(job)  # fetched inputs are not kept once the job has ended
    return bool(updated)


def advance(job_id: int, out: Outbox) -> str:
    """One step of a job; returns what it is waiting for ("done", "queued", "starting", "running")."""
    job = BatchJob.objects.select_related("deployment", "deployment__instance_type", "deployment__compute",
                                          "workspace").filter(
        pk=job_id
    ).first()
    if job is None:
        return "done"
    if job.status == JobStatus.QUEUED:
        admit()
        job.refresh_from_db(fields=["status", "started_at"])
        if job.status == JobStatus.QUEUED:
            return "queued"
    if job.is_terminal:
        if stop_job_instances(job):
            _stop_here()
        settle_cost(job)
        staging.remove_staged(job)
        return "done"
    if not job.inputs_staged:
        # Inputs in another datastore: fetched by this (trusted) worker before any server starts.
        try:
            if staging.stage_inputs(job) == "busy":
                return "staging"
        except staging.StagingError as exc:
            _end(job, JobStatus.FAILED, str(exc))
            staging.remove_staged(job)
            return "done"
        job.refresh_from_db(fields=["mini_batches_total", "rows_total", "input_files", "inputs_staged"])

    reclaim(job)
    counts = refresh_counts(job)
    failed_items, failed_files = _failed_items(job)
    threshold = int(job.settings.get("error_threshold", -1))
    if threshold >= 0 and failed_items > threshold:
        errors = _failure_summary(job)
        _end(job, JobStatus.FAILED, f"{failed_items} failed items exceed error_threshold {threshold}: {errors}")
        return "done"
    settled = counts["mini_batches_done"] + counts["mini_batches_failed"]
    if settled >= job.mini_batches_total:
        try:
            merge_outputs(job)
        except OSError as exc:
            _disk_full(job, "the merged output", exc)
            return "running"  # merged again at the next pass
        except outputs.OutputFolderError as exc:
            _end(job, JobStatus.FAILED, str(exc))
            return "done"
        _disk_ok(job)
        try:
            staging.publish_output(job)
        except (staging.StagingError, outputs.OutputFolderError) as exc:
            _end(job, JobStatus.FAILED, str(exc))
            return "done"
        error = ""
        if failed_items:
            error = f"Completed with {failed_items} failed items (error_threshold {threshold}): {_failure_summary(job)}"
        _end(job, JobStatus.COMPLETED, error)
        return "done"

    gave_up = Instance.objects.filter(batch_job=job, state=InstanceState.FAILED).order_by("-pk").first()
    if gave_up is not None:
        # A model server that failed every restart will not score this job (bad model or score.py).
        _end(job, JobStatus.FAILED, f"Model server {gave_up.name} failed: {gave_up.last_error}".strip())
        return "done"
    instances = ensure_instances(job)
    if any(i.state == InstanceState.STARTING for i in instances):
        converge(instances, out)
        instances = list(Instance.objects.filter(batch_job=job, state__in=ACTIVE))
    ready = [i for i in instances if i.state == InstanceState.READY]
    dispatch(job, ready, out)
    # While any server still starts, the job is looked at again soon, so it gets work once ready.
    return "starting" if any(i.state == InstanceState.STARTING for i in instances) else "running"


def _failure_summary(job: BatchJob, limit: int = 20) -> str:
    parts = []
    for mb in job.mini_batches.filter(status=MiniBatchStatus.FAILED).order_by("index")[:limit]:
        names = ", ".join(i["file"] for i in mb.items)
        parts.append(f"[{names}] {mb.error.strip().splitlines()[0] if mb.error.strip() else 'failed'}")
    return "; ".join(parts)


# -- one mini-batch ---------------------------------------------------------------------------------

class ScoringError(Exception):
    """A mini-batch attempt failed; `unreachable` when no model server answered at all (a server
    that died or restarts), which costs the mini-batch none of its retries."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


def _post(conn: http.client.HTTPConnection, body: bytes, timeout: float, auth: dict[str, str],
          files: Path | None = None, reserved: frozenset[str] = frozenset()) -> tuple[bytes, int, int]:
    """(output CSV bytes, rows in, rows out) of one mini-batch from a model server over `conn` (its
    backend's: its own socket here, its relay on a Ray node), `auth` being the instance's secret; `timeout`
    (the job's) is named in the error. A score.py's output folder, when the answer brings one, goes into
    `files` (controller/outputs.py)."""
    try:
        conn.request("POST", "/batch", body=body, headers={"Content-Type": "application/json", **auth})
        response = conn.getresponse()
        if response.status < 400 and files is not None and (response.getheader("content-type") or "").startswith(
                "application/x-tar"):
            data = outputs.receive(response, files, set(reserved))
        else:
            data = response.read()
    except outputs.OutputFolderError as exc:
        raise ScoringError(str(exc)) from None
    except TimeoutError:
        raise ScoringError(f"timed out after {timeout:g} s (retry_settings.timeout)") from None
    except (OSError, http.client.HTTPException) as exc:
        raise ScoringError(f"model server unreachable: {exc}", unreachable=True) from None
    finally:
        conn.close()
    if response.status >= 400:
        try:
            message = json.loads(data)["error"]["message"]
        except Exception:  # noqa: BLE001 - any unreadable error body: say the status
            message = response.reason
        raise ScoringError(f"model server answered {response.status}: {message}")
    return data, int(response.headers.get("x-rows-in") or 0), int(response.headers.get("x-rows-out") or 0)


def _write_part(job: BatchJob, mb: MiniBatch, data: bytes) -> None:
    path = job.output_root / mb.output_part
    tmp = path.with_name(f".{path.name}.{mb.attempts}.{os.getpid()}.tmp")
    try:
        fh = open(tmp, "wb")
    except FileNotFoundError:  # the job's first part: its folder next (not a mkdir per part)
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, "wb")
    try:
        with fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written part stays
        raise
    os.replace(tmp, path)


@dataclass
class _Attempt:
    """One claimed attempt of one mini-batch, with what sending it takes."""

    mb: MiniBatch
    job: BatchJob
    attempt: int
    instance: Instance | None
    backend: backends.Backend = backends.LOCAL  # the instance's
    seconds: float = 0.0  # how long the model server took, once sent
    files: Path | None = None  # what its score.py wrote to its output folder, once received

    def extra_inputs(self) -> dict:
        return staging.staged_inputs(self.job) if len(self.job.inputs or {}) > 1 else {}

    def input_files(self, extra: dict) -> list[str]:
        """Every file the attempt reads, relative to the studio's datastore (once each)."""
        files = [item["path"] for item in self.mb.items]
        files += [p for v in extra.values() for p in v.get("paths", ())]
        return list(dict.fromkeys(files))

    def body(self, extra: dict, seen_at: dict[str, str]) -> bytes:
        """The request, its file paths as the instance's sandboxed server sees them (`seen_at`, from its
        backend's batch_inputs)."""
        return json.dumps({
            # A score.py's other inputs: literal values, and file paths as its sandbox sees them.
            **({"inputs": {k: v["value"] if "value" in v else [seen_at[p] for p in v["paths"]]
                           for k, v in extra.items()}} if extra else {}),
            "items": [{"path": seen_at[item["path"]], "file": item["file"], "start": item.get("start", 0),
                       "stop": item.get("stop")} for item in self.mb.items],
            "output_action": self.job.settings.get("output_action", "append_row"),
            "output_columns": self.job.settings.get("output_columns") or [],
        }).encode()


def run_mini_batch(mini_batch_id: int, attempt: int, out: Outbox) -> str:
    """Score one mini-batch; then, while this task is young (CHAIN_SECONDS), go on with the job's next
    pending mini-batches on the same instance, sparing each one a trip through the broker.

    The next mini-batch is claimed while the model server scores the current one, and sent the moment
    the current answer is back: the server does not wait while this task writes the part file and the
    row (one request in flight at a time, so max_concurrency_per_instance still holds)."""
    began = time.monotonic()
    current = _start(mini_batch_id, attempt)
    if isinstance(current, str):
        return current
    job_id = current.job.pk
    keep_going = True
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mini-batch") as pool:
        future = pool.submit(_send, current)
        while True:
            following = None
            if (keep_going and current.instance is not None and time.monotonic() - began < CHAIN_SECONDS
                    and not _worker_stopping()):
                following = _claim_next(current)
            answer = _answer(future)
            if following is not None and isinstance(answer, ScoringError):
                _release(following)  # its server just failed this one: let the job look again first
                following = None
            if following is not None:
                future = pool.submit(_send, following)
                _mark_sent(following)
            outcome = _record(current, answer, out)
            keep_going = outcome == "completed"
            if following is None:
                break
            current = following
    advance(job_id, out)
    return outcome


def _worker_stopping() -> bool:
    """The worker was asked to stop (warm shutdown): finish what is in hand, claim nothing more. (Its task
    threads run on until their task ends; a prefork pool's children were stopped with it.)"""
    from celery.worker import state

    return state.should_stop is not None or state.should_terminate is not None


def _start(mini_batch_id: int, attempt: int) -> _Attempt | str:
    """The attempt a run_mini_batch task was sent for, or why there is nothing to do."""
    mb = MiniBatch.objects.select_related("job", "job__deployment__compute").filter(pk=mini_batch_id).first()
    if mb is None or mb.status != MiniBatchStatus.RUNNING or mb.attempts != attempt:
        return "stale"
    job = mb.job
    if job.status != JobStatus.RUNNING:
        return "job not running"
    now = timezone.now()
    lease = now + timedelta(seconds=_timeout(job)) + RUN_GRACE
    if mb.lease_until is None or mb.lease_until > lease + timedelta(seconds=1):
        # Dispatched through the broker (a longer lease for the queue wait): it runs now.
        MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=attempt).update(
            lease_until=lease, started_at=now
        )
    instance = Instance.objects.select_related("node").filter(
        batch_job=job, name=mb.instance, state=InstanceState.READY
    ).first() or Instance.objects.select_related("node").filter(batch_job=job, state=InstanceState.READY).first()
    return _Attempt(mb=mb, job=job, attempt=attempt, instance=instance, backend=backends.for_deployment(job.deployment))


def _claim_next(current: _Attempt) -> _Attempt | None:
    """Claim the job's next pending mini-batch for the current one's instance (while the job runs). It
    names no instance until it is sent (_mark_sent), so dispatch() counts one slot per chain."""
    job, instance = current.job, current.instance
    # It waits for the mini-batch in flight (at most one timeout) before its own timeout starts.
    lease = timezone.now() + timedelta(seconds=2 * _timeout(job)) + RUN_GRACE
    pending = MiniBatch.objects.filter(job_id=job.pk, job__status=JobStatus.RUNNING, status=MiniBatchStatus.PENDING)
    for mb in pending.only("pk", "index", "items", "rows", "attempts", "output_part").order_by("index")[:3]:
        attempt = mb.attempts + 1
        if MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.PENDING, attempts=mb.attempts).update(
            status=MiniBatchStatus.RUNNING, attempts=attempt, instance="", lease_until=lease,
            started_at=timezone.now(),
        ):
            mb.status, mb.attempts, mb.instance, mb.job = MiniBatchStatus.RUNNING, attempt, "", job
            return _Attempt(mb=mb, job=job, attempt=attempt, instance=instance, backend=current.backend)
    return None


def _mark_sent(a: _Attempt) -> None:
    """The attempt is on its server now: it holds that server's slot."""
    MiniBatch.objects.filter(pk=a.mb.pk, status=MiniBatchStatus.RUNNING, attempts=a.attempt).update(
        instance=a.instance.name
    )
    a.mb.instance = a.instance.name


def _release(claimed: _Attempt) -> None:
    """Give a claimed, unsent attempt back (it costs the mini-batch none of its retries)."""
    MiniBatch.objects.filter(pk=claimed.mb.pk, status=MiniBatchStatus.RUNNING, attempts=claimed.attempt).update(
        status=MiniBatchStatus.PENDING, attempts=claimed.attempt - 1, lease_until=None,
    )


def _send(a: _Attempt) -> tuple[bytes, int, int]:
    """(output CSV bytes, rows in, rows out) of one attempt, from its model server. No database access:
    it runs beside the task's own database work."""
    if a.instance is None:
        raise ScoringError("no model server of the job is ready", unreachable=True)
    began = time.monotonic()
    root = a.job.output_root
    files = root / outputs.PARTS / f".{a.mb.index:06d}.{a.attempt}.{os.getpid()}.files.tmp"
    outputs.discard(files)
    instance, timeout = a.instance, _timeout(a.job)
    try:
        extra = a.extra_inputs()
        try:
            seen_at = a.backend.batch_inputs(instance, a.input_files(extra), timeout)
        except backends.InputsNotStaged as exc:
            raise ScoringError(str(exc), unreachable=exc.unreachable) from None
        # The attempt's timeout covers moving its inputs too.
        conn = a.backend.batch_connection(instance, max(1.0, timeout - (time.monotonic() - began)))
        data, rows_in, rows_out = _post(conn, a.body(extra, seen_at), timeout,
                                        auth_header(instance.name, secret_port(instance.port, instance.node.queue)),
                                        files, frozenset({outputs.PARTS, a.job.output_file_name}))
    except ScoringError:
        outputs.discard(files)
        raise
    finally:
        a.seconds = time.monotonic() - began
    a.files = files if files.is_dir() else None
    return safe_output(data), rows_in, rows_out


def safe_output(data: bytes) -> bytes:
    """A model server's output CSV with every cell formula-safe (csvsafe): file names and outputs come
    from users, and whoever opens predictions.csv in a spreadsheet must not run their formulas."""
    try:
        return csvsafe.sanitize(data.decode("utf-8")).encode("utf-8")
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ScoringError(f"the model server's output is not CSV the studio can read ({exc})") from None


def _answer(future: Future) -> tuple[bytes, int, int] | ScoringError:
    try:
        return future.result()
    except ScoringError as exc:
        return exc


def _record(a: _Attempt, answer: tuple[bytes, int, int] | ScoringError, out: Outbox) -> str:
    """Write one attempt's outcome: its part file then its row, or its error (retry, fail or give back)."""
    mb, job, attempt, instance = a.mb, a.job, a.attempt, a.instance
    if not isinstance(answer, ScoringError):
        data, rows_in, rows_out = answer
        try:
            if job.settings.get("output_action", "append_row") == "append_row":
                _write_part(job, mb, data)
            if a.files is not None:
                outputs.keep(a.files, outputs.files_dir(job.output_root, mb.output_part))
        except OSError as exc:
            # The studio's own disk, not the model: the attempt is given back (not counted), and the
            # mini-batch is scored again once its part can be written.
            _disk_full(job, f"mini-batch {mb.index}'s output", exc)
            MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=attempt).update(
                status=MiniBatchStatus.PENDING, attempts=attempt - 1, lease_until=None,
                error=f"attempt {attempt}: output not written: {exc.strerror or exc} (not counted)",
            )
            return "requeued"
        _disk_ok(job)
        done = MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=attempt).update(
            status=MiniBatchStatus.COMPLETED, rows_out=rows_out, finished_at=timezone.now(), lease_until=None,
            error="", instance=instance.name, rows=mb.rows or rows_in,
        )
        log.info("batch job %s mini-batch %s: %s rows in %.2fs on %s", job.name, mb.index, rows_out, a.seconds,
                 instance.name)
        return "completed" if done else "stale"
    exc = answer
    if exc.unreachable:
        # The server died under the request: let the node's converge notice it now (it restarts
        # it), and give the attempt back; a late duplicate of this attempt rewrites the same part.
        if instance is not None:
            converge([instance], out)
        MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=attempt).update(
            status=MiniBatchStatus.PENDING, attempts=attempt - 1, lease_until=None,
            error=f"attempt {attempt}: {exc} (not counted)",
        )
        outcome = "requeued"
    else:
        retry = attempt < _max_attempts(job)
        status = MiniBatchStatus.PENDING if retry else MiniBatchStatus.FAILED
        MiniBatch.objects.filter(pk=mb.pk, status=MiniBatchStatus.RUNNING, attempts=attempt).update(
            status=status, error=f"attempt {attempt}: {exc}", lease_until=None,
            finished_at=None if retry else timezone.now(), instance=instance.name if instance else mb.instance,
        )
        outcome = "retry" if retry else "failed"
    log.warning("batch job %s mini-batch %s attempt %s: %s", job.name, mb.index, attempt, exc)
    return outcome


def tick(out: Outbox) -> None:
    """The periodic pass: admit, advance every running job, stop idle batch servers."""
    admit()
    for job_id in BatchJob.objects.filter(status=JobStatus.RUNNING).values_list("pk", flat=True):
        try:
            advance(job_id, out)
        except Exception:  # one broken job must not stop the others
            log.exception("advancing batch job %s failed", job_id)
    if stop_idle_instances():
        _stop_here()
    finish_deletes()
    for job_id in BatchJob.objects.filter(
        status__in=(JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED),
        finished_at__gte=timezone.now() - timedelta(minutes=10),
    ).values_list("pk", flat=True):
        # Instance-minutes settle when the servers have stopped, a few seconds after the job ended.
        job = BatchJob.objects.get(pk=job_id)
        settle_cost(job)
        staging.remove_staged(job)  # a canceled job's fetched inputs too
