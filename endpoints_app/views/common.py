"""Helpers every screen's views share: the workspace a page needs, an endpoint by name with the
caller's role checked, htmx partial detection, and what templates show (JSON, script-safe JSON)."""

from __future__ import annotations

import json
import re
import secrets

from django.http import Http404
from django.utils.safestring import mark_safe

from endpoints_app.errors import StudioError
from endpoints_app.models import CatalogModel, Endpoint, Role
from endpoints_app.permissions import check_workspace


def require_workspace(request):
    if request.workspace is None:
        raise Http404("You are not a member of any workspace yet; ask an Owner to add you.")
    return request.workspace


def wants_partial(request) -> bool:
    """An htmx swap of part of the page (not a boosted link, and not htmx restoring a
    pushed URL from history, which needs the whole page)."""
    return bool(request.htmx) and not request.htmx.boosted and not request.htmx.history_restore_request


def pretty_json(value) -> str:
    """Indented JSON, with lists of plain values kept on one line (rows of features stay readable)."""
    if value in (None, {}, []):
        return ""

    def scalar(item) -> bool:
        return not isinstance(item, (dict, list))

    def dump(item, depth: int) -> str:
        pad, inner = "  " * depth, "  " * (depth + 1)
        if isinstance(item, dict) and item:
            body = ",\n".join(
                f"{inner}{json.dumps(k, ensure_ascii=False)}: {dump(v, depth + 1)}" for k, v in item.items()
            )
            return "{\n" + body + "\n" + pad + "}"
        if isinstance(item, list) and item and not all(scalar(x) for x in item):
            return "[\n" + ",\n".join(inner + dump(x, depth + 1) for x in item) + "\n" + pad + "]"
        return json.dumps(item, ensure_ascii=False)

    return dump(value, 0)


def script_safe(text: str) -> str:
    """JSON made safe inside <script>: these characters only occur inside JSON strings,
    where their \\u escapes mean the same."""
    return mark_safe(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def endpoint_for(request, name: str, need: Role = Role.READER) -> Endpoint:
    """The endpoint by name (unique in the installation), 404 unless the user is a member
    of its workspace, 403 when the role is below `need`."""
    endpoint = Endpoint.objects.select_related("workspace").filter(name=name).first()
    if endpoint is None:
        raise Http404("No such endpoint.")
    check_workspace(request.user, endpoint.workspace.name, need)
    return endpoint


def default_endpoint_name(model: CatalogModel | None) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", (model.name if model else "endpoint").lower()).strip("-")
    if not base or not base[0].isalpha():
        base = "ep-" + base
    return f"{base[:26].rstrip('-')}-{secrets.token_hex(2)}"


# API field names as the wizard and the detail page call them.
SCREEN_WORDS = [
    (re.compile(r"request_settings\.request_timeout_ms"), "Request timeout (ms)"),
    (re.compile(r"request_settings\.max_concurrent_requests_per_instance"), "Max concurrent requests per instance"),
    (re.compile(r"\bmirror_traffic\.([\w-]+)"), r"mirror traffic to '\1'"),
    (re.compile(r"\bmirror_traffic\b"), "mirror traffic"),
    (re.compile(r"\btraffic\.([\w-]+)"), r"traffic to '\1'"),
    (re.compile(r"\binstance_count\b"), "instance count"),
    (re.compile(r"\binstance_type\b"), "instance type"),
    (re.compile(r"\bauth_mode\b"), "authentication"),
]
MODEL_REQUIRED = "Choose a model."


def for_screen(exc: StudioError) -> str:
    """A service's message, worded for a person at the screen rather than for an API client."""
    if exc.field == "model" and "is required" in exc.message:
        return MODEL_REQUIRED
    message = exc.message
    for pattern, words in SCREEN_WORDS:
        message = pattern.sub(words, message)
    return message[:1].upper() + message[1:]
