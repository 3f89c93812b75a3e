import threading

import pytest
from django.db import connection

from endpoints_app.gateway import metering
from endpoints_app.metering.buckets import bucket_index
from endpoints_app.models import Endpoint, UsageMinute

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_flushes_of_the_same_minute_add_up_exactly(workspace):
    endpoint = Endpoint.objects.create(workspace=workspace, name="contended", traffic={"blue": 100})
    errors: list[BaseException] = []

    def flusher() -> None:
        try:
            for _ in range(15):
                counters = metering.UsageCounters()
                # Same minute for every flush: all of them hit one row, the first ones race to create it.
                counters.count(endpoint.id, "blue", 200, latency_ms=4.0, bytes_in=10, bytes_out=20)
                counters.count(endpoint.id, "blue", 422, latency_ms=40.0, bytes_in=1, bytes_out=2)
                deltas = {(key[0], key[1], 29_000_000): value for key, value in counters.take().items()}
                failed = metering.write_deltas(deltas)
                assert not failed
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=flusher) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert not errors
    row = UsageMinute.objects.get(endpoint=endpoint, deployment="blue")
    assert (row.requests, row.status_2xx, row.status_4xx) == (120, 60, 60)
    assert (row.bytes_in, row.bytes_out) == (660, 1320)
    assert row.latency_histogram[bucket_index(4.0)] == 60
    assert row.latency_histogram[bucket_index(40.0)] == 60
    assert row.latency_ms_sum == pytest.approx(60 * 44.0)


def test_deltas_that_failed_go_back_into_the_counters():
    counters = metering.UsageCounters()
    counters.count(1, "blue", 200, 3.0, 5, 6)
    taken = counters.take()
    counters.count(1, "blue", 500, 30.0, 1, 1)

    counters.give_back(taken)

    (row,) = counters.current.values()
    assert row[metering.REQUESTS] == 2
    assert (row[metering.S2XX], row[metering.S5XX]) == (1, 1)
    assert sum(row[metering.HIST]) == 2


def test_usage_of_a_deleted_endpoint_is_dropped_not_retried(workspace):
    endpoint = Endpoint.objects.create(workspace=workspace, name="gone", traffic={"blue": 100})
    counters = metering.UsageCounters()
    counters.count(endpoint.id, "blue", 200, 3.0, 5, 6)
    endpoint.delete()

    assert metering.write_deltas(counters.take()) == {}
    assert not UsageMinute.objects.exists()
