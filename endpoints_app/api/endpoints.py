"""REST API for online endpoints and their deployments (see CONTRACT.md).

A create or update that provisions answers 202 with the object; its
provisioning_state then goes to Succeeded or Failed (with `error`). A delete
answers 202 with the object while instances drain, 204 once nothing is left."""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.errors import InvalidInput
from endpoints_app.models import Deployment, Endpoint, ProvisioningState, Role, Workspace
from endpoints_app.permissions import can_see_env_values, check_workspace
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services.audit import Actor

ENDPOINT_CREATE_FIELDS = ("name", "auth_mode", "description", "tags")


# -- OpenAPI documentation (the views validate in the services, not with these) --------------------

class EndpointIn(serializers.Serializer):
    name = serializers.CharField(help_text="A DNS label, unique in the studio.")
    auth_mode = serializers.ChoiceField(choices=["key", "aml_token"], default="key")
    description = serializers.CharField(required=False)
    tags = serializers.DictField(required=False)
    traffic = serializers.DictField(child=serializers.IntegerField(), required=False,
                                    help_text="{deployment: percent}, summing to 100 (or 0).")
    mirror_traffic = serializers.DictField(child=serializers.IntegerField(), required=False,
                                           help_text="{deployment: percent <= 50} to one deployment without live "
                                                     "traffic.")


class EndpointOut(EndpointIn):
    kind = serializers.CharField()
    provisioning_state = serializers.CharField()
    error = serializers.CharField()
    scoring_uri = serializers.URLField()
    swagger_uri = serializers.URLField()
    deployments = serializers.ListField(child=serializers.CharField())
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class ProbeDoc(serializers.Serializer):
    initial_delay = serializers.IntegerField(required=False)
    period = serializers.IntegerField(required=False)
    timeout = serializers.IntegerField(required=False)
    success_threshold = serializers.IntegerField(required=False)
    failure_threshold = serializers.IntegerField(required=False)


class DeploymentIn(serializers.Serializer):
    name = serializers.CharField()
    model = serializers.CharField(help_text="studio://registries/<r>/models/<n>/versions/<v> or <name>:<version>")
    code_configuration = serializers.DictField(required=False, help_text="{code, scoring_script}")
    environment_variables = serializers.DictField(child=serializers.CharField(), required=False)
    instance_type = serializers.CharField(required=False)
    instance_count = serializers.IntegerField(required=False, default=1)
    scale_settings = serializers.DictField(
        required=False,
        help_text="{type: default|target_utilization, min_instances, max_instances, "
                  "target_utilization_percentage, cooldown_seconds}",
    )
    request_settings = serializers.DictField(
        required=False, help_text="{request_timeout_ms, max_concurrent_requests_per_instance}"
    )
    liveness_probe = ProbeDoc(required=False)
    readiness_probe = ProbeDoc(required=False)


class InstanceOut(serializers.Serializer):
    name = serializers.CharField()
    node = serializers.CharField()
    pid = serializers.IntegerField(allow_null=True)
    port = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    generation = serializers.IntegerField()
    restarts = serializers.IntegerField()


class DeploymentOut(DeploymentIn):
    endpoint_name = serializers.CharField()
    provisioning_state = serializers.CharField()
    error = serializers.CharField()
    generation = serializers.IntegerField()
    traffic = serializers.IntegerField()
    mirror_traffic = serializers.IntegerField()
    instances = InstanceOut(many=True)


class KeysOut(serializers.Serializer):
    primary_key = serializers.CharField()
    secondary_key = serializers.CharField()


class RegenerateIn(serializers.Serializer):
    key_type = serializers.ChoiceField(choices=["primary", "secondary"])


class TokenOut(serializers.Serializer):
    access_token = serializers.CharField()
    expiry_time_utc = serializers.IntegerField(help_text="Unix time (seconds).")
    token_type = serializers.CharField()


def inference_base_url(request) -> str:
    configured = getattr(settings, "STUDIO_GATEWAY_URL", "") or ""
    return configured.rstrip("/") if configured else request.build_absolute_uri("/").rstrip("/")


