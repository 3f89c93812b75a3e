"""`studio apply -f DIR_OR_FILE [--dry-run]`: make the studio match a folder of specs.

Every spec declares its kind (`kind:` or an az ml `$schema`, see specs.py). apply reads them
all, validates them all (nothing is sent if one is wrong), compares each with what runs, prints
the plan (create / update which fields / unchanged) and carries it out in dependency order:

  1. marketplace subscriptions and data assets
  2. online and batch endpoints (description, tags, auth mode)
  3. serverless endpoints (they need their subscription) and deployments (they need their endpoint)
  4. live and mirror traffic of online endpoints, default deployments of batch endpoints

A field the spec leaves out is left as it runs (so a second apply changes nothing); apply never
deletes what the folder does not mention. Serverless endpoints and subscriptions cannot change
their model: a different model_id stops the plan before anything is applied."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio_client import specs
from studio_client.client import StudioClient, check_deployments
from studio_client.errors import NotFoundError, StudioError

ORDER = {
    "marketplace-subscription": 1, "data": 1,
    "online-endpoint": 2, "batch-endpoint": 2,
    "serverless-endpoint": 3, "online-deployment": 3, "batch-deployment": 3,
    "traffic": 4, "batch-defaults": 4,
}
MODEL_ID = re.compile(r"^studio://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)/versions/(?P<version>\d+)$")
ENDPOINT_FIELDS = ("auth_mode", "description", "tags")


class PlanConflict(StudioError):
    """The folder asks for a change the studio cannot make in place."""


@dataclass
class Step:
    kind: str
    name: str
    action: str  # create | update | unchanged
    fields: list[str] = field(default_factory=list)
    spec: dict = field(default_factory=dict)
    file: str = ""
    endpoint: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind} {self.endpoint + '/' if self.endpoint else ''}{self.name}"

    def as_dict(self) -> dict:
        out = {"kind": self.kind, "name": self.name, "action": self.action}
        if self.endpoint:
            out["endpoint_name"] = self.endpoint
        if self.fields:
            out["fields"] = self.fields
        return out


# -- reading the folder --------------------------------------------------------------------------------------

def collect(paths: list[str]) -> list[tuple[str, dict, str]]:
    """(kind, spec, file) for every document of every .yml/.yaml file under `paths`."""
    files: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            files.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yml", ".yaml") and f.is_file()))
        elif p.exists():
            files.append(p)
        else:
            raise specs.SpecError("no such file or folder", file=raw)
    found = []
    problems: list[specs.SpecError] = []
    seen: dict[tuple, str] = {}
    for f in files:
        for doc in specs.load_documents(f):
            file = str(f)
            if not isinstance(doc, dict):
                raise specs.SpecError("must hold a mapping of fields", line=getattr(doc, "line", 1), file=file)
            kind = specs.kind_of(doc, file)
            if kind is None:
                raise specs.SpecError(
                    f"declare what this is with kind: ({', '.join(k for k in specs.KINDS if k != 'batch-job')}) "
                    "or an az ml $schema URL", "kind", getattr(doc, "line", 1), file)
            if kind == "batch-job":
                raise specs.SpecError("apply does not run batch jobs; use `studio batch-endpoint invoke -f`",
                                      "kind", doc.key_lines.get("kind", doc.line), file)
            try:
                specs.validate(doc, kind, file)
            except specs.SpecError as exc:
                problems.extend(getattr(exc, "errors", [exc]))  # every file's problems, in one run
                continue
            if kind == "marketplace-subscription" and not doc.get("name"):
                doc["name"] = specs.subscription_name(doc["model_id"])
            if kind.endswith("-deployment") and not doc.get("endpoint_name"):
                raise specs.SpecError("is required in a folder applied with `studio apply`", "endpoint_name",
                                      doc.line, file)
            identity = (kind, doc.get("endpoint_name"), doc["name"])
            if identity in seen:
                raise specs.SpecError(f"{kind} '{doc['name']}' is also declared in {seen[identity]}", "name",
                                      doc.key_lines.get("name", doc.line), file)
            seen[identity] = file
            found.append((kind, doc, file))
    if problems:
        raise specs.SpecErrors(problems)
    if not found:
        raise specs.SpecError("no .yml or .yaml specs found", file=", ".join(paths))
    return found


# -- comparing with what runs --------------------------------------------------------------------------------

def same_model(wanted: str, current: str | None) -> bool:
    if current is None:
        return False
    wanted = wanted.strip().removeprefix("azureml:")
    if wanted == current:
        return True
    match = MODEL_ID.match(current)
    if not match or MODEL_ID.match(wanted):
        return False
    name, _, version = wanted.partition(":")
    # `name` alone means the latest version: pin versions (name:N) to roll a new one out with apply.
    return name == match["name"] and (not version or version == match["version"])


def same(wanted: Any, current: Any, shape: specs.Type | None) -> bool:
    """Does what runs already hold what the spec asks? Objects compare the fields the spec gives;
    free mappings (tags, environment variables, traffic) compare whole."""
    kind = shape.kind if shape else "any"
    if kind == "obj" and isinstance(wanted, dict):
        current = current if isinstance(current, dict) else {}
        return all(v is None or same(v, current.get(k), shape.fields.get(k)) for k, v in wanted.items())
    if kind == "map" and isinstance(wanted, dict):
        current = current if isinstance(current, dict) else {}
        return {str(k): _scalar(v) for k, v in wanted.items()} == {str(k): _scalar(v) for k, v in current.items()}
    return _scalar(wanted) == _scalar(current)


def _scalar(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, float)):
        return value
    return value if not isinstance(value, str) or not value.lstrip("-").isdigit() else int(value)


def changed_fields(spec: dict, current: dict, shape: specs.Type, skip: tuple = ()) -> list[str]:
    out = []
    for key, value in spec.items():
        if key in ("$schema", "kind", "name", "endpoint_name", *skip) or value is None:
            continue
        if key == "model":
            if not same_model(str(value), current.get("model")):
                out.append(key)
        elif not same(value, current.get(key), shape.fields.get(key)):
            out.append(key)
    return out


def _get(fetch) -> dict | None:
    try:
        return fetch()
    except NotFoundError:
        return None


def traffic_changes(spec: dict, current: dict | None) -> list[str]:
    current = current or {}
    out = []
    for key in ("traffic", "mirror_traffic"):
        if key not in spec or spec[key] is None:
            continue
        wanted, now = dict(spec[key]), dict(current.get(key) or {})
        names = set(wanted) | set(now)
        if any(int(wanted.get(n, 0)) != int(now.get(n, 0)) for n in names):
            out.append(key)
    return out


def plan(client: StudioClient, found: list[tuple[str, dict, str]]) -> list[Step]:
    steps: list[Step] = []
    endpoints_now: dict[tuple[str, str], dict | None] = {}
    for kind, spec, file in found:
        name = spec["name"]
        if kind in ("online-endpoint", "batch-endpoint"):
            ops = client.online_endpoints if kind == "online-endpoint" else client.batch_endpoints
            current = _get(lambda ops=ops, name=name: ops.get(name))
            endpoints_now[(kind, name)] = current
            if current is None:
                steps.append(Step(kind, name, "create", spec=spec, file=file))
            else:
                fields = changed_fields(spec, current, specs.SHAPES[kind], skip=("traffic", "mirror_traffic",
                                                                                    "defaults"))
                steps.append(Step(kind, name, "update" if fields else "unchanged", fields, spec, file))
            if kind == "online-endpoint":
                fields = traffic_changes(spec, current)
                if fields:
                    steps.append(Step("traffic", name, "update", fields, spec, file))
            elif spec.get("defaults"):
                fields = [] if current and same(spec["defaults"], current.get("defaults"),
                                                 specs.BATCH_ENDPOINT.fields["defaults"]) else ["defaults"]
                if fields:
                    steps.append(Step("batch-defaults", name, "update", fields, spec, file))
        elif kind in ("online-deployment", "batch-deployment"):
            ops = client.online_deployments if kind == "online-deployment" else client.batch_deployments
            endpoint = spec["endpoint_name"]
            current = _get(lambda ops=ops, endpoint=endpoint, name=name: ops.get(endpoint, name))
            if current is None:
                steps.append(Step(kind, name, "create", spec=spec, file=file, endpoint=endpoint))
            else:
                fields = changed_fields(spec, current, specs.SHAPES[kind])
                steps.append(Step(kind, name, "update" if fields else "unchanged", fields, spec, file, endpoint))
        elif kind in ("serverless-endpoint", "marketplace-subscription"):
            ops = client.serverless_endpoints if kind == "serverless-endpoint" else client.marketplace_subscriptions
            current = _get(lambda ops=ops, name=name: ops.get(name))
            if current is None:
                steps.append(Step(kind, name, "create", spec=spec, file=file))
            elif current.get("model_id") != spec["model_id"]:
                raise PlanConflict(
                    f"{kind} '{name}' runs model {current.get('model_id')} but {file} asks for {spec['model_id']}; "
                    f"its model cannot change: delete it first (studio {kind} delete -n {name})"
                )
            else:
                steps.append(Step(kind, name, "unchanged", spec=spec, file=file))
        elif kind == "data":
            current = _get(lambda name=name: client.data.get(name))
            steps.append(Step(kind, name, "create" if current is None else "unchanged", spec=spec, file=file))
    for step in steps:  # deployments of an endpoint the folder does not declare must exist already
        if step.kind.endswith("-deployment") and step.action == "create":
            ep_kind = step.kind.replace("deployment", "endpoint")
            if (ep_kind, step.endpoint) not in endpoints_now:
                ops = client.online_endpoints if ep_kind == "online-endpoint" else client.batch_endpoints
                if _get(lambda ops=ops, step=step: ops.get(step.endpoint)) is None:
                    raise PlanConflict(f"{step.file}: {step.kind} '{step.name}' needs {ep_kind} '{step.endpoint}', "
                                       "which neither runs nor is declared in the folder")
    return sorted(steps, key=lambda s: ORDER[s.kind])


# -- carrying it out -----------------------------------------------------------------------------------------

def _wait(poller, no_wait: bool) -> None:
    if not no_wait:
        poller.result()


def execute(client: StudioClient, step: Step, no_wait: bool) -> None:
    spec = step.spec
    if step.kind in ("online-endpoint", "batch-endpoint"):
        ops = client.online_endpoints if step.kind == "online-endpoint" else client.batch_endpoints
        if step.action == "create":
            _wait(ops.begin_create(specs.body(spec, ("$schema", "kind", "traffic", "mirror_traffic", "defaults"))),
                  no_wait)
        else:
            _wait(ops.begin_update(step.name, {k: specs.plain(spec[k]) for k in step.fields}), no_wait)
    elif step.kind == "traffic":
        current = client.online_endpoints.get(step.name)
        fields = traffic_changes(spec, current)  # the first deployment may have taken 100% on its own
        if fields:
            _wait(client.online_endpoints.begin_update(step.name, {k: specs.plain(spec[k]) for k in fields}),
                  no_wait)
    elif step.kind == "batch-defaults":
        _wait(client.batch_endpoints.begin_update(step.name, {"defaults": specs.plain(spec["defaults"])}), no_wait)
    elif step.kind in ("online-deployment", "batch-deployment"):
        ops = client.online_deployments if step.kind == "online-deployment" else client.batch_deployments
        if step.action == "create":
            _wait(ops.begin_create(step.endpoint, specs.body(spec)), no_wait)
        else:
            _wait(ops.begin_update(step.endpoint, step.name, {k: specs.plain(spec[k]) for k in step.fields}),
                  no_wait)
    elif step.kind == "serverless-endpoint":
        _wait(client.serverless_endpoints.begin_create(step.name, spec["model_id"]), no_wait)
    elif step.kind == "marketplace-subscription":
        client.marketplace_subscriptions.create(spec["model_id"], step.name)
    elif step.kind == "data":
        client.data.create(step.name, [str(Path(step.file).parent / spec["path"])])


def check_resources(client: StudioClient, changes: list[Step]) -> None:
    """Every deployment the plan creates or updates, checked together against quota and node capacity
    before the first change (a 409 stops the plan with nothing changed)."""
    asks = []
    for step in changes:
        if step.kind not in ("online-deployment", "batch-deployment"):
            continue
        ask = {"kind": step.kind.split("-")[0], "endpoint_name": step.endpoint, "name": step.name}
        for key in ("instance_type", "instance_count", "scale_settings"):
            if step.spec.get(key) is not None and (step.action == "create" or key in step.fields):
                ask[key] = specs.plain(step.spec[key])
        asks.append(ask)
    if asks:
        check_deployments(client, asks)


SYMBOL = {"create": "+", "update": "~", "unchanged": "="}


def apply_command(client: StudioClient, args) -> dict:
    found = collect(args.file)
    steps = plan(client, found)
    changes = [s for s in steps if s.action != "unchanged"]
    for s in steps:
        detail = f" ({', '.join(s.fields)})" if s.fields else ""
        print(f"{SYMBOL[s.action]} {s.action} {s.label}{detail}", file=sys.stderr)
    print(f"plan: {sum(s.action == 'create' for s in steps)} to create, "
          f"{sum(s.action == 'update' for s in steps)} to update, "
          f"{sum(s.action == 'unchanged' for s in steps)} unchanged", file=sys.stderr, flush=True)
    check_resources(client, changes)
    if not args.dry_run:
        for s in changes:
            execute(client, s, args.no_wait)
    return {"dry_run": bool(args.dry_run), "changes": len(changes), "plan": [s.as_dict() for s in steps]}
