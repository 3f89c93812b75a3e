"""Parsers and rules for endpoint and deployment specs (endpoint.yml / deployment.yml field names).

Every check lives here once; services, UI views and the API call these parsers and never
re-state a rule. Each raises InvalidInput naming the field."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db.models import F

from endpoints_app.envvars import refused_variable_names
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    CatalogModel,
    Endpoint,
    InstanceType,
    Workspace,
)
from endpoints_app.models.endpoints import DEPLOYMENT_NAME
from endpoints_app.models.workspaces import DNS_LABEL

MODEL_ID = re.compile(r"^studio://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VARIABLES = 100
MAX_ENV_NAME_CHARS = 128
MAX_ENV_VALUE_CHARS = 32 * 1024
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
    "scale_settings", "request_settings", "liveness_probe", "readiness_probe", "environment", "compute",
}
# Keys of deployment.yml that carry no setting: the file's schema URL, and the endpoint it names (checked).
IGNORED_FIELDS = {"$schema", "endpoint_name"}
# Keys the cloud CLI's files carry that hold only one value here; any other value is a 400 naming the key
# (nothing is accepted and ignored).
ONE_VALUE_FIELDS: dict[str, tuple[Any, str]] = {
    "type": ("managed", "the studio runs managed deployments only (type: managed)"),
    "app_insights_enabled": (False, "Application Insights is not available; the Monitoring and Logs tabs show "
                                    "a deployment's traffic and logs"),
}
NOT_KEPT_FIELDS = {
    "description": "a deployment keeps no description; describe its endpoint instead",
    "tags": "a deployment keeps no tags; tag its endpoint instead",
}
UPDATABLE_FIELDS = DEPLOYMENT_FIELDS - {"name"}  # compute: only its current value (services/computes.py)
# Changes that need new processes: the controller replaces instances with a surge.
NEW_PROCESS_FIELDS = ("model", "code_configuration", "environment_variables", "instance_type", "environment")
def clean_or_refuse(obj) -> None:
    """Run the model's own rules (Model.clean(), which the admin's forms run too) and refuse what
    they refuse with InvalidInput naming the first field."""
    try:
        obj.clean()
    except ValidationError as exc:
        field, messages = next(iter(exc.message_dict.items()))
        raise InvalidInput(" ".join(messages), field=None if field == NON_FIELD_ERRORS else field) from None


def parse_int(value: Any, field: str, low: int, high: int) -> int:
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


def parse_mapping(value: Any, field: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object (a mapping), not {type(value).__name__}.", field=field)
    return value


# /endpoints/new/ is the deploy wizard.
RESERVED_ENDPOINT_NAMES = {"new"}


def parse_name(value: Any, validator, field: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"{what} name is required.", field=field)
    try:
        validator(value)
    except Exception:
        raise InvalidInput(f"{what} name {value!r} is not valid: {validator.message}", field=field) from None
    return value


def parse_endpoint_name(value: Any) -> str:
    """A new endpoint's name: a DNS label, not reserved, not taken anywhere in the studio."""
    name = parse_name(value, DNS_LABEL, "name", "Endpoint")
    if name in RESERVED_ENDPOINT_NAMES:
        raise InvalidInput(f"Endpoint name '{name}' is reserved by the studio's pages; pick another.", field="name")
    if Endpoint.objects.filter(name=name).exists():
        raise Conflict(f"The endpoint name '{name}' is taken; endpoint names are unique in the studio.", field="name")
    return name


def parse_auth_mode(value: Any) -> str:
    if value not in Endpoint.AuthMode.values:
        raise InvalidInput(f"auth_mode must be key, aml_token or aad_token, not {value!r}.", field="auth_mode")
    if value == Endpoint.AuthMode.AAD_TOKEN and not settings.STUDIO_OIDC_ISSUER:
        raise InvalidInput("auth_mode aad_token needs the studio's identity provider (STUDIO_OIDC_ISSUER), "
                           "which IT has not configured.", field="auth_mode")
    return value


def parse_new_deployment_name(endpoint: Endpoint | None, value: Any) -> str:
    """A new deployment's name, free on `endpoint` (None: a new endpoint, where any valid name is free)."""
    name = parse_name(value, DEPLOYMENT_NAME, "name", "Deployment")
    if endpoint is not None and endpoint.deployments.filter(name=name).exists():
        raise Conflict(f"Endpoint '{endpoint.name}' already has a deployment named '{name}'.", field="name")
    return name


