"""Batch endpoints, batch deployments and batch jobs.

- A batch endpoint is an Endpoint(kind="batch"); `defaults.deployment_name` names the deployment an
  invocation goes to unless it names one, and can be switched at any time. The first deployment
  of an endpoint without a default becomes its default.
- A batch deployment is a Deployment whose `batch_settings` hold the scoring settings below. It
  provisions nothing (Succeeded at once): its model servers start for a job and stop after it.
- A job (= an invocation) is checked whole before anything is written: input, deployment,
  settings, and for tabular models the columns of every CSV/JSON-lines file. It is split into
  mini-batches in the same transaction, then the batch controller (endpoints_app.batch) runs it.

Settings, with the anchors' defaults; each may be overridden per invocation (`settings`):
mini_batch_size 10 (files per mini-batch; a file over STUDIO_BATCH_ROWS_PER_MINI_BATCH rows is
cut into row ranges), instance_count 1, max_concurrency_per_instance 1 (mini-batches one instance
scores at once), error_threshold -1 (failed files to tolerate; -1 tolerates all),
retry_settings {max_retries 3, timeout 30 s per mini-batch}, output_action append_row
(one output row per input row) or summary_only (none), output_file_name predictions.csv."""

from __future__ import annotations

import re
import secrets
from typing import Any

from django.conf import settings as conf
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endpoints_app.controller.placement import check_quota
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    BatchJob,
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    JobStatus,
    MiniBatch,
    MiniBatchStatus,
    ProvisioningState,
    Workspace,
)
from endpoints_app.models.endpoints import DEPLOYMENT_NAME
from endpoints_app.runtime import batchio
from endpoints_app.services import online
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.data import ResolvedInput, resolve_input
from endpoints_app.services.deployments import lock_deployment
from endpoints_app.services.specs import (
    IGNORED_FIELDS,
    MAX_INSTANCES,
    parse_code_configuration,
    parse_environment_variables,
    parse_int,
    parse_mapping,
    parse_name,
    resolve_instance_type,
    resolve_model,
)

BATCH_DEFAULTS: dict[str, Any] = {
    "mini_batch_size": 10,
    "max_concurrency_per_instance": 1,
    "error_threshold": -1,
    "retry_settings": {"max_retries": 3, "timeout": 30},
    "output_action": "append_row",
    "output_file_name": "predictions.csv",
}
SETTING_LIMITS = {
    "mini_batch_size": (1, 100_000),
    "max_concurrency_per_instance": (1, 64),
    "error_threshold": (-1, 1_000_000_000),
}
RETRY_LIMITS = {"max_retries": (0, 100), "timeout": (1, 86_400)}
OUTPUT_ACTIONS = ("append_row", "summary_only")
OUTPUT_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
BATCH_SETTING_FIELDS = set(BATCH_DEFAULTS)
BATCH_DEPLOYMENT_FIELDS = {
    "name", "model", "code_configuration", "environment_variables", "instance_type", "instance_count",
    *BATCH_SETTING_FIELDS,
}
# deployment.yml keys of batch deployments that the studio accepts and ignores.
BATCH_IGNORED_FIELDS = IGNORED_FIELDS | {"compute", "resources", "logging_level", "settings"}
JOB_SETTING_FIELDS = BATCH_SETTING_FIELDS | {"instance_count"}
# Formats the generic model server scores in batch (GGUF chat models are not batch models).
BATCH_FORMATS = ("sklearn", "onnx", "sentence-transformers", "custom")
TABULAR_FORMATS = ("sklearn", "onnx")


# -- settings ----------------------------------------------------------------------------------------

