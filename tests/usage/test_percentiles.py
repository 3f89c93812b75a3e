"""Percentiles from latency histograms."""

import math
import random

from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS, bucket_index
from endpoints_app.metering.percentiles import BUCKETS, merge, percentile, quantile_columns, quantiles
from endpoints_app.metering.query import histogram_matrix


def histogram(latencies):
    counts = [0] * BUCKETS
    for latency in latencies:
        counts[bucket_index(latency)] += 1
    return counts


def test_percentile_interpolates_inside_the_bucket():
    # 100 requests in (10, 15]: the median is halfway through that bucket.
    assert percentile(histogram([12] * 100), 0.5) == 12.5
    assert percentile(histogram([1] * 90 + [400] * 10), 0.9) == 1.0
    assert 300 < percentile(histogram([1] * 90 + [400] * 10), 0.99) <= 500


def test_empty_and_open_ended_histograms():
    assert percentile([0] * BUCKETS, 0.5) is None and quantiles(None) == [None, None, None]
    assert percentile(histogram([120_000]), 0.99) == LATENCY_BUCKETS_MS[-2]


def test_merged_histograms_give_the_percentiles_of_all_requests():
    a, b = histogram([5] * 50), histogram([500] * 50)
    assert merge([a, b]) == histogram([5] * 50 + [500] * 50)
    assert percentile(merge([a, b]), 0.25) <= 5 < 300 < percentile(merge([a, b]), 0.75) <= 500


def test_one_pass_quantiles_equal_percentile():
    rng = random.Random(3)
    for _ in range(2000):
        h = [rng.choice([0, 0, 0, 1, 2, 7, 300]) for _ in range(BUCKETS)]
        assert quantiles(h) == [percentile(h, q) for q in (0.5, 0.9, 0.99)]


def test_quantile_columns_give_exactly_what_quantiles_gives_per_histogram():
    rng = random.Random(11)
    histograms = [[0] * BUCKETS, histogram([10**6] * 3)]
    for _ in range(500):
        latencies = [rng.lognormvariate(rng.uniform(0, 9), rng.uniform(0.1, 2)) for _ in range(rng.randint(1, 300))]
        histograms.append(histogram(latencies))
    columns = quantile_columns(histogram_matrix(histograms))
    for i, h in enumerate(histograms):
        assert [column[i] for column in columns] == quantiles(h)


def test_histogram_matrix_reads_json_texts_full_short_and_empty():
    full = list(range(BUCKETS))
    assert histogram_matrix(['[' + ", ".join(map(str, full)) + ']'] * 2).tolist() == [full, full]
    mixed = histogram_matrix(["[]", "[1, 2]", str(full)]).tolist()
    assert mixed == [[0] * BUCKETS, [1, 2] + [0] * (BUCKETS - 2), full]


def test_quantile_arrays_hold_the_same_values_with_nan_for_none():
    histograms = [[0] * BUCKETS, histogram([12] * 100), histogram([1] * 90 + [400] * 10)]
    arrays = quantile_columns(histogram_matrix(histograms), as_arrays=True)
    for column, array in zip(quantile_columns(histogram_matrix(histograms)), arrays, strict=True):
        assert [None if math.isnan(v) else v for v in array.tolist()] == column
