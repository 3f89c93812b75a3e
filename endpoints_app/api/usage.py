"""GET /api/v1/workspaces/<ws>/usage: totals and series of requests, latency, tokens and cost."""

import orjson
from django.http import Http404, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.decorators import api_view

from endpoints_app.metering.query import gc_paused
from endpoints_app.metering.report import parse_window, usage_report
from endpoints_app.models import Endpoint
from endpoints_app.permissions import check_workspace


@extend_schema(
    parameters=[
        OpenApiParameter("endpoint", str, description="Only this endpoint."),
        OpenApiParameter("deployment", str, description="Only deployments of this name."),
        OpenApiParameter("from", str, description="ISO 8601 start (inclusive); default `to` - 24 h."),
        OpenApiParameter("to", str, description="ISO 8601 end (exclusive); default now."),
        OpenApiParameter("interval", str, enum=["1m", "5m", "15m", "1h", "6h", "1d"],
                         description="Series bucket; default chosen from the range."),
    ],
    responses={200: dict},
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
        body = orjson.dumps(usage_report(endpoints, window, deployment))
    return HttpResponse(body, content_type="application/json")
