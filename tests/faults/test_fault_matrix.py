"""The fault matrix: whatever process of the studio dies, the rest keeps working and what died is replaced
within seconds. Each test hurts the studio of conftest.py (as `make run` starts it) the way the kernel or
an operator would, under steady calls where that matters, and checks what users rely on: calls answered,
provisioning done, the dead part back."""

from __future__ import annotations

import signal
import time

import pytest

from bench.faults import alive, children_of, wait_until
from tests.faults.conftest import PROVISION_SECONDS, RESTART_SECONDS

# The module shares one studio and its data (conftest.py cleans up at the end): with `available_apps` naming an
# app none of these tests writes, pytest-django sets the test database up but flushes no studio table between
# tests (the running studio would lose its node, endpoint and instances).
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True, available_apps=["django.contrib.sessions"])]



def test_the_worker_has_no_pool_process_that_could_die_holding_a_lock(studio):
    # The embedded default's broker made Celery's prefork pool share one lock among its children; a child
    # killed while holding it froze them all. The studio's workers run tasks in threads (portal/settings.py).
    for part in ("worker-1", "worker-2"):
        assert studio.worker_pool_processes(part) == [], f"{part} has pool processes"


def test_killing_each_worker_process_in_turn_while_idle_leaves_provisioning_working(studio):
    with studio.load() as load:
        for part in ("worker-1", "worker-2"):
            pid = studio.pid_of(part)
            studio.kill(pid)
            killed_at = time.monotonic()
            # The other worker process takes the rollout at once; the supervisor brings this one back.
            count = 3 if len(studio.deployment()["instances"]) == 2 else 2
            assert studio.scale(count).status_code in (200, 202)
            studio.wait_succeeded(PROVISION_SECONDS)
            studio.replaced(part, pid, RESTART_SECONDS)
            back = time.monotonic() - killed_at
        assert studio.scale(2).status_code in (200, 202)
        studio.wait_succeeded(PROVISION_SECONDS)
    # The gateway's hot path needs no worker: every call was answered.
    assert load.failures() == [], load.failures()[:10]
    studio.matrix_row("SIGKILL of each worker process in turn, idle (threads pool: no pool child)", load, back)


def test_killing_every_worker_process_during_a_rollout_does_not_stop_it(studio):
    with studio.load() as load:
        assert studio.scale(3).status_code in (200, 202)
        time.sleep(0.3)  # the rollout's first step is under way
        pids = {part: studio.pid_of(part) for part in ("worker-1", "worker-2")}
        for pid in pids.values():
            studio.kill(pid)
        killed_at = time.monotonic()
        for part, pid in pids.items():
            studio.replaced(part, pid, RESTART_SECONDS)
        back = time.monotonic() - killed_at
        studio.wait_succeeded(PROVISION_SECONDS)
        rolled_out = time.monotonic() - killed_at
        assert len(studio.ready_instances()) == 3
        assert studio.scale(2).status_code in (200, 202)
        studio.wait_succeeded(PROVISION_SECONDS)
    assert load.failures() == [], load.failures()[:10]
    studio.matrix_row(f"SIGKILL of every worker main process mid-rollout (rollout done {rolled_out:.1f} s after)",
                      load, back)


def test_killing_beat_and_then_a_model_server_still_gets_the_server_replaced(studio):
    beat = studio.pid_of("beat")
    studio.kill(beat)
    beat_back = studio.replaced("beat", beat, RESTART_SECONDS)
    # Reconcile runs only when beat sends it: a replaced model server shows the new beat works.
    with studio.load() as load:
        victim_name, victim = sorted(studio.ready_instances().items())[0]
        studio.kill(victim)
        killed_at = time.monotonic()
        wait_until(lambda: studio.ready_instances().get(victim_name) not in (None, victim), PROVISION_SECONDS,
                   f"{victim_name} restarted", seen=studio.ready_instances)
        server_back = time.monotonic() - killed_at
    # A call the killed server was handling is answered 502, not sent again (at most one per load thread,
    # right at the kill); the gateway tries every later call that finds the server's socket refused on the
    # other instance, so none of them fails.
    failures = load.failures()
    assert len(failures) <= 2 and all(outcome == "502" and at - killed_at < 1 for at, outcome in failures), \
        (failures, load.counts())
    assert load.ok() > 0
    studio.matrix_row("SIGKILL of beat", None, beat_back)
    studio.matrix_row("SIGKILL of a model server (after beat's restart)", load, server_back)


