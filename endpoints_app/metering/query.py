"""Reading usage over any range, exactly and fast.

Counts live at four levels: UsageMinute rows (written by the gateway), and hourly, 6-hourly
and daily UsageRollup rows (written by the rollup task for everything before the rollup
cursor: whole days, whole 6-hour blocks, whole hours, and a partial row for the cursor's
own hour). A range
is cut into pieces so each piece is read from the coarsest level that covers it
exactly: whole days from day rows, hours from hour rows, the ragged edges and the few
minutes after the cursor from minute rows. Nothing is read twice and nothing is
skipped, so the sums equal the minute rows' sums."""

import gc
import warnings
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import numpy as np
import orjson
from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import CharField
from django.db.models.functions import Cast

from endpoints_app.metering.percentiles import BUCKETS
from endpoints_app.models import RollupCursor, UsageMinute, UsageRollup

MINUTE = 60
HOUR = 3600
SIX_HOURS = 6 * HOUR
DAY = 86400
INTERVALS: dict[str, int] = {"1m": MINUTE, "5m": 5 * MINUTE, "15m": 15 * MINUTE, "1h": HOUR, "6h": 6 * HOUR, "1d": DAY}
COUNTERS = ("requests", "status_2xx", "status_4xx", "status_5xx", "bytes_in", "bytes_out", "tokens_in", "tokens_out")
N = len(COUNTERS)


class Bucket(NamedTuple):
    """One bucket's sums for one (time, endpoint, deployment) key, as series() returns them."""

    requests: int
    status_2xx: int
    status_4xx: int
    status_5xx: int
    bytes_in: int
    bytes_out: int
    tokens_in: int
    tokens_out: int
    latency_ms_sum: float
    histogram: list[int] | None
    status_codes: dict[str, int]


assert Bucket._fields[:N] == COUNTERS


def floor_to(t: datetime, seconds: int) -> datetime:
    ts = int(t.timestamp())
    return datetime.fromtimestamp(ts - ts % seconds, UTC)


def ceil_to(t: datetime, seconds: int) -> datetime:
    floored = floor_to(t, seconds)
    return floored if floored == t else floored + timedelta(seconds=seconds)


def default_interval(start: datetime, end: datetime) -> str:
    """About 24-200 buckets, each read from the coarsest rows that fit it."""
    span = (end - start).total_seconds()
    if span <= 3 * HOUR:
        return "1m"
    if span <= 2 * DAY:
        return "1h"
    if span <= 8 * DAY:
        return "6h"
    return "1d"


def rolled_until() -> datetime | None:
    return RollupCursor.objects.filter(pk=1).values_list("rolled_until", flat=True).first()


@dataclass(frozen=True)
class Piece:
    source: str  # "minute", "hour", "6h" or "day" (a UsageRollup period)
    start: datetime
    end: datetime


def _minus(lo: datetime, hi: datetime, inner: tuple[datetime, datetime] | None) -> list[tuple[datetime, datetime]]:
    if inner is None:
        return [(lo, hi)] if lo < hi else []
    parts = [(lo, inner[0]), (inner[1], hi)]
    return [(a, b) for a, b in parts if a < b]


def plan(start: datetime, end: datetime, step: int | None, cursor: datetime | None) -> list[Piece]:
    """Cut [start, end) into pieces by level. `step` is the bucket size of the caller
    (None for totals): a level is used only if its rows fit whole into buckets. Rollup rows
    exist for everything before `cursor` (minute precision, see rollup.py)."""
    if start >= end:
        return []
    hours = None
    days = None
    if cursor is not None and (step is None or step % HOUR == 0):
        # Hour rows cover whole hours before the cursor, and the cursor's own hour up to the
        # cursor (a partial row): usable only if the range runs to the cursor or past it.
        lo = ceil_to(start, HOUR)
        hi = cursor if end >= cursor else floor_to(end, HOUR)
        if lo < hi:
            hours = (lo, hi)
            if step is None or step % DAY == 0:
                dlo, dhi = ceil_to(lo, DAY), floor_to(hi, DAY)
                if dlo < dhi:
                    days = (dlo, dhi)
    # 6-hour rows: whole blocks inside the hour range (a block's row is written once it is over).
    blocks = None
    if hours and (step is None or step % SIX_HOURS == 0):
        blo, bhi = ceil_to(hours[0], SIX_HOURS), floor_to(hours[1], SIX_HOURS)
        if blo < bhi:
            blocks = (blo, bhi)
    pieces = [Piece("minute", a, b) for a, b in _minus(start, end, hours)]
    if hours:
        pieces += [Piece("hour", a, b) for a, b in _minus(hours[0], hours[1], blocks or days)]
    if blocks:
        pieces += [Piece("6h", a, b) for a, b in _minus(blocks[0], blocks[1], days)]
    if days:
        pieces.append(Piece("day", *days))
    return pieces


