"""Online endpoints and their deployments: every write, with its validation,
quota and capacity checks, audit record and route-version bump.

The services write desired state only. Processes are started and stopped by
the controller (endpoints_app.controller) in the worker, which these functions
wake with a Celery task after commit (ids only). Field names follow the cloud
ML CLI v2 endpoint.yml / deployment.yml."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from endpoints_app import keys
from endpoints_app.controller.placement import check_capacity, check_quota, reserved_instances
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    InstanceType,
    ProvisioningState,
    RouteVersion,
    Workspace,
)
from endpoints_app.models.endpoints import DEPLOYMENT_NAME
from endpoints_app.models.workspaces import DNS_LABEL
from endpoints_app.services.audit import Actor, record

MODEL_ID = re.compile(r"^studio://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_INSTANCES = 20
MAX_MIRROR_PERCENT = 50

PROBE_DEFAULTS = {
    # Readiness gates routing; during start-up its period x failure_threshold is the deadline.
    "readiness_probe": {
        "initial_delay": 0, "period": 1, "timeout": 2, "success_threshold": 1, "failure_threshold": 180,
    },
    # Liveness restarts an instance that stops answering.
    "liveness_probe": {"initial_delay": 0, "period": 5, "timeout": 2, "success_threshold": 1, "failure_threshold": 3},
}
PROBE_LIMITS = {
    "initial_delay": (0, 3600),
    "period": (1, 3600),
    "timeout": (1, 600),
    "success_threshold": (1, 100),
    "failure_threshold": (1, 10000),
}
REQUEST_DEFAULTS = {"request_timeout_ms": 5000, "max_concurrent_requests_per_instance": 1}
GGUF_REQUEST_TIMEOUT_MS = 120000
REQUEST_LIMITS = {"request_timeout_ms": (1, 600000), "max_concurrent_requests_per_instance": (1, 1000)}
SCALE_DEFAULTS = {"target_utilization_percentage": 70, "polling_interval": 5, "cooldown_seconds": 60}

DEPLOYMENT_FIELDS = {
    "name", "model", "code_configuration", "environment_variables", "instance_type", "instance_count",
    "scale_settings", "request_settings", "liveness_probe", "readiness_probe",
}
# Keys of deployment.yml that the studio accepts and ignores (the CLI sends them).
IGNORED_FIELDS = {"$schema", "endpoint_name", "type", "description", "tags", "app_insights_enabled", "environment"}
UPDATABLE_FIELDS = DEPLOYMENT_FIELDS - {"name"}
# Changes that need new processes: the controller replaces instances with a surge.
NEW_PROCESS_FIELDS = ("model", "code_configuration", "environment_variables", "instance_type")
LIVE_INSTANCE_STATES = (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING)


# -- helpers -----------------------------------------------------------------------------------------

def bump_route_version() -> None:
    """Tell every gateway worker to reload its route table (visible when the caller's transaction commits)."""
    with transaction.atomic():
        if not RouteVersion.objects.filter(pk=1).update(version=F("version") + 1):
            RouteVersion.objects.get_or_create(pk=1, defaults={"version": 1})


def _enqueue_provision(deployment_id: int) -> None:
    from endpoints_app.controller import tasks

    transaction.on_commit(lambda: tasks.provision_deployment.delay(deployment_id))


def _enqueue_reconcile(deployment_ids: list[int]) -> None:
    from endpoints_app.controller import tasks

    for deployment_id in deployment_ids:
        transaction.on_commit(lambda d=deployment_id: tasks.reconcile_deployment.delay(d))


def _int(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool):
        raise InvalidInput(f"{field} must be a whole number, not {value!r}.", field=field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise InvalidInput(f"{field} must be a whole number, not {value!r}.", field=field)
    if not low <= value <= high:
        raise InvalidInput(f"{field} must be between {low} and {high}; got {value}.", field=field)
    return value


def _mapping(value: Any, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object (a mapping), not {type(value).__name__}.", field=field)
    return value


# /endpoints/new/ is the deploy wizard.
RESERVED_ENDPOINT_NAMES = {"new"}


def _check_name(value: Any, validator, field: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} name is required.", field=field)
    try:
        validator(value)
    except Exception:
        raise InvalidInput(f"{what} name {value!r} is not valid: {validator.message}", field=field) from None
    return value


def resolve_model(workspace: Workspace, ref: Any) -> CatalogModel:
    """A catalog model visible to `workspace`, from `studio://registries/<r>/models/<n>/versions/<v>`,
    `<name>:<version>`, or `<name>` (latest version); an `azureml:` prefix is accepted."""
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidInput("model is required: a model id (studio://registries/...) or name:version.", field="model")
    text = ref.strip().removeprefix("azureml:")
    visible = CatalogModel.objects.filter(workspace__isnull=True) | CatalogModel.objects.filter(workspace=workspace)
    match = MODEL_ID.match(text)
    if match:
        found = visible.filter(
            registry=match["registry"], name=match["name"], version=int(match["version"])
        ).first()
    else:
        name, _, version = text.partition(":")
        rows = visible.filter(name=name)
        if version:
            if not version.isdigit():
                raise InvalidInput(f"model {ref!r}: the version must be a number.", field="model")
            rows = rows.filter(version=int(version))
        # A workspace's own model wins over a shared one of the same name.
        found = rows.order_by(F("workspace_id").desc(nulls_last=True), "-version").first()
    if found is None:
        raise InvalidInput(f"No model {ref!r} in the catalog of workspace '{workspace.name}'.", field="model")
    return found


def _resolve_instance_type(value: Any) -> InstanceType:
    if value in (None, ""):
        found = InstanceType.objects.filter(is_active=True).order_by("cores", "memory_gb", "name").first()
        if found is None:
            raise InvalidInput("instance_type is required (no instance types are defined).", field="instance_type")
        return found
    found = InstanceType.objects.filter(name=value, is_active=True).first() if isinstance(value, str) else None
    if found is None:
        names = ", ".join(InstanceType.objects.filter(is_active=True).values_list("name", flat=True))
        raise InvalidInput(f"Unknown instance_type {value!r}; choose one of: {names}.", field="instance_type")
    return found


def _probe(value: Any, field: str, current: dict | None = None) -> dict:
    given = _mapping(value, field)
    unknown = set(given) - set(PROBE_LIMITS)
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{field} has no setting {name!r}.", field=f"{field}.{name}")
    probe = dict(PROBE_DEFAULTS[field])
    probe.update(current or {})
    for key, raw in given.items():
        low, high = PROBE_LIMITS[key]
        probe[key] = _int(raw, f"{field}.{key}", low, high)
    return probe


def _request_settings(value: Any, current: dict | None = None, model: CatalogModel | None = None) -> dict:
    given = _mapping(value, "request_settings")
    unknown = set(given) - set(REQUEST_LIMITS) - {"max_queue_wait_ms"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"request_settings has no setting {name!r}.", field=f"request_settings.{name}")
    result = dict(REQUEST_DEFAULTS)
    if model is not None and model.format == CatalogModel.Format.GGUF:
        # A chat completion on CPU takes seconds to minutes, not the 5 s a tabular model gets.
        result["request_timeout_ms"] = GGUF_REQUEST_TIMEOUT_MS
    result.update(current or {})
    for key, raw in given.items():
        if key in REQUEST_LIMITS:
            low, high = REQUEST_LIMITS[key]
            result[key] = _int(raw, f"request_settings.{key}", low, high)
    return result


def _scale_settings(value: Any) -> dict:
    given = _mapping(value, "scale_settings")
    kind = given.get("type", "default")
    if kind == "default":
        extra = set(given) - {"type"}
        if extra:
            name = sorted(extra)[0]
            raise InvalidInput(
                f"scale_settings.{name} applies only to type target_utilization.", field=f"scale_settings.{name}"
            )
        return {"type": "default"}
    if kind != "target_utilization":
        raise InvalidInput(
            f"scale_settings.type must be default or target_utilization, not {kind!r}.", field="scale_settings.type"
        )
    allowed = {"type", "min_instances", "max_instances", "target_utilization_percentage", "polling_interval",
               "cooldown_seconds"}
    unknown = set(given) - allowed
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"scale_settings has no setting {name!r}.", field=f"scale_settings.{name}")
    result: dict[str, Any] = {"type": "target_utilization"}
    result["min_instances"] = _int(given.get("min_instances", 1), "scale_settings.min_instances", 1, MAX_INSTANCES)
    result["max_instances"] = _int(
        given.get("max_instances", result["min_instances"]), "scale_settings.max_instances", 1, MAX_INSTANCES
    )
    if result["max_instances"] < result["min_instances"]:
        raise InvalidInput(
            f"scale_settings.max_instances ({result['max_instances']}) is below min_instances "
            f"({result['min_instances']}).",
            field="scale_settings.max_instances",
        )
    result["target_utilization_percentage"] = _int(
        given.get("target_utilization_percentage", SCALE_DEFAULTS["target_utilization_percentage"]),
        "scale_settings.target_utilization_percentage", 1, 100,
    )
    result["polling_interval"] = _int(
        given.get("polling_interval", SCALE_DEFAULTS["polling_interval"]), "scale_settings.polling_interval", 1, 3600
    )
    result["cooldown_seconds"] = _int(
        given.get("cooldown_seconds", SCALE_DEFAULTS["cooldown_seconds"]), "scale_settings.cooldown_seconds", 0, 86400
    )
    return result


def _code_configuration(value: Any) -> dict:
    given = _mapping(value, "code_configuration")
    unknown = set(given) - {"code", "scoring_script"}
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"code_configuration has no setting {name!r}.", field=f"code_configuration.{name}")
    result = {}
    for key in ("code", "scoring_script"):
        if key in given and given[key] not in (None, ""):
            if not isinstance(given[key], str):
                raise InvalidInput(f"code_configuration.{key} must be a string.", field=f"code_configuration.{key}")
            result[key] = given[key]
    if "scoring_script" in result and "code" not in result:
        raise InvalidInput(
            "code_configuration.code is required with a scoring_script.", field="code_configuration.code"
        )
    if "scoring_script" in result and Path(result["scoring_script"]).is_absolute():
        raise InvalidInput(
            "code_configuration.scoring_script is a path relative to code.", field="code_configuration.scoring_script"
        )
    return result


def _environment_variables(value: Any) -> dict:
    given = _mapping(value, "environment_variables")
    result = {}
    for key, raw in given.items():
        if not isinstance(key, str) or not ENV_NAME.match(key):
            raise InvalidInput(f"environment_variables: {key!r} is not a variable name.", field="environment_variables")
        if isinstance(raw, (dict, list)) or raw is None:
            raise InvalidInput(
                f"environment_variables.{key} must be a string or a number.", field=f"environment_variables.{key}"
            )
        result[key] = str(raw).lower() if isinstance(raw, bool) else str(raw)
    return result


def _instance_count(spec: dict, scale: dict, current: int | None = None) -> int:
    if "instance_count" in spec:
        count = _int(spec["instance_count"], "instance_count", 1, MAX_INSTANCES)
    elif scale.get("type") == "target_utilization":
        count = current if current is not None else scale["min_instances"]
    else:
        count = current if current is not None else 1
    if scale.get("type") == "target_utilization":
        count = max(scale["min_instances"], min(count, scale["max_instances"]))
    return count


def _check_fields(spec: dict, allowed: set[str]) -> None:
    for key in spec:
        if key not in allowed and key not in IGNORED_FIELDS:
            raise InvalidInput(f"Unknown deployment field {key!r}.", field=str(key))


def _live_deployments(endpoint: Endpoint) -> dict[str, Deployment]:
    rows = endpoint.deployments.exclude(provisioning_state=ProvisioningState.DELETING)
    return {d.name: d for d in rows}


def validate_traffic(endpoint: Endpoint, traffic: Any, mirror_traffic: Any, names: set[str]) -> tuple[dict, dict]:
    """Normalised (traffic, mirror_traffic) or InvalidInput naming the problem.

    Live traffic covers every deployment (missing ones get 0) and sums to 100 (an endpoint
    without deployments has none). Mirror traffic sends at most 50% of requests to one deployment that
    takes no live traffic."""
    live_in = _mapping(traffic, "traffic")
    mirror_in = _mapping(mirror_traffic, "mirror_traffic")
    live: dict[str, int] = {}
    for name, value in live_in.items():
        if name not in names:
            raise InvalidInput(
                f"traffic names deployment '{name}', which endpoint '{endpoint.name}' does not have.",
                field="traffic",
            )
        live[name] = _int(value, f"traffic.{name}", 0, 100)
    total = sum(live.values())
    if names and total != 100:
        parts = ", ".join(f"{k}={v}" for k, v in sorted(live.items())) or "nothing"
        raise InvalidInput(
            f"traffic must add up to 100 over the deployments of '{endpoint.name}'; {parts} adds up to {total}.",
            field="traffic",
        )
    live = {name: live.get(name, 0) for name in sorted(names)}
    mirror: dict[str, int] = {}
    for name, value in mirror_in.items():
        if name not in names:
            raise InvalidInput(
                f"mirror_traffic names deployment '{name}', which endpoint '{endpoint.name}' does not have.",
                field="mirror_traffic",
            )
        percent = _int(value, f"mirror_traffic.{name}", 0, 100)
        if percent > MAX_MIRROR_PERCENT:
            raise InvalidInput(
                f"mirror_traffic to '{name}' is {percent}%; mirror traffic is at most {MAX_MIRROR_PERCENT}%.",
                field="mirror_traffic",
            )
        if percent:
            mirror[name] = percent
    if len(mirror) > 1:
        raise InvalidInput("mirror_traffic can go to one deployment only.", field="mirror_traffic")
    for name in mirror:
        if live.get(name, 0) > 0:
            raise InvalidInput(
                f"mirror_traffic goes to '{name}', which takes {live[name]}% of live traffic; "
                "mirror to a deployment with no live traffic.",
                field="mirror_traffic",
            )
    return live, mirror


# -- endpoints ---------------------------------------------------------------------------------------

@transaction.atomic
def do_create_endpoint(
    actor: Actor,
    workspace: Workspace,
    *,
    name: str,
    auth_mode: str = "key",
    description: str = "",
    tags: dict | None = None,
    kind: str = "online",
) -> Endpoint:
    _check_name(name, DNS_LABEL, "name", "Endpoint")
    if name in RESERVED_ENDPOINT_NAMES:
        raise InvalidInput(f"Endpoint name '{name}' is reserved by the studio's pages; pick another.", field="name")
    if auth_mode not in Endpoint.AuthMode.values:
        raise InvalidInput(f"auth_mode must be key or aml_token, not {auth_mode!r}.", field="auth_mode")
    if kind not in Endpoint.Kind.values:
        raise InvalidInput(f"kind must be online, batch or serverless, not {kind!r}.", field="kind")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    tags = _mapping(tags, "tags")
    if Endpoint.objects.filter(name=name).exists():
        raise Conflict(f"The endpoint name '{name}' is taken; endpoint names are unique in the studio.", field="name")
    primary, secondary = keys.new_nonce(), keys.new_nonce()
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name=name,
        kind=kind,
        auth_mode=auth_mode,
        description=description or "",
        tags=tags,
        traffic={},
        mirror_traffic={},
        # An endpoint is a name, keys and a route: nothing to provision until a deployment.
        provisioning_state=ProvisioningState.SUCCEEDED,
        primary_key_nonce=primary,
        primary_key_digest=keys.digest(keys.derive_key(primary)),
        secondary_key_nonce=secondary,
        secondary_key_digest=keys.digest(keys.derive_key(secondary)),
    )
    record(actor, "endpoint.create", endpoint, workspace, kind=kind, auth_mode=auth_mode)
    bump_route_version()
    return endpoint


