"""The endpoint Monitoring tab: a partial for htmx (and a page of its own without it)."""

from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import mark_safe

from endpoints_app.metering.charts import RANGES, default_range, monitoring_figures
from endpoints_app.models import Endpoint
from endpoints_app.permissions import check_workspace

CHART_ORDER = ["requests", "latency", "errors", "traffic", "tokens", "cost", "cpu", "memory"]


def script_safe(text: str) -> str:
    """JSON made safe inside <script>: these characters only occur inside JSON strings,
    where their \\u escapes mean the same."""
    return mark_safe(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def endpoint_for(user, name: str) -> Endpoint:
    endpoint = Endpoint.objects.select_related("workspace").filter(name=name).first()
    if endpoint is None:
        raise Http404("No such endpoint.")
    check_workspace(user, endpoint.workspace.name)
    return endpoint


@login_required
def monitoring(request, name: str):
    endpoint = endpoint_for(request.user, name)
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