def _queryset(piece: Piece, endpoint_ids: Iterable[int], deployment: str | None):
    if piece.source == "minute":
        qs = UsageMinute.objects.filter(minute__gte=piece.start, minute__lt=piece.end)
        time_field = "minute"
    else:
        qs = UsageRollup.objects.filter(period=piece.source, start__gte=piece.start, start__lt=piece.end)
        time_field = "start"
    qs = qs.filter(endpoint_id__in=list(endpoint_ids))
    if deployment is not None:
        qs = qs.filter(deployment=deployment)
    qs, time_field = as_text_on_sqlite(qs, time_field)
    return qs.order_by(), time_field


def as_text_on_sqlite(qs, time_field: str):
    """On SQLite, select the time as text: its driver otherwise parses every datetime with
    a regex (the largest cost of reading rows); epoch_seconds() parses each distinct text once."""
    if connections[qs.db].vendor != "sqlite":
        return qs, time_field
    return qs.annotate(time_text=Cast(time_field, output_field=CharField())), "time_text"


@dataclass
class Table:
    """Summed buckets as arrays: row g of each array belongs to keys[g]
    ((bucket_timestamp, endpoint_id, deployment), as in series())."""

    keys: list[tuple[int, int, str]]
    counts: np.ndarray  # (G, N) int64, columns as COUNTERS
    latency_sum: np.ndarray  # (G,) float64
    histograms: np.ndarray | None  # (G, BUCKETS) int64, or None without latency
    status_codes: list[dict[str, int]]  # requests per HTTP status code, {"200": n, ...}