def _lock_endpoint(endpoint: Endpoint) -> Endpoint:
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is None:
        raise Conflict(f"Endpoint '{endpoint.name}' no longer exists.")
    if locked.provisioning_state == ProvisioningState.DELETING:
        raise Conflict(f"Endpoint '{endpoint.name}' is being deleted.")
    return locked


@transaction.atomic
def do_update_endpoint(
    actor: Actor,
    endpoint: Endpoint,
    *,
    traffic: dict | None = None,
    mirror_traffic: dict | None = None,
    description: str | None = None,
    tags: dict | None = None,
) -> Endpoint:
    endpoint = _lock_endpoint(endpoint)
    changed = []
    names = set(_live_deployments(endpoint))
    if traffic is not None or mirror_traffic is not None:
        new_traffic, new_mirror = validate_traffic(
            endpoint,
            traffic if traffic is not None else endpoint.traffic,
            mirror_traffic if mirror_traffic is not None else endpoint.mirror_traffic,
            names,
        )
        if new_traffic != endpoint.traffic:
            endpoint.traffic = new_traffic
            changed.append("traffic")
        if new_mirror != endpoint.mirror_traffic:
            endpoint.mirror_traffic = new_mirror
            changed.append("mirror_traffic")
    if description is not None:
        if not isinstance(description, str):
            raise InvalidInput("description must be a string.", field="description")
        if description != endpoint.description:
            endpoint.description = description
            changed.append("description")
    if tags is not None:
        tags = _mapping(tags, "tags")
        if tags != endpoint.tags:
            endpoint.tags = tags
            changed.append("tags")
    if changed:
        endpoint.save()
        record(
            actor, "endpoint.update", endpoint, endpoint.workspace, changed=changed,
            traffic=endpoint.traffic, mirror_traffic=endpoint.mirror_traffic,
        )
        if {"traffic", "mirror_traffic"} & set(changed):
            bump_route_version()
    return endpoint


