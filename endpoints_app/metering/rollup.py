"""Rollup: UsageMinute rows -> hourly, 6-hourly and daily UsageRollup rows.

Level-triggered and idempotent: every run recomputes the hours from the cursor's hour up
to the last minute that ended more than GRACE ago (so the gateway's flushes for it are
in), replaces their rows, and moves the cursor there. 6-hour blocks and days are recomputed
from hour rows once they end before the cursor. Running it twice, or in two workers at once,
gives the same rows (the cursor row is locked while a chunk is written)."""

from datetime import UTC, datetime, timedelta

from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from endpoints_app.metering.buckets import merge_codes
from endpoints_app.metering.percentiles import add_into, empty_histogram
from endpoints_app.metering.query import (
    COUNTERS,
    DAY,
    HOUR,
    MINUTE,
    SIX_HOURS,
    N,
    as_text_on_sqlite,
    decode_json_column,
    epoch_seconds,
    floor_to,
    raw_chunks,
)
from endpoints_app.models import RollupCursor, UsageMinute, UsageRollup

# Longer than the gateway's flush interval, so an hour is complete when it is rolled up.
GRACE = timedelta(minutes=3)
# One transaction per chunk, so a long catch-up never holds the database for long.
CHUNK = timedelta(hours=6)
RECHECK = timedelta(hours=2)


def _aggregate(qs, period_seconds: int) -> dict[tuple[int, str, int], list]:
    """Sum rows of `qs` (values_list: time, endpoint_id, deployment, *COUNTERS, latency_ms_sum,
    latency_histogram, status_codes) per endpoint, deployment and period."""
    out: dict[tuple[int, str, int], list] = {}
    stamps: dict = {}
    for rows in raw_chunks(qs):
        histograms = decode_json_column(rows, -2)
        codes = decode_json_column(rows, -1)
        for index, row in enumerate(rows):
            ts = stamps.get(row[0])
            if ts is None:
                ts = stamps[row[0]] = epoch_seconds(row[0])
            key = (row[1], row[2], ts - ts % period_seconds)
            acc = out.get(key)
            if acc is None:
                acc = out[key] = [0] * N + [0.0, empty_histogram(), {}]
            for i in range(N + 1):
                acc[i] += row[3 + i]
            add_into(acc[N + 1], histograms[index])
            if codes[index]:
                merge_codes(acc[N + 2], codes[index])
    return out


def _write(period: str, start: datetime, end: datetime, aggregated: dict) -> int:
    UsageRollup.objects.filter(period=period, start__gte=start, start__lt=end).delete()
    rows = [
        UsageRollup(
            endpoint_id=endpoint_id,
            deployment=deployment,
            period=period,
            start=datetime.fromtimestamp(ts, UTC),
            latency_ms_sum=acc[N],
            latency_histogram=acc[N + 1],
            status_codes=acc[N + 2],
            **{name: acc[i] for i, name in enumerate(COUNTERS)},
        )
        for (endpoint_id, deployment, ts), acc in aggregated.items()
    ]
    UsageRollup.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


FIELDS = ["endpoint_id", "deployment", *COUNTERS, "latency_ms_sum", "latency_histogram", "status_codes"]


def roll_hours(start: datetime, end: datetime) -> int:
    qs, time_field = as_text_on_sqlite(UsageMinute.objects.filter(minute__gte=start, minute__lt=end), "minute")
    return _write(UsageRollup.Period.HOUR, start, end, _aggregate(qs.order_by().values_list(time_field, *FIELDS), HOUR))


def _roll_from_hours(period: str, seconds: int, start: datetime, end: datetime) -> int:
    qs, time_field = as_text_on_sqlite(
        UsageRollup.objects.filter(period=UsageRollup.Period.HOUR, start__gte=start, start__lt=end), "start"
    )
    return _write(period, start, end, _aggregate(qs.order_by().values_list(time_field, *FIELDS), seconds))


def roll_days(start: datetime, end: datetime) -> int:
    return _roll_from_hours(UsageRollup.Period.DAY, DAY, start, end)


def roll_six_hours(start: datetime, end: datetime) -> int:
    """6-hour rows: a 30-day chart at 6-hour buckets reads 120 rows per deployment, not 720."""
    return _roll_from_hours(UsageRollup.Period.SIX_HOURS, SIX_HOURS, start, end)


def rollup_usage(now: datetime | None = None) -> datetime | None:
    """Bring the rollups up to date; returns the new cursor.

    The cursor has minute precision: whole hours before it have their hour rows, and its own
    hour has a partial row covering the minutes up to it (recomputed on every run), so
    readers take almost nothing from minute rows. Days get rows once they are over."""
    now = now or timezone.now()
    target = floor_to(now - GRACE, MINUTE)
    RollupCursor.objects.get_or_create(pk=1)
    first_chunk = True
    while True:
        with transaction.atomic():
            cursor = RollupCursor.objects.select_for_update().get(pk=1)
            start = cursor.rolled_until
            if start is None:
                first = UsageMinute.objects.aggregate(first=Min("minute"))["first"]
                if first is None:
                    return None  # nothing counted yet; start from the first minute once there is one
                start = floor_to(first, HOUR)
            if start >= target:
                return start
            # The cursor's hour is recomputed whole (its row was partial).
            lo = floor_to(start, HOUR)
            end = min(target, lo + CHUNK)
            if first_chunk and cursor.rolled_until is not None and floor_to(end, HOUR) > lo:
                # Entering a new hour: re-roll the ones before too, so a gateway flush that
                # failed and was retried late (after GRACE) still lands in the rollups.
                lo -= RECHECK
            first_chunk = False
            roll_hours(lo, end)
            # Blocks and days that are over by `end` are complete: their hours are all rolled up.
            block_start, block_end = floor_to(lo, SIX_HOURS), floor_to(end, SIX_HOURS)
            if block_start < block_end:
                roll_six_hours(block_start, block_end)
            day_start, day_end = floor_to(lo, DAY), floor_to(end, DAY)
            if day_start < day_end:
                roll_days(day_start, day_end)
            cursor.rolled_until = end
            cursor.save(update_fields=["rolled_until", "updated_at"])