def test_killing_a_web_worker_under_load_loses_only_calls_in_flight_on_it_and_no_usage_count(studio):
    before = studio.web_workers()
    counted_before = studio.settled_usage()
    with studio.load() as load:
        time.sleep(1)
        studio.kill(before[0])
        killed_at = time.monotonic()
        wait_until(lambda: len(studio.web_workers()) == len(before) and before[0] not in studio.web_workers(),
                   RESTART_SECONDS, "gunicorn replacing its worker", seen=studio.web_workers)
        replaced_after = time.monotonic() - killed_at
        time.sleep(2)
    failures = load.failures()
    # Only calls that were on the killed worker's connections (at most one per load thread) fail, as a
    # dropped connection, never as an error answer; every call after the kill is answered.
    assert all(outcome == "ConnectionError" for _, outcome in failures), failures
    assert len(failures) <= 2, failures
    assert all(at - killed_at < 1 for at, _ in failures), failures
    assert load.ok() > 0
    # The killed worker's counts since its last flush were in its journal: another worker drains it. Every
    # answered call is counted once; a dropped one may have been counted just before the kill.
    answered = sum(n for outcome, n in load.counts().items() if outcome.isdigit())
    wait_until(lambda: answered <= studio.usage_requests() - counted_before <= answered + len(failures), 30,
               f"usage to count the {answered} answered calls (+ up to {len(failures)} dropped)",
               seen=lambda: studio.usage_requests() - counted_before)
    time.sleep(2)  # nothing more comes in later (no count twice)
    counted = studio.usage_requests() - counted_before
    assert answered <= counted <= answered + len(failures)
    studio.matrix_row(f"SIGKILL of a web/gateway worker (usage {counted}, clients answered {answered})", load,
                      replaced_after)


def test_killing_the_web_main_process_under_load_refuses_no_call(studio):
    web = studio.pid_of("web")
    workers = studio.web_workers()
    worker_pids = {part: studio.pid_of(part) for part in ("worker-1", "worker-2", "beat")}
    with studio.load() as load:
        time.sleep(1)
        studio.kill(web)
        killed_at = time.monotonic()
        studio.replaced("web", web, RESTART_SECONDS)
        # The port is the supervisor's socket: calls wait in its backlog while web restarts, and the orphaned
        # workers finish theirs, then go (within the supervisor's grace); nothing else restarted.
        wait_until(lambda: not any(alive(pid) for pid in workers), 20, "the old web workers gone")
        back = time.monotonic() - killed_at
        wait_until(lambda: studio.call().status_code == 200, RESTART_SECONDS, "a call answered after the restart")
        time.sleep(1)
    assert {part: studio.pid_of(part) for part in worker_pids} == worker_pids
    # Calls wait in the socket's backlog rather than being refused; a connection an orphaned worker had just
    # accepted when it was told to stop (at most one per load thread) is dropped, never answered with an error.
    failures = load.failures()
    assert all(outcome == "ConnectionError" for _, outcome in failures), failures
    assert len(failures) <= 2, failures
    assert load.ok() > 0
    studio.matrix_row("SIGKILL of the web main process (calls wait in the supervisor's socket)", load, back)


def test_the_supervisor_logs_why_it_restarted_a_part(studio):
    beat = studio.pid_of("beat")
    studio.kill(beat)
    studio.replaced("beat", beat, RESTART_SECONDS)
    log = studio.log_path.read_text()
    assert f"supervisor: beat (pid {beat}) was killed by SIGKILL; restarting it in" in log