def _request_stop(instances) -> int:
    """Mark live instances Stopping (the gateway stops routing to them; the controller stops them)."""
    now = timezone.now()
    running = instances.filter(state__in=(InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY))
    count = running.update(state=InstanceState.STOPPING, stop_requested_at=now)
    return count


@transaction.atomic
def do_delete_endpoint(actor: Actor, endpoint: Endpoint) -> None:
    """Delete at once if nothing runs; otherwise mark it Deleting, drain and stop its instances in the worker."""
    endpoint = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if endpoint is None:
        return
    deployments = list(endpoint.deployments.select_for_update())
    _request_stop(Instance.objects.filter(deployment__endpoint=endpoint))
    running = Instance.objects.filter(deployment__endpoint=endpoint, state__in=LIVE_INSTANCE_STATES).exists()
    record(actor, "endpoint.delete", endpoint, endpoint.workspace, deployments=[d.name for d in deployments])
    if running:
        endpoint.provisioning_state = ProvisioningState.DELETING
        endpoint.save(update_fields=["provisioning_state", "updated_at"])
        endpoint.deployments.update(provisioning_state=ProvisioningState.DELETING)
        _enqueue_reconcile([d.pk for d in deployments])
    else:
        endpoint.mark_deleted()
    bump_route_version()


