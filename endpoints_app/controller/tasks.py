"""Celery tasks of the controller. Arguments are ids only; every task may run twice.

- reconcile (Celery beat, every STUDIO_RECONCILE_SECONDS): plan every deployment,
  converge this node, and ask every other live node's worker to converge its own.
- provision_deployment (after a create or update commits): the same for one
  deployment, one pass per task, re-queued with a short countdown until it is
  Succeeded or Failed, so provisioning takes little more than the model
  server's own start-up and no rollout holds a worker slot for long.
- reconcile_deployment (after a delete): the same steps, until the deployment is gone.
- wake_serverless_pool (the gateway, when a serverless endpoint's pool has no ready instance):
  start the stopped pool and provision it.
- converge_node (on a node's queue `node.<name>`): that node's processes.
- advance_job, run_mini_batch, tick (batch jobs, controller/jobs.py): one step of a job, one
  mini-batch (and the ones it chains), and the periodic batch pass. Their names keep the old
  `endpoints_app.batch.tasks.*` so messages queued before an upgrade still route. Each sends what
  its step put in the outbox (mini-batches to run, other nodes to converge) when the step is over."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from celery import shared_task
from celery.signals import worker_ready
from django.conf import settings

from endpoints_app.controller import jobs, placement
from endpoints_app.controller import reconcile as rc
from endpoints_app.models import Deployment, Instance, InstanceState, Node, ProvisioningState

log = logging.getLogger("studio.controller")

PAUSE_FILE = "controller-paused"
# Fast polling while an instance starts: the cost of noticing "ready" late is provisioning time.
POLL_SECONDS = 0.2
MAX_STEP_SECONDS = 2.0
# After this long a rollout's steps stop re-queueing and reconcile alone carries it on.
PROVISION_MAX_SECONDS = 15 * 60
DELETE_MAX_SECONDS = 120
# The worker's heartbeat thread keeps its node live (a silent node's instances are replaced elsewhere).
HEARTBEAT_SECONDS = 10
# While a job's model servers start, look again this often (the first row waits on it).
JOB_STARTING_POLL_SECONDS = 0.2
# ...probing them in the task itself for this long first (a short step), every JOB_PROBE_SECONDS.
JOB_STARTING_INLINE_SECONDS = 1.5
JOB_PROBE_SECONDS = 0.05


def paused() -> bool:
    """An operator's switch: while $STUDIO_DATA_DIR/run/controller-paused exists, this node's
    worker neither plans nor touches processes nor heartbeats nor runs its scheduled batch and
    metering work (running instances keep serving; the first rollup after resuming catches up).
    The test suite pauses its live worker between the tests that use it, so that the worker's
    transactions never meet another test's database flush."""
    return (Path(settings.DATA_DIR) / "run" / PAUSE_FILE).exists()


@worker_ready.connect
def _register_on_start(sender=None, **kwargs) -> None:
    threading.Thread(target=_heartbeat_forever, name="studio-node-heartbeat", daemon=True).start()
    if paused():
        log.warning("controller paused: remove %s to resume", Path(settings.DATA_DIR) / "run" / PAUSE_FILE)
        return
    node = placement.register_node()
    log.info("node %s registered (%s cores, %s GB, queue %s)", node.name, node.cores, node.memory_gb, node.queue)


def _heartbeat_forever() -> None:
    from django.db import connection

    # The worker's own heartbeat: a node stays live (and gets converge tasks) while its worker
    # runs, even if no task reaches it for a while.
    while True:
        time.sleep(HEARTBEAT_SECONDS)
        if paused():
            continue
        try:
            placement.register_node()
        except Exception:
            log.exception("node heartbeat failed")
        finally:
            connection.close()


def _remote_nodes(local: Node, deployment_id: int | None = None) -> list[Node]:
    nodes = placement.live_nodes()
    if deployment_id is not None:
        ids = set(Instance.objects.filter(deployment_id=deployment_id).values_list("node_id", flat=True))
        nodes = [n for n in nodes if n.pk in ids]
    return [n for n in nodes if n.pk != local.pk]


def _converge_on(node_name: str, queue: str, deployment_id: int | None = None) -> None:
    converge_node.apply_async(
        args=[node_name, deployment_id], queue=queue, expires=settings.STUDIO_RECONCILE_SECONDS * 2
    )


def _dispatch(nodes: list[Node], deployment_id: int | None = None) -> None:
    for node in nodes:
        _converge_on(node.name, node.queue, deployment_id)


def send(out: jobs.Outbox) -> None:
    """Send what a batch step put in its outbox."""
    for mini_batch_id, attempt in out.mini_batches:
        run_mini_batch.apply_async(args=[mini_batch_id, attempt])
    for node_name, queue, deployment_id in out.converge:
        _converge_on(node_name, queue, deployment_id)


@shared_task(name="endpoints_app.controller.tasks.reconcile")
def reconcile() -> None:
    if paused():
        return
    node = placement.register_node()
    rc.plan_all()
    touched = rc.converge_node(node) | rc.converge_clusters()
    _dispatch(_remote_nodes(node))
    for deployment_id in touched:
        rc.refresh_deployment_state(deployment_id)
    # Watch instances that are starting here (or on a Ray compute) closely for most of the interval, so a
    # restarted instance is back in rotation as soon as it is ready rather than one interval later.
    deadline = time.monotonic() + settings.STUDIO_RECONCILE_SECONDS * 0.8
    while time.monotonic() < deadline and not paused() and (rc.starting_here(node) or rc.starting_in_clusters()):
        time.sleep(POLL_SECONDS)
        touched = rc.converge_node(node, starting_only=True) | rc.converge_clusters(starting_only=True)
        for deployment_id in touched:
            rc.refresh_deployment_state(deployment_id)


