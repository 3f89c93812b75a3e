"""Mirror traffic comparison of an online endpoint (what the gateway recorded for mirrored requests)."""

import datetime as dt

from django.http import Http404
from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.errors import InvalidInput
from endpoints_app.metering.mirror import mirror_summary
from endpoints_app.models import Endpoint
from endpoints_app.permissions import check_workspace


class DeploymentPairSerializer(serializers.Serializer):
    live = serializers.CharField()
    shadow = serializers.CharField()


class MirrorComparisonSerializer(serializers.Serializer):
    """What the gateway recorded of an endpoint's mirrored requests; rates and latencies are null when there
    is nothing to compare. Built from `metering.mirror.mirror_summary` and the endpoint's mirror split."""

    mirror_traffic = serializers.DictField(help_text="{deployment: percent}")
    requests = serializers.IntegerField()
    agreed = serializers.IntegerField()
    agreement_rate = serializers.FloatField(allow_null=True)
    shadow_errors = serializers.IntegerField(help_text="Mirrored copies the shadow answered with a 5xx.")
    live_latency_ms_p50 = serializers.FloatField(allow_null=True)
    shadow_latency_ms_p50 = serializers.FloatField(allow_null=True)
    latency_diff_ms_p50 = serializers.FloatField(allow_null=True, help_text="Shadow minus live.")
    latency_diff_ms_mean = serializers.FloatField(allow_null=True)
    deployments = DeploymentPairSerializer(many=True)


@extend_schema(
    parameters=[OpenApiParameter("since", OpenApiTypes.DATETIME, description="Only mirrored requests since then")],
    responses=MirrorComparisonSerializer,
)
@api_view(["GET"])
def mirror_comparison(request, ws: str, name: str):
    """{mirror_traffic, requests, agreed, agreement_rate, latency_diff_ms_p50 (shadow minus live), ...}"""
    workspace = check_workspace(request.user, ws)
    endpoint = Endpoint.objects.filter(workspace=workspace, name=name, kind=Endpoint.Kind.ONLINE).first()
    if endpoint is None:
        raise Http404(f"No online endpoint '{name}' in workspace '{workspace.name}'.")
    since = None
    if request.query_params.get("since"):
        since = parse_datetime(request.query_params["since"])
        if since is None:
            raise InvalidInput("since must be an ISO 8601 date and time.", field="since")
        if since.tzinfo is None:
            since = since.replace(tzinfo=dt.UTC)
    summary = {"mirror_traffic": endpoint.mirror_traffic, **mirror_summary(endpoint, since=since)}
    return Response(MirrorComparisonSerializer(summary).data)
