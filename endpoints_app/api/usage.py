"""GET /api/v1/workspaces/<ws>/usage: totals and series of requests, latency, tokens and cost."""

import orjson
from django.http import Http404, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.decorators import api_view

from endpoints_app.metering.query import gc_paused
from endpoints_app.metering.report import parse_window, usage_report
from endpoints_app.models import Endpoint
from endpoints_app.permissions import check_workspace


class UsageTotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    status_2xx = serializers.IntegerField()
    status_4xx = serializers.IntegerField()
    status_5xx = serializers.IntegerField()
    status_codes = serializers.DictField(child=serializers.IntegerField(), help_text="{status code: calls}")
    bytes_in = serializers.IntegerField()
    bytes_out = serializers.IntegerField()
    tokens_in = serializers.IntegerField()
    tokens_out = serializers.IntegerField()
    instance_hours = serializers.FloatField()
    cost = serializers.FloatField()


class UsagePointSerializer(UsageTotalsSerializer):
    """One point of the series: its bucket's counts, as the totals have them, and latencies (documentation:
    the report computes the points, see UsageSeriesField)."""

    time = serializers.CharField(help_text="The bucket's start, ISO 8601.")
    endpoint = serializers.CharField()
    deployment = serializers.CharField()
    model = serializers.CharField(required=False, help_text="Serverless endpoints: the model its tokens are priced by.")
    latency_avg_ms = serializers.FloatField(allow_null=True)
    latency_p50_ms = serializers.FloatField(allow_null=True)
    latency_p90_ms = serializers.FloatField(allow_null=True)
    latency_p99_ms = serializers.FloatField(allow_null=True)


@extend_schema_field(UsagePointSerializer(many=True))
class UsageSeriesField(serializers.Field):
    """The series' points as `metering.report.usage_report` computed them (as columns, then zipped: a
    30-day series of a workspace is thousands of points, which a field per value would take seconds to
    copy); their shape is UsagePointSerializer's."""

    def __init__(self, **kwargs) -> None:
        super().__init__(read_only=True, **kwargs)

    def to_representation(self, value: list[dict]) -> list[dict]:
        return value


class UsageReportSerializer(serializers.Serializer):
    """A workspace's usage over a window: `from`, `to`, `interval`, `totals` and `series`."""

    def get_fields(self) -> dict:
        # `from` is a Python keyword: no class attribute can be named so.
        return {
            "from": serializers.CharField(help_text="ISO 8601 start (inclusive)."),
            "to": serializers.CharField(help_text="ISO 8601 end (exclusive)."),
            "interval": serializers.CharField(help_text="The series' bucket: 1m, 5m, 15m, 1h, 6h or 1d."),
            "totals": UsageTotalsSerializer(),
            "series": UsageSeriesField(),
        }



@extend_schema(
    parameters=[
        OpenApiParameter("endpoint", str, description="Only this endpoint."),
        OpenApiParameter("deployment", str, description="Only deployments of this name."),
        OpenApiParameter("from", str, description="ISO 8601 start (inclusive); default `to` - 24 h."),
        OpenApiParameter("to", str, description="ISO 8601 end (exclusive); default now."),
        OpenApiParameter("interval", str, enum=["1m", "5m", "15m", "1h", "6h", "1d"],
                         description="Series bucket; default chosen from the range."),
    ],
    responses={200: UsageReportSerializer},
)
@api_view(["GET"])
def usage(request, ws: str):
    workspace = check_workspace(request.user, ws)
    # Deleted endpoints too: what they served and cost stays billed.
    endpoints = Endpoint.all_objects.filter(workspace=workspace).select_related("model")
    name = request.query_params.get("endpoint")
    if name:
        endpoints = endpoints.filter(name=name)
        if not endpoints.exists():
            raise Http404(f"No endpoint named '{name}' in workspace '{workspace.name}'.")
    window = parse_window(request.query_params)
    deployment = request.query_params.get("deployment") or None
    # orjson: a 30-day series for a whole workspace is thousands of points (megabytes of JSON),
    # which the standard library's encoder (DRF's renderer) takes several times longer to write.
    with gc_paused():
        body = orjson.dumps(UsageReportSerializer(usage_report(endpoints, window, deployment)).data)
    return HttpResponse(body, content_type="application/json")