def endpoint_data(request, endpoint: Endpoint) -> dict:
    base = inference_base_url(request)
    return {
        "name": endpoint.name,
        "kind": endpoint.kind,
        "auth_mode": endpoint.auth_mode,
        "description": endpoint.description,
        "tags": endpoint.tags,
        "traffic": endpoint.traffic,
        "mirror_traffic": endpoint.mirror_traffic,
        "provisioning_state": endpoint.provisioning_state,
        "error": endpoint.error,
        "scoring_uri": f"{base}/inference/{endpoint.name}/score",
        "swagger_uri": f"{base}/inference/{endpoint.name}/swagger.json",
        "deployments": [d.name for d in endpoint.deployments.all()],
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


HIDDEN_VALUE = "(hidden)"


def deployment_data(deployment: Deployment, reveal_env: bool = True) -> dict:
    """reveal_env False (a Reader asks): environment variable names, not their values (they are
    often credentials)."""
    endpoint = deployment.endpoint
    env = deployment.environment_variables or {}
    if not reveal_env:
        env = dict.fromkeys(env, HIDDEN_VALUE)
    return {
        "name": deployment.name,
        "endpoint_name": endpoint.name,
        "model": deployment.model.asset_id,
        "model_format": deployment.model.format,
        "code_configuration": deployment.code_configuration,
        "environment_variables": env,
        "instance_type": deployment.instance_type.name,
        "instance_count": deployment.instance_count,
        "scale_settings": deployment.scale_settings or {"type": "default"},
        "request_settings": deployment.request_settings,
        "liveness_probe": deployment.liveness_probe,
        "readiness_probe": deployment.readiness_probe,
        "provisioning_state": deployment.provisioning_state,
        "error": deployment.error,
        "generation": deployment.generation,
        "traffic": int(endpoint.traffic.get(deployment.name, 0)),
        "mirror_traffic": int(endpoint.mirror_traffic.get(deployment.name, 0)),
        "instances": [
            {
                "name": i.name,
                "node": i.node.name,
                "pid": i.pid,
                "port": i.port,
                "state": i.state,
                "generation": i.generation,
                "restarts": i.restarts,
                "started_at": i.started_at,
                "launched_at": i.launched_at,
                "ready_at": i.ready_at,
            }
            for i in sorted(deployment_svc.current_instances(deployment), key=lambda i: (i.generation, i.name))
        ],
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
    }


def request_body(request) -> dict:
    data = request.data
    if hasattr(data, "dict"):
        data = data.dict()
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


def check_url_name(body: dict, name: str, what: str) -> None:
    """A PUT names its resource in the URL; a body naming another one is a mistake, not a rename."""
    if body.get("name") not in (None, "", name):
        raise InvalidInput(f"The body names {what} '{body['name']}' but the URL names '{name}'.", field="name")


def endpoint_named(workspace: Workspace, name: str, kind: Endpoint.Kind = Endpoint.Kind.ONLINE) -> Endpoint:
    endpoint = Endpoint.objects.filter(workspace=workspace, name=name, kind=kind).first()
    if endpoint is None:
        raise Http404(f"No {kind.value} endpoint '{name}' in workspace '{workspace.name}'.")
    return endpoint


def deployment_named(endpoint: Endpoint, name: str) -> Deployment:
    deployment = (
        Deployment.objects.select_related("endpoint", "model", "instance_type")
        .prefetch_related("instances__node")
        .filter(endpoint=endpoint, name=name)
        .first()
    )
    if deployment is None:
        raise Http404(f"Endpoint '{endpoint.name}' has no deployment '{name}'.")
    return deployment


def _create_endpoint(request, workspace: Workspace, body: dict, name: str | None = None) -> Endpoint:
    if name is not None:
        check_url_name(body, name, "endpoint")
    traffic = body.get("traffic")
    if traffic and any(traffic.values() if isinstance(traffic, dict) else [True]):
        raise InvalidInput("A new endpoint has no deployments to send traffic to; set traffic later.", field="traffic")
    fields = {k: body[k] for k in ENDPOINT_CREATE_FIELDS if k in body and body[k] is not None}
    if name is not None:
        fields["name"] = name
    if "name" not in fields:
        raise InvalidInput("Endpoint name is required.", field="name")
    return endpoint_svc.do_create_endpoint(Actor.from_request(request), workspace, **fields)


def _update_endpoint(request, endpoint: Endpoint, body: dict) -> Endpoint:
    if body.get("auth_mode") not in (None, endpoint.auth_mode):
        raise InvalidInput("auth_mode cannot change; create a new endpoint.", field="auth_mode")
    if body.get("name") not in (None, endpoint.name):
        raise InvalidInput("An endpoint cannot be renamed.", field="name")
    return endpoint_svc.do_update_endpoint(
        Actor.from_request(request),
        endpoint,
        traffic=body.get("traffic"),
        mirror_traffic=body.get("mirror_traffic"),
        description=body.get("description"),
        tags=body.get("tags"),
    )


@extend_schema(request=EndpointIn, responses={200: EndpointOut(many=True), 201: EndpointOut})
@api_view(["GET", "POST"])
def online_endpoints(request, ws: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        rows = Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.ONLINE).prefetch_related("deployments")
        return Response([endpoint_data(request, e) for e in rows])
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = _create_endpoint(request, workspace, request_body(request))
    return Response(endpoint_data(request, endpoint), status=status.HTTP_201_CREATED)


@extend_schema(request=EndpointIn, responses={200: EndpointOut, 201: EndpointOut, 202: EndpointOut, 204: None})
@api_view(["GET", "PUT", "PATCH", "DELETE"])
def online_endpoint(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return Response(endpoint_data(request, endpoint_named(workspace, name)))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    if request.method == "PUT" and not Endpoint.objects.filter(workspace=workspace, name=name).exists():
        endpoint = _create_endpoint(request, workspace, request_body(request), name=name)
        return Response(endpoint_data(request, endpoint), status=status.HTTP_201_CREATED)
    endpoint = endpoint_named(workspace, name)
    if request.method == "DELETE":
        endpoint_svc.do_delete_endpoint(Actor.from_request(request), endpoint)
        remaining = Endpoint.objects.filter(pk=endpoint.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(endpoint_data(request, remaining), status=status.HTTP_202_ACCEPTED)
    endpoint = _update_endpoint(request, endpoint, request_body(request))
    return Response(endpoint_data(request, endpoint))


def _key_endpoint(request, ws: str, name: str) -> Endpoint:
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return endpoint_named(workspace, name)


@extend_schema(request=None, responses=KeysOut)
@api_view(["POST"])
def list_keys(request, ws: str, name: str):
    return Response(key_svc.get_keys(_key_endpoint(request, ws, name)))


@extend_schema(request=RegenerateIn, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def regenerate_keys(request, ws: str, name: str):
    endpoint = _key_endpoint(request, ws, name)
    body = request_body(request)
    key_type = body.get("key_type", "primary")
    key = key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
    return Response({"key_type": key_type, f"{key_type}_key": key})


@extend_schema(request=None, responses=TokenOut)
@api_view(["POST"])
def token(request, ws: str, name: str):
    endpoint = _key_endpoint(request, ws, name)
    return Response(key_svc.issue_endpoint_token(Actor.from_request(request), endpoint))


def _provisioning_response(deployment: Deployment, created: bool = False) -> Response:
    # 202 when the service started provisioning, decided from the state it wrote: the worker may
    # finish a small change (a scale-in) before the fresh read below.
    provisioning = deployment.provisioning_state in (ProvisioningState.CREATING, ProvisioningState.UPDATING)
    deployment = Deployment.objects.select_related("endpoint", "model", "instance_type").prefetch_related(
        "instances__node"
    ).get(pk=deployment.pk)
    if provisioning:
        code = status.HTTP_202_ACCEPTED
    else:
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return Response(deployment_data(deployment), status=code)


@extend_schema(request=DeploymentIn, responses={200: DeploymentOut(many=True), 202: DeploymentOut})
@api_view(["GET", "POST"])
def deployments(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        endpoint = endpoint_named(workspace, name)
        rows = endpoint.deployments.select_related("endpoint", "model", "instance_type").prefetch_related(
            "instances__node"
        )
        reveal = can_see_env_values(request.user, workspace)
        return Response([deployment_data(d, reveal) for d in rows])
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = endpoint_named(workspace, name)
    deployment = deployment_svc.do_create_deployment(Actor.from_request(request), endpoint, request_body(request))
    return _provisioning_response(deployment, created=True)


@extend_schema(request=DeploymentIn, responses={200: DeploymentOut, 202: DeploymentOut, 204: None})
@api_view(["GET", "PUT", "PATCH", "DELETE"])
def deployment(request, ws: str, name: str, deployment_name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        reveal = can_see_env_values(request.user, workspace)
        return Response(deployment_data(deployment_named(endpoint_named(workspace, name), deployment_name), reveal))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = endpoint_named(workspace, name)
    actor = Actor.from_request(request)
    if request.method == "PUT" and not endpoint.deployments.filter(name=deployment_name).exists():
        body = request_body(request)
        check_url_name(body, deployment_name, "deployment")
        body["name"] = deployment_name
        return _provisioning_response(deployment_svc.do_create_deployment(actor, endpoint, body), created=True)
    found = deployment_named(endpoint, deployment_name)
    if request.method == "DELETE":
        deployment_svc.do_delete_deployment(actor, found)
        remaining = Deployment.objects.filter(pk=found.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(deployment_data(remaining), status=status.HTTP_202_ACCEPTED)
    body = request_body(request)
    body.pop("endpoint_name", None)
    return _provisioning_response(deployment_svc.do_update_deployment(actor, found, body))


@extend_schema(
    parameters=[OpenApiParameter("lines", int), OpenApiParameter("instance", str)],
    responses={(200, "text/plain"): OpenApiTypes.STR},
)
@api_view(["GET"])
def deployment_logs(request, ws: str, name: str, deployment_name: str):
    workspace = check_workspace(request.user, ws)
    found = deployment_named(endpoint_named(workspace, name), deployment_name)
    lines = request.query_params.get("lines", "100")
    instance = request.query_params.get("instance") or None
    text = deployment_svc.read_deployment_logs(found, lines=lines, instance=instance)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
