"""Entry point of `studio`: parse, run the command, print, exit with 0 (success), 1 (the API
or the operation failed: its message on stderr) or 2 (a command line or spec that cannot work:
the field's path and line on stderr)."""

from __future__ import annotations

import getpass
import json
import os
import sys

from studio_client import config as config_mod
from studio_client.cli import output
from studio_client.cli.parser import build_parser

EXIT_OK, EXIT_API, EXIT_USAGE = 0, 1, 2
USER_AGENT = "studio-cli/1.0"  # the audit log records writes with it as made "through the CLI"


def _login(args) -> dict:
    from studio_client.client import StudioClient
    from studio_client.errors import ConfigurationError

    current = config_mod.read_config()
    if args.client_id or args.issuer:
        return _login_service_principal(args, current)
    settings = config_mod.resolve(args.url, args.token, args.workspace)
    token = args.token or settings.token
    if not token:
        if not sys.stdin.isatty():
            raise ConfigurationError("give --token (or STUDIO_TOKEN); there is no terminal to ask on")
        token = getpass.getpass("API token: ").strip()
    client = StudioClient(settings.url, token, settings.workspace, user_agent=USER_AGENT)
    workspaces = client.workspaces.list()  # proves URL and token work before anything is written
    names = [w.get("name") for w in workspaces]
    if settings.workspace not in names:
        raise ConfigurationError(
            f"you are not a member of workspace '{settings.workspace}'; yours: {', '.join(names) or 'none'}"
        )
    values = {**current, "url": client.url, "workspace": settings.workspace, "token": token}
    path = config_mod.write_config(values)
    return {"url": client.url, "workspace": settings.workspace, "config": str(path)}


def _login_service_principal(args, current: dict) -> dict:
    """`studio login --issuer URL --client-id ID --client-secret SECRET`: prove the credentials get a
    token the studio takes, then store them (mode 0600); later commands fetch tokens as they expire."""
    import os

    from studio_client.client import StudioClient
    from studio_client.errors import ConfigurationError

    if not (args.issuer and args.client_id):
        raise ConfigurationError("a service principal's login needs both --issuer and --client-id")
    secret = args.client_secret or os.environ.get("STUDIO_CLIENT_SECRET")
    if not secret:
        if not sys.stdin.isatty():
            raise ConfigurationError("give --client-secret (or STUDIO_CLIENT_SECRET); there is no terminal to ask on")
        secret = getpass.getpass("Client secret: ").strip()
    url = args.url or os.environ.get("STUDIO_URL") or current.get("url") or config_mod.DEFAULT_URL
    workspace = args.workspace or os.environ.get("STUDIO_WORKSPACE") or current.get("workspace") \
        or config_mod.DEFAULT_WORKSPACE
    credentials = {"issuer": args.issuer.rstrip("/"), "client_id": args.client_id, "client_secret": secret,
                   "scope": args.scope or None}
    from studio_client.identity import ClientCredentials

    client = StudioClient(url, workspace=workspace, user_agent=USER_AGENT,
                          token_provider=ClientCredentials(**credentials))
    names = [w.get("name") for w in client.workspaces.list()]
    if workspace not in names:
        raise ConfigurationError(
            f"service principal '{args.client_id}' has no role in workspace '{workspace}'; its workspaces: "
            f"{', '.join(names) or 'none'}"
        )
    values = {k: v for k, v in current.items() if k != "token"}
    values.update({"url": client.url, "workspace": workspace, **{k: v for k, v in credentials.items() if v}})
    path = config_mod.write_config(values)
    return {"url": client.url, "workspace": workspace, "client_id": args.client_id, "config": str(path)}


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Imported here, after parsing: `studio --help` and argument errors need none of it.
    from studio_client import specs
    from studio_client.cli import commands
    from studio_client.client import StudioClient
    from studio_client.errors import ApiError, ConfigurationError, OperationFailed, StudioError

    try:
        if args.group == "login":
            result = _login(args)
        elif getattr(args, "local", False):
            result = commands.local_cmd(args)
        else:
            client = StudioClient(workspace=args.workspace, on_progress=output.progress, user_agent=USER_AGENT)
            if args.group == "apply":
                from studio_client.apply import apply_command

                result = apply_command(client, args)
            else:
                handler = {
                    "online-endpoint": lambda: commands.endpoint_cmd(client, args, "online"),
                    "batch-endpoint": lambda: commands.endpoint_cmd(client, args, "batch"),
                    "online-deployment": lambda: commands.deployment_cmd(client, args, "online"),
                    "batch-deployment": lambda: commands.deployment_cmd(client, args, "batch"),
                    "job": lambda: commands.job_cmd(client, args),
                    "data": lambda: commands.data_cmd(client, args),
                    "datastore": lambda: commands.datastore_cmd(client, args),
                    "compute": lambda: commands.compute_cmd(client, args),
                    "environment": lambda: commands.environment_cmd(client, args),
                    "serverless-endpoint": lambda: commands.serverless_cmd(client, args),
                    "marketplace-subscription": lambda: commands.subscription_cmd(client, args),
                    "model": lambda: commands.model_cmd(client, args),
                    "members": lambda: commands.members_cmd(client, args),
                    "workspace": lambda: commands.workspace_cmd(client, args),
                    "instance-type": lambda: client.instance_types.list(),
                    "token": lambda: commands.token_cmd(client, args),
                    "usage": lambda: commands.usage_cmd(client, args),
                }[args.group]
                result = handler()
    except specs.SpecError as exc:
        for problem in getattr(exc, "errors", [exc]):
            print(f"studio: invalid spec: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except (commands.UsageError, ConfigurationError) as exc:
        print(f"studio: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        field = f" (field: {exc.field})" if exc.field else ""
        print(f"studio: {exc}{field}", file=sys.stderr)
        return EXIT_API
    except OperationFailed as exc:
        print(f"studio: {exc}", file=sys.stderr)
        tail = getattr(exc, "log_tail", None)
        if tail:
            print("--- last log lines ---", file=sys.stderr)
            print(tail.rstrip("\n"), file=sys.stderr)
        if exc.resource:
            print(output.render(exc.resource, args.output, args.group))
        return EXIT_API
    except StudioError as exc:
        print(f"studio: {exc}", file=sys.stderr)
        return EXIT_API
    except KeyboardInterrupt:
        print("studio: interrupted; operations already sent go on in the studio", file=sys.stderr)
        return 130
    if result is not None and args.query:
        try:
            result = output.pick(result, args.query)
        except KeyError:
            print(f"studio: the result has no field {args.query}", file=sys.stderr)
            return EXIT_USAGE
        print(result if isinstance(result, str) else json.dumps(result))
    elif result is not None:
        print(output.render(result, args.output, args.group))
    return EXIT_OK


EXIT_BROKEN_PIPE = 141  # what a shell reports for a process that SIGPIPE ended, as `yes | head` does


def main(argv: list[str] | None = None) -> int:
    try:
        code = run(argv)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader left (`studio ... | head`): no traceback; stdout goes to /dev/null so the interpreter's
        # own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
