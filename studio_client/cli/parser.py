"""The `studio` command line: argparse only (cheap to import, so `--help` and errors are instant)."""

from __future__ import annotations

import argparse

GROUPS = {
    "online-endpoint": ["create", "update", "show", "list", "delete", "invoke", "get-credentials", "regenerate-keys"],
    "online-deployment": ["create", "update", "show", "list", "delete", "get-logs"],
    "batch-endpoint": ["create", "update", "show", "list", "delete", "invoke", "list-jobs"],
    "batch-deployment": ["create", "update", "show", "list", "delete", "get-logs"],
    "job": ["show", "list", "cancel", "download", "wait"],
    "data": ["create", "list", "show"],
    "datastore": ["create", "show", "list", "delete", "browse"],
    "environment": ["create", "list", "show", "get-build-log"],
    "serverless-endpoint": ["create", "show", "list", "delete", "get-credentials", "regenerate-keys"],
    "marketplace-subscription": ["create", "show", "list", "delete"],
    "model": ["list", "show", "create", "update", "delete"],
    "members": ["list", "show", "add", "update", "remove"],
    "workspace": ["list", "list-inference-keys"],
    "instance-type": ["list"],
    "compute": ["create", "update", "show", "list", "delete"],
    "token": ["list", "create", "delete"],
}


def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("-o", "--output", choices=["json", "table"], default="json", help="output format (default json)")
    p.add_argument("-w", "--workspace", help="workspace (else STUDIO_WORKSPACE or the login's)")
    p.add_argument("--query", metavar="FIELD",
                   help="print one field of the result (a dotted path, e.g. name): a string bare, else JSON")
    return p


