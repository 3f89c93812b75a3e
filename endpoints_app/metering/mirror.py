"""The mirror comparisons' aggregate that the endpoint page and the API show: a plain database
read of what the gateway recorded (gateway/mirror.py copies requests to the shadow deployment and
writes MirrorComparison rows)."""

from __future__ import annotations

import datetime as dt
import math

from endpoints_app.models import MirrorComparison


def _percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def mirror_summary(endpoint, since: dt.datetime | None = None) -> dict:
    """Aggregate mirror comparisons of an endpoint (an Endpoint or its id), optionally since a time.

    Returns {"requests", "agreed", "agreement_rate", "shadow_errors", "live_latency_ms_p50",
    "shadow_latency_ms_p50", "latency_diff_ms_p50", "latency_diff_ms_mean", "deployments"}; rates and
    latencies are None when there is nothing to compare. The latency difference is shadow minus live."""
    endpoint_id = getattr(endpoint, "pk", endpoint)
    rows = MirrorComparison.objects.filter(endpoint_id=endpoint_id)
    if since is not None:
        rows = rows.filter(time__gte=since)
    values = list(
        rows.values_list("live_deployment", "shadow_deployment", "shadow_status", "live_latency_ms",
                         "shadow_latency_ms", "agreed")
    )
    total = len(values)
    agreed = sum(1 for v in values if v[5])
    diffs = sorted(v[4] - v[3] for v in values)
    live = sorted(v[3] for v in values)
    shadow = sorted(v[4] for v in values)
    pairs = sorted({(v[0], v[1]) for v in values})
    return {
        "requests": total,
        "agreed": agreed,
        "agreement_rate": (agreed / total) if total else None,
        "shadow_errors": sum(1 for v in values if v[2] >= 500),
        "live_latency_ms_p50": _percentile(live, 0.5),
        "shadow_latency_ms_p50": _percentile(shadow, 0.5),
        "latency_diff_ms_p50": _percentile(diffs, 0.5),
        "latency_diff_ms_mean": (sum(diffs) / total) if total else None,
        "deployments": [{"live": a, "shadow": b} for a, b in pairs],
    }
