"""Monitoring charts, built server-side with plotly.graph_objects and drawn in the
browser by the vendored plotly.js from each figure's JSON."""

import json
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

import plotly.graph_objects as go

from endpoints_app.metering import costs, query
from endpoints_app.metering.buckets import merge_codes
from endpoints_app.metering.percentiles import merge, p50_p90_p99
from endpoints_app.models import CatalogModel, Endpoint, Instance, InstanceSample, MirrorComparison

RANGES: dict[str, tuple[timedelta, str]] = {
    "15m": (timedelta(minutes=15), "1m"),
    "1h": (timedelta(hours=1), "1m"),
    "24h": (timedelta(hours=24), "15m"),
    "7d": (timedelta(days=7), "1h"),
    "30d": (timedelta(days=30), "6h"),
}
CLIENT_ERROR_COLORS = ["#d97706", "#b45309", "#f59e0b", "#92400e", "#ea580c"]
SERVER_ERROR_COLORS = ["#dc2626", "#991b1b", "#ef4444", "#7f1d1d", "#be123c"]
PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#dc2626", "#0891b2", "#db2777", "#65a30d", "#7c3aed"]
# Models whose answers carry token counts; for the others a tokens chart can only be empty.
TOKEN_TASKS = {CatalogModel.Task.CHAT_COMPLETION, CatalogModel.Task.TEXT_GENERATION, CatalogModel.Task.EMBEDDINGS}
YOUNG_ENDPOINT = timedelta(hours=1)


def default_range(endpoint: Endpoint, now: datetime) -> str:
    """The last 15 minutes while an endpoint is younger than an hour (its data would be a sliver
    of the 1 h range), else the last hour."""
    return "15m" if endpoint.created_at and now - endpoint.created_at < YOUNG_ENDPOINT else "1h"


def has_tokens(endpoint: Endpoint) -> bool:
    return endpoint.deployments.filter(model__task__in=TOKEN_TASKS).exists() or endpoint.kind == "serverless"


class Figure:
    """A plotly figure as its JSON parts. Layouts are built and validated by
    plotly.graph_objects (once per chart kind, cached); traces are plain plotly trace
    dicts. Building whole go.Figure objects validates every point and costs about 100 ms
    per chart, more than everything else the Monitoring tab does."""

    def __init__(self, layout: dict) -> None:
        self.layout = layout
        self.data: list[dict] = []

    def add_trace(self, trace: dict) -> None:
        self.data.append(trace)

    def update_xaxes(self, **axis) -> None:
        self.layout["xaxis"] = {**self.layout.get("xaxis", {}), **axis}

    def add_annotation(self, **annotation) -> None:
        self.layout["annotations"] = [*self.layout.get("annotations", []), annotation]

    def to_dict(self) -> dict:
        return {"data": self.data, "layout": self.layout}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), default=_json_default)


