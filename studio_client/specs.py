"""YAML specs: load with line numbers, declare their kind, check their shape before any call.

A spec file declares its kind with a `kind:` field (`online-endpoint`, `online-deployment`,
`batch-endpoint`, `batch-deployment`, `serverless-endpoint`, `marketplace-subscription`, `data`,
`batch-job`) or with an `az ml` `$schema` URL (`.../managedOnlineEndpoint.schema.json` and so
on). A command such as `studio online-endpoint create -f FILE` knows the kind already; the file
may still declare it, and a different one is an error.

The checks here are about shape only: unknown fields, wrong types, missing required fields,
and values outside a fixed set of choices. Rules about values (name formats, ranges, what sums
to 100) stay with the studio, which names the field in its 400 answer."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

KINDS = (
    "online-endpoint", "online-deployment", "batch-endpoint", "batch-deployment", "serverless-endpoint",
    "marketplace-subscription", "data", "batch-job", "datastore", "environment", "model", "compute",
)
SCHEMA_KINDS = {
    "managedonlineendpoint": "online-endpoint",
    "kubernetesonlineendpoint": "online-endpoint",
    "onlineendpoint": "online-endpoint",
    "managedonlinedeployment": "online-deployment",
    "kubernetesonlinedeployment": "online-deployment",
    "onlinedeployment": "online-deployment",
    "batchendpoint": "batch-endpoint",
    "batchdeployment": "batch-deployment",
    "modelbatchdeployment": "batch-deployment",
    "serverlessendpoint": "serverless-endpoint",
    "marketplacesubscription": "marketplace-subscription",
    "data": "data",
    "batchjob": "batch-job",
    "azureblob": "datastore",
    "datastore": "datastore",
    "environment": "environment",
    "compute": "compute",
}


# -- errors --------------------------------------------------------------------------------------------------

class SpecError(Exception):
    """A spec that fails validation: the file, the field's path and its line."""

    def __init__(self, message: str, path: str = "", line: int | None = None, file: str | None = None) -> None:
        self.message = message
        self.path = path
        self.line = line
        self.file = file
        super().__init__(str(self))

    def __str__(self) -> str:
        where = self.file or "spec"
        if self.line is not None:
            where += f":{self.line}"
        field_text = f" {self.path}:" if self.path else ""
        return f"{where}:{field_text} {self.message}"


class SpecErrors(SpecError):
    """Several problems at once (one line each), so a spec is fixed in one go; it is the first one too."""

    def __init__(self, errors: list[SpecError]) -> None:
        self.errors = sorted(errors, key=lambda e: (e.file or "", e.line or 0))
        first = self.errors[0]
        super().__init__(first.message, first.path, first.line, first.file)

    def __str__(self) -> str:
        return "\n".join(SpecError.__str__(e) for e in self.errors)


# -- YAML with line numbers ----------------------------------------------------------------------------------

class MarkedDict(dict):
    """A mapping that remembers its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.key_lines = {}


class MarkedList(list):
    line: int | None = None
    item_lines: list


def _construct_mapping(loader, node):
    result = MarkedDict()
    result.line = node.start_mark.line + 1
    loader.flatten_mapping(node)
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise SpecError("a mapping key must be a plain value", line=key_node.start_mark.line + 1) from None
        if key in result:
            raise SpecError(f"field {key!r} appears twice", path=str(key), line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader, node):
    result = MarkedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


@cache
def _loader():
    """A safe YAML loader (libyaml's when present) that keeps line numbers. Built on first use:
    commands without a spec (list, show) never import yaml."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
    return Loader


def load_yaml(text: str, file: str = "spec") -> Any:
    import yaml

    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506  (a SafeLoader subclass)
    except SpecError as exc:
        exc.file = file
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise SpecError(f"not valid YAML: {exc.problem or exc}", line=line, file=file) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}", file=file) from None