@contextmanager
def gc_paused():
    """No cyclic garbage collection while a read builds its (acyclic) rows: tens of thousands
    of tuples would otherwise set off collections that walk every one of them, repeatedly."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def series_table(
    endpoint_ids: Iterable[int],
    start: datetime,
    end: datetime,
    step: int,
    deployment: str | None = None,
    by_deployment: bool = True,
    with_latency: bool = True,
) -> Table:
    """Buckets of `step` seconds (aligned to the epoch, so to UTC hours and days), summed
    column-wise with numpy: a range of 30 days of hour rows for 100 deployments is tens of
    thousands of rows, and adding them up one Python list at a time cost most of a second.
    Counters are exact int64 sums; latency sums are added in row order (np.add.at), as before."""
    endpoint_ids = list(endpoint_ids)
    index: dict[tuple[int, int, str], int] = {}
    counts = np.zeros((0, N), np.int64)
    latency = np.zeros(0, np.float64)
    histograms = np.zeros((0, BUCKETS), np.int64) if with_latency else None
    codes: list[dict[str, int]] = []
    columns = ["endpoint_id", "deployment", None, *COUNTERS, "latency_ms_sum", "status_codes"]
    if with_latency:
        columns.append("latency_histogram")
    bucket_of: dict = {}  # raw time value -> its bucket's epoch seconds; rows of one minute share it
    for piece in plan(start, end, step, rolled_until()):
        qs, time_field = _queryset(piece, endpoint_ids, deployment)
        columns[2] = time_field
        for rows in raw_chunks(qs.values_list(*columns), size=50_000):
            cols = list(zip(*rows, strict=True))
            for value in set(cols[2]):
                if value not in bucket_of:
                    ts = epoch_seconds(value)
                    bucket_of[value] = ts - ts % step
            if by_deployment:
                groups = [
                    index.setdefault((bucket_of[t], e, d), len(index))
                    for t, e, d in zip(cols[2], cols[0], cols[1], strict=True)
                ]
            else:
                groups = [index.setdefault((bucket_of[t], 0, ""), len(index)) for t in cols[2]]
            grow = len(index) - len(latency)
            decoded_codes = decode_values(cols[4 + N])
            row_counts = np.array(cols[3 : 3 + N], np.int64).T
            row_latency = np.array(cols[3 + N], np.float64)
            row_histograms = histogram_matrix(cols[-1]) if histograms is not None else None
            if grow == len(rows):
                # Every row opened a bucket of its own, in order (a rollup level read at its own
                # step): the rows' values are the buckets' sums as they are (+ 0.0 as np.add.at
                # into zeros would give).
                codes += [c or {} for c in decoded_codes]
                counts = np.concatenate([counts, row_counts])
                latency = np.concatenate([latency, row_latency + 0.0])
                if histograms is not None:
                    histograms = np.concatenate([histograms, row_histograms])
                continue
            codes += [{} for _ in range(grow)]
            for g, row_codes in zip(groups, decoded_codes, strict=True):
                if row_codes:
                    target = codes[g]
                    if not target:
                        # A bucket's first codes: the freshly decoded dict itself (most buckets
                        # of a rollup-level read have one row), the same as merging it into {}.
                        codes[g] = row_codes
                        continue
                    # Inline merge: JSON keys are strings already, and this runs once per row.
                    for code, n in row_codes.items():
                        target[code] = target.get(code, 0) + n
            if grow:
                counts = np.concatenate([counts, np.zeros((grow, N), np.int64)])
                latency = np.concatenate([latency, np.zeros(grow, np.float64)])
                if histograms is not None:
                    histograms = np.concatenate([histograms, np.zeros((grow, BUCKETS), np.int64)])
            where = np.array(groups, np.intp)
            np.add.at(counts, where, row_counts)
            np.add.at(latency, where, row_latency)
            if histograms is not None:
                np.add.at(histograms, where, row_histograms)
    return Table(list(index), counts, latency, histograms, codes)


def series(
    endpoint_ids: Iterable[int],
    start: datetime,
    end: datetime,
    step: int,
    deployment: str | None = None,
    by_deployment: bool = True,
    with_latency: bool = True,
) -> dict[tuple[int, int, str], Bucket]:
    """series_table() as a dict {(bucket_timestamp, endpoint_id, deployment): Bucket}. With
    by_deployment=False, endpoint_id is 0 and deployment is "" (all summed)."""
    table = series_table(endpoint_ids, start, end, step, deployment, by_deployment, with_latency)
    return table_to_dict(table)


def table_to_dict(table: Table) -> dict[tuple[int, int, str], Bucket]:
    hists = table.histograms.tolist() if table.histograms is not None else [None] * len(table.keys)
    return {
        key: Bucket(*counts, latency, histogram, codes)
        for key, counts, latency, histogram, codes in zip(
            table.keys, table.counts.tolist(), table.latency_sum.tolist(), hists, table.status_codes, strict=True
        )
    }


def all_text(values) -> bool:
    """Whether every value is JSON text (SQLite) rather than decoded JSON (PostgreSQL): the
    distinct types in one C-level pass, not an isinstance() call per row."""
    return set(map(type, values)) == {str}


def histogram_matrix(values) -> np.ndarray:
    """Latency histograms (JSON text from SQLite, lists from PostgreSQL) as an (n, BUCKETS)
    int64 array. The usual case, all full-length JSON texts, is parsed in one numpy call;
    anything else (empty or short histograms) is decoded one by one, shorter ones padded."""
    n = len(values)
    if n and all_text(values):
        text = ",".join(values)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flat = np.fromstring(text.replace("[", "").replace("]", ""), dtype=np.int64, sep=",")
        except ValueError:
            flat = None
        # Histograms are never longer than BUCKETS, so n * BUCKETS numbers means every one is full.
        if flat is not None and flat.size == n * BUCKETS:
            return flat.reshape(n, BUCKETS)
        lists = orjson.loads("[" + text + "]")
    else:
        lists = [orjson.loads(v) if isinstance(v, str) else v for v in values]
    out = np.zeros((n, BUCKETS), np.int64)
    for i, histogram in enumerate(lists):
        if histogram:
            histogram = histogram[:BUCKETS]
            out[i, : len(histogram)] = histogram
    return out


def raw_chunks(qs, size: int = 5000):
    """The query's rows as the database driver returns them, in chunks, without Django's
    per-value converters (which cost more than the rest of the loop over thousands of
    rows). Times come back as datetimes (or ISO text), histograms as lists (PostgreSQL
    jsonb) or JSON text (SQLite); the callers handle both."""
    try:
        sql, params = qs.query.sql_with_params()
    except EmptyResultSet:  # e.g. `id__in=[]`: a workspace without endpoints has no rows
        return
    with connections[qs.db].cursor() as cursor:
        cursor.execute(sql, params)
        while True:
            rows = cursor.fetchmany(size)
            if not rows:
                return
            yield rows


def decode_json_column(rows, column: int) -> list:
    """One JSON column of each row (JSON text on SQLite, decoded values on PostgreSQL) as
    Python values: text decoded in one call per chunk (see decode_values)."""
    return decode_values([row[column] for row in rows])


def decode_values(values) -> list:
    if values and all_text(values):
        return orjson.loads("[" + ",".join(values) + "]")
    return [orjson.loads(v) if isinstance(v, str) else v for v in values]


def epoch_seconds(value) -> int:
    """A stored time as epoch seconds. Django keeps UTC; SQLite hands it back naive (as a
    datetime, or "YYYY-MM-DD HH:MM:SS" text), which must not be read as local time."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int(value.timestamp())


def histogram_of(acc: Bucket) -> list[int]:
    return acc.histogram if acc.histogram is not None else [0] * BUCKETS
