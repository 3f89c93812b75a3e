"""What the CLI prints: JSON by default (stdout, for scripts), tables for humans (`-o table`),
progress on stderr."""

from __future__ import annotations

import json
import sys

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

# Columns of `-o table` per command group; others show the first scalar fields.
COLUMNS = {
    "online-endpoint": ["name", "auth_mode", "provisioning_state", "traffic", "mirror_traffic", "scoring_uri"],
    "batch-endpoint": ["name", "provisioning_state", "defaults", "scoring_uri"],
    "online-deployment": ["name", "endpoint_name", "model", "instance_type", "instance_count", "provisioning_state",
                          "traffic"],
    "batch-deployment": ["name", "endpoint_name", "model", "instance_type", "instance_count", "provisioning_state"],
    "serverless-endpoint": ["name", "model_id", "provisioning_state", "status", "scoring_uri"],
    "marketplace-subscription": ["name", "model_id", "provisioning_state", "status"],
    "model": ["name", "version", "registry", "task", "format", "license", "deployment_kinds"],
    "members": ["username", "role", "created_at"],
    "job": ["name", "endpoint_name", "deployment_name", "status", "created_at"],
    "data": ["name", "version", "id", "type", "path"],
    "datastore": ["name", "type", "uri", "has_credentials"],
    "compute": ["name", "type", "address", "state", "deployments"],
    "environment": ["name", "version", "id", "python_version", "build_state"],
    "instance-type": ["name", "family", "cores", "memory_gb", "price_per_hour"],
    "workspace": ["name", "display_name", "role"],
    "token": ["id", "prefix", "created", "last_used", "expires"],
}


def pick(value: Any, path: str) -> Any:
    """`--query a.b.0`: a field of the result by its dotted path (KeyError when absent)."""
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return " ".join(f"{k}={_cell(v)}" for k, v in value.items())
    if isinstance(value, list):
        return ",".join(_cell(v) for v in value)
    return str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "(none)"
    if columns is None:
        columns = [k for k, v in rows[0].items() if not isinstance(v, (dict, list))][:7]
    else:
        present = set().union(*(r.keys() for r in rows))
        columns = [c for c in columns if c in present] or list(rows[0])[:7]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def render(result: Any, fmt: str, group: str) -> str:
    if isinstance(result, str):
        return result.rstrip("\n")
    if fmt == "table":
        if isinstance(result, list):
            return table(result, COLUMNS.get(group))
        if isinstance(result, dict):
            width = max((len(str(k)) for k in result), default=0)
            return "\n".join(f"{str(k).ljust(width)}  {_cell(v)}" for k, v in result.items())
    return json.dumps(result, indent=2, default=str)


def progress(what: str, status: str, elapsed: float) -> None:
    print(f"[{elapsed:4.0f}s] {what}: {status}", file=sys.stderr, flush=True)
