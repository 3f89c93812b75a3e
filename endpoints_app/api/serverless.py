"""REST API: marketplace subscriptions, serverless endpoints and the workspace's unified
inference keys (OpenAPI schema: /api/schema/). The serializers below build the responses they document."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.decorators import action, api_view
from rest_framework.response import Response

from endpoints_app.api.common import (
    KeysSerializer,
    RegeneratedKeySerializer,
    RegenerateKeySerializer,
    WorkspaceViewSet,
    check_url_name,
    request_body,
    resource_schema,
)
from endpoints_app.errors import InvalidInput
from endpoints_app.inference_urls import inference_base_url
from endpoints_app.models import Endpoint, MarketplaceSubscription, Role, Workspace
from endpoints_app.permissions import check_workspace
from endpoints_app.services import keys as key_svc
from endpoints_app.services import marketplace as market_svc
from endpoints_app.services import serverless as serverless_svc
from endpoints_app.services.audit import Actor


class SubscriptionCreateSerializer(serializers.Serializer):
    model_id = serializers.CharField(
        help_text="studio://registries/<r>/models/<name>[/versions/<n>] (no version: the latest) or <name>."
    )
    name = serializers.CharField(required=False, help_text="The model's name (a subscription is named after it).")


class SubscriptionSerializer(serializers.ModelSerializer):
    model_id = serializers.CharField(source="model.asset_id")
    provisioning_state = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = MarketplaceSubscription
        fields = ["name", "model_id", "provisioning_state", "created_by", "created_at"]
        read_only_fields = fields

    def get_provisioning_state(self, obj: MarketplaceSubscription) -> str:
        return "Succeeded"

    def get_created_by(self, obj: MarketplaceSubscription) -> str:
        return obj.created_by.get_username() if obj.created_by else ""


class ServerlessEndpointCreateSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="A DNS label, unique in the studio.")
    model_id = serializers.CharField(help_text="A model offered serverless; no version means the latest.")
    description = serializers.CharField(required=False)
    tags = serializers.DictField(required=False)


class RateLimitsSerializer(serializers.Serializer):
    requests_per_minute = serializers.IntegerField(allow_null=True)
    tokens_per_minute = serializers.IntegerField(allow_null=True)


class ServerlessEndpointSerializer(serializers.ModelSerializer):
    """A serverless endpoint; `context["request"]` gives the base of its URI."""

    model_id = serializers.CharField(source="model.asset_id")
    model_name = serializers.CharField(source="model.name")
    scoring_uri = serializers.SerializerMethodField(help_text="Base URL: /chat/completions, /embeddings, /info hang "
                                                              "off it.")
    status = serializers.CharField(help_text="The pool's health: Healthy or Unhealthy (status_reason says why).")
    status_reason = serializers.CharField(source="unhealthy_reason")
    rate_limits = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = ["name", "kind", "model_id", "model_name", "scoring_uri", "auth_mode", "provisioning_state", "status",
                  "status_reason", "rate_limits", "description", "tags", "created_at", "updated_at"]
        read_only_fields = fields

    def get_scoring_uri(self, obj: Endpoint) -> str:
        return serverless_svc.scoring_uri(inference_base_url(self.context["request"]), obj)

    @extend_schema_field(RateLimitsSerializer)
    def get_rate_limits(self, obj: Endpoint) -> dict:
        requests, tokens = obj.model.effective_rate_limits(obj.workspace)
        return {"requests_per_minute": requests, "tokens_per_minute": tokens}


class InferenceKeysSerializer(KeysSerializer):
    """The workspace's unified inference keys; `context["request"]` gives the base of its URLs."""

    base_url = serializers.SerializerMethodField(help_text="For OpenAI(base_url=...): /chat/completions hangs off it.")
    azure_endpoint = serializers.SerializerMethodField(help_text="For AzureOpenAI(azure_endpoint=...).")

    def get_base_url(self, keys: dict) -> str:
        return serverless_svc.inference_base_uri(inference_base_url(self.context["request"]))

    def get_azure_endpoint(self, keys: dict) -> str:
        return inference_base_url(self.context["request"])


# -- views -------------------------------------------------------------------------------------------

