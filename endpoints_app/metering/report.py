"""Usage reports: totals and series for the usage API, the Monitoring tab and the Usage page."""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

import numpy as np
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from endpoints_app.errors import InvalidInput
from endpoints_app.metering import costs, query
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


def round_column(values: np.ndarray, digits: int) -> list[float | None]:
    """[round(v, digits) for v in values], NaN as None, without a Python round() per value.
    numpy's rint(v * 10**digits) / 10**digits is the same number as round() (both end in the
    double nearest to k / 10**digits) unless v * 10**digits lies within rounding error of a
    half, where the two may pick different k, or is too large for its units to be exact:
    those few values go through round() itself."""
    scale = 10.0**digits
    scaled = values * scale
    out = (np.rint(scaled) / scale).tolist()
    with np.errstate(invalid="ignore"):
        near_half = np.abs(scaled - np.floor(scaled) - 0.5) <= 1e-9 * np.maximum(1.0, np.abs(scaled))
        near_half |= np.abs(scaled) >= 2.0**52
    for i in np.flatnonzero(near_half).tolist():
        out[i] = round(float(values[i]), digits)
    for i in np.flatnonzero(np.isnan(values)).tolist():
        out[i] = None
    return out


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
    serverless_ids = {e.pk for e in endpoints if e.kind == Endpoint.Kind.SERVERLESS}
    table = query.series_table(ids, window.start, window.end, window.step, deployment)
    # Token costs read tokens only (counters without histograms), of serverless endpoints only.
    token_groups = [g for g, key in enumerate(table.keys) if key[1] in serverless_ids]
    token_rows = {table.keys[g]: query.Bucket(*counts, 0.0, None, {})
                  for g, counts in zip(token_groups, table.counts[token_groups].tolist(), strict=True)}
    lines = costs.cost_lines(
        endpoints, window.start, window.end, window.step, deployment, now, series_rows=token_rows
    )
    instance_hours = sum((line.instance_hours for line in lines), Decimal(0))
    cost = sum((line.cost for line in lines), Decimal(0))
    # (instance-hours, cost) per series key: most keys have one line, taken as it is.
    cost_by_key: dict[tuple, tuple[Decimal, Decimal]] = {}
    for line in lines:
        key = (line.bucket, line.endpoint_id, line.deployment)
        entry = cost_by_key.get(key)
        if entry is None:
            cost_by_key[key] = (line.instance_hours, line.cost)
        else:
            cost_by_key[key] = (entry[0] + line.instance_hours, entry[1] + line.cost)
    # Totals are the sums of the series' buckets: the same rows, read once.
    column_sums = table.counts.sum(axis=0).tolist() if table.keys else [0] * query.N
    counts = dict(zip(query.COUNTERS, column_sums, strict=True))
    all_codes: dict[str, int] = {}
    for codes in table.status_codes:
        # Inline merge_codes: series_table's codes have string keys already.
        for code, n in codes.items():
            all_codes[code] = all_codes.get(code, 0) + n

    # The series: one point per key, its values gathered as columns (numpy, list comprehensions)
    # and zipped into dicts, since per-point Python work is what a 12,000-point series costs.
    # Keys with a cost but no usage row point at an extra all-zero row G.
    G = len(table.keys)
    position = {key: g for g, key in enumerate(table.keys)}
    order = sorted((key[0], names[key[1]], key[2], key[1]) for key in set(position) | set(cost_by_key))
    rows = np.array([position.get((bucket, endpoint_id, dep), G) for bucket, _, dep, endpoint_id in order], np.intp)
    requests = table.counts[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        average = np.where(requests > 0, table.latency_sum / requests, np.nan)
    quantile_arrays = quantile_columns(table.histograms, as_arrays=True) if G else [np.zeros(0)] * 3
    latency = [round_column(np.append(values, np.nan)[rows], 3) for values in (average, *quantile_arrays)]
    counters = np.concatenate([table.counts, np.zeros((1, query.N), np.int64)])[rows].T.tolist()
    codes_by_row = [*(sorted_codes(codes) for codes in table.status_codes), {}]
    rounded: dict[tuple[Decimal, Decimal], tuple[float, float]] = {}  # few distinct amounts
    for amount in cost_by_key.values():
        if amount not in rounded:
            rounded[amount] = (round(float(amount[0]), 6), round(float(amount[1]), 6))
    no_money = (0.0, 0.0)
    money = [rounded[cost_by_key[(bucket, endpoint_id, dep)]] if (bucket, endpoint_id, dep) in cost_by_key
             else no_money for bucket, _, dep, endpoint_id in order]
    times = {bucket: iso(bucket) for bucket in {key[0] for key in order}}
    columns = [
        [times[key[0]] for key in order],
        [key[1] for key in order],
        [key[2] for key in order],
        *counters,
        [codes_by_row[g] for g in rows.tolist()],
        *latency,
        [m[0] for m in money],
        [m[1] for m in money],
    ]
    fields = ("time", "endpoint", "deployment", *query.COUNTERS, "status_codes", "latency_avg_ms",
              "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "instance_hours", "cost")
    # Serverless endpoints' points name the model right after the deployment.
    with_model = (*fields[:3], "model", *fields[3:])
    series = [
        dict(zip(fields, values, strict=False)) if key[3] not in serverless_model  # lengths match by construction
        else dict(zip(with_model, (*values[:3], serverless_model[key[3]], *values[3:]), strict=False))
        for key, values in zip(order, zip(*columns, strict=True), strict=True)
    ]
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
