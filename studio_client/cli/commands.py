"""One function per command group: read the arguments and the spec, call the client, return
what to print. Errors are raised (UsageError, SpecError, StudioError) and turned into exit
statuses by main()."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from studio_client import specs
from studio_client.client import StudioClient
from studio_client.errors import OperationFailed
from studio_client.poller import Poller

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any


class UsageError(Exception):
    """A command line that cannot work (exit status 2)."""


def _load(args, kind: str, *, for_create: bool) -> dict:
    """The spec from -f (validated, with --set applied), or one made of --set alone."""
    if getattr(args, "file", None):
        spec = specs.load_file(args.file)
        if spec is None:
            spec = specs.MarkedDict()
        if not isinstance(spec, dict):
            raise specs.SpecError(f"must hold a mapping of fields (a {kind} spec)", line=1, file=args.file)
        file = args.file
    else:
        spec, file = specs.MarkedDict(), "--set"
    specs.apply_overrides(spec, getattr(args, "set", None))
    name = getattr(args, "name", None)
    if name and "name" in specs.SHAPES[kind].fields:
        spec["name"] = name
    return specs.validate(spec, kind, file, for_create=for_create)


def _need(value: Any, what: str) -> Any:
    if not value:
        raise UsageError(what)
    return value


def _confirm(args, question: str) -> None:
    if getattr(args, "yes", False):
        return
    if not sys.stdin.isatty():
        raise UsageError(f"{question} Pass --yes to confirm (there is no terminal to ask on).")
    print(f"{question} [y/N] ", end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise UsageError("not confirmed; nothing deleted")


def _percentages(text: str | None, flag: str) -> dict[str, int] | None:
    """`"blue=90 green=10"` (spaces or commas) → {"blue": 90, "green": 10}."""
    if text is None:
        return None
    result: dict[str, int] = {}
    for part in text.replace(",", " ").split():
        name, sep, value = part.partition("=")
        if not sep or not value.strip().isdigit():
            raise specs.SpecError(f"expects deployment=percent pairs, got {part!r}", path=flag, file=flag)
        result[name] = int(value)
    return result


def _finish(poller: Poller, args, on_failure=None) -> Any:
    """Wait for a long operation unless --no-wait; on Failed, raise with the log tail."""
    if args.no_wait:
        return poller.resource if poller.resource is not None else {"status": "deleting"}
    try:
        return poller.result()
    except OperationFailed as exc:
        if on_failure is not None:
            exc.log_tail = on_failure()
        raise


# -- online and batch endpoints ------------------------------------------------------------------------------

def endpoint_cmd(client: StudioClient, args, kind: str) -> Any:
    ops = client.online_endpoints if kind == "online" else client.batch_endpoints
    spec_kind = f"{kind}-endpoint"
    action = args.action
    if action == "list":
        return ops.list()
    if action in ("create", "update"):
        spec = _load(args, spec_kind, for_create=action == "create")
        if kind == "online":
            traffic = _percentages(args.traffic, "--traffic")
            mirror = _percentages(args.mirror_traffic, "--mirror-traffic")
            if traffic is not None:
                spec["traffic"] = traffic
            if mirror is not None:
                spec["mirror_traffic"] = mirror
        name = _need(spec.get("name"), "give the endpoint's name with -n/--name or in the file (-f)")
        if action == "create":
            return _finish(ops.begin_create(specs.body(spec)), args)
        changes = specs.body(spec, ("$schema", "kind", "name"))
        if not changes:
            raise UsageError("nothing to update: give -f FILE, --set, --traffic or --mirror-traffic")
        return _finish(ops.begin_update(name, changes), args)
    if action == "invoke" and kind == "batch":
        return batch_invoke(client, args)
    name = args.name
    if args.file and not name:
        name = (_load(args, spec_kind, for_create=False) or {}).get("name")
    name = _need(name, "give the endpoint's name with -n/--name (or -f FILE)")
    if action == "show":
        return ops.get(name)
    if action == "delete":
        _confirm(args, f"Delete {kind} endpoint '{name}' and all its deployments?")
        result = _finish(ops.begin_delete(name), args)
        return result if args.no_wait else {"name": name, "deleted": True}
    if action == "get-credentials":
        return ops.get_credentials(name)
    if action == "regenerate-keys":
        return ops.regenerate_keys(name, args.key_type)
    if action == "invoke" and kind == "online":
        request_file = _need(args.request_file, "invoke needs --request-file FILE (the JSON body to score)")
        try:
            body = Path(request_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {request_file}: {exc.strerror}") from None
        return client.online_endpoints.invoke(name, body, deployment_name=args.deployment_name, path=args.route)
    if action == "list-jobs":
        return client.jobs.list(name)
    raise UsageError(f"unknown action {action}")


def local_cmd(args) -> Any:
    """`online-deployment create --local` and `online-endpoint invoke --local`: no studio, no token."""
    from studio_client import local

    if args.group == "online-endpoint" and args.action == "invoke":
        name = _need(args.name, "give the endpoint's name with -n/--name")
        request_file = _need(args.request_file, "invoke needs --request-file FILE (the JSON body to score)")
        try:
            body = Path(request_file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {request_file}: {exc.strerror}") from None
        return local.invoke(name, body, args.route)
    if args.group == "online-deployment" and args.action == "create":
        spec = _load(args, "online-deployment", for_create=True)
        specs.read_environment_files(spec.get("environment"), args.file)
        spec["endpoint_name"] = args.endpoint_name or spec.get("endpoint_name") or "local"
        local.run(specs.plain(spec), args.file, args.port)
        return None
    raise UsageError("--local goes with online-deployment create and online-endpoint invoke")


def batch_invoke(client: StudioClient, args) -> Any:
    """`batch-endpoint invoke -n E --input DATA_ID [...]` or `-f job.yml` (a batch-job spec)."""
    job: dict = specs.MarkedDict()
    if args.file or args.set:
        job = _load(args, "batch-job", for_create=True) if args.file else specs.apply_overrides(job, args.set)
    name = _need(args.name or job.get("endpoint_name"),
                 "give the batch endpoint's name with -n/--name (or endpoint_name in the job file)")
    data_input = (job.get("inputs") or {}).get("input_data") or {}
    input_path = _need(args.input or data_input.get("path"),
                       "batch-endpoint invoke needs --input DATA_ASSET_ID (or inputs.input_data.path in -f FILE)")
    settings = specs.plain(job.get("settings") or {})
    for key in specs.JOB_SETTINGS.fields:
        if getattr(args, key, None) is not None:
            settings[key] = getattr(args, key)
    others = {k: v for k, v in specs.plain(job.get("inputs") or {}).items() if k != "input_data"}
    outputs = specs.plain(job.get("outputs") or {})
    poller = client.jobs.begin_create(name, input_path=input_path,
                                      input_type=data_input.get("type") or args.input_type,
                                      deployment_name=args.deployment_name or job.get("deployment_name"),
                                      settings=settings or None, inputs=others or None, outputs=outputs or None)
    return _finish(poller, args)


# -- online and batch deployments ----------------------------------------------------------------------------

def deployment_cmd(client: StudioClient, args, kind: str) -> Any:
    ops = client.online_deployments if kind == "online" else client.batch_deployments
    endpoints = client.online_endpoints if kind == "online" else client.batch_endpoints
    action = args.action
    spec: dict = {}
    if args.file or args.set or action in ("create", "update"):
        spec = _load(args, f"{kind}-deployment", for_create=action == "create")
    endpoint = args.endpoint_name or spec.get("endpoint_name")
    if not endpoint:
        if args.file:
            raise specs.SpecError("is required (or pass -e/--endpoint-name)", "endpoint_name",
                                  getattr(spec, "line", 1), args.file)
        raise UsageError("give the endpoint with -e/--endpoint-name")
    if action == "list":
        return ops.list(endpoint)
    name = _need(args.name or spec.get("name"), "give the deployment's name with -n/--name or in the file (-f)")

    def log_tail() -> str:
        try:
            return ops.get_logs(endpoint, name, lines=20)
        except Exception as exc:  # the failure itself matters more than its log
            return f"(no log: {exc})"

    if action in ("create", "update"):
        if isinstance(spec.get("environment"), dict):
            specs.read_environment_files(spec["environment"], args.file)
        if action == "create":
            poller = ops.begin_create(endpoint, specs.body(spec))
        else:
            changes = specs.body(spec, ("$schema", "kind", "name", "endpoint_name"))
            if not changes:
                raise UsageError("nothing to update: give -f FILE or --set")
            poller = ops.begin_update(endpoint, name, changes)
        result = _finish(poller, args, log_tail)
        if kind == "online" and args.all_traffic:
            endpoints.begin_update(endpoint, {"traffic": {name: 100}}).result()
            result = ops.get(endpoint, name) if not args.no_wait else result
        if kind == "batch" and args.set_default:
            endpoints.begin_update(endpoint, {"defaults": {"deployment_name": name}}).result()
        return result
    if action == "show":
        return ops.get(endpoint, name)
    if action == "delete":
        _confirm(args, f"Delete deployment '{name}' of {kind} endpoint '{endpoint}'?")
        result = _finish(ops.begin_delete(endpoint, name), args)
        return result if args.no_wait else {"name": name, "endpoint_name": endpoint, "deleted": True}
    if action == "get-logs":
        return ops.get_logs(endpoint, name, lines=args.lines, instance=args.instance)
    raise UsageError(f"unknown action {action}")


# -- jobs and data -------------------------------------------------------------------------------------------

def job_cmd(client: StudioClient, args) -> Any:
    endpoint = args.endpoint_name  # optional: job names are unique in the workspace
    if args.action == "list":
        return client.jobs.list(endpoint, status=args.status)
    name = _need(args.name, "give the job's name with -n/--name")
    if args.action == "show":
        return client.jobs.get(endpoint, name)
    if args.action == "wait":
        return client.jobs.poller(endpoint, name).result()
    if args.action == "cancel":
        where = f" of batch endpoint '{endpoint}'" if endpoint else ""
        _confirm(args, f"Cancel job '{name}'{where}?")
        return client.jobs.cancel(endpoint, name)
    if args.action == "download":
        folder = Path(args.download_path)
        folder.mkdir(parents=True, exist_ok=True)
        files = [args.output_file] if args.output_file else _output_files(client.jobs.get(endpoint, name))
        written = [str(client.jobs.download(endpoint, name, f, folder)) for f in files]
        return {"name": name, "downloaded": written}
    raise UsageError(f"unknown action {args.action}")


def _output_files(job: dict) -> list[str]:
    outputs = job.get("outputs") or []
    if isinstance(outputs, dict):  # {file name: download URL, or null until it exists}
        missing = [name for name, url in outputs.items() if not url]
        if missing:
            raise UsageError(f"job {job.get('name')} is {job.get('status')}: no {', '.join(missing)} to download yet")
        return list(outputs)  # every file the job wrote (none for summary_only without a score.py folder)
    names = []
    for item in outputs:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(item, dict):
            names.append(str(item.get("name") or item.get("file") or item.get("path")))
    if not names:
        names = [(job.get("settings") or {}).get("output_file_name") or "predictions.csv"]
    return names


def data_cmd(client: StudioClient, args) -> Any:
    if args.action == "list":
        return client.data.list()
    if args.action == "show":
        return client.data.get(_need(args.name, "give the data asset's name with -n/--name"), args.version)
    spec = _load(args, "data", for_create=not args.path) if args.file or args.set else specs.MarkedDict()
    name = _need(args.name or spec.get("name"), "give the data asset's name with -n/--name or in the file (-f)")
    paths = list(args.path)
    target = spec.get("path") or (paths[0] if len(paths) == 1 else "")
    if str(target).startswith("azureml://"):
        # A version that points at a datastore path: nothing to upload.
        return client.data.create_reference(name, str(target), spec.get("type") or "uri_folder",
                                            spec.get("description") or "")
    if spec.get("path"):
        base = Path(args.file).parent if args.file else Path.cwd()
        paths.append(str(base / spec["path"]))
    if not paths:
        raise UsageError("data create needs --path FILE_OR_FOLDER (or path: in the file)")
    for p in paths:
        if not os.path.exists(p):
            raise UsageError(f"no such file or folder: {p}")
    return client.data.create(name, paths)


def datastore_cmd(client: StudioClient, args) -> Any:
    ops = client.datastores
    if args.action == "list":
        return ops.list()
    if args.action == "create":
        spec = specs.body(_load(args, "datastore", for_create=True))
        if spec.get("type") == "local" and spec.get("path") and not os.path.isabs(spec["path"]):
            base = Path(args.file).parent if args.file else Path.cwd()
            spec["path"] = str((base / spec["path"]).resolve())  # paths in a YAML are relative to it
        return ops.create(spec)
    name = _need(args.name, "give the datastore's name with -n/--name")
    if args.action == "show":
        return ops.get(name)
    if args.action == "browse":
        return ops.browse(name, args.path)
    if args.action == "delete":
        _confirm(args, f"Delete datastore '{name}' (its files stay where they are)?")
        ops.delete(name)
        return {"name": name, "deleted": True}
    raise UsageError(f"unknown action {args.action}")


COMPUTE_TYPES = ("ray", "local")


def compute_cmd(client: StudioClient, args) -> Any:
    ops = client.computes
    if args.action == "list":
        return ops.list()
    if args.action in ("create", "update"):
        spec = _load(args, "compute", for_create=args.action == "create")
        kind = spec.get("type")
        if kind is not None and kind not in COMPUTE_TYPES:
            raise specs.SpecError(f"{kind!r} is not supported: the studio scales out on Ray (type: ray, with the "
                                  "address of a Ray cluster's head; Ray runs on Kubernetes too, with KubeRay)",
                                  "type", specs._line_of(spec, "type"), args.file or "--set")
        body = specs.body(spec)
        if args.action == "create":
            return ops.create(body)
        name = _need(body.pop("name", None) or args.name, "give the compute's name with -n/--name or in the spec")
        return ops.update(name, body)
    name = _need(args.name, "give the compute's name with -n/--name")
    if args.action == "show":
        return ops.get(name)
    if args.action == "delete":
        _confirm(args, f"Delete compute '{name}'?")
        ops.delete(name)
        return {"name": name, "deleted": True}
    raise UsageError(f"unknown action {args.action}")


def environment_cmd(client: StudioClient, args) -> Any:
    ops = client.environments
    if args.action == "list":
        return ops.list(args.name)
    if args.action == "create":
        spec = specs.read_environment_files(_load(args, "environment", for_create=True), args.file)

        def log_tail() -> str:
            try:
                return "\n".join(ops.build_log(spec["name"], version).splitlines()[-20:])
            except Exception as exc:  # the failure itself matters more than its log
                return f"(no log: {exc})"

        poller = ops.begin_create(specs.body(spec))
        version = (poller.resource or {}).get("version")
        return _finish(poller, args, log_tail)
    name = _need(args.name, "give the environment's name with -n/--name")
    if args.action == "show":
        return ops.get(name, args.version)
    if args.action == "get-build-log":
        version = args.version or ops.get(name)["version"]
        return ops.build_log(name, version)
    raise UsageError(f"unknown action {args.action}")


# -- serverless, subscriptions, models, members, the rest ----------------------------------------------------

def serverless_cmd(client: StudioClient, args) -> Any:
    ops = client.serverless_endpoints
    if args.action == "list":
        return ops.list()
    if args.action == "create":
        if args.model_id:
            args.set = [*args.set, f"model_id={args.model_id}"]
        spec = _load(args, "serverless-endpoint", for_create=True)
        return _finish(ops.begin_create(spec["name"], spec["model_id"]), args)
    name = _need(args.name, "give the endpoint's name with -n/--name")
    if args.action == "show":
        return ops.get(name)
    if args.action == "delete":
        _confirm(args, f"Delete serverless endpoint '{name}'?")
        result = _finish(ops.begin_delete(name), args)
        return result if args.no_wait else {"name": name, "deleted": True}
    if args.action == "get-credentials":
        return ops.list_keys(name)
    if args.action == "regenerate-keys":
        return ops.regenerate_keys(name, args.key_type)
    raise UsageError(f"unknown action {args.action}")


def subscription_cmd(client: StudioClient, args) -> Any:
    ops = client.marketplace_subscriptions
    if args.action == "list":
        return ops.list()
    if args.action == "create":
        if args.model_id:
            args.set = [*args.set, f"model_id={args.model_id}"]
        spec = _load(args, "marketplace-subscription", for_create=True)
        return ops.create(spec["model_id"], spec.get("name"))
    name = _need(args.name, "give the subscription's name with -n/--name")
    if args.action == "show":
        return ops.get(name)
    if args.action == "delete":
        _confirm(args, f"Delete marketplace subscription '{name}'? Serverless endpoints that need it stop working.")
        ops.delete(name)
        return {"name": name, "deleted": True}
    raise UsageError(f"unknown action {args.action}")


def model_cmd(client: StudioClient, args) -> Any:
    if args.action == "list":
        return client.models.list(search=args.search, task=args.task, format=args.format,
                                  deployment_kind=args.deployment_kind, name=args.name)
    spec: dict = {}
    if args.action == "create" and args.file:
        spec = _load(args, "model", for_create=True)
        if spec.get("path"):
            spec["path"] = str(Path(args.file).parent / spec["path"])
    name = _need(args.name or spec.get("name"), "give the model's name with -n/--name (or name: in -f FILE)")
    if args.action == "show":
        return client.models.get(name, args.version)
    sample = _sample_request(args.sample_request)
    if args.action in ("update", "delete"):
        version = args.version or client.models.get(name)["version"]
        if args.action == "delete":
            _confirm(args, f"Delete model {name} version {version}?")
            client.models.delete(name, version)
            return {"name": name, "version": version, "deleted": True}
        if sample is None and args.description is None:
            raise UsageError("model update needs --sample-request FILE or --description TEXT")
        return client.models.update(name, version, sample_request=sample, description=args.description)
    path = _need(args.path or spec.get("path"), "model create needs --path FILE_OR_FOLDER (or path: in -f FILE)")
    if not os.path.exists(path):
        raise UsageError(f"no such file or folder: {path}")
    return client.models.create(name, path, format=args.format, task=args.task,
                                description=args.description or spec.get("description"),
                                scoring_script=args.scoring_script, sample_request=sample,
                                type=args.type or spec.get("type"),
                                environment=args.environment or spec.get("environment"))


def _sample_request(path: str | None) -> str | None:
    """The JSON text of --sample-request FILE (the studio checks it)."""
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read --sample-request {path}: {exc.strerror}") from None


def members_cmd(client: StudioClient, args) -> Any:
    if args.action == "list":
        return client.members.list()
    user = _need(args.user, "give the member's username with -u/--user")
    if args.action == "show":
        return client.members.get(user)
    if args.action == "remove":
        _confirm(args, f"Remove '{user}' from workspace '{client.workspace}'?")
        client.members.remove(user)
        return {"username": user, "removed": True}
    role = _need(args.role, "give the role with --role Owner|Contributor|Reader")
    if args.action == "add":
        return client.members.add(user, role)
    return client.members.update(user, role)


def token_cmd(client: StudioClient, args) -> Any:
    if args.action == "list":
        return client.tokens.list()
    if args.action == "create":
        return client.tokens.create(args.expires_in_days)
    token_id = _need(args.id, "give the token's id with --id")
    _confirm(args, f"Revoke API token {token_id}?")
    client.tokens.delete(token_id)
    return {"id": token_id, "deleted": True}


def workspace_cmd(client: StudioClient, args) -> Any:
    if args.action == "list-inference-keys":
        return client.list_inference_keys()
    return client.workspaces.list()


def usage_cmd(client: StudioClient, args) -> Any:
    return client.usage(endpoint=args.endpoint_name, deployment=args.deployment, from_=args.from_, to=args.to,
                        interval=args.interval)
