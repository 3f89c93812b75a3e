"""Error pages: JSON in the contract's shape under /api/, HTML elsewhere."""

import difflib
import re

from django.http import JsonResponse
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt

from endpoints_app.api.errors import error_body


def _respond(request, status: int, message: str):
    if request.path.startswith(("/api/", "/inference/", "/models/")):
        return JsonResponse(error_body(status, message), status=status)
    return render(request, "error.html", {"status": status, "message": message}, status=status)


def _api_paths() -> list[str]:
    """Every path the API serves, as /api/v1/workspaces/<ws>/members."""
    from endpoints_app.api.urls import urlpatterns

    return ["/api/v1/" + str(p.pattern) for p in urlpatterns] + ["/api/schema/", "/api/docs/"]


def _near_misses(path: str) -> list[str]:
    shape = re.sub(r"<[^>]+>", "x", path)
    candidates = {re.sub(r"<[^>]+>", "x", p): p for p in _api_paths()}
    tries = [shape, shape.rstrip("/"), shape.rstrip("/") + "/"]
    found: list[str] = []
    for attempt in tries:
        for match in difflib.get_close_matches(attempt, list(candidates), n=3, cutoff=0.75):
            if candidates[match] not in found:
                found.append(candidates[match])
    return found[:3]


@csrf_exempt  # an answer, not a write: a DELETE to a near miss gets the 404, not a CSRF page
def api_not_found(request, *args, **kwargs):
    """Any /api/ path nothing else matched: a JSON 404 naming the paths that exist."""
    path = request.path
    if path != "/" and path.endswith("/") and _resolves(path.rstrip("/")):
        message = f"No API path {path}: API paths have no trailing slash; use {path.rstrip('/')}."
    elif not path.endswith("/") and _resolves(path + "/"):
        message = f"No API path {path}; use {path}/."
    else:
        near = _near_misses(re.sub(r"/+", "/", path))
        hint = f" Did you mean {' or '.join(near)}?" if near else ""
        message = f"No API path {path}.{hint} Every path is listed in /api/schema/ and /api/docs/."
    return JsonResponse(error_body(404, message), status=404)


def _resolves(path: str) -> bool:
    try:
        match = resolve(path)
    except Resolver404:
        return False
    return match.func is not api_not_found


def csrf_failure(request, reason: str = ""):
    return _respond(request, 403, "CSRF check failed: reload the page and try again "
                                  "(API clients: send Authorization: Bearer <token>, not a session cookie).")


def bad_request(request, exception=None):
    return _respond(request, 400, "Bad request.")


def permission_denied(request, exception=None):
    return _respond(request, 403, str(exception) if exception and str(exception) else "Permission denied.")


def not_found(request, exception=None):
    if request.path.startswith("/api/"):
        return api_not_found(request)
    return _respond(request, 404, "Not found.")


def server_error(request):
    return _respond(request, 500, "Internal server error.")