# -- deployments -------------------------------------------------------------------------------------

@transaction.atomic
def do_create_deployment(actor: Actor, endpoint: Endpoint, spec: dict) -> Deployment:
    if not isinstance(spec, dict):
        raise InvalidInput("The deployment must be an object.")
    endpoint = _lock_endpoint(endpoint)
    _check_fields(spec, DEPLOYMENT_FIELDS)
    name = _check_name(spec.get("name"), DEPLOYMENT_NAME, "name", "Deployment")
    if spec.get("endpoint_name") not in (None, "", endpoint.name):
        raise InvalidInput(
            f"endpoint_name is '{spec['endpoint_name']}' but this is endpoint '{endpoint.name}'.", field="endpoint_name"
        )
    if endpoint.deployments.filter(name=name).exists():
        raise Conflict(f"Endpoint '{endpoint.name}' already has a deployment named '{name}'.", field="name")
    model = resolve_model(endpoint.workspace, spec.get("model"))
    if model.deployment_kinds and endpoint.kind not in model.deployment_kinds:
        raise InvalidInput(
            f"Model {model.asset_id} cannot be deployed to an {endpoint.kind} endpoint "
            f"(it supports: {', '.join(model.deployment_kinds)}).",
            field="model",
        )
    instance_type = _resolve_instance_type(spec.get("instance_type"))
    scale = _scale_settings(spec.get("scale_settings"))
    count = _instance_count(spec, scale)
    deployment = Deployment(
        endpoint=endpoint,
        name=name,
        model=model,
        instance_type=instance_type,
        instance_count=count,
        code_configuration=_code_configuration(spec.get("code_configuration")),
        environment_variables=_environment_variables(spec.get("environment_variables")),
        scale_settings=scale,
        request_settings=_request_settings(spec.get("request_settings"), model=model),
        liveness_probe=_probe(spec.get("liveness_probe"), "liveness_probe"),
        readiness_probe=_probe(spec.get("readiness_probe"), "readiness_probe"),
        provisioning_state=ProvisioningState.CREATING,
    )
    check_quota(endpoint.workspace, instance_type, reserved_instances(deployment))
    check_capacity(instance_type, count)
    deployment.save()
    names = set(_live_deployments(endpoint))
    traffic = {n: int(endpoint.traffic.get(n, 0)) for n in names}
    if sum(traffic.values()) == 0 and names == {name}:
        # The first deployment of an endpoint takes all its traffic, as the studio's wizard does.
        traffic[name] = 100
    endpoint.traffic = traffic
    endpoint.save(update_fields=["traffic", "updated_at"])
    record(
        actor, "deployment.create", deployment, endpoint.workspace,
        model=model.asset_id, instance_type=instance_type.name, instance_count=count,
    )
    bump_route_version()
    _enqueue_provision(deployment.pk)
    return deployment


