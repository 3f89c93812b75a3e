"""Error pages: JSON in the contract's shape under /api/, HTML elsewhere."""

from django.http import JsonResponse
from django.shortcuts import render

from endpoints_app.api.errors import error_body


def _respond(request, status: int, message: str):
    if request.path.startswith(("/api/", "/inference/", "/models/")):
        return JsonResponse(error_body(status, message), status=status)
    return render(request, "error.html", {"status": status, "message": message}, status=status)


def bad_request(request, exception=None):
    return _respond(request, 400, "Bad request.")


def permission_denied(request, exception=None):
    return _respond(request, 403, str(exception) if exception and str(exception) else "Permission denied.")


def not_found(request, exception=None):
    return _respond(request, 404, "Not found.")


def server_error(request):
    return _respond(request, 500, "Internal server error.")
