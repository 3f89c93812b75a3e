"""A batch endpoint's scoring_uri: `POST /inference/<endpoint>/jobs` with `Authorization: Bearer
<API token or endpoint key/token>` and a job body creates a job and answers 202 with its name,
status and URL, as the anchors' batch endpoints do.

Batch endpoints are not in the gateway's route table: this route is a control-plane write (a
database transaction, a look at the input files), so it runs in a worker thread of its own, off
the event loop that relays scoring requests, and only for paths no online endpoint takes."""

from __future__ import annotations

import json

from django.core.exceptions import PermissionDenied
from django.db import close_old_connections
from django.http import Http404

from endpoints_app import keys
from endpoints_app.errors import StudioError
from endpoints_app.models import AuditLog, Endpoint, Role


def _api_token_user(token: str):
    """The user of an API token, through the API's own token authentication (hashing included)."""
    from rest_framework.exceptions import AuthenticationFailed
    from rest_framework.settings import api_settings

    for auth_class in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        authenticator = auth_class()
        if not hasattr(authenticator, "authenticate_credentials"):
            continue
        try:
            user, _ = authenticator.authenticate_credentials(token.encode("latin-1"))
            return user
        except AuthenticationFailed:
            continue
    return None


def _error(status: int, code: str, message: str, field: str | None = None) -> tuple[int, dict]:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return status, {"error": error}


def invoke(name: str, credential: str, body: bytes, base_url: str) -> tuple[int, dict]:
    """Create a job on batch endpoint `name`; returns (status, JSON body)."""
    from endpoints_app.permissions import check_workspace
    from endpoints_app.services.audit import Actor
    from endpoints_app.services.batch import do_create_job

    close_old_connections()
    try:
        endpoint = Endpoint.objects.select_related("workspace").filter(name=name, kind=Endpoint.Kind.BATCH).first()
        if endpoint is None:
            return _error(404, "EndpointNotFound", f"No batch endpoint named '{name}'.")
        if not credential:
            return _error(401, "Unauthorized", "Missing key or token (Authorization: Bearer <token>).")
        if endpoint.auth_mode == "aml_token":
            endpoint_key = keys.verify_token(credential, endpoint.id, endpoint.token_generation)
        else:
            nonces = (endpoint.primary_key_nonce, endpoint.secondary_key_nonce)
            endpoint_key = keys.matches(credential, keys.accepted_digests(nonces))
        user = None
        if not endpoint_key:
            user = _api_token_user(credential)
            if user is None:
                return _error(401, "Unauthorized", "Invalid key or token.")
            try:
                check_workspace(user, endpoint.workspace.name, Role.CONTRIBUTOR)
            except Http404:
                return _error(404, "EndpointNotFound", f"No batch endpoint named '{name}'.")
            except PermissionDenied as exc:
                return _error(403, "Forbidden", str(exc))
        try:
            payload = json.loads(body or b"{}")
        except ValueError as exc:
            return _error(400, "BadRequest", f"The request body is not valid JSON: {exc}")
        try:
            job = do_create_job(Actor(user=user, via=AuditLog.Via.API), endpoint, payload)
        except StudioError as exc:
            return exc.status, exc.as_dict()
        url = f"{base_url}/api/v1/workspaces/{endpoint.workspace.name}/batch-endpoints/{endpoint.name}/jobs/{job.name}"
        return 202, {"name": job.name, "id": job.name, "status": job.status, "endpoint_name": endpoint.name,
                     "deployment_name": job.deployment.name, "url": url, "studio_url": f"{base_url}/jobs/{job.name}/"}
    finally:
        close_old_connections()
