"""Percentiles from latency histograms (counts per bucket of LATENCY_BUCKETS_MS).

Histograms add bucket by bucket, so a percentile over many minutes or deployments
is exact up to the bucket: inside a bucket we interpolate linearly, the way
Prometheus' histogram_quantile does."""

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from itertools import accumulate

import numpy as np

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS

BUCKETS = len(LATENCY_BUCKETS_MS)


def empty_histogram() -> list[int]:
    return [0] * BUCKETS


def add_into(total: list[int], histogram: Sequence[int] | None) -> list[int]:
    """Add `histogram` into `total` in place (shorter or missing histograms count as zeros)."""
    if histogram:
        for index, count in enumerate(histogram[:BUCKETS]):
            if count:
                total[index] += count
    return total


def merge(histograms: Iterable[Sequence[int] | None]) -> list[int]:
    total = empty_histogram()
    for histogram in histograms:
        add_into(total, histogram)
    return total


def percentile(histogram: Sequence[int] | None, q: float) -> float | None:
    """The q-th quantile (0 < q <= 1) in ms, or None for an empty histogram."""
    if not histogram:
        return None
    count = sum(histogram)
    if count == 0:
        return None
    rank = q * count
    seen = 0
    for index, bucket_count in enumerate(histogram[:BUCKETS]):
        if bucket_count == 0:
            continue
        if seen + bucket_count >= rank:
            lower = LATENCY_BUCKETS_MS[index - 1] if index > 0 else 0.0
            upper = LATENCY_BUCKETS_MS[index]
            if upper == float("inf"):
                # The open bucket has no upper bound: report its lower one.
                return float(lower)
            return lower + (upper - lower) * (rank - seen) / bucket_count
        seen += bucket_count
    return float(LATENCY_BUCKETS_MS[-2])


def quantiles(histogram: Sequence[int] | None, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[float | None]:
    """Several quantiles in one go (cumulative counts and a bisection each); the same values
    as percentile(), at a fraction of the cost for the thousands of points of a series."""
    if not histogram:
        return [None] * len(qs)
    cumulative = list(accumulate(histogram[:BUCKETS]))
    count = cumulative[-1]
    if count == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    for q in qs:
        rank = q * count
        index = bisect_left(cumulative, rank)
        if index >= len(cumulative):
            out.append(float(LATENCY_BUCKETS_MS[-2]))
            continue
        lower = LATENCY_BUCKETS_MS[index - 1] if index > 0 else 0.0
        upper = LATENCY_BUCKETS_MS[index]
        if upper == float("inf"):
            out.append(float(lower))
            continue
        seen = cumulative[index - 1] if index > 0 else 0
        out.append(lower + (upper - lower) * (rank - seen) / histogram[index])
    return out


def p50_p90_p99(histogram: Sequence[int] | None) -> tuple[float | None, float | None, float | None]:
    p50, p90, p99 = quantiles(histogram)
    return p50, p90, p99


_BOUNDS = np.array(LATENCY_BUCKETS_MS, np.float64)


def quantile_columns(
    histograms: np.ndarray, qs: tuple[float, ...] = (0.5, 0.9, 0.99), as_arrays: bool = False
) -> list:
    """quantiles() for every row of an (n, BUCKETS) array at once: one list per q, with
    the values quantiles() gives for each row (the same float operations, in numpy).
    With as_arrays, one float64 array per q instead, NaN where quantiles() gives None."""
    histograms = np.asarray(histograms, np.int64)[:, :BUCKETS]
    cumulative = np.cumsum(histograms, axis=1)
    count = cumulative[:, -1] if histograms.size else np.zeros(len(histograms), np.int64)
    empty = count == 0
    rows = np.arange(len(histograms))
    out = []
    for q in qs:
        rank = q * count.astype(np.float64)
        # bisect_left: the first bucket whose cumulative count reaches the rank.
        index = np.minimum((cumulative < rank[:, None]).sum(axis=1), BUCKETS - 1)
        lower = np.where(index > 0, _BOUNDS[index - 1], 0.0)
        upper = _BOUNDS[index]
        seen = np.where(index > 0, cumulative[rows, index - 1], 0).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            value = lower + (upper - lower) * (rank - seen) / histograms[rows, index].astype(np.float64)
        # The open bucket has no upper bound: report its lower one.
        value = np.where(np.isinf(upper), lower, value)
        if as_arrays:
            out.append(np.where(empty, np.nan, value))
            continue
        values: list[float | None] = value.tolist()
        for i in np.flatnonzero(empty).tolist():
            values[i] = None
        out.append(values)
    return out
