"""Mirror traffic: comparing a shadow deployment's answers with the live ones.

The gateway copies a share of requests to the shadow deployment after it has
answered the client, and keeps, for each copy, both statuses, both latencies
and whether the outputs agreed. Comparisons are buffered in memory and written
in batches by the gateway's background flush. Their aggregate, which the endpoint
page and the API show, is read by metering/mirror.py."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from django.db import close_old_connections

from endpoints_app import jsonbody

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
        return _same(jsonbody.loads(live_body), jsonbody.loads(shadow_body))
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
