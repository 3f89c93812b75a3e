"""`studio`: the command line for automation, a thin client of the REST API.

    STUDIO_URL=http://127.0.0.1:8000 STUDIO_TOKEN=... STUDIO_WORKSPACE=default \
    studio online-endpoint create -f endpoint.yml

Output is JSON; on failure the exit status is non-zero and stderr carries the
API's error message. It imports nothing from Django, so it runs anywhere."""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import requests
import yaml

USER_AGENT = "studio-cli/1.0"
TERMINAL_STATES = {"Succeeded", "Failed"}


class CliError(Exception):
    pass


class Api:
    def __init__(self, url: str, token: str, workspace: str):
        self.base = url.rstrip("/")
        self.workspace = workspace
        self.session = requests.Session()
        self.session.headers.update(
            {"Authorization": f"Token {token}", "X-Studio-Client": USER_AGENT, "User-Agent": USER_AGENT}
        )

    def ws_path(self, path: str) -> str:
        return f"/api/v1/workspaces/{self.workspace}/{path}"

    def call(self, method: str, path: str, **kwargs):
        try:
            response = self.session.request(method, self.base + path, timeout=60, **kwargs)
        except requests.ConnectionError as exc:
            raise CliError(f"cannot reach the studio at {self.base}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message = f"{error.get('code', 'Error')}: {error.get('message', '')}"
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise CliError(f"HTTP {response.status_code} {message}")
        if response.status_code == 204 or not response.content:
            return None
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text


def load_spec(path: str) -> dict:
    try:
        spec = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise CliError(f"no such file: {path}") from None
    except yaml.YAMLError as exc:
        raise CliError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(spec, dict):
        raise CliError(f"{path} must hold a mapping of fields")
    spec.pop("$schema", None)
    return spec


def apply_overrides(spec: dict, pairs: list[str]) -> dict:
    """--set key=value (value parsed as YAML), like the clouds' CLIs."""
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"--set expects key=value, got {pair!r}")
        target = spec
        parts = key.split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = yaml.safe_load(value)
    return spec


def wait_for(api: Api, path: str, what: str, timeout: float = 900) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while True:
        obj = api.call("GET", path)
        state = obj.get("provisioning_state")
        if state != last:
            print(f"{what}: {state}", file=sys.stderr, flush=True)
            last = state
        if state in TERMINAL_STATES:
            if state == "Failed":
                raise CliError(f"{what} failed: {obj.get('error') or 'no error recorded'}")
            return obj
        if time.monotonic() > deadline:
            raise CliError(f"{what} still {state} after {timeout:.0f} s; it goes on in the background")
        time.sleep(1)