def test_a_hung_model_server_is_marked_unhealthy_taken_out_of_routing_and_replaced(studio):
    victim_name, victim = sorted(studio.ready_instances().items())[0]
    with studio.load() as load:
        studio.kill(victim, signal.SIGSTOP)
        stopped_at = time.monotonic()
        try:
            # Out of routing (Unhealthy) at its first failed liveness probe, then restarted.
            wait_until(lambda: victim_name not in studio.ready_instances(), 30, f"{victim_name} not Ready",
                       seen=studio.deployment)
            out_after = time.monotonic() - stopped_at
            wait_until(lambda: studio.ready_instances().get(victim_name) not in (None, victim), 90,
                       f"{victim_name} replaced", seen=studio.deployment)
            replaced_after = time.monotonic() - stopped_at
            settled_at = time.monotonic()
            time.sleep(2)
        finally:
            if alive(victim):
                studio.kill(victim, signal.SIGCONT)
    # Calls that reached the hung server before it was taken out waited for their timeout; none after.
    late = [(at, outcome) for at, outcome in load.failures() if at > settled_at]
    assert late == [], late
    assert load.counts(since=settled_at)["200"] > 0
    print(f"hung server out of routing after {out_after:.1f} s, replaced after {replaced_after:.1f} s; "
          f"calls failed meanwhile: {len(load.failures())} of {sum(load.counts().values())}")
    studio.matrix_row(f"SIGSTOP of a model server (out of routing after {out_after:.1f} s, replaced after)", load,
                      replaced_after)
    assert children_of(victim) == [] or not alive(victim)


def _database_is_postgresql() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


def test_dropped_database_connections_cost_no_answered_call_and_no_rollout(studio, django_db_blocker):
    if not _database_is_postgresql():
        pytest.skip("PostgreSQL only (SQLite has no server connections to drop)")
    from django.db import connection

    # Not a restart of the PostgreSQL server (other studios share it on this machine): every connection of this
    # studio's database is ended by the server, which is what the studio sees of a restart.
    def terminate() -> int:
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")
            return cursor.fetchone()[0]

    with studio.load() as load:
        time.sleep(1)
        ended = terminate()
        killed_at = time.monotonic()
        assert studio.scale(3).status_code in (200, 202)
        took = studio.wait_succeeded(PROVISION_SECONDS)
        terminate()  # again, in the middle of everything
        assert studio.scale(2).status_code in (200, 202)
        studio.wait_succeeded(PROVISION_SECONDS)
        time.sleep(1)
    print(f"ended {ended} connections; rollout after it took {took:.1f} s; calls: {dict(load.counts())}")
    studio.matrix_row("every PostgreSQL connection ended, twice (rollout after it)", load, took)
    # The gateway's hot path never touches the database: every call was answered.
    assert load.failures() == [], load.failures()[:10]
    assert load.counts(since=killed_at)["200"] > 0


def test_dropped_redis_connections_cost_no_answered_call_and_no_rollout(studio):
    from django.conf import settings

    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip("Redis only (the embedded default has no Redis)")
    import redis

    # Not a restart of the Redis server (other studios share it): every client of this studio's database numbers
    # (broker and cache) is disconnected by the server, which is what the studio sees of a restart.
    admin = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    dbs = {redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0)
           for url in (settings.CELERY_BROKER_URL, settings.REDIS_URL) if url}

    def disconnect() -> int:
        mine = [c["id"] for c in admin.client_list() if int(c.get("db", -1)) in dbs]
        for client_id in mine:
            admin.client_kill_filter(_id=client_id)
        return len(mine)

    with studio.load() as load:
        time.sleep(1)
        dropped = disconnect()
        assert studio.scale(3).status_code in (200, 202)
        took = studio.wait_succeeded(PROVISION_SECONDS)
        disconnect()
        assert studio.scale(2).status_code in (200, 202)
        studio.wait_succeeded(PROVISION_SECONDS)
        time.sleep(1)
    print(f"dropped {dropped} Redis clients; rollout after it took {took:.1f} s; calls: {dict(load.counts())}")
    assert load.failures() == [], load.failures()[:10]
    studio.matrix_row("every Redis connection dropped, twice (rollout after it)", load, took)