def parse_batch_settings(spec: dict, current: dict | None = None, prefix: str = "") -> dict:
    """Batch settings from a deployment spec (or a job's `settings`), on top of `current` (else
    the defaults); every error names its field (with `prefix`, e.g. "settings.")."""
    result = {**BATCH_DEFAULTS, **(current or {})}
    result["retry_settings"] = {**BATCH_DEFAULTS["retry_settings"], **(result.get("retry_settings") or {})}
    for key, (low, high) in SETTING_LIMITS.items():
        if key in spec and spec[key] is not None:
            result[key] = parse_int(spec[key], f"{prefix}{key}", low, high)
    if "retry_settings" in spec and spec["retry_settings"] is not None:
        given = parse_mapping(spec["retry_settings"], f"{prefix}retry_settings")
        unknown = set(given) - set(RETRY_LIMITS)
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidInput(f"retry_settings has no setting {name!r}.", field=f"{prefix}retry_settings.{name}")
        for key, raw in given.items():
            low, high = RETRY_LIMITS[key]
            result["retry_settings"][key] = parse_int(raw, f"{prefix}retry_settings.{key}", low, high)
    if "output_action" in spec and spec["output_action"] is not None:
        action = str(spec["output_action"]).lower()
        if action not in OUTPUT_ACTIONS:
            raise InvalidInput(f"output_action must be append_row or summary_only, not {spec['output_action']!r}.",
                               field=f"{prefix}output_action")
        result["output_action"] = action
    if "output_file_name" in spec and spec["output_file_name"] is not None:
        name = spec["output_file_name"]
        if not isinstance(name, str) or not OUTPUT_FILE.match(name) or name == "parts":
            raise InvalidInput(
                f"output_file_name {name!r} must be a plain file name (letters, digits, '.', '-', '_').",
                field=f"{prefix}output_file_name",
            )
        result["output_file_name"] = name
    return result


def _check_fields(spec: dict, allowed: set[str], what: str = "deployment") -> None:
    for key in spec:
        if key not in allowed and key not in BATCH_IGNORED_FIELDS:
            raise InvalidInput(f"Unknown batch {what} field {key!r}.", field=str(key))


def _check_model(model: CatalogModel) -> None:
    if model.format not in BATCH_FORMATS or (model.deployment_kinds and "batch" not in model.deployment_kinds):
        raise InvalidInput(
            f"Model {model.asset_id} cannot be deployed to a batch endpoint "
            f"(it supports: {', '.join(model.deployment_kinds) or model.format}).",
            field="model",
        )


# -- endpoints ---------------------------------------------------------------------------------------

def _parse_defaults(endpoint: Endpoint, value: Any) -> dict:
    given = parse_mapping(value, "defaults")
    unknown = set(given) - {"deployment_name"}
    if unknown:
        raise InvalidInput(f"defaults has no setting {sorted(unknown)[0]!r}.", field=f"defaults.{sorted(unknown)[0]}")
    name = given.get("deployment_name")
    if name in (None, ""):
        return {}
    if not isinstance(name, str) or not endpoint.deployments.filter(name=name).exclude(
        provisioning_state=ProvisioningState.DELETING
    ).exists():
        raise InvalidInput(f"defaults.deployment_name: endpoint '{endpoint.name}' has no deployment {name!r}.",
                           field="defaults.deployment_name")
    return {"deployment_name": name}


@transaction.atomic
def do_create_batch_endpoint(actor: Actor, workspace: Workspace, *, name: str, description: str = "",
                             tags: dict | None = None, auth_mode: str = "key", defaults: dict | None = None
                             ) -> Endpoint:
    if defaults and parse_mapping(defaults, "defaults").get("deployment_name"):
        raise InvalidInput("A new batch endpoint has no deployments yet; set defaults.deployment_name later.",
                           field="defaults.deployment_name")
    return online.do_create_endpoint(actor, workspace, name=name, auth_mode=auth_mode, description=description,
                                     tags=tags, kind=Endpoint.Kind.BATCH)


@transaction.atomic
def do_update_batch_endpoint(actor: Actor, endpoint: Endpoint, *, defaults: dict | None = None,
                             description: str | None = None, tags: dict | None = None) -> Endpoint:
    endpoint = online.lock_endpoint(endpoint)
    changed = []
    if defaults is not None:
        value = _parse_defaults(endpoint, defaults)
        if value != (endpoint.defaults or {}):
            endpoint.defaults = value
            changed.append("defaults")
    online.set_description_and_tags(endpoint, description, tags, changed)
    if changed:
        endpoint.save()
        record(actor, "endpoint.update", endpoint, endpoint.workspace, changed=changed, defaults=endpoint.defaults)
    return endpoint


