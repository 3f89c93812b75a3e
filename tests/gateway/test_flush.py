import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Sum

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
                segment = counters.take_segment()
                segment.deltas = {(key[0], key[1], 29_000_000): value for key, value in segment.deltas.items()}
                assert metering.write_segment(segment)
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


def test_usage_of_a_deleted_endpoint_is_dropped_not_retried(workspace):
    endpoint = Endpoint.objects.create(workspace=workspace, name="gone", traffic={"blue": 100})
    counters = metering.UsageCounters()
    counters.count(endpoint.id, "blue", 200, 3.0, 5, 6)
    endpoint.delete()

    assert metering.write_segment(counters.take_segment())  # written: nothing to retry
    assert not UsageMinute.objects.exists()


def test_counts_of_a_worker_killed_before_its_flush_are_drained_from_its_journal_exactly_once(workspace, tmp_path):
    endpoint = Endpoint.objects.create(workspace=workspace, name="journaled", traffic={"blue": 100})
    journal = tmp_path / "usage"
    # A worker that counts 250 calls and is killed with SIGKILL before any flush.
    child = subprocess.Popen([sys.executable, "-c", f"""
import sys, time
from endpoints_app.gateway import metering
counters = metering.UsageCounters({str(journal)!r}, token="killed")
for i in range(250):
    counters.count({endpoint.id}, "blue", 200 if i % 5 else 503, 7.0, 10, 20, 1, 2)
print("counted", flush=True)
time.sleep(60)
"""], cwd=Path(__file__).resolve().parents[2], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "counted"
        # While it lives, its segment is its own to flush: nobody drains it.
        assert metering.drain(journal) == 0
    finally:
        child.kill()
        child.wait(timeout=10)
    # A live worker in this process with a segment of its own, not flushed yet.
    live = metering.UsageCounters(journal, token="live")
    live.count(endpoint.id, "blue", 200, 3.0, 1, 1)

    assert metering.drain(journal, own_token="other") == 250
    assert metering.drain(journal, own_token="other") == 0  # gone once counted
    row = UsageMinute.objects.get(endpoint=endpoint, deployment="blue")
    assert (row.requests, row.status_2xx, row.status_5xx, row.tokens_in, row.tokens_out) == (250, 200, 50, 250, 500)
    assert (row.bytes_in, row.bytes_out, sum(row.latency_histogram)) == (2500, 5000, 250)

    # The live worker flushes its own; had it died between its commit and removing the file, the recorded
    # name keeps a drain from counting it again.
    segment = live.take_segment()
    assert metering.write_segment(segment)
    assert not segment.path.exists()
    segment.path.write_text(f"{endpoint.id}\tblue\t{int(time.time() // 60)}\t200\t3.0\t1\t1\t0\t0\n")
    assert metering.drain(journal) == 0
    assert not segment.path.exists()
    assert UsageMinute.objects.filter(endpoint=endpoint).aggregate(n=Sum("requests"))["n"] == 251


def test_a_journal_line_cut_short_is_skipped_and_the_rest_counted(workspace, tmp_path):
    endpoint = Endpoint.objects.create(workspace=workspace, name="cut", traffic={"blue": 100})
    minute = int(time.time() // 60)
    tmp_path.joinpath("dead-000000001.usage").write_text(
        f"{endpoint.id}\tblue\t{minute}\t200\t3.0\t1\t1\t0\t0\n" * 3 + f"{endpoint.id}\tblue\t{minute}\t20")

    assert metering.drain(tmp_path) == 3
    assert UsageMinute.objects.get(endpoint=endpoint).requests == 3
