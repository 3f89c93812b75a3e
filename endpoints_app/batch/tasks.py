"""Celery tasks of the batch controller (endpoints_app.batch.controller). Ids only; any may run
twice. Each is a short step: a mini-batch is one request bounded by its timeout, and a job that
waits for its model servers re-queues itself instead of holding a worker slot."""

from __future__ import annotations

import time

from celery import shared_task

from endpoints_app.batch import controller

# While a job's model servers start, look again this often (the first row waits on it).
STARTING_POLL_SECONDS = 0.2
# ...probing them in the task itself for this long first (a short step), every PROBE_SECONDS.
STARTING_INLINE_SECONDS = 1.5
PROBE_SECONDS = 0.05


def _paused() -> bool:
    from endpoints_app.controller.tasks import paused

    return paused()


@shared_task(name="endpoints_app.batch.tasks.advance_job")
def advance_job(job_id: int) -> str:
    if _paused():
        return "paused"
    state = controller.advance(job_id)
    deadline = time.monotonic() + STARTING_INLINE_SECONDS
    # Servers that had work handed out by the last step. Another step may record one Ready first
    # (reconcile watches starting instances too): any server ready since the last step means a step now.
    seen = controller.ready_ids(job_id) if state == "starting" else set()
    while state == "starting" and time.monotonic() < deadline:
        time.sleep(PROBE_SECONDS)
        if controller.ready_or_answering(job_id) - seen:
            state = controller.advance(job_id)
            seen = controller.ready_ids(job_id)
    if state == "starting":
        advance_job.apply_async(args=[job_id], countdown=STARTING_POLL_SECONDS, expires=60)
    return state


@shared_task(name="endpoints_app.batch.tasks.run_mini_batch", acks_late=True)
def run_mini_batch(mini_batch_id: int, attempt: int) -> str:
    if _paused():
        return "paused"
    return controller.run_mini_batch(mini_batch_id, attempt)


@shared_task(name="endpoints_app.batch.tasks.tick")
def tick() -> None:
    if _paused():
        return
    controller.tick()