def check_model_kind(model: CatalogModel, kind: str) -> None:
    if model.deployment_kinds and kind not in model.deployment_kinds:
        raise InvalidInput(
            f"Model {model.name}:{model.version} cannot be deployed to an {kind} endpoint "
            f"(it supports: {', '.join(model.deployment_kinds)}).",
            field="model",
        )


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


def resolve_instance_type(value: Any) -> InstanceType:
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


def parse_probe(value: Any, field: str, current: dict | None = None) -> dict:
    given = parse_mapping(value, field)
    unknown = set(given) - set(PROBE_LIMITS)
    if unknown:
        name = sorted(unknown)[0]
        raise InvalidInput(f"{field} has no setting {name!r}.", field=f"{field}.{name}")
    probe = dict(PROBE_DEFAULTS[field])
    probe.update(current or {})
    for key, raw in given.items():
        low, high = PROBE_LIMITS[key]
        probe[key] = parse_int(raw, f"{field}.{key}", low, high)
    return probe


def parse_request_settings(value: Any, current: dict | None = None, model: CatalogModel | None = None) -> dict:
    given = parse_mapping(value, "request_settings")
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
            result[key] = parse_int(raw, f"request_settings.{key}", low, high)
    return result


def parse_scale_settings(value: Any) -> dict:
    given = parse_mapping(value, "scale_settings")
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
    result["min_instances"] = parse_int(given.get("min_instances", 1), "scale_settings.min_instances", 1, MAX_INSTANCES)
    result["max_instances"] = parse_int(
        given.get("max_instances", result["min_instances"]), "scale_settings.max_instances", 1, MAX_INSTANCES
    )
    if result["max_instances"] < result["min_instances"]:
        raise InvalidInput(
            f"scale_settings.max_instances ({result['max_instances']}) is below min_instances "
            f"({result['min_instances']}).",
            field="scale_settings.max_instances",
        )
    result["target_utilization_percentage"] = parse_int(
        given.get("target_utilization_percentage", SCALE_DEFAULTS["target_utilization_percentage"]),
        "scale_settings.target_utilization_percentage", 1, 100,
    )
    result["polling_interval"] = parse_int(
        given.get("polling_interval", SCALE_DEFAULTS["polling_interval"]), "scale_settings.polling_interval", 1, 3600
    )
    result["cooldown_seconds"] = parse_int(
        given.get("cooldown_seconds", SCALE_DEFAULTS["cooldown_seconds"]), "scale_settings.cooldown_seconds", 0, 86400
    )
    return result


def parse_code_configuration(value: Any, workspace: Workspace) -> dict:
    """`code` names a folder inside the artifacts of a model the workspace may use (its own models, the
    shared catalog), relative to the artifact store; `scoring_script` a file relative to `code`. Neither
    may be absolute or climb out with `..` (a deployment must not serve another team's files). One rule
    for online and batch deployments: the workspace is required."""
    given = parse_mapping(value, "code_configuration")
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
    for key, what in (("code", "a folder of a model's artifacts"), ("scoring_script", "a file in code")):
        if key in result and not _plain_relative_path(result[key]):
            raise InvalidInput(
                f"code_configuration.{key} must be {what}, as a relative path without '..'.",
                field=f"code_configuration.{key}",
            )
    if "code" in result and not _inside_usable_artifacts(result["code"], workspace):
        raise InvalidInput(
            "code_configuration.code must be a folder inside the artifacts of a model this workspace can use.",
            field="code_configuration.code",
        )
    return result


def _plain_relative_path(text: str) -> bool:
    if not text.strip() or "\\" in text or "\x00" in text:
        return False
    path = PurePosixPath(text)
    return not path.is_absolute() and ".." not in path.parts


def _inside_usable_artifacts(code: str, workspace: Workspace) -> bool:
    """True when `code` (relative to MEDIA_ROOT, symlinks resolved) lies in the artifact folder of a
    model visible to the workspace."""
    media = Path(settings.MEDIA_ROOT).resolve()
    target = (media / code).resolve()
    visible = CatalogModel.objects.filter(workspace__isnull=True) | CatalogModel.objects.filter(workspace=workspace)
    for artifact in visible.exclude(artifact_path="").values_list("artifact_path", flat=True).iterator():
        path = Path(artifact) if Path(artifact).is_absolute() else media / artifact
        folder = path.resolve()
        if not folder.is_dir() and folder.suffix:  # a model file (.joblib, .onnx, .gguf): its folder
            folder = folder.parent
        if target == folder or folder in target.parents:
            return True
    return False