def _lock_deployment(deployment: Deployment) -> Deployment:
    locked = (
        Deployment.objects.select_for_update(of=("self",))
        .select_related("endpoint", "endpoint__workspace", "instance_type", "model")
        .filter(pk=deployment.pk)
        .first()
    )
    if locked is None:
        raise Conflict(f"Deployment '{deployment.name}' no longer exists.")
    if locked.provisioning_state == ProvisioningState.DELETING:
        raise Conflict(f"Deployment '{deployment.name}' is being deleted.")
    return locked


@transaction.atomic
def do_update_deployment(actor: Actor, deployment: Deployment, changes: dict) -> Deployment:
    """Apply changes; a change of model, code, environment or instance type rolls new instances
    out with a surge, a change of instance count scales; both leave it Updating until done."""
    if not isinstance(changes, dict):
        raise InvalidInput("The changes must be an object.")
    deployment = _lock_deployment(deployment)
    _check_fields(changes, UPDATABLE_FIELDS | {"name"})
    if changes.get("name") not in (None, deployment.name):
        raise InvalidInput("A deployment cannot be renamed.", field="name")
    endpoint = deployment.endpoint
    changed: list[str] = []
    new_process = False

    if "model" in changes:
        model = resolve_model(endpoint.workspace, changes["model"])
        if model.deployment_kinds and endpoint.kind not in model.deployment_kinds:
            raise InvalidInput(f"Model {model.asset_id} cannot be deployed to an {endpoint.kind} endpoint.",
                               field="model")
        if model.pk != deployment.model_id:
            deployment.model = model
            changed.append("model")
            new_process = True
    if "instance_type" in changes:
        instance_type = _resolve_instance_type(changes["instance_type"])
        if instance_type.pk != deployment.instance_type_id:
            deployment.instance_type = instance_type
            changed.append("instance_type")
            new_process = True
    # What the model server process is started with: a change needs new processes.
    process_fields = (("code_configuration", _code_configuration), ("environment_variables", _environment_variables))
    for field, parse in process_fields:
        if field in changes:
            value = parse(changes[field])
            if value != getattr(deployment, field):
                setattr(deployment, field, value)
                changed.append(field)
                new_process = True
    for probe in ("liveness_probe", "readiness_probe"):
        if probe in changes:
            value = _probe(changes[probe], probe, getattr(deployment, probe))
            if value != getattr(deployment, probe):
                setattr(deployment, probe, value)
                changed.append(probe)
    if "request_settings" in changes:
        value = _request_settings(changes["request_settings"], deployment.request_settings)
        if value != deployment.request_settings:
            deployment.request_settings = value
            changed.append("request_settings")
    old_count = deployment.instance_count
    if "scale_settings" in changes:
        value = _scale_settings(changes["scale_settings"])
        if value != deployment.scale_settings:
            deployment.scale_settings = value
            changed.append("scale_settings")
    if "instance_count" in changes or "scale_settings" in changes:
        count = _instance_count(changes, deployment.scale_settings, current=old_count)
        if count != old_count:
            deployment.instance_count = count
            changed.append("instance_count")

    if deployment.provisioning_state == ProvisioningState.FAILED and not (new_process or "instance_count" in changed):
        # Updating a Failed deployment retries it with fresh processes (the user may have fixed
        # score.py or a model file in place, which no field shows).
        new_process = True
        changed.append("retry")
    if not changed:
        return deployment
    if "instance_count" in changed or "scale_settings" in changed or "instance_type" in changed:
        check_quota(endpoint.workspace, deployment.instance_type, reserved_instances(deployment), exclude=deployment)
    if "instance_type" in changed:
        check_capacity(deployment.instance_type, deployment.instance_count, exclude=deployment)
    elif deployment.instance_count > old_count:
        check_capacity(deployment.instance_type, deployment.instance_count - old_count, exclude=None)
    provisions = new_process or "instance_count" in changed
    if new_process:
        deployment.generation += 1
    if provisions:
        deployment.provisioning_state = ProvisioningState.UPDATING
        deployment.error = ""
    deployment.save()
    record(actor, "deployment.update", deployment, endpoint.workspace, changed=changed,
           generation=deployment.generation, instance_count=deployment.instance_count)
    if "request_settings" in changed:
        bump_route_version()
    if provisions or "scale_settings" in changed:
        _enqueue_provision(deployment.pk)
    return deployment


