"""One error shape for the whole API: {"error": {"code", "message", "field"?}}."""

import errno
import logging

from django.core.exceptions import PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response

from endpoints_app.audit import Actor
from endpoints_app.errors import StudioError
from endpoints_app.models import AuditLog, Workspace

logger = logging.getLogger(__name__)

CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    422: "UnprocessableEntity",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
    507: "InsufficientStorage",
}


def error_body(status_code: int, message: str, field: str | None = None, code: str | None = None) -> dict:
    error = {"code": code or CODES.get(status_code, "Error"), "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def _first_validation_error(detail, prefix: str = "") -> tuple[str | None, str]:
    """Flatten DRF's nested validation detail to the first (field, message)."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = prefix if key in ("non_field_errors", "__all__") else (f"{prefix}.{key}" if prefix else str(key))
            return _first_validation_error(value, name)
    if isinstance(detail, list) and detail:
        if all(not isinstance(item, (dict, list)) for item in detail):
            return prefix or None, " ".join(str(item) for item in detail)
        for index, item in enumerate(detail):
            if item:
                return _first_validation_error(item, f"{prefix}[{index}]" if prefix else str(index))
    return prefix or None, str(detail)


def exception_handler(exc, context):
    response = _response(exc, context)
    if response is not None and response.status_code == status.HTTP_403_FORBIDDEN:
        _audit_denied(context.get("request"), context.get("kwargs") or {}, response.data)
    return response


def _audit_denied(request, kwargs: dict, body: dict) -> None:
    """A signed-in caller refused a call: the audit log keeps who (with their provider identity), what
    and where, as it keeps every write."""
    if request is None or not getattr(request.user, "is_authenticated", False):
        return
    actor = Actor.from_request(request)
    workspace = Workspace.objects.filter(name=kwargs.get("ws") or "").first()
    error = body.get("error", {}) if isinstance(body, dict) else {}
    details = {"method": request.method, "path": request.path[:500], "status": 403,
               "code": error.get("code", ""), "message": str(error.get("message", ""))[:500]}
    if actor.identity:
        details["identity"] = actor.identity
    AuditLog.objects.create(user=request.user, username=request.user.get_username(), workspace=workspace,
                            action="api.denied", object_type="request", object_name=request.path[:200],
                            via=actor.via, details=details)


def _response(exc, context):
    if isinstance(exc, StudioError):
        return Response(exc.as_dict(), status=exc.status)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    if isinstance(exc, Http404):
        return Response(error_body(404, str(exc) or "Not found."), status=404)
    if isinstance(exc, PermissionDenied):
        return Response(error_body(403, str(exc) or "Permission denied."), status=403)
    if isinstance(exc, exceptions.ValidationError):
        field, message = _first_validation_error(exc.detail)
        text = f"{field}: {message}" if field else message
        return Response(error_body(400, text, field), status=400)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait) + 1)
        if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
            headers["WWW-Authenticate"] = "Bearer"
            exc.status_code = status.HTTP_401_UNAUTHORIZED
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(error_body(exc.status_code, detail), status=exc.status_code, headers=headers)
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        # A full disk is the operator's to fix, not a bug: say so (the write that failed left nothing behind).
        logger.error("storage full: %s", exc)
        return Response(error_body(507, "The studio's storage is full; nothing was saved. Try again once space "
                                        "is freed."), status=507)
    logger.exception("Unhandled API error")
    return Response(error_body(500, "Internal server error."), status=500)

