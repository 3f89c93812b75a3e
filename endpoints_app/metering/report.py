"""Usage reports: totals and series for the usage API, the Monitoring tab and the Usage page."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from endpoints_app.errors import InvalidInput
from endpoints_app.metering import costs, query
from endpoints_app.metering.buckets import merge_codes
from endpoints_app.metering.percentiles import quantile_columns
from endpoints_app.models import Endpoint

MAX_BUCKETS = 5000


@dataclass(frozen=True)
class Window:
    start: datetime
    end: datetime
    interval: str

    @property
    def step(self) -> int:
        return query.INTERVALS[self.interval]


def parse_time(value: str, field: str) -> datetime:
    value = value.strip()
    try:
        # A "+01:00" offset arrives as " 01:00" when the caller did not URL-encode it.
        parsed = parse_datetime(value) or parse_datetime(value.replace(" ", "+"))
    except ValueError:
        parsed = None
    if parsed is None:
        try:
            day = parse_date(value)
        except ValueError:
            day = None
        if day is None:
            raise InvalidInput(f"{field} must be an ISO 8601 date or date-time; got {value!r}.", field=field)
        parsed = datetime.combine(day, time.min)
    if timezone.is_naive(parsed):
        parsed = parsed.replace(tzinfo=UTC)
    parsed = parsed.astimezone(UTC)
    if not 1970 <= parsed.year <= 2999:
        raise InvalidInput(f"{field} must be between 1970 and 2999.", field=field)
    return parsed


def parse_window(params, now: datetime | None = None, default_span: timedelta = timedelta(hours=24)) -> Window:
    """from/to/interval from query parameters; `to` defaults to now, `from` to `to` - default_span."""
    now = now or timezone.now()
    end = parse_time(params["to"], "to") if params.get("to") else now
    start = parse_time(params["from"], "from") if params.get("from") else end - default_span
    if start >= end:
        raise InvalidInput("from must be before to.", field="from")
    interval = params.get("interval") or query.default_interval(start, end)
    if interval not in query.INTERVALS:
        choices = ", ".join(query.INTERVALS)
        raise InvalidInput(f"interval must be one of {choices}; got {interval!r}.", field="interval")
    if (end - start).total_seconds() / query.INTERVALS[interval] > MAX_BUCKETS:
        raise InvalidInput(
            f"That range has more than {MAX_BUCKETS} {interval} buckets; shorten it or use a longer interval.",
            field="interval",
        )
    return Window(start, end, interval)


def iso(ts: int | datetime) -> str:
    if isinstance(ts, int):
        ts = datetime.fromtimestamp(ts, UTC)
    return ts.isoformat().replace("+00:00", "Z")


def sorted_codes(codes: dict[str, int]) -> dict[str, int]:
    return dict(sorted(codes.items())) if len(codes) > 1 else codes


def usage_report(
    endpoints: Iterable[Endpoint], window: Window, deployment: str | None = None, now: datetime | None = None
) -> dict:
    endpoints = list(endpoints)
    ids = [e.pk for e in endpoints]
    names = {e.pk: e.name for e in endpoints}
    # Serverless endpoints name their model in the series (what their tokens are priced by).
    serverless_model = {
        e.pk: e.model.name for e in endpoints if e.kind == Endpoint.Kind.SERVERLESS and e.model_id is not None
    }
    table = query.series_table(ids, window.start, window.end, window.step, deployment)
    # Token costs read tokens only: counters without histograms.
    token_rows = {key: query.Bucket(*counts, 0.0, None, {})
                  for key, counts in zip(table.keys, table.counts.tolist(), strict=True)}
    lines = costs.cost_lines(
        endpoints, window.start, window.end, window.step, deployment, now, series_rows=token_rows
    )
    instance_hours = sum((line.instance_hours for line in lines), Decimal(0))
    cost = sum((line.cost for line in lines), Decimal(0))
    cost_by_key: dict[tuple, list] = defaultdict(lambda: [Decimal(0), Decimal(0)])
    for line in lines:
        entry = cost_by_key[(line.bucket, line.endpoint_id, line.deployment)]
        entry[0] += line.instance_hours
        entry[1] += line.cost
    # Totals are the sums of the series' buckets: the same rows, read once.
    column_sums = table.counts.sum(axis=0).tolist() if table.keys else [0] * query.N
    counts = dict(zip(query.COUNTERS, column_sums, strict=True))
    all_codes: dict[str, int] = {}
    for codes in table.status_codes:
        merge_codes(all_codes, codes)
    position = {key: g for g, key in enumerate(table.keys)}
    counters = table.counts.tolist()
    latency_sums = table.latency_sum.tolist()
    p50s, p90s, p99s = quantile_columns(table.histograms) if table.keys else ([], [], [])
    series = []
    times: dict[int, str] = {}
    zeros = [0] * query.N
    for key in sorted(set(position) | set(cost_by_key), key=lambda k: (k[0], names.get(k[1], ""), k[2])):
        bucket, endpoint_id, dep = key
        g = position.get(key)
        time_text = times.get(bucket)
        if time_text is None:
            time_text = times[bucket] = iso(bucket)
        item = {"time": time_text, "endpoint": names[endpoint_id], "deployment": dep}
        if endpoint_id in serverless_model:
            item["model"] = serverless_model[endpoint_id]
        if g is None:
            item.update(zip(query.COUNTERS, zeros, strict=True))
            item["status_codes"] = {}
            item.update(latency_avg_ms=None, latency_p50_ms=None, latency_p90_ms=None, latency_p99_ms=None)
        else:
            row = counters[g]
            item.update(zip(query.COUNTERS, row, strict=True))
            item["status_codes"] = sorted_codes(table.status_codes[g])
            requests = row[0]
            p50, p90, p99 = p50s[g], p90s[g], p99s[g]
            item["latency_avg_ms"] = round(latency_sums[g] / requests, 3) if requests else None
            item["latency_p50_ms"] = None if p50 is None else round(p50, 3)
            item["latency_p90_ms"] = None if p90 is None else round(p90, 3)
            item["latency_p99_ms"] = None if p99 is None else round(p99, 3)
        money = cost_by_key.get(key)
        item["instance_hours"] = round(float(money[0]), 6) if money else 0.0
        item["cost"] = round(float(money[1]), 6) if money else 0.0
        series.append(item)
    return {
        "from": iso(window.start),
        "to": iso(window.end),
        "interval": window.interval,
        "totals": {
            "requests": counts["requests"],
            "status_2xx": counts["status_2xx"],
            "status_4xx": counts["status_4xx"],
            "status_5xx": counts["status_5xx"],
            "status_codes": sorted_codes(all_codes),
            "bytes_in": counts["bytes_in"],
            "bytes_out": counts["bytes_out"],
            "tokens_in": counts["tokens_in"],
            "tokens_out": counts["tokens_out"],
            "instance_hours": float(round(instance_hours, 6)),
            "cost": float(round(cost, 6)),  # as the series: pages round for display
        },
        "series": series,
    }
