"""The usage report rounds whole columns at once and must give what round() gives per value."""

import random

import numpy as np

from endpoints_app.metering.report import round_column


def test_round_column_equals_round_for_every_value_halves_included():
    rng = random.Random(5)
    values = [0.0, 0.5, 1.0005, 2.675, 0.0015, 0.0025, 1e-9, 123456.7895, 25.3125, 69.1875, 1e15 + 0.5]
    values += [2.0**60 + 2048, 9.1e12 + 0.25, float("inf")]  # too large for thousandths to be exact
    values += [rng.uniform(0, 10) for _ in range(5000)] + [rng.lognormvariate(3, 2) for _ in range(5000)]
    # Halves in the third decimal (the doubles nearest k / 2000) and their neighbours one ulp either side.
    halves = [k / 2000 for k in rng.sample(range(1, 10**7), 3000)]
    values += halves + [float(np.nextafter(v, 0)) for v in halves] + [float(np.nextafter(v, np.inf)) for v in halves]
    for digits in (3, 6):
        assert round_column(np.array(values), digits) == [round(v, digits) for v in values]


def test_round_column_gives_none_for_nan():
    assert round_column(np.array([np.nan, 1.23456, np.nan]), 3) == [None, 1.235, None]
