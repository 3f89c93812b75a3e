"""REST API for online endpoints and their deployments (OpenAPI schema: /api/schema/).

A create or update that provisions answers 202 with the object; its
provisioning_state then goes to Succeeded or Failed (with `error`). A delete
answers 202 with the object while instances drain, 204 once nothing is left."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import action, api_view
from rest_framework.response import Response

from endpoints_app.api.common import (
    DEPLOYMENT_FIELDS,
    ENDPOINT_FIELDS,
    ENDPOINT_STATE_FIELDS,
    INSTANCE_FIELDS,
    DeploymentBaseSerializer,
    DeploymentCreateBaseSerializer,
    DeploymentViewSetBase,
    EndpointBaseSerializer,
    EndpointCreateBaseSerializer,
    EndpointViewSetBase,
    InstanceBaseSerializer,
    RegeneratedKeySerializer,
    RegenerateKeySerializer,
    deployment_named,
    endpoint_named,
    endpoint_schema,
    request_body,
    resource_schema,
)
from endpoints_app.errors import InvalidInput
from endpoints_app.models import Deployment, Endpoint, ProvisioningState, Role, Workspace
from endpoints_app.permissions import can_see_env_values, check_workspace
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services.audit import Actor

ENDPOINT_CREATE_FIELDS = ("name", "auth_mode", "description", "tags")
ONLINE_ENDPOINT_FIELDS = {*ENDPOINT_CREATE_FIELDS, "traffic", "mirror_traffic"}


# -- request bodies (documented here; the services parse and check them) -----------------------------

class EndpointCreateSerializer(EndpointCreateBaseSerializer):
    traffic = serializers.DictField(child=serializers.IntegerField(), required=False,
                                    help_text="{deployment: percent}, summing to 100 (or 0).")
    mirror_traffic = serializers.DictField(child=serializers.IntegerField(), required=False,
                                           help_text="{deployment: percent <= 50} to one deployment without live "
                                                     "traffic.")


class ProbeSerializer(serializers.Serializer):
    initial_delay = serializers.IntegerField(required=False)
    period = serializers.IntegerField(required=False)
    timeout = serializers.IntegerField(required=False)
    success_threshold = serializers.IntegerField(required=False)
    failure_threshold = serializers.IntegerField(required=False)


class DeploymentCreateSerializer(DeploymentCreateBaseSerializer):
    scale_settings = serializers.DictField(
        required=False,
        help_text="{type: default|target_utilization, min_instances, max_instances, "
                  "target_utilization_percentage, cooldown_seconds}",
    )
    request_settings = serializers.DictField(
        required=False, help_text="{request_timeout_ms, max_concurrent_requests_per_instance}"
    )
    liveness_probe = ProbeSerializer(required=False)
    readiness_probe = ProbeSerializer(required=False)


# -- shapes (these serializers build the responses they document) ------------------------------------

class EndpointSerializer(EndpointBaseSerializer):
    """An online endpoint."""

    traffic = serializers.DictField(help_text="{deployment: percent}, summing to 100 (or 0).")
    mirror_traffic = serializers.DictField(help_text="{deployment: percent <= 50} to one deployment without live "
                                                     "traffic.")
    swagger_uri = serializers.SerializerMethodField()

    class Meta(EndpointBaseSerializer.Meta):
        fields = [*ENDPOINT_FIELDS, "traffic", "mirror_traffic", *ENDPOINT_STATE_FIELDS, "scoring_uri", "swagger_uri",
                  "deployments", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_swagger_uri(self, endpoint: Endpoint) -> str:
        return self.uri(endpoint, "swagger.json")


class DeploymentInstanceSerializer(InstanceBaseSerializer):
    class Meta(InstanceBaseSerializer.Meta):
        fields = [*INSTANCE_FIELDS, "generation", "restarts", "started_at", "launched_at", "ready_at"]
        read_only_fields = fields


class DeploymentSerializer(DeploymentBaseSerializer):
    """An online deployment."""

    scale_settings = serializers.SerializerMethodField(
        help_text="{type: default|target_utilization, min_instances, max_instances, "
                  "target_utilization_percentage, cooldown_seconds}",
    )
    request_settings = serializers.DictField(help_text="{request_timeout_ms, max_concurrent_requests_per_instance}")
    liveness_probe = serializers.DictField(allow_null=True)
    readiness_probe = serializers.DictField(allow_null=True)
    traffic = serializers.SerializerMethodField(help_text="This deployment's percent of the endpoint's traffic.")
    mirror_traffic = serializers.SerializerMethodField(help_text="This deployment's percent of mirrored copies.")

    class Meta(DeploymentBaseSerializer.Meta):
        fields = [*DEPLOYMENT_FIELDS, "scale_settings", "request_settings", "liveness_probe", "readiness_probe",
                  *ENDPOINT_STATE_FIELDS, "generation", "traffic", "mirror_traffic", "instances", "created_at",
                  "updated_at"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_scale_settings(self, deployment: Deployment) -> dict:
        return deployment.scale_settings or {"type": "default"}

    def get_traffic(self, deployment: Deployment) -> int:
        return int(deployment.endpoint.traffic.get(deployment.name, 0))

    def get_mirror_traffic(self, deployment: Deployment) -> int:
        return int(deployment.endpoint.mirror_traffic.get(deployment.name, 0))

    @extend_schema_field(DeploymentInstanceSerializer(many=True))
    def get_instances(self, deployment: Deployment) -> list[dict]:
        rows = sorted(deployment_svc.current_instances(deployment), key=lambda i: (i.generation, i.name))
        return DeploymentInstanceSerializer(rows, many=True).data


class DeploymentPlanSerializer(serializers.Serializer):
    deployments = serializers.ListField(
        child=serializers.DictField(),
        help_text="[{kind: online|batch, endpoint_name, name, instance_type?, instance_count?, scale_settings?}]: "
                  "every deployment a plan creates or updates.")


class DeploymentCheckSerializer(serializers.Serializer):
    ok = serializers.BooleanField(help_text="Always true: what does not fit is a 409 naming it.")
    checked = serializers.ListField(child=serializers.CharField(), help_text="The deployments checked.")


# -- views -------------------------------------------------------------------------------------------

@endpoint_schema(EndpointSerializer, EndpointCreateSerializer)
class EndpointViewSet(EndpointViewSetBase):
    """`workspaces/<ws>/online-endpoints[/<name>]`, and its keys and token."""

    kind = Endpoint.Kind.ONLINE
    serializer_class = EndpointSerializer

    create_fields = ENDPOINT_CREATE_FIELDS
    body_fields = ONLINE_ENDPOINT_FIELDS

    def check_new(self, body: dict) -> None:
        for field, what in (("traffic", "send traffic to"), ("mirror_traffic", "mirror traffic to")):
            split = body.get(field)
            if split and any(split.values() if isinstance(split, dict) else [True]):
                raise InvalidInput(f"A new endpoint has no deployments to {what}; set {field} later.", field=field)

    def do_create(self, actor: Actor, workspace: Workspace, **fields) -> Endpoint:
        return endpoint_svc.do_create_endpoint(actor, workspace, **fields)

    def do_update(self, actor: Actor, endpoint: Endpoint, body: dict) -> Endpoint:
        return endpoint_svc.do_update_endpoint(actor, endpoint, traffic=body.get("traffic"),
                                               mirror_traffic=body.get("mirror_traffic"),
                                               description=body.get("description"), tags=body.get("tags"))

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        endpoint_svc.do_delete_endpoint(Actor.from_request(self.request), endpoint)

    @extend_schema(request=RegenerateKeySerializer, responses=RegeneratedKeySerializer)
    @action(detail=True, methods=["post"], url_path="regenerate-keys")
    def regenerate_keys(self, request, ws: str, name: str) -> Response:
        endpoint = self.named(name)
        key_type = request_body(request).get("key_type", "primary")
        key = key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
        return Response(RegeneratedKeySerializer.of(key_type, key))


@resource_schema(DeploymentSerializer, DeploymentCreateSerializer, created=(201, 202), put=(200, 201, 202),
                 patch=(200, 202))
class DeploymentViewSet(DeploymentViewSetBase):
    """`workspaces/<ws>/online-endpoints/<name>/deployments[/<deployment_name>]`, and a deployment's logs.
    A create or update that provisions answers 202 (decided from the state the service wrote: the
    worker may finish a small change, a scale-in, before the fresh read)."""

    kind = Endpoint.Kind.ONLINE
    serializer_class = DeploymentSerializer

    def rows(self, endpoint: Endpoint):
        return super().rows(endpoint).prefetch_related("instances__node")

    def context(self, workspace: Workspace) -> dict:
        return {"reveal_env": can_see_env_values(self.request.user, workspace)}

    def answer(self, deployment: Deployment, code: int = status.HTTP_200_OK) -> Response:
        return Response(DeploymentSerializer(deployment).data, status=code)

    def _provisioning(self, deployment: Deployment, created: bool) -> Response:
        provisioning = deployment.provisioning_state in (ProvisioningState.CREATING, ProvisioningState.UPDATING)
        deployment = Deployment.objects.select_related(
            "endpoint", "model", "instance_type", "compute"
        ).prefetch_related("instances__node").get(pk=deployment.pk)
        if provisioning:
            return self.answer(deployment, status.HTTP_202_ACCEPTED)
        return self.answer(deployment, status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def created(self, deployment: Deployment) -> Response:
        return self._provisioning(deployment, created=True)

    def updated(self, deployment: Deployment) -> Response:
        return self._provisioning(deployment, created=False)

    def do_create(self, actor: Actor, endpoint: Endpoint, body: dict) -> Deployment:
        return deployment_svc.do_create_deployment(actor, endpoint, body)

    def do_update(self, actor: Actor, deployment: Deployment, body: dict) -> Deployment:
        return deployment_svc.do_update_deployment(actor, deployment, body)

    def do_delete(self, actor: Actor, deployment: Deployment) -> None:
        deployment_svc.do_delete_deployment(actor, deployment)

    @extend_schema(
        parameters=[OpenApiParameter("lines", int), OpenApiParameter("instance", str)],
        responses={(200, "text/plain"): OpenApiTypes.STR},
    )
    @action(detail=True, methods=["get"])
    def logs(self, request, ws: str, name: str, deployment_name: str) -> HttpResponse:
        found = deployment_named(endpoint_named(self.workspace(), name), deployment_name)
        lines = request.query_params.get("lines", "100")
        instance = request.query_params.get("instance") or None
        text = deployment_svc.read_deployment_logs(found, lines=lines, instance=instance)
        return HttpResponse(text, content_type="text/plain; charset=utf-8")


@extend_schema(request=DeploymentPlanSerializer, responses=DeploymentCheckSerializer)
@api_view(["POST"])
def deployment_check(request, ws: str):
    """Checks a plan's deployments together (quota, node capacity) before any change is made; 409 names
    what does not fit. `studio apply` calls it before its first change. Writes nothing."""
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    plan = deployment_svc.check_deployment_plan(workspace, request_body(request).get("deployments"))
    return Response(DeploymentCheckSerializer(plan).data)