def load_file(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError("no such file", file=str(path)) from None
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read: {exc}", file=str(path)) from None
    return load_yaml(text, str(path))


def load_documents(path: str | Path) -> list[Any]:
    """Every YAML document of a file (`---` separated), each with its lines."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise SpecError("no such file", file=str(path)) from None
    try:
        return [doc for doc in yaml.load_all(text, Loader=_loader()) if doc is not None]  # noqa: S506
    except SpecError as exc:
        exc.file = str(path)
        raise
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise SpecError(f"not valid YAML: {exc.problem or exc}", line=mark.line + 1 if mark else None,
                        file=str(path)) from None


# -- --set overrides -----------------------------------------------------------------------------------------

def apply_overrides(spec: dict, pairs: Iterable[str] | None) -> dict:
    """`--set a.b=c`: the value is read as YAML (`--set instance_count=2` is a number)."""
    import yaml

    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"--set expects path.to.field=value, got {pair!r}", path=key, file="--set")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise SpecError(f"cannot read the value {raw!r}: {exc}", path=key, file="--set") from None
        target = spec
        parts = key.strip().split(".")
        for i, part in enumerate(parts[:-1]):
            child = target.get(part)
            if child is None:
                child = target[part] = MarkedDict()
            if not isinstance(child, dict):
                raise SpecError(f"{'.'.join(parts[:i + 1])} is not a mapping", path=key, file="--set")
            target = child
        target[parts[-1]] = value
        if isinstance(target, MarkedDict):
            target.key_lines.pop(parts[-1], None)
    return spec


# -- shapes --------------------------------------------------------------------------------------------------

class Type:
    """The shape of one field: kind is str | int | number | bool | scalar | map | obj | any;
    `values` is the type of every value of a map."""

    __slots__ = ("kind", "choices", "fields", "required", "values")

    def __init__(self, kind: str, choices: tuple = (), fields: dict[str, Type] | None = None,
                 required: tuple[str, ...] = (), values: Type | None = None) -> None:
        self.kind, self.choices, self.fields = kind, choices, fields or {}
        self.required, self.values = required, values

    def describe(self) -> str:
        return {"str": "a string", "int": "a whole number", "number": "a number", "bool": "true or false",
                "scalar": "a string or a number", "map": "a mapping", "obj": "a mapping", "any": "anything"}[self.kind]


def S(*choices: str) -> Type:
    return Type("str", choices=choices)


INT = Type("int")
BOOL = Type("bool")
SCALAR = Type("scalar")
ANY = Type("any")


def Obj(fields: dict[str, Type], required: tuple[str, ...] = (), extra: Type | None = None) -> Type:
    """A mapping of known fields; with `extra`, other keys are allowed and hold that type."""
    return Type("obj", fields=fields, required=required, values=extra)


def MapOf(values: Type) -> Type:
    return Type("map", values=values)


PROBE = Obj({k: INT for k in ("initial_delay", "period", "timeout", "success_threshold", "failure_threshold")})
COMMON = {"$schema": S(), "kind": S(*KINDS)}

ONLINE_ENDPOINT = Obj({
    **COMMON, "name": S(), "auth_mode": S("key", "aml_token", "aad_token"), "description": S(), "tags": MapOf(SCALAR),
    "traffic": MapOf(INT), "mirror_traffic": MapOf(INT),
}, required=("name",))

_DEPLOYMENT_FIELDS = {
    **COMMON,
    "name": S(), "endpoint_name": S(), "model": S(), "description": S(), "tags": MapOf(SCALAR), "type": S(),
    "app_insights_enabled": BOOL, "environment": ANY, "compute": S(),
    "code_configuration": Obj({"code": S(), "scoring_script": S()}),
    "environment_variables": MapOf(SCALAR),
    "instance_type": S(), "instance_count": INT,
    "scale_settings": Obj({
        "type": S("default", "target_utilization"), "min_instances": INT, "max_instances": INT,
        "target_utilization_percentage": INT, "polling_interval": INT, "cooldown_seconds": INT,
    }),
    "request_settings": Obj({"request_timeout_ms": INT, "max_concurrent_requests_per_instance": INT,
                             "max_queue_wait_ms": INT}),
    "liveness_probe": PROBE, "readiness_probe": PROBE,
}
ONLINE_DEPLOYMENT = Obj(_DEPLOYMENT_FIELDS, required=("name", "model"))

BATCH_ENDPOINT = Obj({
    **COMMON, "name": S(), "description": S(), "tags": MapOf(SCALAR), "defaults": Obj({"deployment_name": S()}),
}, required=("name",))
_BATCH_SETTINGS = {
    "mini_batch_size": INT, "max_concurrency_per_instance": INT, "error_threshold": INT,
    "retry_settings": Obj({"max_retries": INT, "timeout": INT}),
    "output_action": S("append_row", "summary_only"), "output_file_name": S(), "output_columns": ANY,
    "logging_level": S(),
}
BATCH_DEPLOYMENT = Obj({
    **_DEPLOYMENT_FIELDS, **_BATCH_SETTINGS,
    # As the cloud CLI's deployment.yml nests them.
    "settings": Obj(_BATCH_SETTINGS), "resources": Obj({"instance_count": INT}),
}, required=("name", "model"))
SERVERLESS_ENDPOINT = Obj({**COMMON, "name": S(), "model_id": S()}, required=("name", "model_id"))
# A subscription is named after its model: `name` may be left out (the studio refuses any other name).
MARKETPLACE_SUBSCRIPTION = Obj({**COMMON, "name": S(), "model_id": S()}, required=("model_id",))
DATA = Obj({**COMMON, "name": S(), "path": S(), "type": S("uri_folder", "uri_file"), "description": S()},
           required=("name", "path"))
JOB_SETTINGS = Obj({"mini_batch_size": INT, "instance_count": INT, "max_concurrency_per_instance": INT,
                    "error_threshold": INT, "output_file_name": S(), "output_columns": ANY,
                    "retry_settings": Obj({"max_retries": INT, "timeout": INT}),
                    "output_action": S("append_row", "summary_only")})
BATCH_JOB = Obj({
    **COMMON, "endpoint_name": S(), "deployment_name": S(),
    # input_data is what the model scores; a score.py may take more inputs, literal or uri, by any name.
    "inputs": Obj({"input_data": Obj({"type": S("uri_folder", "uri_file"), "path": S(), "mode": S()},
                                     required=("path",))}, required=("input_data",), extra=ANY),
    "outputs": Obj({"score": Obj({"type": S("uri_file", "uri_folder"), "path": S(), "mode": S()})}),
    "settings": JOB_SETTINGS,
}, required=("inputs",))
DATASTORE = Obj({
    **COMMON, "name": S(), "type": S("azure_blob", "s3", "local"), "description": S(),
    "account_name": S(), "container_name": S(), "account_url": S(), "endpoint": S(), "protocol": S("https", "http"),
    "bucket": S(), "endpoint_url": S(), "region": S(), "path": S(),
    "credentials": Obj({"account_key": S(), "sas_token": S(), "access_key_id": S(), "secret_access_key": S()}),
}, required=("name", "type"))

MODEL = Obj({**COMMON, "name": S(), "version": SCALAR, "path": S(), "type": S("custom_model", "mlflow_model"),
             "description": S(), "tags": MapOf(SCALAR), "environment": S()}, required=("name", "path"))
# `image` is checked by the studio, which answers that images are not supported yet.
ENVIRONMENT = Obj({
    **COMMON, "name": S(), "version": SCALAR, "description": S(), "tags": MapOf(SCALAR), "conda_file": ANY,
    "pip_requirements": ANY, "python_version": SCALAR, "image": ANY,
}, required=("name",))

# `type` is checked by the command (compute_cmd), which names Ray for the cloud's other compute types.
COMPUTE = Obj({**COMMON, "name": S(), "type": S(), "address": S(), "description": S()}, required=("name", "type"))

SHAPES: dict[str, Type] = {
    "online-endpoint": ONLINE_ENDPOINT,
    "online-deployment": ONLINE_DEPLOYMENT,
    "batch-endpoint": BATCH_ENDPOINT,
    "batch-deployment": BATCH_DEPLOYMENT,
    "serverless-endpoint": SERVERLESS_ENDPOINT,
    "marketplace-subscription": MARKETPLACE_SUBSCRIPTION,
    "data": DATA,
    "batch-job": BATCH_JOB,
    "datastore": DATASTORE,
    "environment": ENVIRONMENT,
    "model": MODEL,
    "compute": COMPUTE,
}


def _line_of(container: Any, key: Any) -> int | None:
    if isinstance(container, MarkedDict):
        return container.key_lines.get(key, container.line)
    if isinstance(container, MarkedList) and isinstance(key, int) and key < len(container.item_lines):
        return container.item_lines[key]
    return getattr(container, "line", None)


def _check(value: Any, shape: Type, path: str, line: int | None, file: str, required: bool,
           errors: list[SpecError]) -> None:
    """Append to `errors` every problem of `value` (all of them, so one run names them all)."""
    kind = shape.kind
    if kind == "any":
        return
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "scalar": isinstance(value, (str, int, float, bool)),
        "map": isinstance(value, dict),
        "obj": isinstance(value, dict),
    }[kind]
    if not ok:
        shown = "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
        errors.append(SpecError(f"must be {shape.describe()}, not {shown}", path, line, file))
        return
    if shape.choices and value not in shape.choices:
        errors.append(SpecError(f"must be one of {', '.join(shape.choices)}; got {value!r}", path, line, file))
    if kind == "map" and shape.values is not None:
        for key, item in value.items():
            _check(item, shape.values, f"{path}.{key}" if path else str(key), _line_of(value, key), file, required,
                   errors)
    if kind == "obj":
        for key, item in value.items():
            child_path = f"{path}.{key}" if path else str(key)
            if key not in shape.fields and shape.values is not None:
                if item is not None:
                    _check(item, shape.values, child_path, _line_of(value, key), file, required)
                continue
            if key not in shape.fields:
                known = ", ".join(k for k in sorted(shape.fields) if k not in COMMON)
                errors.append(SpecError(f"unknown field; known fields here: {known}", child_path,
                                        _line_of(value, key), file))
                continue
            if item is None:
                continue  # `field:` with nothing after it: left out
            _check(item, shape.fields[key], child_path, _line_of(value, key), file, required, errors)
        if required:
            for key in shape.required:
                if value.get(key) in (None, ""):
                    child_path = f"{path}.{key}" if path else key
                    errors.append(SpecError("is required", child_path, getattr(value, "line", line), file))


def kind_of(spec: Any, file: str = "spec") -> str | None:
    """The kind a spec declares (`kind:` or an az ml `$schema` URL), or None."""
    if not isinstance(spec, dict):
        return None
    declared = spec.get("kind")
    if declared is not None:
        if declared not in KINDS:
            raise SpecError(f"must be one of {', '.join(KINDS)}; got {declared!r}", "kind", _line_of(spec, "kind"),
                            file)
        return declared
    schema = spec.get("$schema")
    if isinstance(schema, str) and schema:
        stem = schema.rstrip("/").rsplit("/", 1)[-1].split(".", 1)[0].lower()
        found = SCHEMA_KINDS.get(stem)
        if found is None:
            raise SpecError(f"a $schema this studio does not know: {schema}", "$schema", _line_of(spec, "$schema"),
                            file)
        return found
    return None


def validate(spec: Any, kind: str, file: str = "spec", *, for_create: bool = True) -> dict:
    """Check `spec` against `kind`'s shape; SpecErrors names every problem (path and line), in file order."""
    if not isinstance(spec, dict):
        raise SpecError(f"must hold a mapping of fields (a {kind} spec)", line=getattr(spec, "line", 1), file=file)
    declared = kind_of(spec, file)
    if declared is not None and declared != kind:
        field_name = "kind" if "kind" in spec else "$schema"
        raise SpecError(f"this file is a {declared} spec, not a {kind} spec", field_name, _line_of(spec, field_name),
                        file)
    shape = SHAPES[kind]
    if not for_create:
        shape = Obj(shape.fields, required=("name",) if "name" in shape.required else ())
    errors: list[SpecError] = []
    _check(spec, shape, "", getattr(spec, "line", 1), file, True, errors)
    if errors:
        raise SpecErrors(errors)
    return spec


def subscription_name(model_id: str) -> str:
    """`studio://registries/r/models/NAME/versions/n` (or `NAME` alone) -> NAME."""
    parts = model_id.strip().rstrip("/").split("/")
    if "models" in parts and parts.index("models") + 1 < len(parts):
        return parts[parts.index("models") + 1]
    return parts[-1].split(":", 1)[0]


def plain(value: Any) -> Any:
    """Plain dicts and lists, without the line bookkeeping (for JSON bodies and comparisons)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def body(spec: dict, drop: Iterable[str] = ("$schema", "kind")) -> dict:
    """The spec as the API wants it: without the file's bookkeeping fields and empty values."""
    dropped = set(drop)
    return {k: plain(v) for k, v in spec.items() if k not in dropped and v is not None}


def read_environment_files(env: Any, file: str | None) -> Any:
    """An environment spec (or a deployment's inline `environment`) with `conda_file` and a
    `pip_requirements` given as file paths read in (paths resolve relative to the YAML file)."""
    if not isinstance(env, dict):
        return env
    base = Path(file).parent if file and file != "--set" else Path.cwd()
    for key in ("conda_file", "pip_requirements"):
        value = env.get(key)
        if not isinstance(value, str) or "\n" in value:
            continue
        path = base / value
        if path.is_file():
            text = path.read_text()
            env[key] = text if key == "conda_file" else [
                line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
        elif value.endswith((".yml", ".yaml", ".txt")):
            raise SpecError(f"no such file: {path}", key, _line_of(env, key), file)
    return env