def wait_gone(api: Api, path: str, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            api.call("GET", path)
        except CliError as exc:
            if "HTTP 404" in str(exc):
                print(f"{what}: deleted", file=sys.stderr)
                return
            raise
        time.sleep(1)
    raise CliError(f"{what} is still being deleted after {timeout:.0f} s")


def endpoint_commands(api: Api, args) -> object:
    base = api.ws_path("online-endpoints")
    name = args.name
    if args.file:
        spec = apply_overrides(load_spec(args.file), args.set)
        name = name or spec.get("name")
    else:
        spec = apply_overrides({}, args.set)
    if args.action == "list":
        return api.call("GET", base)
    if not name:
        raise CliError("give the endpoint's name with -n/--name or a file with a name (-f)")
    path = f"{base}/{name}"
    result = common_action(api, args.action, base, name, spec, f"endpoint {name}", args.no_wait)
    if result is not None:
        return result
    if args.action == "get-credentials":
        return get_credentials(api, path)
    if args.action == "regenerate-keys":
        return api.call("POST", f"{path}/regenerate-keys", json={"key_type": args.key_type})
    if args.action == "invoke":
        return invoke(api, path, args)
    raise CliError(f"unknown action {args.action}")


def get_credentials(api: Api, path: str, endpoint: dict | None = None) -> dict:
    """Keys for key endpoints, a fresh token for aml_token endpoints."""
    endpoint = endpoint or api.call("GET", path)
    if endpoint.get("auth_mode") == "aml_token":
        return api.call("POST", f"{path}/token")
    return api.call("POST", f"{path}/list-keys")


def common_action(api: Api, action: str, base: str, name: str, spec: dict, what: str, no_wait: bool,
                  after_write=None):
    """create, update, show and delete, alike for endpoints and deployments; None for other actions."""
    path = f"{base}/{name}"
    if action in ("create", "update"):
        if action == "create":
            obj = api.call("POST", base, json={**spec, "name": name})
        else:
            obj = api.call("PATCH", path, json={k: v for k, v in spec.items() if k != "name"})
        if after_write:
            after_write()
        return obj if no_wait else wait_for(api, path, what)
    if action == "show":
        return api.call("GET", path)
    if action == "delete":
        api.call("DELETE", path)
        if not no_wait:
            wait_gone(api, path, what)
        return {"name": name, "deleted": True}
    return None


def invoke(api: Api, path: str, args) -> object:
    if not args.request_file:
        raise CliError("invoke needs --request-file FILE (the JSON body to score)")
    try:
        body = Path(args.request_file).read_bytes()
    except FileNotFoundError:
        raise CliError(f"no such file: {args.request_file}") from None
    endpoint = api.call("GET", path)
    credentials = get_credentials(api, path, endpoint)
    secret = credentials.get("access_token") or credentials["primary_key"]
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    if args.deployment_name:
        headers["azureml-model-deployment"] = args.deployment_name
    response = requests.post(endpoint["scoring_uri"], data=body, headers=headers, timeout=120)
    try:
        result = response.json()
    except ValueError:
        result = response.text
    if response.status_code >= 400:
        message = result.get("error", {}).get("message") if isinstance(result, dict) else result
        raise CliError(f"HTTP {response.status_code} {message}")
    return result


def deployment_commands(api: Api, args) -> object:
    spec = apply_overrides(load_spec(args.file), args.set) if args.file else apply_overrides({}, args.set)
    endpoint = args.endpoint_name or spec.pop("endpoint_name", None)
    spec.pop("endpoint_name", None)
    name = args.name or spec.get("name")
    if not endpoint:
        raise CliError("give the endpoint with -e/--endpoint-name or endpoint_name in the file")
    base = api.ws_path(f"online-endpoints/{endpoint}/deployments")
    if args.action == "list":
        return api.call("GET", base)
    if not name:
        raise CliError("give the deployment's name with -n/--name or a file with a name (-f)")
    path = f"{base}/{name}"

    def all_traffic() -> None:
        if args.all_traffic:
            api.call("PATCH", api.ws_path(f"online-endpoints/{endpoint}"), json={"traffic": {name: 100}})

    result = common_action(api, args.action, base, name, spec, f"deployment {endpoint}/{name}", args.no_wait,
                           after_write=all_traffic)
    if result is not None:
        return result
    if args.action == "get-logs":
        return api.call("GET", f"{path}/logs", params={"lines": args.lines})
    raise CliError(f"unknown action {args.action}")


def model_commands(api: Api, args) -> object:
    base = api.ws_path("models")
    if args.action == "list":
        return api.call("GET", base, params={"search": args.search} if args.search else None)
    if args.action == "show":
        if not args.name:
            raise CliError("give the model's name with -n/--name")
        params = {"version": args.version} if args.version else None
        return api.call("GET", f"{base}/{args.name}", params=params)
    if args.action == "create":
        if not args.name or not args.path:
            raise CliError("model create needs -n/--name and --path FILE")
        data = {"name": args.name}
        for field in ("format", "task", "description"):
            if getattr(args, field):
                data[field] = getattr(args, field)
        try:
            with open(args.path, "rb") as fh:
                return api.call("POST", base, data=data, files={"file": (Path(args.path).name, fh)})
        except FileNotFoundError:
            raise CliError(f"no such file: {args.path}") from None
    raise CliError(f"unknown action {args.action}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="Drive the studio's REST API from the shell.")
    sub = parser.add_subparsers(dest="group", required=True)

    def common(p):
        p.add_argument("-f", "--file", help="YAML spec (endpoint.yml / deployment.yml)")
        p.add_argument("-n", "--name")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a field of the spec")
        p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting")

    endpoint = sub.add_parser("online-endpoint", help="online endpoints")
    endpoint.add_argument(
        "action",
        choices=["create", "update", "show", "list", "delete", "invoke", "get-credentials", "regenerate-keys"],
    )
    common(endpoint)
    endpoint.add_argument("--request-file", help="JSON body for invoke")
    endpoint.add_argument("-d", "--deployment-name", help="invoke one deployment")
    endpoint.add_argument("--key-type", default="primary", choices=["primary", "secondary"])

    deployment = sub.add_parser("online-deployment", help="deployments of an online endpoint")
    deployment.add_argument("action", choices=["create", "update", "show", "list", "delete", "get-logs"])
    common(deployment)
    deployment.add_argument("-e", "--endpoint-name")
    deployment.add_argument("--all-traffic", action="store_true", help="send 100%% of traffic to it")
    deployment.add_argument("-l", "--lines", type=int, default=100)

    model = sub.add_parser("model", help="catalog and registered models")
    model.add_argument("action", choices=["list", "show", "create"])
    model.add_argument("-n", "--name")
    model.add_argument("-v", "--version", type=int)
    model.add_argument("--path", help="file to upload (joblib/pickle, .onnx, or a zip with score.py)")
    model.add_argument("--format")
    model.add_argument("--task")
    model.add_argument("--description")
    model.add_argument("--search")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    url = os.environ.get("STUDIO_URL", "http://127.0.0.1:8000")
    token = os.environ.get("STUDIO_TOKEN")
    workspace = os.environ.get("STUDIO_WORKSPACE", "default")
    if not token:
        print("studio: set STUDIO_TOKEN (python manage.py drf_create_token <user> prints one)", file=sys.stderr)
        return 2
    api = Api(url, token, workspace)
    handlers = {"online-endpoint": endpoint_commands, "online-deployment": deployment_commands, "model": model_commands}
    try:
        result = handlers[args.group](api, args)
    except CliError as exc:
        print(f"studio: {exc}", file=sys.stderr)
        return 1
    if isinstance(result, str):
        print(result, end="" if result.endswith("\n") else "\n")
    else:
        print(json.dumps(result, indent=2))
    return 0
