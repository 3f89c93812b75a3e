"""Latency histogram buckets (and per-status-code counts) shared by the gateway (counting) and the usage
readers (percentiles): upper bounds in milliseconds, the last one open."""

LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750,
    1000, 1500, 2000, 3000, 5000, 10000, 30000, 60000, float("inf"),
)


def bucket_index(latency_ms: float) -> int:
    for index, bound in enumerate(LATENCY_BUCKETS_MS):
        if latency_ms <= bound:
            return index
    return len(LATENCY_BUCKETS_MS) - 1


def merge_codes(total: dict[str, int], codes: dict | None) -> dict[str, int]:
    """Add per-status-code counts ({"200": n, ...}; int keys too) into `total` in place."""
    if codes:
        for code, count in codes.items():
            code = str(code)
            total[code] = total.get(code, 0) + count
    return total
