"""Helpers the benchmark scripts share (each script puts the repo root on sys.path)."""

import time


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of raw timings."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def wait(condition, timeout: float, interval: float = 0.05, what: str = "condition"):
    """Poll until `condition()` is truthy; return its value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(what)
