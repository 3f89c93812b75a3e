"""A batch endpoint's scoring_uri: `POST /inference/<endpoint>/jobs` with `Authorization: Bearer
<API token or endpoint key/token>` and a job body creates a job and answers 202 with its name,
status and URL, as the anchors' batch endpoints do.

A job invocation is a control-plane write (a database transaction, a look at the input files), so
Django answers it, not the gateway: the ASGI dispatchers (portal/dispatch.py) send this one path
under /inference/ here. Its errors keep the gateway's JSON shape (`{"error": {"code", "message"}}`)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.settings import api_settings

from endpoints_app import jsonbody, keys, oidc
from endpoints_app.api.batch import JobInvocationSerializer
from endpoints_app.errors import StudioError
from endpoints_app.models import AuditLog, Endpoint, Role
from endpoints_app.permissions import check_workspace, role_in
from endpoints_app.services.audit import Actor
from endpoints_app.services.batch import do_create_job
from endpoints_app.services.identity import user_for_identity

# Who may invoke with an identity token: the same roles as the gateway's (gateway/identity.py).
INVOKE_ROLES = ("Contributor", "Owner")


@csrf_exempt  # a bearer credential, never a session cookie, authorizes this call
def invoke_job(request: HttpRequest, name: str) -> JsonResponse:
    if request.method != "POST":
        response = JsonResponse(_error(405, "MethodNotAllowed", "Use POST.")[1], status=405)
        response["Allow"] = "POST"
        return response
    status, answer = invoke(name, _credential(request), request.read(), _base_url(request))
    response = JsonResponse(answer, status=status, json_dumps_params={"default": str})
    if status == 401:
        response["WWW-Authenticate"] = "Bearer"
    return response


def _credential(request: HttpRequest) -> str:
    auth = request.headers.get("Authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("api-key", "").strip()


def _base_url(request: HttpRequest) -> str:
    return f"{request.scheme}://{request.get_host()}"


def _api_token_user(token: str):
    """The user of an API token, through the API's own token authentication (hashing included)."""
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
    endpoint = Endpoint.objects.select_related("workspace").filter(name=name, kind=Endpoint.Kind.BATCH).first()
    if endpoint is None:
        return _error(404, "EndpointNotFound", f"No batch endpoint named '{name}'.")
    if not credential:
        return _error(401, "Unauthorized", "Missing key or token (Authorization: Bearer <token>).")
    if endpoint.auth_mode == "aad_token":
        user, refusal, who = _identity_user(credential, endpoint)
        if refusal is not None:
            return refusal
        return _create_job(endpoint, user, body, base_url, identity=who)
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
    return _create_job(endpoint, user, body, base_url)


def _create_job(endpoint: Endpoint, user, body: bytes, base_url: str, identity: str = "") -> tuple[int, dict]:
    try:
        payload = jsonbody.loads(body or b"{}")
    except jsonbody.JSONError as exc:
        return _error(400, "BadRequest", str(exc))
    try:
        job = do_create_job(Actor(user=user, via=AuditLog.Via.API, identity=identity), endpoint, payload)
    except StudioError as exc:
        return exc.status, exc.as_dict()
    return 202, JobInvocationSerializer(job, context={"base_url": base_url}).data


def _identity_user(token: str, endpoint: Endpoint):
    """(user, None, identity) for an identity token whose identity may invoke in the endpoint's workspace,
    else (None, the 401/403 naming why, ""). Denials of a known identity are audited."""
    validator = oidc.validator()
    if validator is None:
        return None, _error(401, "Unauthorized", "Identity tokens are not configured on this studio."), ""
    if not token:
        return None, _error(401, "Unauthorized", "This endpoint takes identity tokens: send Authorization: Bearer "
                            "<token from the identity provider>."), ""
    try:
        identity = validator.validate(token)
    except oidc.TokenRejected as exc:
        return None, _error(exc.status, exc.code, exc.message), ""
    user = user_for_identity(identity)
    role = role_in(user, endpoint.workspace) if user is not None else None
    if role in INVOKE_ROLES:
        return user, None, identity.audit_label()
    code, message = ("NotAMember", f"{identity.describe()} has no role in workspace '{endpoint.workspace.name}'.") \
        if role is None else ("RoleTooLow", f"{identity.describe()} is {role} in workspace "
                              f"'{endpoint.workspace.name}'; invoking needs Contributor or Owner.")
    AuditLog.objects.create(
        username=identity.describe()[:150], workspace=endpoint.workspace, action="endpoint.invoke.denied",
        object_type="endpoint", object_name=endpoint.name, via=AuditLog.Via.API,
        details={"status": 403, "code": code, "issuer": identity.issuer, "subject": identity.subject,
                 "client_id": identity.client_id},
    )
    return None, _error(403, code, message), ""