@resource_schema(SubscriptionSerializer, SubscriptionCreateSerializer, created=(200, 201), deleted=(204,))
class SubscriptionViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/marketplace-subscriptions[/<name>]`: a subscription is named after its model;
    subscribing again answers 200 with the one there is."""

    def named(self, workspace: Workspace, name: str) -> MarketplaceSubscription:
        found = market_svc.get_subscription(workspace, name)
        if found is None:
            raise Http404(f"No marketplace subscription '{name}' in workspace '{workspace.name}'.")
        return found

    def subscribe(self, workspace: Workspace, body: dict, name: str | None = None) -> Response:
        given = body.get("name")
        model = market_svc.resolve_offer(body.get("model_id"))
        for label in (given, name):
            if label not in (None, "") and label != model.name:
                raise InvalidInput(
                    f"A subscription is named after its model: '{model.name}', not {label!r}.", field="name"
                )
        subscription, created = market_svc.do_create_subscription(Actor.from_request(self.request), workspace,
                                                                   model.asset_id)
        return Response(SubscriptionSerializer(subscription).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)

    def list(self, request, ws: str) -> Response:
        return Response(SubscriptionSerializer(market_svc.list_subscriptions(self.workspace()), many=True).data)

    def create(self, request, ws: str) -> Response:
        return self.subscribe(self.workspace(), request_body(request))

    def retrieve(self, request, ws: str, name: str) -> Response:
        return Response(SubscriptionSerializer(self.named(self.workspace(), name)).data)

    def update(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        body = request_body(request)
        body.setdefault("model_id", name)
        return self.subscribe(workspace, body, name=name)

    def destroy(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        market_svc.do_delete_subscription(Actor.from_request(request), self.named(workspace, name))
        return Response(status=status.HTTP_204_NO_CONTENT)


@resource_schema(ServerlessEndpointSerializer, ServerlessEndpointCreateSerializer, deleted=(204,),
                 list_keys=extend_schema(request=None, responses=KeysSerializer),
                 regenerate_keys=extend_schema(request=RegenerateKeySerializer, responses=RegeneratedKeySerializer))
class ServerlessEndpointViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/serverless-endpoints[/<name>]` and its keys."""

    def named(self, workspace: Workspace, name: str) -> Endpoint:
        found = serverless_svc.get_serverless_endpoint(workspace, name)
        if found is None:
            raise Http404(f"No serverless endpoint '{name}' in workspace '{workspace.name}'.")
        return found

    def answer(self, endpoint: Endpoint, code: int = status.HTTP_200_OK) -> Response:
        return Response(ServerlessEndpointSerializer(endpoint, context={"request": self.request}).data, status=code)

    def list(self, request, ws: str) -> Response:
        rows = serverless_svc.list_serverless_endpoints(self.workspace())
        return Response(ServerlessEndpointSerializer(rows, many=True, context={"request": request}).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        body = request_body(request)
        endpoint = serverless_svc.do_create_serverless_endpoint(Actor.from_request(request), workspace, body)
        return self.answer(endpoint, status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        return self.answer(self.named(self.workspace(), name))

    def update(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        existing = serverless_svc.get_serverless_endpoint(workspace, name)
        body = request_body(request)
        check_url_name(body, name, "endpoint")
        if existing is not None:
            # Nothing of a serverless endpoint changes but its model, which makes a new endpoint.
            if body.get("model_id") not in (None, "") and (
                market_svc.resolve_offer(body["model_id"]).name != existing.model.name
            ):
                raise InvalidInput("A serverless endpoint's model cannot change; create a new endpoint.",
                                   field="model_id")
            return self.answer(existing)
        body["name"] = name
        endpoint = serverless_svc.do_create_serverless_endpoint(Actor.from_request(request), workspace, body)
        return self.answer(endpoint, status.HTTP_201_CREATED)

    def destroy(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        serverless_svc.do_delete_serverless_endpoint(Actor.from_request(request), self.named(workspace, name))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["post"], url_path="list-keys")
    def list_keys(self, request, ws: str, name: str) -> Response:
        return Response(KeysSerializer(key_svc.get_keys(self.named(self.workspace(), name))).data)

    @action(detail=True, methods=["post"], url_path="regenerate-keys")
    def regenerate_keys(self, request, ws: str, name: str) -> Response:
        endpoint = self.named(self.workspace(), name)
        key_type = request_body(request).get("key_type", "primary")
        key = key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
        return Response(RegeneratedKeySerializer.of(key_type, key))


# The workspace's unified inference keys (no resource of their own: two function views).

@extend_schema(request=None, responses=InferenceKeysSerializer)
@api_view(["POST"])
def list_inference_keys(request, ws: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    found = serverless_svc.do_ensure_inference_keys(Actor.from_request(request), workspace)
    return Response(InferenceKeysSerializer(found, context={"request": request}).data)


@extend_schema(request=RegenerateKeySerializer, responses=RegeneratedKeySerializer)
@api_view(["POST"])
def regenerate_inference_keys(request, ws: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    key_type = request_body(request).get("key_type", "primary")
    key = serverless_svc.do_regenerate_inference_key(Actor.from_request(request), workspace, key_type)
    return Response(RegeneratedKeySerializer.of(key_type, key))
