"""Percentiles from latency histograms (counts per bucket of LATENCY_BUCKETS_MS).

Histograms add bucket by bucket, so a percentile over many minutes or deployments
is exact up to the bucket: inside a bucket we interpolate linearly, the way
Prometheus' histogram_quantile does."""

from collections.abc import Iterable, Sequence

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
    """Several quantiles (ascending) in one pass over the histogram; same values as percentile()."""
    if not histogram:
        return [None] * len(qs)
    count = sum(histogram)
    if count == 0:
        return [None] * len(qs)
    out: list[float | None] = []
    q_index = 0
    seen = 0
    for index, bucket_count in enumerate(histogram[:BUCKETS]):
        if bucket_count == 0:
            continue
        while q_index < len(qs) and seen + bucket_count >= qs[q_index] * count:
            lower = LATENCY_BUCKETS_MS[index - 1] if index > 0 else 0.0
            upper = LATENCY_BUCKETS_MS[index]
            if upper == float("inf"):
                out.append(float(lower))
            else:
                out.append(lower + (upper - lower) * (qs[q_index] * count - seen) / bucket_count)
            q_index += 1
        if q_index == len(qs):
            return out
        seen += bucket_count
    out += [float(LATENCY_BUCKETS_MS[-2])] * (len(qs) - len(out))
    return out


def p50_p90_p99(histogram: Sequence[int] | None) -> tuple[float | None, float | None, float | None]:
    p50, p90, p99 = quantiles(histogram)
    return p50, p90, p99