def _spec_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--file", help="YAML spec")
    p.add_argument("-n", "--name")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", default=[],
                   help="override a field of the spec, e.g. --set request_settings.request_timeout_ms=2000")
    p.add_argument("--no-wait", action="store_true", help="return at once instead of waiting for the operation")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="Drive the studio from the shell: YAML specs in, JSON out. "
                    "Environment: STUDIO_URL, STUDIO_TOKEN, STUDIO_WORKSPACE (or `studio login`).",
    )
    sub = parser.add_subparsers(dest="group", required=True, metavar="COMMAND")
    common = _common()

    def group(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, parents=[common])
        p.add_argument("action", choices=GROUPS[name])
        return p

    p = group("online-endpoint", "online endpoints")
    _spec_flags(p)
    p.add_argument("--request-file", help="invoke: the JSON body to score")
    p.add_argument("-d", "--deployment-name", help="invoke: send to this deployment only")
    p.add_argument("--route", default="score",
                   help="invoke: the route to call (score, chat/completions, completions, embeddings)")
    p.add_argument("--key-type", default="primary", choices=["primary", "secondary"])
    p.add_argument("--local", action="store_true", help="invoke: the deployment running here (create --local)")
    p.add_argument("--traffic", help='update: live traffic, e.g. "blue=90 green=10"')
    p.add_argument("--mirror-traffic", help='update: mirror traffic, e.g. "green=10" (or "" for none)')

    for kind in ("online", "batch"):
        p = group(f"{kind}-deployment", f"deployments of a {kind} endpoint")
        _spec_flags(p)
        p.add_argument("-e", "--endpoint-name")
        p.add_argument("-l", "--lines", type=int, default=100, help="get-logs: how many lines (default 100)")
        p.add_argument("--instance", help="get-logs: one instance's log")
        if kind == "online":
            p.add_argument("--all-traffic", action="store_true", help="send 100%% of live traffic to it once ready")
            p.add_argument("--local", action="store_true",
                           help="create: build the environment and run the model server here, in the foreground")
            p.add_argument("--port", type=int, default=5001, help="create --local: the local port (default 5001)")
        else:
            p.add_argument("--set-default", action="store_true", help="make it the endpoint's default deployment")

    p = group("batch-endpoint", "batch endpoints and their invocation")
    _spec_flags(p)
    p.add_argument("--input", help="invoke: a data asset id (studio:data/<name>/versions/<n>, azureml:<name>:<v>) "
                                   "or a datastore path (azureml://datastores/<ds>/paths/<path>)")
    p.add_argument("--input-type", default="uri_folder", choices=["uri_folder", "uri_file"])
    p.add_argument("-d", "--deployment-name", help="invoke: this deployment instead of the default")
    for flag in ("--mini-batch-size", "--instance-count", "--max-concurrency-per-instance", "--error-threshold"):
        p.add_argument(flag, type=int)
    p.add_argument("--output-file-name")
    p.add_argument("--output-columns", help="invoke: input columns to keep in the output, comma-separated "
                                             "(e.g. customer_id,date)")

    p = group("job", "batch jobs")
    p.add_argument("-e", "--endpoint-name", help="the batch endpoint (optional: job names are unique)")
    p.add_argument("-n", "--name", help="the job's name")
    p.add_argument("--status", help="list: only jobs in this status (Queued, Running, Completed, Failed, Canceled)")
    p.add_argument("--file", dest="output_file", help="download: one output file (default: every output)")
    p.add_argument("-p", "--download-path", "--output-dir", dest="download_path", default=".",
                   help="download: folder to write into (default: the current folder)")
    p.add_argument("--yes", "-y", action="store_true", help="cancel without asking")

    p = group("data", "data assets (inputs of batch jobs)")
    p.add_argument("-f", "--file", help="YAML spec (name, path)")
    p.add_argument("-n", "--name")
    p.add_argument("-v", "--version", type=int)
    p.add_argument("--path", action="append", default=[], help="create: a file or folder to upload (repeatable)")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", default=[])

    p = group("datastore", "datastores: Azure Blob containers, S3 buckets, allowed folders")
    p.add_argument("-f", "--file", help="YAML spec (name, type, and the type's fields)")
    p.add_argument("-n", "--name")
    p.add_argument("--path", default="", help="browse: a folder in the datastore (default: its root)")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", default=[])
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p = group("compute", "computes: where deployments run (local, Ray clusters); IT creates them")
    p.add_argument("-f", "--file", help="YAML spec (name, type: ray, address host:port of the Ray head)")
    p.add_argument("-n", "--name")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", default=[])
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")
    p = group("environment", "environments: the packages a model needs (built once, shared)")
    _spec_flags(p)
    p.add_argument("-v", "--version", help="show, get-build-log: a version (default: the latest)")

    for name, help_text in (("serverless-endpoint", "serverless (pay-per-token) endpoints"),
                            ("marketplace-subscription", "marketplace subscriptions of model offers")):
        p = group(name, help_text)
        _spec_flags(p)
        p.add_argument("--model-id", help="create: the catalog model's id (studio://registries/...)")
        if name == "serverless-endpoint":
            p.add_argument("--key-type", default="primary", choices=["primary", "secondary"])

    p = group("model", "catalog and registered models")
    p.add_argument("-n", "--name")
    p.add_argument("-v", "--version", type=int)
    p.add_argument("--path", help="create: file to upload (joblib/pickle, .onnx, a zip with score.py, or an MLflow "
                                  "model's folder or zip with --type mlflow_model)")
    p.add_argument("-f", "--file", help="create: model.yml (name, path, type, description, environment)")
    p.add_argument("--set", action="append", metavar="PATH=VALUE", default=[])
    for flag in ("--format", "--task", "--description", "--search", "--deployment-kind", "--scoring-script",
                 "--type", "--environment"):
        p.add_argument(flag)
    p.add_argument("--sample-request", help="create, update: a JSON file, the request the model's Test tab opens with")
    p.add_argument("--yes", "-y", action="store_true", help="delete without asking")

    p = group("members", "members of the workspace and their roles")
    p.add_argument("-u", "--user", help="username")
    p.add_argument("--role", choices=["Owner", "Contributor", "Reader"])
    p.add_argument("--yes", "-y", action="store_true", help="remove without asking")

    group("workspace", "your workspaces")
    group("instance-type", "instance types and prices")
    p = group("token", "your API tokens")
    p.add_argument("--id", help="delete: the token's id")
    p.add_argument("--expires-in-days", type=int)
    p.add_argument("--yes", "-y", action="store_true")

    p = sub.add_parser("usage", help="requests, latency, tokens and cost", parents=[common])
    p.add_argument("-e", "--endpoint-name")
    p.add_argument("--deployment")
    p.add_argument("--from", dest="from_", metavar="ISO_TIME")
    p.add_argument("--to", metavar="ISO_TIME")
    p.add_argument("--interval", choices=["1m", "5m", "15m", "1h", "6h", "1d"])

    p = sub.add_parser("login", help="store URL, workspace and token in the config file (mode 0600)",
                       parents=[common])
    p.add_argument("--url", help="the studio's base URL (default STUDIO_URL or http://127.0.0.1:8000)")
    p.add_argument("--token", help="an API token (else STUDIO_TOKEN, else asked for on the terminal)")
    p.add_argument("--issuer", help="a service principal's OpenID provider (issuer URL); with --client-id and "
                   "--client-secret the CLI fetches and refreshes its own tokens")
    p.add_argument("--client-id", help="the service principal's client id at the provider")
    p.add_argument("--client-secret", help="its client secret (else STUDIO_CLIENT_SECRET, else asked for)")
    p.add_argument("--scope", help="scope to ask the provider for (e.g. api://studio/.default); default none")

    p = sub.add_parser("apply", help="make the studio match a folder of specs (create, update, leave alone)",
                       parents=[common])
    p.add_argument("-f", "--file", required=True, action="append", help="a spec file or a folder of them")
    p.add_argument("--dry-run", action="store_true", help="print the plan only")
    p.add_argument("--no-wait", action="store_true", help="do not wait for provisioning between steps")
    return parser