@transaction.atomic
def do_delete_deployment(actor: Actor, deployment: Deployment) -> None:
    """Refuse while it takes live traffic next to other deployments; otherwise drain and stop it."""
    # Locks in one order everywhere (endpoint, deployment, instances), so writers never deadlock.
    endpoint = Endpoint.objects.select_for_update().filter(pk=deployment.endpoint_id).first()
    deployment = Deployment.objects.select_for_update(of=("self",)).filter(pk=deployment.pk).first()
    if endpoint is None or deployment is None:
        return
    share = int(endpoint.traffic.get(deployment.name, 0))
    others = endpoint.deployments.exclude(pk=deployment.pk).exclude(provisioning_state=ProvisioningState.DELETING)
    if share > 0 and others.exists():
        raise Conflict(
            f"Deployment '{deployment.name}' takes {share}% of live traffic on endpoint '{endpoint.name}'; "
            "set its traffic to 0 first.",
            field="traffic",
        )
    endpoint.traffic = {k: v for k, v in endpoint.traffic.items() if k != deployment.name}
    endpoint.mirror_traffic = {k: v for k, v in endpoint.mirror_traffic.items() if k != deployment.name}
    endpoint.save(update_fields=["traffic", "mirror_traffic", "updated_at"])
    _request_stop(deployment.instances.all())
    record(actor, "deployment.delete", deployment, endpoint.workspace)
    if deployment.instances.filter(state__in=LIVE_INSTANCE_STATES).exists():
        deployment.provisioning_state = ProvisioningState.DELETING
        deployment.save(update_fields=["provisioning_state", "updated_at"])
        _enqueue_reconcile([deployment.pk])
    else:
        deployment.mark_deleted()
    bump_route_version()