def _json_default(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@lru_cache(maxsize=64)
def _base_layout(title: str, y_title: str, extra: str) -> dict:
    layout = go.Layout(
        title={"text": title, "font": {"size": 14}},
        margin={"l": 55, "r": 15, "t": 40, "b": 40},
        height=280,
        legend={"orientation": "h", "y": -0.18},
        yaxis={"title": {"text": y_title}, "rangemode": "tozero"},
        template="plotly_white",
        **json.loads(extra),
    )
    return layout.to_plotly_json()


def new_figure(title: str, y_title: str, **extra) -> Figure:
    # A shallow copy: per-request keys (xaxis, annotations) are replaced, never mutated in place.
    return Figure(dict(_base_layout(title, y_title, json.dumps(extra, sort_keys=True))))


def scatter(**trace) -> dict:
    return {"type": "scatter", **trace}


def bar(**trace) -> dict:
    return {"type": "bar", **trace}


LATENCY_COLORS = ["#2563eb", "#d97706", "#dc2626"]


@dataclass
class BucketTotals:
    """A bucket's counts summed over deployments."""

    status_4xx: int = 0
    status_5xx: int = 0
    tokens_in: int = 0
    tokens_out: int = 0

    def add(self, acc: query.Bucket) -> None:
        self.status_4xx += acc.status_4xx
        self.status_5xx += acc.status_5xx
        self.tokens_in += acc.tokens_in
        self.tokens_out += acc.tokens_out


def _times(buckets: list[int]) -> list[str]:
    return [datetime.fromtimestamp(b, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for b in buckets]


def errors_figure(rows: dict, buckets: list[int], x: list[str], totals_4xx: list[int], totals_5xx: list[int]) -> Figure:
    """One stacked bar trace per 4xx and 5xx status code. Errors counted before per-code
    counts existed (or by class only) show as "4xx (code not recorded)" and the like, so
    the bars still add up to the class totals."""
    codes_by_bucket: dict[int, dict[str, int]] = defaultdict(dict)
    for (b, _, _), acc in rows.items():
        merge_codes(codes_by_bucket[b], acc.status_codes)
    error_codes = sorted({code for codes in codes_by_bucket.values() for code in codes if code >= "400"})
    # The legend names the code even when there is one (plotly hides a lone trace's legend).
    fig = new_figure("Errors by status code", "requests", barmode="stack", showlegend=True)
    for i, code in enumerate(error_codes):
        shades = CLIENT_ERROR_COLORS if code < "500" else SERVER_ERROR_COLORS
        y = [codes_by_bucket[b].get(code, 0) if b in codes_by_bucket else 0 for b in buckets]
        fig.add_trace(bar(x=x, y=y, name=code, marker={"color": shades[i % len(shades)]}))
    for label, totals, lo, hi, color in (("4xx", totals_4xx, "400", "500", "#fbbf24"),
                                         ("5xx", totals_5xx, "500", "600", "#f87171")):
        unknown = []
        for b, total in zip(buckets, totals, strict=True):
            known = sum(n for code, n in codes_by_bucket.get(b, {}).items() if lo <= code < hi)
            unknown.append(max(total - known, 0))
        if any(unknown):
            fig.add_trace(bar(x=x, y=unknown, name=f"{label} (code not recorded)", marker={"color": color}))
    return fig


def monitoring_figures(endpoint: Endpoint, range_key: str, now: datetime) -> dict:
    span, interval = RANGES[range_key]
    step = query.INTERVALS[interval]
    # Whole buckets: the first one starts at a boundary, the last one is the current, partial one.
    start = query.floor_to(now - span, step) + timedelta(seconds=step)
    end = now
    # + 1: within the first second of a minute the current bucket starts at int(now) itself.
    buckets = list(range(int(start.timestamp()), int(end.timestamp()) + 1, step))
    rows = query.series([endpoint.pk], start, end, step)
    deployments = sorted({dep for (_, _, dep) in rows} | set(endpoint.traffic) | set(endpoint.mirror_traffic))
    per_minute = step / 60
    colors = {dep: PALETTE[i % len(PALETTE)] for i, dep in enumerate(deployments)}
    x = _times(buckets)

    def requests(dep: str, scale: float | None = None) -> list[float]:
        out = []
        for b in buckets:
            acc = rows.get((b, endpoint.pk, dep))
            value = acc.requests if acc else 0
            out.append(value / scale if scale else value)
        return out

    # A serverless endpoint has no deployments or instances of its own (a platform pool serves it):
    # no traffic split, instance or per-deployment charts for it.
    serverless = endpoint.kind == Endpoint.Kind.SERVERLESS
    figures: dict[str, Figure] = {}
    fig = new_figure("Requests per minute" if serverless else "Requests per minute, by deployment", "requests/min")
    for dep in deployments:
        label = dep or (endpoint.name if serverless else "(none)")
        fig.add_trace(scatter(x=x, y=requests(dep, per_minute), name=label, stackgroup="requests",
                                 mode="lines", line={"color": colors[dep], "width": 1}))
    figures["requests"] = fig

    by_bucket: dict[int, list] = defaultdict(list)
    sums: dict[int, BucketTotals] = defaultdict(BucketTotals)  # all deployments of a bucket
    for (b, _, _), acc in rows.items():
        by_bucket[b].append(acc.histogram)
        sums[b].add(acc)
    quantiles = {b: p50_p90_p99(merge(h)) for b, h in by_bucket.items()}
    fig = new_figure("Latency", "ms")
    # Lines through the buckets that had requests (a bucket without any has no latency to draw).
    latency_x = [t for b, t in zip(buckets, x, strict=True) if b in quantiles]
    for i, label in enumerate(("p50", "p90", "p99")):
        fig.add_trace(scatter(x=latency_x, y=[quantiles[b][i] for b in buckets if b in quantiles], name=label,
                              mode="lines", line={"color": LATENCY_COLORS[i], "width": 2}))
    figures["latency"] = fig

    totals_4xx = [sums[b].status_4xx if b in sums else 0 for b in buckets]
    totals_5xx = [sums[b].status_5xx if b in sums else 0 for b in buckets]
    figures["errors"] = errors_figure(rows, buckets, x, totals_4xx, totals_5xx)

    requests_by_dep = {dep: sum(requests(dep)) for dep in deployments}
    live = [d for d in deployments if d not in endpoint.mirror_traffic]
    live_total = sum(requests_by_dep[d] for d in live)
    fig = new_figure("Traffic share: actual against configured (mirror as % of live)", "%", barmode="group")
    fig.add_trace(bar(x=deployments, y=[endpoint.traffic.get(d, 0) or endpoint.mirror_traffic.get(d, 0)
                                           for d in deployments], name="configured %", marker={"color": "#94a3b8"}))
    fig.add_trace(bar(x=deployments, y=[round(100 * requests_by_dep[d] / live_total, 2) if live_total else 0
                                           for d in deployments], name="actual %", marker={"color": "#2563eb"}))
    if not serverless:
        fig.layout["xaxis"] = {"type": "category", "autorange": True}
        figures["traffic"] = fig

    tin = [sums[b].tokens_in if b in sums else 0 for b in buckets]
    tout = [sums[b].tokens_out if b in sums else 0 for b in buckets]
    if any(tin) or any(tout) or has_tokens(endpoint):
        fig = new_figure("Tokens", "tokens", barmode="stack")
        fig.add_trace(bar(x=x, y=tin, name="tokens in", marker={"color": "#0891b2"}))
        fig.add_trace(bar(x=x, y=tout, name="tokens out", marker={"color": "#9333ea"}))
        figures["tokens"] = fig

    lines = costs.cost_lines([endpoint], start, end, step, now=now, series_rows=rows)
    cost_by = defaultdict(Decimal)
    for line in lines:
        cost_by[(line.bucket, line.deployment)] += line.cost
    cost_deps = sorted({d for (_, d) in cost_by})
    fig = new_figure("Cost", "USD", barmode="stack")
    for dep in cost_deps:
        fig.add_trace(bar(x=x, y=[float(cost_by.get((b, dep), 0)) for b in buckets], name=dep or "(none)",
                             marker={"color": colors.get(dep, "#64748b")}))
    figures["cost"] = fig

    samples = defaultdict(list)
    qs = (InstanceSample.objects.filter(instance__deployment__endpoint=endpoint, time__gte=start, time__lt=end)
          .values_list("instance__name", "time", "cpu_percent", "memory_mb").order_by("time"))
    for name, when, cpu, mem in qs:
        samples[name].append((when, cpu, mem))
    cpu_fig = new_figure("Instance CPU", "% of one core")
    mem_fig = new_figure("Instance memory", "MB")
    for i, (name, points) in enumerate(sorted(samples.items())):
        color = PALETTE[i % len(PALETTE)]
        cpu_fig.add_trace(scatter(x=[p[0] for p in points], y=[p[1] for p in points], name=name, mode="lines",
                                     line={"color": color}))
        mem_fig.add_trace(scatter(x=[p[0] for p in points], y=[p[2] for p in points], name=name, mode="lines",
                                     line={"color": color}))
    if not serverless:
        figures["cpu"] = cpu_fig
        figures["memory"] = mem_fig

    for key, fig in figures.items():
        if key != "traffic":
            fig.update_xaxes(range=[start.isoformat(), end.isoformat()], type="date")
        if not fig.data:
            fig.add_annotation(text="No data in this range", showarrow=False, xref="paper", yref="paper",
                               x=0.5, y=0.5, font={"color": "#5f6b7a"})

    total_requests = sum(requests_by_dep.values())
    total_cost = costs.round_cents(sum((line.cost for line in lines), Decimal(0)))
    all_hist = merge(acc.histogram for acc in rows.values())
    mirror = MirrorComparison.objects.filter(endpoint=endpoint, time__gte=start, time__lt=end)
    mirror_total = mirror.count()
    mirror_agreed = mirror.filter(agreed=True).count() if mirror_total else 0
    return {
        "figures": figures,
        "start": start,
        "end": end,
        "interval": interval,
        "summary": {
            "requests": total_requests,
            "errors_4xx": sum(totals_4xx),
            "errors_5xx": sum(totals_5xx),
            "tokens_in": sum(tin),
            "tokens_out": sum(tout),
            "cost": total_cost,
            "p50": p50_p90_p99(all_hist)[0],
            "p99": p50_p90_p99(all_hist)[2],
            "by_deployment": [
                {"name": d, "requests": requests_by_dep[d], "configured": endpoint.traffic.get(d, 0),
                 "mirror": endpoint.mirror_traffic.get(d, 0),
                 "actual": round(100 * requests_by_dep[d] / live_total, 1) if live_total else 0}
                for d in ([] if serverless else deployments)
            ],
            "mirror_total": mirror_total,
            "mirror_agreement": round(100 * mirror_agreed / mirror_total, 1) if mirror_total else None,
            "instances": Instance.objects.filter(deployment__endpoint=endpoint).exclude(state="Stopped").count(),
        },
    }
