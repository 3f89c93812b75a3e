"""The endpoint Monitoring tab: a partial for htmx (and a page of its own without it)."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.utils import timezone

from endpoints_app.metering.charts import RANGES, default_range, monitoring_figures
from endpoints_app.views.common import endpoint_for, script_safe

CHART_ORDER = ["requests", "latency", "errors", "traffic", "tokens", "cost", "cpu", "memory"]


@login_required
def monitoring(request, name: str):
    endpoint = endpoint_for(request, name)
    now = timezone.now()
    range_key = request.GET.get("range", "")
    if range_key not in RANGES:
        range_key = default_range(endpoint, now)
    built = monitoring_figures(endpoint, range_key, now)
    # Charts the model cannot have data for (tokens of a classifier) are not built.
    charts = [{"name": key, "json": script_safe(built["figures"][key].to_json())}
              for key in CHART_ORDER if key in built["figures"]]
    context = {
        "endpoint": endpoint,
        "tab": "monitoring",
        "range": range_key,
        "ranges": list(RANGES),
        "charts": charts,
        "summary": built["summary"],
        "start": built["start"],
        "end": built["end"],
        "interval": built["interval"],
    }
    template = "monitoring/panel.html#panel" if request.htmx else "monitoring/panel.html"
    return render(request, template, context)