# -- keys, tokens, logs ------------------------------------------------------------------------------

def get_keys(endpoint: Endpoint) -> dict:
    """{primary_key, secondary_key} of a key-auth endpoint (derived again; never stored)."""
    if endpoint.auth_mode != Endpoint.AuthMode.KEY:
        raise InvalidInput(
            f"Endpoint '{endpoint.name}' uses aml_token auth: get a token instead of keys.", field="auth_mode"
        )
    return {
        "primary_key": keys.derive_key(endpoint.primary_key_nonce),
        "secondary_key": keys.derive_key(endpoint.secondary_key_nonce),
    }


@transaction.atomic
def do_regenerate_key(actor: Actor, endpoint: Endpoint, key_type: str) -> str:
    """A new key for the slot; the old one stops working once gateways reload their routes."""
    if key_type not in ("primary", "secondary"):
        raise InvalidInput(f"key_type must be primary or secondary, not {key_type!r}.", field="key_type")
    endpoint = _lock_endpoint(endpoint)
    nonce = keys.new_nonce()
    key = keys.derive_key(nonce)
    setattr(endpoint, f"{key_type}_key_nonce", nonce)
    setattr(endpoint, f"{key_type}_key_digest", keys.digest(key))
    endpoint.save(update_fields=[f"{key_type}_key_nonce", f"{key_type}_key_digest", "updated_at"])
    record(actor, "endpoint.regenerate_key", endpoint, endpoint.workspace, key_type=key_type)
    bump_route_version()
    return key


