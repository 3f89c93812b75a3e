"""Mirror traffic: comparing a shadow deployment's answers with the live ones.

The gateway copies a share of requests to the shadow deployment after it has
answered the client, and keeps, for each copy, both statuses, both latencies
and whether the outputs agreed. Comparisons are buffered in memory and written
in batches by the gateway's background flush. `mirror_summary()` is the
aggregate the endpoint page and the API show (a plain database read)."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass

from django.db import close_old_connections

# Outputs agree when equal, numbers within this relative tolerance (float noise between runtimes).
REL_TOLERANCE = 1e-6
ABS_TOLERANCE = 1e-9


@dataclass
class Comparison:
    endpoint_id: int
    live_deployment: str
    shadow_deployment: str
    time: dt.datetime
    live_status: int
    shadow_status: int
    live_latency_ms: float
    shadow_latency_ms: float
    agreed: bool


def outputs_agree(live_status: int, live_body: bytes, shadow_status: int, shadow_body: bytes) -> bool:
    """Same status class and the same JSON output (numbers compared with a small tolerance)."""
    if live_status // 100 != shadow_status // 100:
        return False
    if live_body == shadow_body:
        return True
    try:
        return _same(json.loads(live_body), json.loads(shadow_body))
    except (ValueError, UnicodeDecodeError):
        return False


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def write_comparisons(comparisons: list[Comparison]) -> None:
    """Insert buffered comparisons (blocking; run in a thread). Rows of deleted endpoints are dropped."""
    from endpoints_app.models import Endpoint, MirrorComparison

    if not comparisons:
        return
    close_old_connections()
    existing = set(
        Endpoint.objects.filter(pk__in={c.endpoint_id for c in comparisons}).values_list("pk", flat=True)
    )
    MirrorComparison.objects.bulk_create(
        [
            MirrorComparison(
                endpoint_id=c.endpoint_id,
                live_deployment=c.live_deployment,
                shadow_deployment=c.shadow_deployment,
                time=c.time,
                live_status=c.live_status,
                shadow_status=c.shadow_status,
                live_latency_ms=c.live_latency_ms,
                shadow_latency_ms=c.shadow_latency_ms,
                agreed=c.agreed,
            )
            for c in comparisons
            if c.endpoint_id in existing
        ],
        batch_size=500,
    )


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
    from endpoints_app.models import MirrorComparison

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