@transaction.atomic
def do_delete_batch_endpoint(actor: Actor, endpoint: Endpoint) -> None:
    """Cancel its unfinished jobs, then delete it as any endpoint (its job instances drain and stop)."""
    for job in BatchJob.objects.filter(endpoint=endpoint, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)):
        do_cancel_job(actor, job, reason=f"endpoint '{endpoint.name}' was deleted")
    online.do_delete_endpoint(actor, endpoint)


# -- deployments -------------------------------------------------------------------------------------

@transaction.atomic
def do_create_batch_deployment(actor: Actor, endpoint: Endpoint, spec: dict) -> Deployment:
    if not isinstance(spec, dict):
        raise InvalidInput("The deployment must be an object.")
    endpoint = online.lock_endpoint(endpoint)
    _check_fields(spec, BATCH_DEPLOYMENT_FIELDS)
    name = parse_name(spec.get("name"), DEPLOYMENT_NAME, "name", "Deployment")
    if spec.get("endpoint_name") not in (None, "", endpoint.name):
        raise InvalidInput(
            f"endpoint_name is '{spec['endpoint_name']}' but this is endpoint '{endpoint.name}'.", field="endpoint_name"
        )
    if endpoint.deployments.filter(name=name).exists():
        raise Conflict(f"Endpoint '{endpoint.name}' already has a deployment named '{name}'.", field="name")
    model = resolve_model(endpoint.workspace, spec.get("model"))
    _check_model(model)
    instance_type = resolve_instance_type(spec.get("instance_type"))
    count = parse_int(spec.get("instance_count", 1), "instance_count", 1, MAX_INSTANCES)
    deployment = Deployment(
        endpoint=endpoint,
        name=name,
        model=model,
        instance_type=instance_type,
        instance_count=count,
        code_configuration=parse_code_configuration(spec.get("code_configuration")),
        environment_variables=parse_environment_variables(spec.get("environment_variables")),
        batch_settings=parse_batch_settings(spec),
        # Nothing runs until a job needs it (scale to zero), so there is nothing to provision.
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    check_quota(endpoint.workspace, instance_type, count)
    deployment.save()
    if not (endpoint.defaults or {}).get("deployment_name"):
        endpoint.defaults = {"deployment_name": name}
        endpoint.save(update_fields=["defaults", "updated_at"])
    record(actor, "deployment.create", deployment, endpoint.workspace, model=model.asset_id,
           instance_type=instance_type.name, instance_count=count, batch_settings=deployment.batch_settings)
    return deployment


@transaction.atomic
def do_update_batch_deployment(actor: Actor, deployment: Deployment, changes: dict) -> Deployment:
    """Change a batch deployment; jobs already running keep the settings they started with."""
    if not isinstance(changes, dict):
        raise InvalidInput("The changes must be an object.")
    deployment = lock_deployment(deployment)
    _check_fields(changes, BATCH_DEPLOYMENT_FIELDS)
    if changes.get("name") not in (None, deployment.name):
        raise InvalidInput("A deployment cannot be renamed.", field="name")
    endpoint = deployment.endpoint
    changed: list[str] = []
    if "model" in changes:
        model = resolve_model(endpoint.workspace, changes["model"])
        _check_model(model)
        if model.pk != deployment.model_id:
            deployment.model = model
            changed.append("model")
    if "instance_type" in changes:
        instance_type = resolve_instance_type(changes["instance_type"])
        if instance_type.pk != deployment.instance_type_id:
            deployment.instance_type = instance_type
            changed.append("instance_type")
    if "instance_count" in changes:
        count = parse_int(changes["instance_count"], "instance_count", 1, MAX_INSTANCES)
        if count != deployment.instance_count:
            deployment.instance_count = count
            changed.append("instance_count")
    for field, parse in (("code_configuration", parse_code_configuration),
                         ("environment_variables", parse_environment_variables)):
        if field in changes:
            value = parse(changes[field])
            if value != getattr(deployment, field):
                setattr(deployment, field, value)
                changed.append(field)
    settings = parse_batch_settings(changes, deployment.batch_settings)
    if settings != deployment.batch_settings:
        deployment.batch_settings = settings
        changed.append("batch_settings")
    if deployment.provisioning_state == ProvisioningState.FAILED:
        # Failed says a job's model server could not start; an update (a fixed model or score.py)
        # clears it, and the next job starts fresh servers.
        deployment.provisioning_state = ProvisioningState.SUCCEEDED
        deployment.error = ""
        changed.append("retry")
    if not changed:
        return deployment
    if {"instance_count", "instance_type"} & set(changed):
        check_quota(endpoint.workspace, deployment.instance_type, deployment.instance_count, exclude=deployment)
    if {"model", "instance_type", "code_configuration", "environment_variables"} & set(changed):
        # Instances started from now on run the new model or code.
        deployment.generation += 1
    deployment.save()
    record(actor, "deployment.update", deployment, endpoint.workspace, changed=changed)
    return deployment


@transaction.atomic
def do_delete_batch_deployment(actor: Actor, deployment: Deployment) -> None:
    endpoint = Endpoint.objects.select_for_update().filter(pk=deployment.endpoint_id).first()
    deployment = Deployment.objects.select_for_update(of=("self",)).filter(pk=deployment.pk).first()
    if endpoint is None or deployment is None:
        return
    busy = BatchJob.objects.filter(deployment=deployment, status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
    if busy.exists():
        raise Conflict(f"Deployment '{deployment.name}' has unfinished jobs ({busy.first().name}); "
                       "cancel them or wait.", field="name")
    others = endpoint.deployments.exclude(pk=deployment.pk).exclude(provisioning_state=ProvisioningState.DELETING)
    if (endpoint.defaults or {}).get("deployment_name") == deployment.name:
        if others.exists():
            raise Conflict(f"Deployment '{deployment.name}' is the default of endpoint '{endpoint.name}'; "
                           "make another deployment the default first.", field="defaults.deployment_name")
        endpoint.defaults = {}
        endpoint.save(update_fields=["defaults", "updated_at"])
    online.request_stop(deployment.instances.all())
    record(actor, "deployment.delete", deployment, endpoint.workspace)
    if deployment.instances.filter(state__in=online.LIVE_INSTANCE_STATES).exists():
        deployment.provisioning_state = ProvisioningState.DELETING
        deployment.save(update_fields=["provisioning_state", "updated_at"])
        _enqueue_cleanup()
    else:
        deployment.mark_deleted()


# -- jobs --------------------------------------------------------------------------------------------

def _enqueue_advance(job_id: int) -> None:
    from endpoints_app.batch import tasks

    transaction.on_commit(lambda: tasks.advance_job.delay(job_id))


def _enqueue_cleanup() -> None:
    from endpoints_app.batch import tasks

    transaction.on_commit(lambda: tasks.tick.delay())


def expected_columns(model: CatalogModel) -> list[str] | None:
    """The feature columns a tabular catalog model documents (its card's input schema)."""
    try:
        columns = model.input_schema["properties"]["input_data"]["properties"]["columns"]["example"]
    except (KeyError, TypeError):
        columns = ((model.sample_request or {}).get("input_data") or {}).get("columns") \
            if isinstance((model.sample_request or {}).get("input_data"), dict) else None
    if not isinstance(columns, list) or not columns or "..." in columns:
        return None  # none documented, or abbreviated for the card (digits: pixel_0_0, ..., pixel_7_7)
    return list(columns)


def _check_input_files(model: CatalogModel, resolved: ResolvedInput, field: str) -> list[int | None]:
    """Rows per file (None where unknown: custom code reads files itself); InvalidInput naming the
    first file a built-in handler cannot score."""
    rows: list[int | None] = []
    columns = expected_columns(model) if model.format in TABULAR_FORMATS else None
    for path, name in resolved.files:
        kind = batchio.kind_of(path)
        if model.format == "custom":
            rows.append(None)
            continue
        if model.format in TABULAR_FORMATS and kind not in ("csv", "jsonl"):
            raise InvalidInput(f"{name}: model {model.name} reads CSV (.csv) or JSON lines (.jsonl) files.",
                               field=field)
        if model.format == "sentence-transformers" and kind != "text":
            raise InvalidInput(f"{name}: model {model.name} embeds text files (.txt), one text per line.",
                               field=field)
        try:
            if columns and kind == "csv":
                header = batchio.csv_header(path)
                missing = [c for c in columns if c not in header]
                if header and missing:
                    raise InvalidInput(
                        f"{name}: missing columns {', '.join(missing)}; model {model.name} needs "
                        f"{', '.join(columns)} (the file has {', '.join(header)}).", field=field)
            elif columns and kind == "jsonl":
                head, table = batchio.read_table(path, 0, 1)
                missing = [c for c in columns if c not in (head or [])]
                if head is not None and missing:
                    raise InvalidInput(f"{name}: missing columns {', '.join(missing)}; model {model.name} needs "
                                       f"{', '.join(columns)}.", field=field)
            rows.append(batchio.count_rows(path))
        except batchio.InputError as exc:
            raise InvalidInput(str(exc), field=field) from None
    return rows


def split(resolved: ResolvedInput, rows: list[int | None], mini_batch_size: int, max_rows: int) -> list[dict]:
    """Mini-batches of up to `mini_batch_size` files; a file over `max_rows` rows is cut into row
    ranges of `max_rows`, each a mini-batch of its own, and files are grouped only while their
    rows stay under `max_rows`. Returns [{"items": [...], "rows": n}]."""
    from endpoints_app.models import datastore_root

    root = datastore_root().resolve()
    batches: list[dict] = []
    current: list[dict] = []
    current_rows = 0

    def flush() -> None:
        nonlocal current, current_rows
        if current:
            batches.append({"items": current, "rows": current_rows})
        current, current_rows = [], 0

    for (path, name), count in zip(resolved.files, rows, strict=True):
        relative = path.relative_to(root).as_posix()
        if count is not None and count > max_rows:
            flush()
            for start in range(0, count, max_rows):
                stop = min(start + max_rows, count)
                batches.append({"items": [{"file": name, "path": relative, "start": start, "stop": stop}],
                                "rows": stop - start})
            continue
        if current and count is not None and current_rows + count > max_rows:
            flush()
        current.append({"file": name, "path": relative, "start": 0, "stop": None})
        current_rows += count or 0
        if len(current) >= mini_batch_size:
            flush()
    flush()
    return batches


def job_settings(deployment: Deployment, given: Any) -> dict:
    given = parse_mapping(given, "settings")
    for key in given:
        if key not in JOB_SETTING_FIELDS:
            raise InvalidInput(f"settings has no setting {key!r}.", field=f"settings.{key}")
    result = parse_batch_settings(given, deployment.batch_settings, prefix="settings.")
    result["instance_count"] = parse_int(given.get("instance_count", deployment.instance_count),
                                         "settings.instance_count", 1, MAX_INSTANCES)
    return result


def _job_name(endpoint: Endpoint) -> str:
    return f"{endpoint.name[:24]}-{secrets.token_hex(4)}"


@transaction.atomic
def do_create_job(actor: Actor, endpoint: Endpoint, body: Any) -> BatchJob:
    """Invoke a batch endpoint: check everything, then write the job and its mini-batches at once."""
    if not isinstance(body, dict):
        raise InvalidInput("The job must be a JSON object with inputs.")
    unknown = set(body) - {"inputs", "deployment_name", "settings", "name", "description", "outputs"}
    if unknown:
        raise InvalidInput(f"Unknown job field {sorted(unknown)[0]!r}.", field=sorted(unknown)[0])
    endpoint = online.lock_endpoint(endpoint)
    if endpoint.kind != Endpoint.Kind.BATCH:
        raise InvalidInput(f"Endpoint '{endpoint.name}' is not a batch endpoint.", field="endpoint")
    inputs = parse_mapping(body.get("inputs"), "inputs")
    if "input_data" not in inputs:
        raise InvalidInput("inputs.input_data is required: {type: uri_folder or uri_file, path: <data asset id>}.",
                           field="inputs.input_data")
    if set(inputs) - {"input_data"}:
        extra = sorted(set(inputs) - {"input_data"})[0]
        raise InvalidInput(f"Unknown input {extra!r}; batch jobs take one input, input_data.", field=f"inputs.{extra}")
    name = body.get("deployment_name") or (endpoint.defaults or {}).get("deployment_name")
    if not name:
        raise InvalidInput(f"Endpoint '{endpoint.name}' has no default deployment; name one with deployment_name.",
                           field="deployment_name")
    deployment = (endpoint.deployments.select_related("model", "instance_type")
                  .exclude(provisioning_state=ProvisioningState.DELETING).filter(name=name).first())
    if deployment is None:
        raise InvalidInput(f"Endpoint '{endpoint.name}' has no deployment {name!r}.", field="deployment_name")
    settings = job_settings(deployment, body.get("settings"))
    resolved = resolve_input(endpoint.workspace, inputs["input_data"])
    rows = _check_input_files(deployment.model, resolved, "inputs.input_data.path")
    max_rows = int(getattr(conf, "STUDIO_BATCH_ROWS_PER_MINI_BATCH", 10_000))
    batches = split(resolved, rows, settings["mini_batch_size"], max_rows)
    job = BatchJob(
        name=_job_name(endpoint),
        workspace=endpoint.workspace,
        endpoint=endpoint,
        deployment=deployment,
        inputs={"input_data": {"type": resolved.kind, "path": inputs["input_data"].get("path")}},
        input_asset=resolved.asset,
        input_path=resolved.relative_path,
        input_files=len(resolved.files),
        settings=settings,
        status=JobStatus.QUEUED,
        mini_batches_total=len(batches),
        rows_total=sum(r or 0 for r in rows),
        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
    )
    job.output_dir = f"{endpoint.workspace.name}/batch-jobs/{job.name}"
    job.save()
    MiniBatch.objects.bulk_create(
        [MiniBatch(job=job, index=i, items=b["items"], rows=b["rows"], output_part=f"parts/{i:06d}.csv")
         for i, b in enumerate(batches)],
        batch_size=1000,
    )
    record(actor, "job.create", job, endpoint.workspace, endpoint=endpoint.name, deployment=deployment.name,
           input=job.inputs, mini_batches=len(batches), settings=settings)
    _enqueue_advance(job.pk)
    return job


@transaction.atomic
def do_cancel_job(actor: Actor, job: BatchJob, reason: str = "") -> BatchJob:
    """Stop a job now: unfinished mini-batches are Canceled, its model servers stop; finished
    mini-batches keep their part files (the merged output is written only on completion)."""
    job = BatchJob.objects.select_for_update().filter(pk=job.pk).first()
    if job is None:
        raise Conflict("The job no longer exists.")
    if job.is_terminal:
        raise Conflict(f"Job {job.name} is already {job.status}.", field="status")
    now = timezone.now()
    job.mini_batches.filter(status__in=(MiniBatchStatus.PENDING, MiniBatchStatus.RUNNING)).update(
        status=MiniBatchStatus.CANCELED, finished_at=now, lease_until=None
    )
    job.status = JobStatus.CANCELED
    job.finished_at = now
    job.error = f"Canceled{': ' + reason if reason else ''}."
    job.save(update_fields=["status", "finished_at", "error", "updated_at"])
    online.request_stop(Instance.objects.filter(batch_job=job))
    record(actor, "job.cancel", job, job.workspace, reason=reason)
    _enqueue_cleanup()
    return job


def find_job(workspace: Workspace, endpoint: Endpoint | None, name: str) -> BatchJob | None:
    rows = BatchJob.objects.select_related("endpoint", "deployment", "deployment__instance_type", "input_asset")
    rows = rows.filter(workspace=workspace, name=name)
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    return rows.first()


def job_failures(job: BatchJob, limit: int = 100) -> list[dict]:
    """Failed mini-batches with their files and last error (the job page and API show them)."""
    rows = job.mini_batches.filter(status=MiniBatchStatus.FAILED).order_by("index")[:limit]
    return [{"index": m.index, "files": m.files, "error": m.error, "attempts": m.attempts, "instance": m.instance}
            for m in rows]


def output_file(job: BatchJob, file: str):
    """The absolute path of one of a job's output files (the merged file; `parts/<n>.csv` too)."""
    if not isinstance(file, str) or not re.match(r"^(parts/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", file):
        raise InvalidInput(f"No output file {file!r}.", field="file")
    path = job.output_root / file
    if not path.is_file():
        return None
    return path


def active_job_instances(job: BatchJob):
    return Instance.objects.filter(batch_job=job).filter(
        Q(state__in=(InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING))
    )
