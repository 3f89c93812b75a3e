"""GET /metrics: Prometheus text format (version 0.0.4).

With STUDIO_METRICS_TOKEN set, every caller needs `Authorization: Bearer <token>`. Without
it, only a caller whose socket is loopback and who sent no proxy header (X-Forwarded-For,
Forwarded, X-Real-IP) gets in: a reverse proxy on the same host makes every visitor
loopback, and those headers are how it shows. Counters are cumulative since the first
request the gateway counted, read from the usage rows (rollups plus minute rows), so
every web worker answers the same numbers; a snapshot is served for
STUDIO_METRICS_CACHE_SECONDS, so scrapers do not aggregate all usage on every call."""

import hmac
from collections import defaultdict
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.http import HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from endpoints_app.metering import query
from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS
from endpoints_app.models import Endpoint, Instance, InstanceSample

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
ALL_TIME = query.DAY * 365 * 200  # one bucket spanning every stored row
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")
CACHE_KEY = "studio:metrics:snapshot"


def _allowed(request) -> tuple[bool, int]:
    token = settings.STUDIO_METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else ""
        return hmac.compare_digest(given.encode(), token.encode()), 401
    direct = not any(request.META.get(name) for name in PROXY_HEADERS)
    return (request.META.get("REMOTE_ADDR", "") in LOOPBACK and direct), 403


def snapshot() -> str:
    """render_metrics(), at most STUDIO_METRICS_CACHE_SECONDS old."""
    seconds = settings.STUDIO_METRICS_CACHE_SECONDS
    if seconds <= 0:
        return render_metrics()
    text = cache.get(CACHE_KEY)
    if text is None:
        text = render_metrics()
        cache.set(CACHE_KEY, text, seconds)
    return text


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def render_metrics(now: datetime | None = None) -> str:
    now = now or timezone.now()
    endpoints = {e.pk: e for e in Endpoint.objects.select_related("workspace")}
    rows = query.series(list(endpoints), EPOCH, now, ALL_TIME) if endpoints else {}
    out: list[str] = []

    def family(name: str, kind: str, text: str) -> None:
        out.append(f"# HELP {name} {text}")
        out.append(f"# TYPE {name} {kind}")

    keyed = sorted(((endpoints[e], dep, acc) for (_, e, dep), acc in rows.items()), key=lambda r: (r[0].name, r[1]))
    c = query.COUNTERS.index
    family("studio_requests_total", "counter", "Requests through the gateway, by status class.")
    for ep, dep, acc in keyed:
        base = {"workspace": ep.workspace.name, "endpoint": ep.name, "deployment": dep}
        for status in ("2xx", "4xx", "5xx"):
            out.append(f"studio_requests_total{_labels(**base, status=status)} {acc[c('status_' + status)]}")
    family("studio_request_latency_ms", "histogram", "Gateway request latency in milliseconds.")
    for ep, dep, acc in keyed:
        base = {"workspace": ep.workspace.name, "endpoint": ep.name, "deployment": dep}
        running = 0
        for bound, count in zip(LATENCY_BUCKETS_MS, query.histogram_of(acc), strict=False):
            running += count
            le = "+Inf" if bound == float("inf") else f"{bound:g}"
            out.append(f"studio_request_latency_ms_bucket{_labels(**base, le=le)} {running}")
        out.append(f"studio_request_latency_ms_sum{_labels(**base)} {acc[query.N]!r}")
        out.append(f"studio_request_latency_ms_count{_labels(**base)} {acc[c('requests')]}")
    family("studio_tokens_total", "counter", "Model tokens counted by the gateway.")
    for ep, dep, acc in keyed:
        base = {"workspace": ep.workspace.name, "endpoint": ep.name, "deployment": dep}
        out.append(f"studio_tokens_total{_labels(**base, direction='in')} {acc[c('tokens_in')]}")
        out.append(f"studio_tokens_total{_labels(**base, direction='out')} {acc[c('tokens_out')]}")
    family("studio_bytes_total", "counter", "Request and response body bytes through the gateway.")
    for ep, dep, acc in keyed:
        base = {"workspace": ep.workspace.name, "endpoint": ep.name, "deployment": dep}
        out.append(f"studio_bytes_total{_labels(**base, direction='in')} {acc[c('bytes_in')]}")
        out.append(f"studio_bytes_total{_labels(**base, direction='out')} {acc[c('bytes_out')]}")

    family("studio_instances", "gauge", "Model-server instances by state.")
    counts: dict[tuple, int] = defaultdict(int)
    instances = Instance.objects.select_related("deployment__endpoint__workspace").exclude(state="Stopped")
    live = []
    for inst in instances:
        dep = inst.deployment
        counts[(dep.endpoint.workspace.name, dep.endpoint.name, dep.name, inst.state)] += 1
        live.append(inst)
    for (ws, ep, dep, state), n in sorted(counts.items()):
        out.append(f"studio_instances{_labels(workspace=ws, endpoint=ep, deployment=dep, state=state)} {n}")
    family("studio_instance_cpu_percent", "gauge", "Latest sampled CPU of an instance process (% of one core).")
    family_mem: list[str] = []
    latest: dict[int, InstanceSample] = {}
    recent = InstanceSample.objects.filter(instance__in=live, time__gte=now - timedelta(minutes=10)).order_by("time")
    for sample in recent:
        latest[sample.instance_id] = sample
    for inst in live:
        sample = latest.get(inst.pk)
        if sample is None:
            continue
        dep = inst.deployment
        labels = _labels(workspace=dep.endpoint.workspace.name, endpoint=dep.endpoint.name, deployment=dep.name,
                         instance=inst.name)
        out.append(f"studio_instance_cpu_percent{labels} {sample.cpu_percent!r}")
        family_mem.append(f"studio_instance_memory_mb{labels} {sample.memory_mb!r}")
    family("studio_instance_memory_mb", "gauge", "Latest sampled resident memory of an instance process (MB).")
    out.extend(family_mem)
    out.extend(_job_gauges())
    return "\n".join(out) + "\n"


def _job_gauges() -> list[str]:
    """Batch jobs by status, if the batch app's job model is installed."""
    from django.apps import apps

    try:
        Job = apps.get_model("endpoints_app", "BatchJob")
    except LookupError:
        return []
    fields = {f.name for f in Job._meta.get_fields()}
    if not {"status", "endpoint"} <= fields:
        return []
    lines = ["# HELP studio_batch_jobs Batch jobs by status.", "# TYPE studio_batch_jobs gauge"]
    counts: dict[tuple, int] = defaultdict(int)
    for ws, ep, status in Job.objects.values_list("endpoint__workspace__name", "endpoint__name", "status"):
        counts[(ws, ep, status)] += 1
    for (ws, ep, status), n in sorted(counts.items()):
        lines.append(f"studio_batch_jobs{_labels(workspace=ws, endpoint=ep, status=status)} {n}")
    return lines


@require_GET
def metrics(request):
    ok, status = _allowed(request)
    if not ok:
        message = ("Unauthorized: send Authorization: Bearer <STUDIO_METRICS_TOKEN>.\n" if status == 401 else
                   "Forbidden: set STUDIO_METRICS_TOKEN to scrape /metrics from another host or through a proxy.\n")
        response = HttpResponse(message, status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(snapshot(), content_type="text/plain; version=0.0.4; charset=utf-8")