def issue_endpoint_token(actor: Actor, endpoint: Endpoint) -> dict:
    """{access_token, expiry_time_utc (Unix seconds), token_type} for an aml_token endpoint."""
    if endpoint.auth_mode != Endpoint.AuthMode.AML_TOKEN:
        raise InvalidInput(
            f"Endpoint '{endpoint.name}' uses key auth; tokens are for aml_token endpoints.", field="auth_mode"
        )
    token, expiry = keys.issue_token(endpoint.name)
    record(actor, "endpoint.token", endpoint, endpoint.workspace, expiry_time_utc=expiry)
    return {"access_token": token, "expiry_time_utc": expiry, "token_type": "Bearer"}


def current_instances(deployment: Deployment, instances: list[Instance] | None = None) -> list[Instance]:
    """The instances worth showing: all but stopped ones (kept for billing) and failures of
    earlier generations."""
    rows = list(deployment.instances.all()) if instances is None else instances
    return [
        i for i in rows
        if i.state != InstanceState.STOPPED
        and not (i.state == InstanceState.FAILED and i.generation != deployment.generation)
    ]


def read_deployment_logs(deployment: Deployment, lines: int = 100, instance: str | None = None) -> str:
    """The last `lines` lines of each instance's log (or of one instance), as plain text."""
    from endpoints_app.controller import process

    lines = _int(lines, "lines", 1, 10000)
    instances = list(deployment.instances.select_related("node").order_by("-generation", "name"))
    if instance:
        instances = [i for i in instances if i.name == instance]
        if not instances:
            raise InvalidInput(f"Deployment '{deployment.name}' has no instance {instance!r}.", field="instance")
    else:
        instances = current_instances(deployment, instances)
    if not instances:
        return f"Deployment '{deployment.name}' has no instances yet ({deployment.provisioning_state}).\n"
    parts = []
    for inst in instances:
        path = inst.log_path or str(process.log_path(inst.name))
        text = process.tail(path, lines)
        if len(instances) > 1 or not instance:
            parts.append(f"==> instance {inst.name} on {inst.node.name} ({inst.state}) <==\n")
        parts.append(text if text else "(no output yet)\n")
        if parts[-1] and not parts[-1].endswith("\n"):
            parts.append("\n")
    return "".join(parts)
