"""REST API: marketplace subscriptions, serverless endpoints and the workspace's unified
inference keys (CONTRACT.md). The serializers below build the responses they document."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.api.endpoints import KeysOut, RegenerateIn, check_url_name, inference_base_url, request_body
from endpoints_app.errors import InvalidInput
from endpoints_app.models import Endpoint, MarketplaceSubscription, Role
from endpoints_app.permissions import check_workspace
from endpoints_app.services import keys as key_svc
from endpoints_app.services import marketplace as market_svc
from endpoints_app.services import serverless as serverless_svc
from endpoints_app.services.audit import Actor


class SubscriptionIn(serializers.Serializer):
    model_id = serializers.CharField(
        help_text="studio://registries/<r>/models/<name>[/versions/<n>] (no version: the latest) or <name>."
    )
    name = serializers.CharField(required=False, help_text="The model's name (a subscription is named after it).")


class SubscriptionSerializer(serializers.Serializer):
    name = serializers.CharField()
    model_id = serializers.CharField(source="model.asset_id")
    provisioning_state = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_provisioning_state(self, obj: MarketplaceSubscription) -> str:
        return "Succeeded"

    def get_created_by(self, obj: MarketplaceSubscription) -> str:
        return obj.created_by.get_username() if obj.created_by else ""


class ServerlessIn(serializers.Serializer):
    name = serializers.CharField(help_text="A DNS label, unique in the studio.")
    model_id = serializers.CharField(help_text="A model offered serverless; no version means the latest.")
    description = serializers.CharField(required=False)
    tags = serializers.DictField(required=False)


class ServerlessEndpointSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    model_id = serializers.CharField(source="model.asset_id")
    model_name = serializers.CharField(source="model.name")
    scoring_uri = serializers.SerializerMethodField(help_text="Base URL: /chat/completions, /embeddings, /info hang "
                                                              "off it.")
    auth_mode = serializers.CharField()
    provisioning_state = serializers.CharField()
    status = serializers.CharField()
    status_reason = serializers.CharField(source="unhealthy_reason")
    rate_limits = serializers.SerializerMethodField()
    description = serializers.CharField()
    tags = serializers.DictField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_scoring_uri(self, obj: Endpoint) -> str:
        return serverless_svc.scoring_uri(self.context["base_url"], obj)

    def get_rate_limits(self, obj: Endpoint) -> dict:
        requests, tokens = obj.model.effective_rate_limits(obj.workspace)
        return {"requests_per_minute": requests, "tokens_per_minute": tokens}


class InferenceKeysOut(KeysOut):
    base_url = serializers.CharField(help_text="For OpenAI(base_url=...): /chat/completions hangs off it.")
    azure_endpoint = serializers.CharField(help_text="For AzureOpenAI(azure_endpoint=...).")


def _endpoint_out(request, endpoint: Endpoint) -> dict:
    return ServerlessEndpointSerializer(endpoint, context={"base_url": inference_base_url(request)}).data


def _subscription(workspace, name: str) -> MarketplaceSubscription:
    found = market_svc.get_subscription(workspace, name)
    if found is None:
        raise Http404(f"No marketplace subscription '{name}' in workspace '{workspace.name}'.")
    return found


def _create_subscription(request, workspace, body: dict, name: str | None = None) -> Response:
    given = body.get("name")
    model = market_svc.resolve_offer(body.get("model_id"))
    for label in (given, name):
        if label not in (None, "") and label != model.name:
            raise InvalidInput(
                f"A subscription is named after its model: '{model.name}', not {label!r}.", field="name"
            )
    subscription, created = market_svc.do_create_subscription(Actor.from_request(request), workspace, model.asset_id)
    return Response(SubscriptionSerializer(subscription).data,
                    status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


@extend_schema(request=SubscriptionIn, responses={200: SubscriptionSerializer(many=True), 201: SubscriptionSerializer})
@api_view(["GET", "POST"])
def subscriptions(request, ws: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return Response(SubscriptionSerializer(market_svc.list_subscriptions(workspace), many=True).data)
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return _create_subscription(request, workspace, request_body(request))


@extend_schema(request=SubscriptionIn, responses={200: SubscriptionSerializer, 201: SubscriptionSerializer, 204: None})
@api_view(["GET", "PUT", "DELETE"])
def subscription(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return Response(SubscriptionSerializer(_subscription(workspace, name)).data)
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    if request.method == "PUT":
        body = request_body(request)
        body.setdefault("model_id", name)
        return _create_subscription(request, workspace, body, name=name)
    market_svc.do_delete_subscription(Actor.from_request(request), _subscription(workspace, name))
    return Response(status=status.HTTP_204_NO_CONTENT)


def _serverless(workspace, name: str) -> Endpoint:
    found = serverless_svc.get_serverless_endpoint(workspace, name)
    if found is None:
        raise Http404(f"No serverless endpoint '{name}' in workspace '{workspace.name}'.")
    return found


@extend_schema(request=ServerlessIn,
               responses={200: ServerlessEndpointSerializer(many=True), 201: ServerlessEndpointSerializer})
@api_view(["GET", "POST"])
def serverless_endpoints(request, ws: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        rows = serverless_svc.list_serverless_endpoints(workspace)
        return Response([_endpoint_out(request, e) for e in rows])
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    body = request_body(request)
    endpoint = serverless_svc.do_create_serverless_endpoint(Actor.from_request(request), workspace, body)
    return Response(_endpoint_out(request, endpoint), status=status.HTTP_201_CREATED)


@extend_schema(request=ServerlessIn,
               responses={200: ServerlessEndpointSerializer, 201: ServerlessEndpointSerializer, 204: None})
@api_view(["GET", "PUT", "DELETE"])
def serverless_endpoint(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return Response(_endpoint_out(request, _serverless(workspace, name)))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    if request.method == "PUT":
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
            return Response(_endpoint_out(request, existing))
        body["name"] = name
        endpoint = serverless_svc.do_create_serverless_endpoint(Actor.from_request(request), workspace, body)
        return Response(_endpoint_out(request, endpoint), status=status.HTTP_201_CREATED)
    serverless_svc.do_delete_serverless_endpoint(Actor.from_request(request), _serverless(workspace, name))
    return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(request=None, responses=KeysOut)
@api_view(["POST"])
def list_keys(request, ws: str, name: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return Response(KeysOut(key_svc.get_keys(_serverless(workspace, name))).data)


@extend_schema(request=RegenerateIn, responses=KeysOut)
@api_view(["POST"])
def regenerate_keys(request, ws: str, name: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = _serverless(workspace, name)
    key_type = request_body(request).get("key_type", "primary")
    key = key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
    return Response({"key_type": key_type, f"{key_type}_key": key})


def _inference_keys_out(request, found: dict) -> dict:
    base = inference_base_url(request)
    return InferenceKeysOut({**found, "base_url": serverless_svc.inference_base_uri(base), "azure_endpoint": base}).data


@extend_schema(request=None, responses=InferenceKeysOut)
@api_view(["POST"])
def list_inference_keys(request, ws: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return Response(_inference_keys_out(request, serverless_svc.get_inference_keys(Actor.from_request(request),
                                                                                    workspace)))


@extend_schema(request=RegenerateIn, responses=KeysOut)
@api_view(["POST"])
def regenerate_inference_keys(request, ws: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    key_type = request_body(request).get("key_type", "primary")
    key = serverless_svc.do_regenerate_inference_key(Actor.from_request(request), workspace, key_type)
    return Response({"key_type": key_type, f"{key_type}_key": key})
