"""Batch endpoints, batch deployments and batch jobs.

- A batch endpoint is an Endpoint(kind="batch"); `defaults.deployment_name` names the deployment an
  invocation goes to unless it names one, and can be switched at any time. The first deployment
  of an endpoint without a default becomes its default.
- A batch deployment is a Deployment whose `batch_settings` hold the scoring settings below. It
  provisions nothing (Succeeded at once): its model servers start for a job and stop after it.
- A job (= an invocation) is checked whole before anything is written: input, deployment,
  settings, and for tabular models the columns of every CSV/JSON-lines file. It is split into
  mini-batches in the same transaction, then the controller (endpoints_app/controller/jobs.py) runs it.

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

from endpoints_app import wakeup
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
from endpoints_app.services.computes import check_same_compute, resolve_compute
from endpoints_app.services.data import ResolvedInput, resolve_input
from endpoints_app.services.deployments import lock_deployment
from endpoints_app.services.endpoints import create_endpoint
from endpoints_app.services.environments import resolve_environment
from endpoints_app.services.specs import (
    MAX_INSTANCES,
    ONE_VALUE_FIELDS,
    check_fields,
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
    # Input columns copied into each output row (before the prediction), to join results by id.
    "output_columns": [],
}
MAX_OUTPUT_COLUMNS = 50
OUTPUT_COLUMN = re.compile(r"^[^\x00-\x1f]{1,200}$")
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
    "environment", "compute", *BATCH_SETTING_FIELDS,
    # As the cloud CLI's deployment.yml nests them: settings.<any batch setting or logging_level> and
    # resources.instance_count, the same settings as at the top level.
    "settings", "resources", "logging_level",
}
BATCH_ONE_VALUE_FIELDS = {
    **ONE_VALUE_FIELDS,
    "type": ("model", "the studio deploys models to batch endpoints (type: model); pipeline component "
                      "deployments are not supported"),
}
# The model server's log level (its own lines and a score.py's `logging` calls) in the instance's log.
LOGGING_LEVELS = ("debug", "info", "warning", "error", "critical")
JOB_SETTING_FIELDS = BATCH_SETTING_FIELDS | {"instance_count"}
# Where the worker fetches a job's inputs from other datastores: <workspace>/.job-inputs/<job>/<input>/,
# inside the workspace's part of the studio's store, which the job's sandboxed servers read.
STAGING_DIR = ".job-inputs"
# Formats the generic model server scores in batch (GGUF chat models are not batch models).
BATCH_FORMATS = ("sklearn", "onnx", "sentence-transformers", "custom", "mlflow")
TABULAR_FORMATS = ("sklearn", "onnx", "mlflow")


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
    if "output_columns" in spec and spec["output_columns"] is not None:
        result["output_columns"] = parse_output_columns(spec["output_columns"], f"{prefix}output_columns")
    return result


def parse_output_columns(value: Any, field: str) -> list[str]:
    """Input columns to copy into the output: a list of names (or one comma-separated string, as a form
    or `--set` sends it)."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(c, str) and OUTPUT_COLUMN.match(c) for c in value):
        raise InvalidInput("output_columns must be a list of input column names.", field=field)
    if len(value) > MAX_OUTPUT_COLUMNS:
        raise InvalidInput(f"output_columns takes at most {MAX_OUTPUT_COLUMNS} columns.", field=field)
    reserved = [c for c in value if c in ("file", "row", "prediction")]
    if reserved or len(set(value)) != len(value):
        raise InvalidInput(f"output_columns names {', '.join(reserved) or 'a column twice'}; the output already "
                           "has file, row and prediction.", field=field)
    return list(value)


def _check_fields(spec: dict, allowed: set[str], what: str = "deployment") -> None:
    check_fields(spec, allowed, f"batch {what}", BATCH_ONE_VALUE_FIELDS)


def _logging_level(value: Any, field: str) -> str:
    level = str(value).lower() if isinstance(value, str) else None
    if level not in LOGGING_LEVELS:
        raise InvalidInput(f"{field} must be one of {', '.join(LOGGING_LEVELS)}, not {value!r}.", field=field)
    return level


