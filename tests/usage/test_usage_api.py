"""The usage API: exact totals and series over minute rows and rollups, filters, permissions."""

import random
from collections import Counter
from datetime import timedelta

import pytest

from endpoints_app.metering import query
from endpoints_app.metering.rollup import rollup_usage
from endpoints_app.models import UsageRollup
from tests.usage import factories as f
from tests.usage.factories import T0

URL = "/api/v1/workspaces/team/usage"


def iso(t):
    return t.isoformat().replace("+00:00", "Z")


@pytest.fixture
def iris(workspace):
    ep = f.endpoint(workspace, "iris", traffic={"blue": 80, "green": 20})
    f.deployment(ep, "blue")
    f.deployment(ep, "green")
    return ep


def test_it_reports_exact_totals_and_series(owner_api, iris):
    f.minute_row(iris, "blue", T0, ok=5, client_errors=1, latency_ms=12)
    f.minute_row(iris, "blue", T0 + timedelta(minutes=1), ok=3, server_errors=2, latency_ms=40)
    f.minute_row(iris, "green", T0, ok=4, latency_ms=400)
    response = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(minutes=5)), "interval": "1m"})
    assert response.status_code == 200, response.content
    body = response.json()
    totals = body["totals"]
    assert (totals["requests"], totals["status_2xx"], totals["status_4xx"], totals["status_5xx"]) == (15, 12, 1, 2)
    assert totals["tokens_in"] == 0 and totals["instance_hours"] == 0 and totals["cost"] == 0
    points = {(p["time"], p["deployment"]): p for p in body["series"]}
    first_blue = points[(iso(T0), "blue")]
    assert first_blue["requests"] == 6 and first_blue["status_4xx"] == 1
    # 12 ms falls in the (10, 15] bucket; a percentile interpolates inside it.
    assert 10 < first_blue["latency_p50_ms"] <= 15 and first_blue["latency_avg_ms"] == 12
    assert 300 < points[(iso(T0), "green")]["latency_p99_ms"] <= 500
    assert points[(iso(T0 + timedelta(minutes=1)), "blue")]["status_5xx"] == 2


def test_it_filters_by_endpoint_deployment_and_range(owner_api, workspace, iris):
    other = f.endpoint(workspace, "other")
    f.minute_row(iris, "blue", T0, ok=5)
    f.minute_row(iris, "green", T0, ok=7)
    f.minute_row(other, "blue", T0, ok=11)
    f.minute_row(iris, "blue", T0 + timedelta(hours=2), ok=13)
    window = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}
    assert owner_api.get(URL, window).json()["totals"]["requests"] == 23
    assert owner_api.get(URL, {**window, "endpoint": "iris"}).json()["totals"]["requests"] == 12
    assert owner_api.get(URL, {**window, "endpoint": "iris", "deployment": "blue"}).json()["totals"]["requests"] == 5
    assert owner_api.get(URL, {**window, "deployment": "blue"}).json()["totals"]["requests"] == 16
    later = {"from": iso(T0 + timedelta(minutes=1)), "to": iso(T0 + timedelta(hours=3))}
    assert owner_api.get(URL, later).json()["totals"]["requests"] == 13


def test_sums_are_exact_across_minute_rows_and_rollups(owner_api, iris):
    """Ragged ranges over three days read from day, hour and minute rows must equal the minute rows' sums."""
    rng = random.Random(7)
    rows = []
    for minute in f.minutes(T0 - timedelta(hours=3), 3 * 24 * 60, step=7):
        dep = rng.choice(["blue", "green"])
        rows.append((minute, dep, rng.randint(0, 9), rng.randint(0, 2), rng.randint(0, 1)))
        f.minute_row(iris, dep, minute, ok=rows[-1][2], client_errors=rows[-1][3], server_errors=rows[-1][4],
                     latency_ms=rng.choice([3, 30, 300]))
    ranges = [
        (T0 - timedelta(hours=2, minutes=13), T0 + timedelta(days=2, hours=5, minutes=41)),
        (T0, T0 + timedelta(days=1)),
        (T0 + timedelta(minutes=59), T0 + timedelta(hours=25, minutes=1)),
        # Runs past the rollup cursor, which is in the middle of an hour (a partial hour row).
        (T0 + timedelta(days=2, hours=5, minutes=7), T0 + timedelta(days=4)),
    ]

    def expected(lo, hi):
        chosen = [r for r in rows if lo <= r[0] < hi]
        return sum(r[2] + r[3] + r[4] for r in chosen), sum(r[4] for r in chosen)

    before = [owner_api.get(URL, {"from": iso(lo), "to": iso(hi)}).json()["totals"] for lo, hi in ranges]
    cursor = rollup_usage(now=T0 + timedelta(days=2, hours=20, minutes=33))
    assert cursor == T0 + timedelta(days=2, hours=20, minutes=30)  # 3 minutes of grace
    assert UsageRollup.objects.filter(period="day").exists() and UsageRollup.objects.filter(period="hour").exists()
    used = set()
    for (lo, hi), old in zip(ranges, before, strict=True):
        pieces = query.plan(lo, hi, None, query.rolled_until())
        used |= {p.source for p in pieces}
        used |= {"partial hour" for p in pieces if p.source == "hour" and p.end.minute}
        totals = owner_api.get(URL, {"from": iso(lo), "to": iso(hi)}).json()["totals"]
        assert (totals["requests"], totals["status_5xx"]) == expected(lo, hi)
        assert totals == old  # per-status-code counts included
        codes = totals["status_codes"]
        assert sum(codes.values()) == totals["requests"] and codes.get("500", 0) == totals["status_5xx"]
    assert used == {"minute", "hour", "6h", "day", "partial hour"}
    # Hourly and 6-hourly series from rollups equal the minute rows' sums per bucket.
    lo, hi = T0, T0 + timedelta(days=2, hours=21)
    for interval, seconds in (("1h", 3600), ("6h", 6 * 3600)):
        body = owner_api.get(URL, {"from": iso(lo), "to": iso(hi), "interval": interval, "endpoint": "iris"}).json()
        got = Counter()
        for point in body["series"]:
            got[point["time"]] += point["requests"]
        want = Counter()
        for minute, _, ok, c4, c5 in rows:
            if lo <= minute < hi:
                want[iso(query.floor_to(minute, seconds))] += ok + c4 + c5
        assert +got == +want
    assert {p.source for p in query.plan(lo, hi, 6 * 3600, query.rolled_until())} == {"minute", "hour", "6h"}