def parse_environment_variables(value: Any) -> dict:
    """A deployment's own variables for its model server: names of 1-128 letters, digits and '_', values
    strings or numbers (at most 32 KiB each, no NUL), at most 100 of them; never a name in
    refused_variable_names()."""
    given = parse_mapping(value, "environment_variables")
    if len(given) > MAX_ENV_VARIABLES:
        raise InvalidInput(f"environment_variables holds at most {MAX_ENV_VARIABLES} variables; got {len(given)}.",
                           field="environment_variables")
    result = {}
    for key, raw in given.items():
        if not isinstance(key, str) or not ENV_NAME.match(key) or len(key) > MAX_ENV_NAME_CHARS:
            shown = key if not isinstance(key, str) or len(key) <= 64 else key[:64] + "..."
            raise InvalidInput(
                f"environment_variables: {shown!r} is not a variable name (1-{MAX_ENV_NAME_CHARS} letters, digits "
                "or '_', not starting with a digit).", field="environment_variables",
            )
        if isinstance(raw, (dict, list)) or raw is None:
            raise InvalidInput(
                f"environment_variables.{key} must be a string or a number.", field=f"environment_variables.{key}"
            )
        text = str(raw).lower() if isinstance(raw, bool) else str(raw)
        if "\x00" in text or len(text) > MAX_ENV_VALUE_CHARS:
            raise InvalidInput(
                f"environment_variables.{key} must be at most {MAX_ENV_VALUE_CHARS} characters, without NUL.",
                field=f"environment_variables.{key}",
            )
        result[key] = text
    refused = refused_variable_names(result)
    if refused:
        raise InvalidInput(
            f"environment_variables: {', '.join(refused)} cannot be set by a deployment: variables that change how "
            "the loader, an interpreter or a shell starts (LD_*, PYTHON* and the like) or that the studio sets for "
            "the model server itself (PATH, HOME, STUDIO_* and the like) are refused.",
            field=f"environment_variables.{refused[0]}",
        )
    return result


def parse_instance_count(spec: dict, scale: dict, current: int | None = None) -> int:
    if "instance_count" in spec:
        count = parse_int(spec["instance_count"], "instance_count", 1, MAX_INSTANCES)
    elif scale.get("type") == "target_utilization":
        count = current if current is not None else scale["min_instances"]
    else:
        count = current if current is not None else 1
    if scale.get("type") == "target_utilization":
        count = max(scale["min_instances"], min(count, scale["max_instances"]))
    return count


def check_fields(spec: dict, allowed: set[str], what: str = "deployment",
                 one_value: dict[str, tuple[Any, str]] | None = None) -> None:
    """Every key is one the studio acts on, or a 400 naming it (and why, for the cloud CLI's keys)."""
    one_value = ONE_VALUE_FIELDS if one_value is None else one_value
    for key in spec:
        if key in allowed or key in IGNORED_FIELDS:
            continue
        if key in one_value:
            value, why = one_value[key]
            if spec[key] in (None, value):
                continue
            raise InvalidInput(f"{key} {spec[key]!r} is not supported: {why}.", field=str(key))
        if key in NOT_KEPT_FIELDS:
            raise InvalidInput(f"{key} is not supported: {NOT_KEPT_FIELDS[key]}.", field=str(key))
        raise InvalidInput(f"Unknown {what} field {key!r}.", field=str(key))


def check_endpoint_fields(body: dict, allowed: set[str]) -> None:
    """An endpoint's body: its own fields only (a deployment's or an unknown one is a 400 naming it)."""
    for key in body:
        if key not in allowed and key != "$schema":
            raise InvalidInput(f"Unknown endpoint field {key!r}.", field=str(key))


def validate_traffic(endpoint: Endpoint, traffic: Any, mirror_traffic: Any, names: set[str]) -> tuple[dict, dict]:
    """Normalised (traffic, mirror_traffic) or InvalidInput naming the problem.

    Live traffic covers every deployment (missing ones get 0) and sums to 100 (an endpoint
    without deployments has none). Mirror traffic sends at most 50% of requests to one deployment that
    takes no live traffic."""
    live_in = parse_mapping(traffic, "traffic")
    mirror_in = parse_mapping(mirror_traffic, "mirror_traffic")
    live: dict[str, int] = {}
    for name, value in live_in.items():
        if name not in names:
            raise InvalidInput(
                f"traffic names deployment '{name}', which endpoint '{endpoint.name}' does not have.",
                field="traffic",
            )
        live[name] = parse_int(value, f"traffic.{name}", 0, 100)
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
        percent = parse_int(value, f"mirror_traffic.{name}", 0, 100)
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