def _local_node() -> Node:
    """This machine's Node row, without the heartbeat write (a step runs several times a second)."""
    return Node.objects.filter(name=settings.STUDIO_NODE_NAME).first() or placement.register_node()


def step_countdown(elapsed: float) -> float:
    """When the next step of a rollout runs: quickly at first (noticing "ready" late costs
    provisioning time), slower as a start-up drags on (reconcile watches starting instances too)."""
    return min(MAX_STEP_SECONDS, POLL_SECONDS * (1 + elapsed / 10))


@shared_task(name="endpoints_app.controller.tasks.provision_deployment")
def provision_deployment(deployment_id: int, began: float | None = None) -> str:
    """One step of a rollout: plan, converge, refresh; re-queued with a countdown until the
    deployment is Succeeded or Failed. A step holds a worker slot for one pass only, so slow
    rollouts never keep reconcile and healing waiting. Safe to run twice (each pass is)."""
    if paused():
        return "paused"
    first = began is None
    began = time.time() if began is None else began
    node = placement.register_node() if first else _local_node()
    rc.plan_deployment(deployment_id)
    if first:
        _dispatch(_remote_nodes(node, deployment_id), deployment_id)
    rc.converge_node(node, deployment_id=deployment_id)
    rc.converge_clusters(deployment_id=deployment_id)
    rc.refresh_deployment_state(deployment_id)
    deployment = Deployment.objects.filter(pk=deployment_id).only("provisioning_state").first()
    if deployment is None:
        return "gone"
    if deployment.provisioning_state not in (ProvisioningState.CREATING, ProvisioningState.UPDATING):
        return deployment.provisioning_state
    elapsed = time.time() - began
    if elapsed > PROVISION_MAX_SECONDS:
        return "left to reconcile"
    provision_deployment.apply_async(args=[deployment_id, began], countdown=step_countdown(elapsed))
    return "next step queued"


@shared_task(name="endpoints_app.controller.tasks.wake_serverless_pool")
def wake_serverless_pool(deployment_id: int) -> str:
    """A serverless endpoint on a stopped pool was called: start it (idempotent, cheap when it runs)."""
    pool = Deployment.objects.filter(pk=deployment_id, endpoint__workspace__is_platform=True).first()
    if pool is None:
        return "not a pool"
    if not pool.wake_pool():
        return "running"
    return provision_deployment(deployment_id)


@shared_task(name="endpoints_app.controller.tasks.reconcile_deployment")
def reconcile_deployment(deployment_id: int, began: float | None = None) -> str:
    """One step of driving a deployment (usually a delete) until it is gone or settled;
    re-queued like provision_deployment."""
    if paused():
        return "paused"
    first = began is None
    began = time.time() if began is None else began
    node = placement.register_node() if first else _local_node()
    if first:
        _dispatch(_remote_nodes(node, deployment_id), deployment_id)
    rc.plan_deployment(deployment_id)
    rc.converge_node(node, deployment_id=deployment_id)
    rc.converge_clusters(deployment_id=deployment_id)
    deployment = Deployment.objects.filter(pk=deployment_id).only("provisioning_state").first()
    if deployment is None:
        rc.plan_all_deleted_endpoints()
        return "gone"
    if deployment.provisioning_state != ProvisioningState.DELETING and not Instance.objects.filter(
        deployment_id=deployment_id, state__in=(InstanceState.STARTING, InstanceState.STOPPING)
    ).exists():
        return deployment.provisioning_state
    elapsed = time.time() - began
    if elapsed > DELETE_MAX_SECONDS:
        return "left to reconcile"
    reconcile_deployment.apply_async(args=[deployment_id, began], countdown=step_countdown(elapsed))
    return "next step queued"


@shared_task(name="endpoints_app.controller.tasks.converge_node")
def converge_node(node_name: str, deployment_id: int | None = None) -> None:
    if paused():
        return
    if node_name != settings.STUDIO_NODE_NAME:
        log.warning("converge for node %s reached worker of node %s; ignored", node_name, settings.STUDIO_NODE_NAME)
        return
    node = placement.register_node()
    for touched in rc.converge_node(node, deployment_id=deployment_id):
        rc.refresh_deployment_state(touched)


@shared_task(name="endpoints_app.batch.tasks.advance_job")
def advance_job(job_id: int) -> str:
    if paused():
        return "paused"
    out = jobs.Outbox()
    state = jobs.advance(job_id, out)
    deadline = time.monotonic() + JOB_STARTING_INLINE_SECONDS
    # Servers that had work handed out by the last step. Another step may record one Ready first
    # (reconcile watches starting instances too): any server ready since the last step means a step now.
    seen = jobs.ready_ids(job_id) if state == "starting" else set()
    while state == "starting" and time.monotonic() < deadline:
        time.sleep(JOB_PROBE_SECONDS)
        if jobs.ready_or_answering(job_id) - seen:
            state = jobs.advance(job_id, out)
            seen = jobs.ready_ids(job_id)
    send(out)
    if state in ("starting", "staging"):
        advance_job.apply_async(args=[job_id], countdown=JOB_STARTING_POLL_SECONDS, expires=60)
    return state


@shared_task(name="endpoints_app.batch.tasks.run_mini_batch", acks_late=True)
def run_mini_batch(mini_batch_id: int, attempt: int) -> str:
    if paused():
        return "paused"
    out = jobs.Outbox()
    outcome = jobs.run_mini_batch(mini_batch_id, attempt, out)
    send(out)
    return outcome


@shared_task(name="endpoints_app.batch.tasks.tick")
def tick() -> None:
    if paused():
        return
    out = jobs.Outbox()
    jobs.tick(out)
    send(out)