def parse_deployment_settings(spec: dict, current: dict | None = None) -> dict:
    """A batch deployment's settings, given at the top level or nested in `settings` as the cloud CLI's
    deployment.yml writes them (one key in both places with two values is a 400), plus logging_level."""
    result = parse_batch_settings(spec, current)
    if spec.get("logging_level") is not None:
        result["logging_level"] = _logging_level(spec["logging_level"], "logging_level")
    if spec.get("settings") is None:
        return result
    given = parse_mapping(spec["settings"], "settings")
    for key, value in given.items():
        if key not in BATCH_SETTING_FIELDS and key != "logging_level":
            raise InvalidInput(f"settings has no setting {key!r}.", field=f"settings.{key}")
        if spec.get(key) is not None and spec[key] != value:
            raise InvalidInput(f"{key} is given twice, at the top level and in settings, with different values.",
                               field=f"settings.{key}")
    result = parse_batch_settings(given, result, prefix="settings.")
    if given.get("logging_level") is not None:
        result["logging_level"] = _logging_level(given["logging_level"], "settings.logging_level")
    return result


def parse_deployment_instance_count(spec: dict) -> int | None:
    """instance_count, or resources.instance_count as the cloud CLI writes it (None: neither given)."""
    count = parse_int(spec["instance_count"], "instance_count", 1, MAX_INSTANCES) \
        if spec.get("instance_count") is not None else None
    if spec.get("resources") is None:
        return count
    given = parse_mapping(spec["resources"], "resources")
    unknown = sorted(set(given) - {"instance_count"})
    if unknown:
        raise InvalidInput(f"resources.{unknown[0]} is not supported (the studio takes resources.instance_count; "
                           "the instance type sets the rest).", field=f"resources.{unknown[0]}")
    if given.get("instance_count") is None:
        return count
    nested = parse_int(given["instance_count"], "resources.instance_count", 1, MAX_INSTANCES)
    if count is not None and count != nested:
        raise InvalidInput("instance_count is given twice, at the top level and in resources, with different "
                           "values.", field="resources.instance_count")
    return nested


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
    return create_endpoint(actor, workspace, Endpoint.Kind.BATCH, name=name, auth_mode=auth_mode,
                           description=description, tags=tags)


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
    compute = resolve_compute(spec.get("compute"))
    count = parse_deployment_instance_count(spec) or 1
    deployment = Deployment(
        endpoint=endpoint,
        name=name,
        model=model,
        compute=compute,
        instance_type=instance_type,
        instance_count=count,
        code_configuration=parse_code_configuration(spec.get("code_configuration"), endpoint.workspace),
        environment_variables=parse_environment_variables(spec.get("environment_variables")),
        batch_settings=parse_deployment_settings(spec),
        environment=resolve_environment(actor, endpoint.workspace, spec.get("environment")),
        # Nothing runs until a job needs it (scale to zero), so there is nothing to provision.
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    check_quota(endpoint.workspace, instance_type, count)
    deployment.save()
    if not (endpoint.defaults or {}).get("deployment_name"):
        endpoint.defaults = {"deployment_name": name}
        endpoint.save(update_fields=["defaults", "updated_at"])
    record(actor, "deployment.create", deployment, endpoint.workspace, model=model.asset_id,
           instance_type=instance_type.name, instance_count=count, batch_settings=deployment.batch_settings,
           compute=compute.name)
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
    check_same_compute(deployment, changes)
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
    count = parse_deployment_instance_count(changes)
    if count is not None:
        if count != deployment.instance_count:
            deployment.instance_count = count
            changed.append("instance_count")
    for field, parse in (("code_configuration", lambda value: parse_code_configuration(value, endpoint.workspace)),
                         ("environment_variables", parse_environment_variables)):
        if field in changes:
            value = parse(changes[field])
            if value != getattr(deployment, field):
                setattr(deployment, field, value)
                changed.append(field)
    if "environment" in changes:
        env = resolve_environment(actor, endpoint.workspace, changes["environment"])
        if (env.pk if env else None) != deployment.environment_id:
            deployment.environment = env
            changed.append("environment")
    settings = parse_deployment_settings(changes, deployment.batch_settings)
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
    if {"model", "instance_type", "code_configuration", "environment_variables", "environment"} & set(changed):
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
    from endpoints_app.controller import tasks

    wakeup.after_commit(tasks.advance_job, job_id)


def _enqueue_cleanup() -> None:
    from endpoints_app.controller import tasks

    wakeup.after_commit(tasks.tick)


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


def _check_input_files(model: CatalogModel, resolved: ResolvedInput, field: str,
                       output_columns: list[str] | None = None) -> list[int | None]:
    """Rows per file (None where unknown: custom code reads files itself); InvalidInput naming the
    first file a built-in handler cannot score, or that lacks a column output_columns copies."""
    rows: list[int | None] = []
    if output_columns and model.format not in TABULAR_FORMATS:
        raise InvalidInput(f"output_columns copies input columns of CSV or JSON-lines files; model {model.name} "
                           f"({model.format}) does not read them.", field="settings.output_columns")
    columns = expected_columns(model) if model.format in TABULAR_FORMATS else None
    for path, name in resolved.files:
        kind = batchio.kind_of(path)
        if model.format == "custom":
            rows.append(None)
            continue
        _check_input_names(model, [name], field)
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
            if output_columns:
                head = batchio.csv_header(path) if kind == "csv" else batchio.read_table(path, 0, 1)[0]
                absent = [c for c in output_columns if c not in (head or [])]
                if absent:
                    raise InvalidInput(f"{name}: output_columns names {', '.join(absent)}, which the file does "
                                       f"not have (it has {', '.join(head or []) or 'no named columns'}).",
                                       field="settings.output_columns")
            rows.append(batchio.count_rows(path))
        except batchio.InputError as exc:
            raise InvalidInput(str(exc), field=field) from None
    return rows


def _check_input_names(model: CatalogModel, names: list[str], field: str) -> None:
    """What a file's name tells (its kind) for a built-in handler; columns are checked once fetched."""
    for name in names:
        kind = batchio.kind_of(name)
        if model.format in TABULAR_FORMATS and kind not in ("csv", "jsonl"):
            raise InvalidInput(f"{name}: model {model.name} reads CSV (.csv) or JSON lines (.jsonl) files.",
                               field=field)
        if model.format == "sentence-transformers" and kind != "text":
            raise InvalidInput(f"{name}: model {model.name} embeds text files (.txt), one text per line.",
                               field=field)


LITERAL_TYPES = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
URI_INPUT_FIELDS = {"type", "path", "mode"}
LITERAL_INPUT_FIELDS = {"type", "default", "value"}
OUTPUT_FIELDS = {"type", "path", "mode"}


def parse_extra_inputs(workspace: Workspace, model: CatalogModel, inputs: dict) -> dict:
    """Inputs beside input_data: literals ({type: string|integer|number|boolean, default}) and more
    uri_file/uri_folder inputs, for a score.py that asks for them (`run(mini_batch, **inputs)`)."""
    out: dict[str, dict] = {}
    for name, value in inputs.items():
        field = f"inputs.{name}"
        if not isinstance(value, dict):
            value = {"type": {bool: "boolean", int: "integer", float: "number", str: "string"}.get(type(value)),
                     "default": value}
        is_literal = value.get("type") in LITERAL_TYPES
        unknown = sorted(set(value) - (LITERAL_INPUT_FIELDS if is_literal else URI_INPUT_FIELDS))
        if unknown:
            raise InvalidInput(f"{field} has no field {unknown[0]!r}.", field=f"{field}.{unknown[0]}")
        if value.get("mode") not in (None, "ro_mount", "download", "direct"):
            raise InvalidInput(f"{field}.mode must be ro_mount, download or direct.", field=f"{field}.mode")
        if name == "input_data":
            if value.get("type", "uri_folder") not in ("uri_folder", "uri_file"):
                raise InvalidInput("inputs.input_data is what the model scores: type uri_folder or uri_file.",
                                   field="inputs.input_data.type")
            continue
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$", name):
            raise InvalidInput(f"Input name {name!r} must be a Python identifier.", field=field)
        if model.format != "custom":
            raise InvalidInput(f"Model {model.name} scores inputs.input_data only; more inputs need a score.py "
                               "whose run() takes them.", field=field)
        kind = value.get("type")
        if kind in LITERAL_TYPES:
            literal = value.get("default", value.get("value"))
            ok = isinstance(literal, LITERAL_TYPES[kind]) and not (kind in ("integer", "number")
                                                                  and isinstance(literal, bool))
            if not ok:
                raise InvalidInput(f"{field}: a {kind} input needs a {kind} default, not {literal!r}.",
                                   field=f"{field}.default")
            out[name] = {"type": kind, "default": literal}
        elif kind in ("uri_folder", "uri_file"):
            resolved = resolve_input(workspace, value, field)
            out[name] = {"type": kind, "path": value.get("path"), "remote": resolved.remote is not None,
                         "local": None if resolved.remote is not None else resolved.relative_path}
        else:
            raise InvalidInput(f"{field}.type must be uri_folder, uri_file, string, integer, number or boolean.",
                               field=f"{field}.type")
    return out


def parse_outputs(workspace: Workspace, value: Any, settings: dict) -> tuple[dict, str]:
    """`outputs: {score: {type: uri_file | uri_folder, path: azureml://datastores/<ds>/paths/<path>}}`:
    checked (the datastore answers) and turned into the URI of the file the merged output becomes."""
    from endpoints_app.datastores.storage import StorageError
    from endpoints_app.services import datastores as ds_svc

    if value in (None, {}):
        return {}, ""
    given = parse_mapping(value, "outputs")
    unknown = sorted(set(given) - {"score"})
    if unknown:
        raise InvalidInput(f"Unknown output {unknown[0]!r}; a model deployment writes one output, score.",
                           field=f"outputs.{unknown[0]}")
    spec = parse_mapping(given.get("score"), "outputs.score")
    unknown = sorted(set(spec) - OUTPUT_FIELDS)
    if unknown:
        raise InvalidInput(f"outputs.score has no field {unknown[0]!r}.", field=f"outputs.score.{unknown[0]}")
    if spec.get("mode") not in (None, "upload", "rw_mount"):
        raise InvalidInput("outputs.score.mode must be upload or rw_mount.", field="outputs.score.mode")
    kind = spec.get("type") or "uri_folder"
    if kind not in ("uri_file", "uri_folder"):
        raise InvalidInput(f"outputs.score.type must be uri_file or uri_folder, not {kind!r}.",
                           field="outputs.score.type")
    if spec.get("path") in (None, ""):
        return {}, ""
    in_store = ds_svc.split_uri(spec.get("path"), "outputs.score.path")
    if in_store is None:
        raise InvalidInput("outputs.score.path must be azureml://datastores/<datastore>/paths/<path>.",
                           field="outputs.score.path")
    store_name, path = in_store
    if kind == "uri_folder":
        path = f"{path}/{settings['output_file_name']}" if path else settings["output_file_name"]
    elif not path:
        raise InvalidInput("outputs.score.path of a uri_file output must name a file.", field="outputs.score.path")
    if settings.get("output_action") == "summary_only" and kind == "uri_file":
        raise InvalidInput("output_action summary_only writes no output file; use a uri_folder output (for the "
                           "files a score.py writes) or append_row.", field="outputs.score")
    try:
        _, store = ds_svc.open_store(workspace, store_name, "outputs.score.path")
        store.check()
        existing = store.browse(path) if store.stat(path) is None and path else []
    except StorageError as exc:
        if exc.missing:
            existing = []
        else:
            raise InvalidInput(ds_svc.storage_error(exc, store_name).message, field="outputs.score.path") from None
    if existing:
        raise InvalidInput(f"outputs.score.path {spec['path']!r} is a folder; use type uri_folder.",
                           field="outputs.score.type")
    return {"score": {"type": kind, "path": spec["path"]}}, f"azureml://datastores/{store_name}/paths/{path}"


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
    # Nothing is accepted and ignored: a field the studio does not act on is a 400 naming it.
    unknown = set(body) - {"inputs", "deployment_name", "settings", "outputs"}
    if unknown:
        raise InvalidInput(f"Unknown job field {sorted(unknown)[0]!r}.", field=sorted(unknown)[0])
    endpoint = online.lock_endpoint(endpoint)
    if endpoint.kind != Endpoint.Kind.BATCH:
        raise InvalidInput(f"Endpoint '{endpoint.name}' is not a batch endpoint.", field="endpoint")
    inputs = parse_mapping(body.get("inputs"), "inputs")
    if "input_data" not in inputs:
        raise InvalidInput("inputs.input_data is required: {type: uri_folder or uri_file, path: <data asset id>}.",
                           field="inputs.input_data")
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
    extra = parse_extra_inputs(endpoint.workspace, deployment.model, inputs)
    outputs, output_uri = parse_outputs(endpoint.workspace, body.get("outputs"), settings)
    if resolved.remote is None:
        rows = _check_input_files(deployment.model, resolved, "inputs.input_data.path", settings.get("output_columns"))
        max_rows = int(getattr(conf, "STUDIO_BATCH_ROWS_PER_MINI_BATCH", 10_000))
        batches = split(resolved, rows, settings["mini_batch_size"], max_rows)
    else:
        # The worker fetches the files and splits them (datastores/staging.py); what the names tell is checked now.
        _check_input_names(deployment.model, [name for _, name, _ in resolved.remote.entries],
                           "inputs.input_data.path")
        rows, batches = [], []
    job = BatchJob(
        name=_job_name(endpoint),
        workspace=endpoint.workspace,
        endpoint=endpoint,
        deployment=deployment,
        inputs={"input_data": {"type": resolved.kind, "path": inputs["input_data"].get("path")}, **extra},
        input_asset=resolved.asset,
        input_path=resolved.relative_path,
        input_files=len(resolved.files) if resolved.remote is None else len(resolved.remote.entries),
        settings=settings,
        status=JobStatus.QUEUED,
        mini_batches_total=len(batches),
        rows_total=sum(r or 0 for r in rows),
        outputs=outputs,
        output_uri=output_uri,
        inputs_staged=resolved.remote is None and not any(v.get("remote") for v in extra.values()),
        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
    )
    job.output_dir = f"{endpoint.workspace.name}/batch-jobs/{job.name}"
    if resolved.remote is not None:
        job.input_path = f"{endpoint.workspace.name}/{STAGING_DIR}/{job.name}/input_data"
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
    """The absolute path of one of a job's output files (the merged file, `parts/<n>.csv`, or a file its
    score.py wrote to its output folder)."""
    from endpoints_app.controller import outputs

    if not isinstance(file, str):
        raise InvalidInput(f"No output file {file!r}.", field="file")
    if not re.match(r"^(parts/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$", file):
        try:
            outputs.relative_name(file, {outputs.PARTS})
        except outputs.OutputFolderError:
            raise InvalidInput(f"No output file {file!r}.", field="file") from None
    path = job.output_root / file
    if path.is_symlink() or not path.is_file():
        return None
    return path


def output_files(job: BatchJob) -> list[str]:
    """A completed job's output files: the merged file (unless summary_only), then what its score.py wrote."""
    from endpoints_app.controller import outputs

    merged = [job.output_file_name] if (job.output_root / job.output_file_name).is_file() else []
    return merged + outputs.listed(job.output_root, job.output_file_name)


def active_job_instances(job: BatchJob):
    return Instance.objects.filter(batch_job=job).filter(
        Q(state__in=(InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING))
    )


def job_charges(job: BatchJob) -> dict:
    """What a job's cost rests on: the prices per hour it was charged at (not today's price), and whether
    the cost is final: the job ended, every model server it started has stopped, and the stored cost
    includes their whole uptime. Until then the cost still grows and is shown as running."""
    from decimal import Decimal

    from endpoints_app.metering.costs import batch_job_charges

    _hours, cost, prices, stopped = batch_job_charges(job.pk)
    final = job.is_terminal and stopped and Decimal(job.cost) == cost.quantize(Decimal("0.000001"))
    return {"cost_final": final, "charged_prices_per_hour": [f"{p:.4f}" for p in prices]}
