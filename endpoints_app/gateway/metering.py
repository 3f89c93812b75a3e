"""Usage counting for the gateway: in memory on the hot path, flushed as deltas.

Each gateway worker keeps counters per (endpoint, deployment, minute). A flush
swaps the live dict for an empty one (on the event loop, so no request is
between the two) and writes the old one's deltas in a worker thread: one
transaction per row, the row locked, counters added with F() expressions. A
flush that fails merges its deltas back, so nothing is lost; a committed flush
is never replayed, so nothing is counted twice, however many workers run."""

from __future__ import annotations

import datetime as dt
import logging
import time

from django.db import IntegrityError, close_old_connections, transaction
from django.db.models import F

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS, bucket_index, merge_codes

log = logging.getLogger("studio.gateway.metering")

N_BUCKETS = len(LATENCY_BUCKETS_MS)
# Positions in a counter list.
REQUESTS, S2XX, S4XX, S5XX, BYTES_IN, BYTES_OUT, TOKENS_IN, TOKENS_OUT, LATENCY_SUM, HIST, CODES = range(11)
COUNTER_FIELDS = (
    "requests", "status_2xx", "status_4xx", "status_5xx", "bytes_in", "bytes_out", "tokens_in", "tokens_out",
)

Key = tuple[int, str, int]  # endpoint id, deployment name ("" when none was chosen), minute (Unix time // 60)


def _new_counters() -> list:
    # CODES: requests per HTTP status code ({status: count}; keys become strings in the JSON column).
    return [0, 0, 0, 0, 0, 0, 0, 0, 0.0, [0] * N_BUCKETS, {}]


class UsageCounters:
    def __init__(self) -> None:
        self.current: dict[Key, list] = {}

    def count(
        self,
        endpoint_id: int,
        deployment: str,
        status: int,
        latency_ms: float,
        bytes_in: int,
        bytes_out: int,
        tokens_in: int = 0,
        tokens_out: int = 0,
    ) -> None:
        key = (endpoint_id, deployment, int(time.time() // 60))
        c = self.current.get(key)
        if c is None:
            c = self.current[key] = _new_counters()
        c[REQUESTS] += 1
        if status < 300:
            c[S2XX] += 1
        elif status >= 500:
            c[S5XX] += 1
        elif status >= 400:
            c[S4XX] += 1
        c[BYTES_IN] += bytes_in
        c[BYTES_OUT] += bytes_out
        c[TOKENS_IN] += tokens_in
        c[TOKENS_OUT] += tokens_out
        c[LATENCY_SUM] += latency_ms
        c[HIST][bucket_index(latency_ms)] += 1
        codes = c[CODES]
        codes[status] = codes.get(status, 0) + 1

    def take(self) -> dict[Key, list]:
        """The deltas so far, leaving empty counters (call on the event loop)."""
        taken, self.current = self.current, {}
        return taken

    def give_back(self, deltas: dict[Key, list]) -> None:
        """Merge deltas that could not be written into the live counters (call on the event loop)."""
        for key, delta in deltas.items():
            c = self.current.get(key)
            if c is None:
                self.current[key] = delta
                continue
            for i in range(LATENCY_SUM + 1):
                c[i] += delta[i]
            c[HIST] = [a + b for a, b in zip(c[HIST], delta[HIST], strict=True)]
            codes = c[CODES]
            for code, count in delta[CODES].items():
                codes[code] = codes.get(code, 0) + count


def write_deltas(deltas: dict[Key, list]) -> dict[Key, list]:
    """Add deltas to UsageMinute rows (blocking; run in a thread). Returns the deltas that failed."""
    from endpoints_app.models import UsageMinute

    close_old_connections()
    failed: dict[Key, list] = {}
    for key, delta in deltas.items():
        endpoint_id, deployment, minute = key
        when = dt.datetime.fromtimestamp(minute * 60, tz=dt.UTC)
        try:
            _add_to_row(UsageMinute, endpoint_id, deployment, when, delta)
        except IntegrityError:
            # The endpoint was deleted meanwhile: its usage rows went with it.
            log.info("usage for deleted endpoint %s dropped", endpoint_id)
        except Exception:
            log.exception("usage flush failed; will retry")
            failed[key] = delta
    return failed


def _add_to_row(UsageMinute, endpoint_id: int, deployment: str, when: dt.datetime, delta: list) -> None:
    lookup = {"endpoint_id": endpoint_id, "deployment": deployment, "minute": when}
    for attempt in range(2):
        try:
            with transaction.atomic():
                row = (
                    UsageMinute.objects.select_for_update()
                    .filter(**lookup)
                    .values("pk", "latency_histogram", "status_codes")
                    .first()
                )
                if row is None:
                    # A unique (endpoint, deployment, minute) constraint makes a concurrent
                    # create fail here; the retry then finds the row and adds to it.
                    with transaction.atomic():
                        UsageMinute.objects.create(
                            **lookup,
                            **{name: delta[i] for i, name in enumerate(COUNTER_FIELDS)},
                            latency_ms_sum=delta[LATENCY_SUM],
                            latency_histogram=list(delta[HIST]),
                            status_codes=merge_codes({}, delta[CODES]),
                        )
                    return
                histogram = list(row["latency_histogram"] or [])
                histogram += [0] * (N_BUCKETS - len(histogram))
                histogram = [a + b for a, b in zip(histogram, delta[HIST], strict=False)]
                # Like the histogram: merged under the row lock, so concurrent flushes add up exactly.
                codes = merge_codes(dict(row["status_codes"] or {}), delta[CODES])
                UsageMinute.objects.filter(pk=row["pk"]).update(
                    **{name: F(name) + delta[i] for i, name in enumerate(COUNTER_FIELDS)},
                    latency_ms_sum=F("latency_ms_sum") + delta[LATENCY_SUM],
                    latency_histogram=histogram,
                    status_codes=codes,
                )
                return
        except IntegrityError:
            if attempt == 1:
                raise
            # Either another worker created the row first (retry adds to it) or the endpoint is gone.
            from endpoints_app.models import Endpoint

            if not Endpoint.all_objects.filter(pk=endpoint_id).exists():
                raise