def test_it_reports_requests_per_status_code_in_series_and_totals(owner_api, iris):
    f.minute_row(iris, "blue", T0, ok=5, client_errors=3, codes={"200": 5, "401": 1, "429": 2})
    f.minute_row(iris, "blue", T0 + timedelta(minutes=1), ok=1, client_errors=1, server_errors=1,
                 codes={"201": 1, "422": 1, "503": 1})
    f.minute_row(iris, "green", T0 + timedelta(minutes=1), ok=4, codes={"200": 4})
    window = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}
    minutes = owner_api.get(URL, {**window, "interval": "1m"}).json()
    points = {(p["time"], p["deployment"]): p["status_codes"] for p in minutes["series"]}
    assert points[(iso(T0), "blue")] == {"200": 5, "401": 1, "429": 2}
    assert points[(iso(T0 + timedelta(minutes=1)), "green")] == {"200": 4}
    want = {"200": 9, "201": 1, "401": 1, "422": 1, "429": 2, "503": 1}
    assert minutes["totals"]["status_codes"] == want
    # Rolled up into hours and days, the counts per code stay exact.
    rollup_usage(now=T0 + timedelta(days=2))
    hourly = owner_api.get(URL, {**window, "interval": "1h", "deployment": "blue"}).json()
    assert [p["status_codes"] for p in hourly["series"]] == [{"200": 5, "201": 1, "401": 1, "422": 1, "429": 2,
                                                             "503": 1}]
    assert UsageRollup.objects.get(period="day", deployment="green").status_codes == {"200": 4}
    daily = owner_api.get(URL, {"from": iso(T0), "to": iso(T0 + timedelta(days=1)), "interval": "1d"}).json()
    assert daily["totals"]["status_codes"] == want


def test_rollup_is_idempotent(iris):
    for minute in f.minutes(T0, 180, step=5):
        f.minute_row(iris, "blue", minute, ok=2, latency_ms=20)
    rollup_usage(now=T0 + timedelta(days=1, hours=1))
    first = list(UsageRollup.objects.order_by("period", "start").values_list("period", "start", "requests",
                                                                               "latency_histogram"))
    # Forget the cursor: a second run recomputes the same rows rather than adding to them.
    from endpoints_app.models import RollupCursor

    RollupCursor.objects.update(rolled_until=None)
    rollup_usage(now=T0 + timedelta(days=1, hours=1))
    again = list(UsageRollup.objects.order_by("period", "start").values_list("period", "start", "requests",
                                                                               "latency_histogram"))
    assert first == again
    assert sum(r[2] for r in first if r[0] == "hour") == 2 * 180
    assert [r[2] for r in first if r[0] == "day"] == [360]


def test_reader_can_read_usage(reader_api, iris):
    assert reader_api.get(URL).status_code == 200


def test_outsider_gets_404(outsider_api, iris):
    response = outsider_api.get(URL)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_unknown_endpoint_is_404(owner_api, iris):
    assert owner_api.get(URL, {"endpoint": "nope"}).status_code == 404


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"interval": "2m"}, "interval"),
        ({"from": "yesterday"}, "from"),
        ({"from": "2026-10-05T00:00:00Z", "to": "2026-10-04T00:00:00Z"}, "from"),
        ({"from": "2026-01-01", "to": "2026-10-01", "interval": "1m"}, "interval"),
        ({"to": "2026-13-45"}, "to"),
        ({"to": "9999-12-31T23:59:59Z"}, "to"),
        ({"from": "0001-01-01", "interval": "1d"}, "from"),
    ],
)
def test_bad_parameters_are_400_naming_the_field(owner_api, iris, params, field):
    response = owner_api.get(URL, params)
    assert response.status_code == 400
    assert response.json()["error"]["field"] == field


def test_a_late_flush_reaches_the_rollups_at_the_next_hour(owner_api, iris):
    f.minute_row(iris, "blue", T0 + timedelta(minutes=10), ok=5)
    rollup_usage(now=T0 + timedelta(hours=1, minutes=5))
    # A gateway flush that was retried late adds to a minute of an hour already rolled up.
    f.minute_row(iris, "green", T0 + timedelta(minutes=20), ok=7)
    window = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1)), "interval": "1h"}
    rollup_usage(now=T0 + timedelta(hours=2, minutes=5))
    assert owner_api.get(URL, window).json()["totals"]["requests"] == 12


def test_it_reports_zeros_for_a_workspace_without_endpoints(owner_api, workspace):
    response = owner_api.get(URL, {"interval": "1h"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["totals"]["requests"] == 0 and body["totals"]["cost"] == 0
