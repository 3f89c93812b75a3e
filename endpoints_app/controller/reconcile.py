"""The reconcile loop: level-triggered and idempotent.

Two halves, both safe to run twice or concurrently:

- plan_deployment() (any worker) compares a deployment's desired state with its
  Instance rows: creates rows for missing instances (placed on a node), marks
  extra or superseded ones Stopping (after the new generation is ready: a
  surge), applies autoscale, and finishes deletes.
- converge_node() (only on the node's own worker) makes processes match the
  rows on that node: launches Starting instances, probes readiness and
  liveness, restarts dead or unhealthy ones (giving up after
  STUDIO_MAX_RESTARTS quick failures), drains and stops Stopping ones, and
  kills processes no instance wants. It re-adopts running processes after a
  worker restart: a row with a pid whose process is alive is never relaunched.

Every transition that launches or signals a process is claimed with a locked
or conditional update first, so two passes never start or stop one twice."""

from __future__ import annotations

import logging
import math
import secrets
import signal
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, Max, OuterRef, Sum
from django.utils import timezone

from endpoints_app.audit import SYSTEM, record
from endpoints_app.controller import backends, placement, process
from endpoints_app.controller.backends import Backend
from endpoints_app.models import (
    Deployment,
    Endpoint,
    GatewayWorker,
    Instance,
    InstanceState,
    Node,
    ProvisioningState,
    RouteVersion,
    UsageMinute,
)
from endpoints_app.runtime.environments import EnvironmentPending
from endpoints_app.runtime.launch import launch_spec

log = logging.getLogger("studio.controller")

ACTIVE = (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY)
LIVE = (*ACTIVE, InstanceState.STOPPING)
# An instance that stayed ready this long has earned fresh restarts (kill -9 after a day is no crash loop).
STABLE_AFTER = timedelta(seconds=60)
# A node whose worker has not checked in for this long has its instances replaced elsewhere.
NODE_LOST = 2 * placement.NODE_TIMEOUT
# A pid file with no instance behind it is left alone this long (its launch may not be committed yet).
ORPHAN_GRACE_SECONDS = 15


def instance_name(base: str) -> str:
    """A new instance's name: what it serves (a deployment, a batch job) and a random suffix."""
    return f"{base}-{secrets.token_hex(3)}"


def _instance_name(deployment: Deployment) -> str:
    return instance_name(f"{deployment.endpoint.name[:24]}-{deployment.name[:24]}")


def _mark_stopping(instances: list[Instance]) -> bool:
    """Mark instances Stopping; True if one of them was routable (the gateway must reload)."""
    ids = [i.pk for i in instances if i.state in ACTIVE]
    if not ids:
        return False
    was_ready = any(i.state == InstanceState.READY for i in instances if i.pk in ids)
    Instance.objects.filter(pk__in=ids, state__in=ACTIVE).update(
        state=InstanceState.STOPPING, stop_requested_at=timezone.now()
    )
    return was_ready


# -- planning ----------------------------------------------------------------------------------------

def plan_all() -> None:
    ids = Deployment.objects.filter(endpoint__kind__in=placement.PROVISIONED_KINDS).values_list("pk", flat=True)
    for deployment_id in list(ids):
        try:
            plan_deployment(deployment_id)
        except Exception:  # one broken deployment must not stop the loop for the others
            log.exception("planning deployment %s failed", deployment_id)
    plan_all_deleted_endpoints()


def plan_all_deleted_endpoints() -> None:
    """Finish deleting endpoints whose deployments are all gone."""
    live_deployments = Deployment.objects.filter(endpoint=OuterRef("pk"))
    deleting = Endpoint.objects.filter(provisioning_state=ProvisioningState.DELETING).exclude(Exists(live_deployments))
    for endpoint in deleting:
        endpoint.mark_deleted()
        RouteVersion.bump(acknowledge=False)


def plan_deployment(deployment_id: int) -> None:
    bump = False
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("endpoint", "endpoint__workspace", "instance_type", "compute")
            .filter(pk=deployment_id)
            .first()
        )
        if deployment is None or deployment.endpoint.kind not in placement.PROVISIONED_KINDS:
            return
        endpoint = deployment.endpoint
        instances = list(deployment.instances.all())
        deleting = ProvisioningState.DELETING in (deployment.provisioning_state, endpoint.provisioning_state)
        if deleting:
            bump |= _forget_lost_nodes(deployment)
            bump |= _mark_stopping(instances)
            if not deployment.instances.filter(state__in=LIVE).exists():
                deployment.mark_deleted()
                if endpoint.provisioning_state == ProvisioningState.DELETING and not endpoint.deployments.exists():
                    endpoint.mark_deleted()
                bump = True
        else:
            # Stopped and failed rows stay: they are the instance-hours that costs are billed from.
            # Scaling only changes instance_count; the instance plan below does any route change.
            if endpoint.workspace.is_platform:
                _scale_pool(deployment)
            else:
                _autoscale(deployment)
            bump |= _plan_instances(deployment)
    if bump:
        RouteVersion.bump(acknowledge=False)
    if not deleting:
        refresh_deployment_state(deployment_id)


def _forget_lost_nodes(deployment: Deployment) -> bool:
    """Instances on a node whose worker has been silent for long are replaced elsewhere; if the
    node comes back, its orphan sweep stops the processes no row wants any more."""
    lost = Instance.objects.filter(
        deployment=deployment, state__in=LIVE, node__last_heartbeat__lt=timezone.now() - NODE_LOST
    )
    was_ready = lost.filter(state=InstanceState.READY).exists()
    for instance in lost:
        log.warning("node %s is lost; replacing instance %s", instance.node_id, instance.name)
    lost.update(state=InstanceState.STOPPED, stopped_at=timezone.now(), last_error="its node stopped answering")
    return was_ready


def _plan_instances(deployment: Deployment) -> bool:
    bump = _forget_lost_nodes(deployment)
    instances = list(deployment.instances.all())
    current = [i for i in instances if i.generation == deployment.generation and i.state in ACTIVE]
    old = [i for i in instances if i.generation != deployment.generation and i.state in ACTIVE]
    desired = deployment.instance_count
    if deployment.provisioning_state != ProvisioningState.FAILED:
        for _ in range(desired - len(current)):
            node = backends.for_deployment(deployment).place(deployment)
            if node is None:
                log.warning("no live node for an instance of %s", deployment)
                break
            current.append(
                Instance.objects.create(
                    deployment=deployment,
                    name=_instance_name(deployment),
                    node=node,
                    generation=deployment.generation,
                    state=InstanceState.STARTING,
                )
            )
    if len(current) > desired:
        # Stop the least useful first: not ready, then newest.
        ranked = sorted(current, key=lambda i: (i.state == InstanceState.READY, -i.pk))
        bump |= _mark_stopping(ranked[: len(current) - desired])
    ready = sum(1 for i in current if i.state == InstanceState.READY)
    if old and deployment.provisioning_state != ProvisioningState.FAILED:
        # Surge: old instances serve until as many new ones are ready; ones serving nothing go now.
        leaving = [i for i in old if ready >= desired or i.state != InstanceState.READY]
        bump |= _mark_stopping(leaving)
    return bump


def refresh_deployment_state(deployment_id: int) -> None:
    """Creating/Updating -> Succeeded when enough current instances are ready and every live gateway worker
    routes to them, -> Failed when one gave up."""
    if _about_to_succeed(deployment_id) and not GatewayWorker.wait_for(RouteVersion.current()):
        return  # a gateway worker still routes on an older table: the next pass looks again
    with transaction.atomic():
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .select_related("endpoint", "endpoint__workspace")
            .filter(pk=deployment_id)
            .first()
        )
        if deployment is None or deployment.provisioning_state in (
            ProvisioningState.DELETING, ProvisioningState.FAILED
        ):
            return
        current = list(deployment.instances.filter(generation=deployment.generation))
        failed = [i for i in current if i.state == InstanceState.FAILED]
        ready = sum(1 for i in current if i.state == InstanceState.READY)
        state = deployment.provisioning_state
        if failed:
            first = failed[0]
            deployment.provisioning_state = ProvisioningState.FAILED
            deployment.error = f"Instance {first.name} failed: {first.last_error}".strip()[:4000]
            deployment.save(update_fields=["provisioning_state", "error", "updated_at"])
            if state in (ProvisioningState.CREATING, ProvisioningState.UPDATING):
                # Nothing of a failed rollout stays behind; instances that serve (old or current) stay.
                _mark_stopping([i for i in current if i.state in (InstanceState.STARTING, InstanceState.UNHEALTHY)])
            record(SYSTEM, "deployment.failed", deployment, deployment.endpoint.workspace, error=deployment.error[:500])
        elif state in (ProvisioningState.CREATING, ProvisioningState.UPDATING) and ready >= deployment.instance_count:
            deployment.provisioning_state = ProvisioningState.SUCCEEDED
            deployment.error = ""
            deployment.save(update_fields=["provisioning_state", "error", "updated_at"])


def _about_to_succeed(deployment_id: int) -> bool:
    """Would refresh_deployment_state mark it Succeeded now? (Read without locks: the wait for the gateways
    happens outside the transaction, where their heartbeats can be written.)"""
    deployment = Deployment.objects.filter(
        pk=deployment_id, provisioning_state__in=(ProvisioningState.CREATING, ProvisioningState.UPDATING)
    ).values("generation", "instance_count").first()
    if deployment is None:
        return False
    current = Instance.objects.filter(deployment_id=deployment_id, generation=deployment["generation"])
    if current.filter(state=InstanceState.FAILED).exists():
        return False
    return current.filter(state=InstanceState.READY).count() >= deployment["instance_count"]


# -- autoscale ---------------------------------------------------------------------------------------

def measured_in_flight(deployment: Deployment) -> float:
    """Average requests in flight recently (Little's law on the gateway's per-minute usage
    counters: seconds spent answering / seconds elapsed), over the current minute, and the
    previous one too while the current one is under 10 s old. A serverless pool's load is
    metered on the serverless endpoints it serves."""
    now = timezone.now()
    since = (now - timedelta(seconds=10)).replace(second=0, microsecond=0)
    if deployment.endpoint.workspace.is_platform:
        rows = UsageMinute.objects.filter(endpoint__in=_pool_endpoints(deployment), minute__gte=since)
    else:
        rows = UsageMinute.objects.filter(
            endpoint_id=deployment.endpoint_id, deployment=deployment.name, minute__gte=since
        )
    busy_ms = rows.aggregate(total=Sum("latency_ms_sum"))["total"] or 0.0
    window = max(1.0, (now - since).total_seconds())
    return busy_ms / 1000.0 / window


def _wanted_by_load(deployment: Deployment, low: int, high: int, now) -> tuple[int, float, float] | None:
    """The one rule for online autoscale and serverless pools: instances for the measured load at the
    target utilization, between `low` and `high`, as (desired, in flight, target in flight per instance);
    None while the last scale's cooldown lasts."""
    scale = deployment.scale_settings or {}
    cooldown = timedelta(seconds=int(scale.get("cooldown_seconds", 60)))
    if deployment.last_scaled_at and now - deployment.last_scaled_at < cooldown:
        return None
    per_instance = int((deployment.request_settings or {}).get("max_concurrent_requests_per_instance") or 1)
    target = max(0.01, per_instance * int(scale.get("target_utilization_percentage", 70)) / 100.0)
    in_flight = measured_in_flight(deployment)
    return max(low, min(high, math.ceil(in_flight / target) if in_flight > 0 else low)), in_flight, target


def _scale_to(deployment: Deployment, desired: int, now, action: str, **details) -> None:
    """Set the instance count (the instance plan does the rest) and audit why."""
    before = deployment.instance_count
    deployment.instance_count = desired
    deployment.last_scaled_at = now
    if desired > before:
        deployment.provisioning_state = ProvisioningState.UPDATING
    deployment.save(update_fields=["instance_count", "last_scaled_at", "provisioning_state", "updated_at"])
    record(SYSTEM, action, deployment, deployment.endpoint.workspace, from_instances=before, to_instances=desired,
           **details)
    log.info("%s %s: %s -> %s instances (%s)", action, deployment, before, desired, details)


def _autoscale(deployment: Deployment) -> None:
    scale = deployment.scale_settings or {}
    if scale.get("type") != "target_utilization" or deployment.provisioning_state != ProvisioningState.SUCCEEDED:
        return
    now = timezone.now()
    wanted = _wanted_by_load(deployment, int(scale.get("min_instances", 1)), int(scale.get("max_instances", 1)), now)
    if wanted is None or wanted[0] == deployment.instance_count:
        return
    desired, in_flight, target = wanted
    _scale_to(deployment, desired, now, "deployment.autoscale", in_flight=round(in_flight, 3),
              target_in_flight_per_instance=round(target, 3))


# -- serverless pools -------------------------------------------------------------------------------

def _pool_endpoints(pool: Deployment):
    """Every serverless endpoint the pool serves or served (deleted ones' usage counts as recent demand too)."""
    return Endpoint.all_objects.filter(pool=pool)


def pool_last_wanted(pool: Deployment):
    """When the pool was last asked for: woken/created, or the end of the last minute with a request."""
    last_minute = (
        UsageMinute.objects.filter(endpoint__in=_pool_endpoints(pool), requests__gt=0)
        .aggregate(last=Max("minute"))["last"]
    )
    times = [t for t in (pool.pool_wanted_at, last_minute and last_minute + timedelta(minutes=1)) if t]
    return max(times) if times else None


def _scale_pool(pool: Deployment) -> None:
    """A pool runs while a serverless endpoint uses it and it had a request in the last
    STUDIO_SERVERLESS_IDLE_MINUTES, scaled by load (_wanted_by_load) between 1 and its maximum;
    otherwise it stops (instance_count 0). A stopped pool starts again only when woken
    (Deployment.wake_pool: an endpoint created or called)."""
    now = timezone.now()
    in_use = Endpoint.objects.filter(pool=pool, kind=Endpoint.Kind.SERVERLESS).exclude(
        provisioning_state=ProvisioningState.DELETING
    ).exists()
    last = pool_last_wanted(pool)
    idle_for = settings.STUDIO_SERVERLESS_IDLE_MINUTES
    if not in_use or last is None or now - last > timedelta(minutes=idle_for):
        if pool.instance_count:
            _scale_to(pool, 0, now, "pool.scale", reason="no serverless endpoint uses it" if not in_use
                      else f"no request for {idle_for} min")
        return
    if pool.instance_count == 0:
        return  # stopped: only a wake starts it
    wanted = _wanted_by_load(pool, 1, max(1, int((pool.scale_settings or {}).get("max_instances", 1))), now)
    if wanted is not None and wanted[0] != pool.instance_count:
        _scale_to(pool, wanted[0], now, "pool.scale", reason="scaled with load")


# -- converging processes on this node ---------------------------------------------------------------

def converge_node(node: Node, deployment_id: int | None = None, starting_only: bool = False) -> set[int]:
    """Make this node's processes match its Instance rows. Returns the deployments touched."""
    rows = Instance.objects.filter(node=node).select_related(
        "deployment", "deployment__model", "deployment__instance_type", "deployment__endpoint", "node"
    )
    if deployment_id is not None:
        rows = rows.filter(deployment_id=deployment_id)
    if starting_only:
        rows = rows.filter(state=InstanceState.STARTING)
    touched = converge_rows(rows, backends.LOCAL)
    if deployment_id is None and not starting_only:
        sweep_orphans(node)
    return touched


def converge_clusters(deployment_id: int | None = None, starting_only: bool = False) -> set[int]:
    """Make the instances of deployments on Ray computes match their rows (any worker may: every
    transition is claimed as on a node). Returns the deployments touched."""
    from endpoints_app.controller import ray_backend

    touched: set[int] = set()
    for backend, rows in ray_backend.rows_by_compute(deployment_id, starting_only):
        try:
            backend.ray  # noqa: B018 - connects this process's driver
        except Exception as exc:  # an unreachable cluster waits for the next pass; local compute goes on
            log.warning("Ray compute %s is unreachable: %s", backend.compute.name, exc)
            continue
        touched |= converge_rows(rows, backend)
    return touched


def starting_in_clusters(deployment_id: int | None = None) -> bool:
    rows = Instance.objects.filter(state=InstanceState.STARTING, deployment__compute__type="ray")
    if deployment_id is not None:
        rows = rows.filter(deployment_id=deployment_id)
    return rows.exists()


def converge_rows(rows, backend: Backend) -> set[int]:
    """Make what runs match these Instance rows, through `backend`. Returns the deployments touched."""
    touched: set[int] = set()
    for instance in rows:
        try:
            instance = backend.refresh(instance)
            if instance.state == InstanceState.STARTING:
                _converge_starting(backend, instance)
            elif instance.state in (InstanceState.READY, InstanceState.UNHEALTHY):
                _converge_running(backend, instance)
            elif instance.state == InstanceState.STOPPING:
                _converge_stopping(backend, instance)
            elif instance.pid is not None and backend.running(instance):
                # Stopped or Failed rows must hold no process.
                backend.stop(instance, grace=2)
            touched.add(instance.deployment_id)
        except Exception:
            log.exception("converging instance %s failed", instance.name)
    return touched


def _specs(backend: Backend, instance: Instance):
    return launch_spec(instance.deployment, backend.spec_port(instance), host=instance.node.host, name=instance.name)


def _launch(backend: Backend, instance: Instance) -> None:
    with transaction.atomic():
        row = (
            Instance.objects.select_for_update(of=("self",))
            .select_related("deployment", "deployment__model", "deployment__instance_type", "deployment__endpoint",
                            "node")
            .filter(pk=instance.pk, state=InstanceState.STARTING, pid__isnull=True)
            .first()
        )
        if row is None:
            return  # another pass launched it
        port = backend.reserve_port(row)
        row.port = port
        try:
            spec = _specs(backend, row)
        except EnvironmentPending:
            return  # its environment is being built: a later pass launches it
        except Exception as exc:  # no runtime for this model, a failed environment: nothing to retry
            row.state = InstanceState.FAILED
            row.last_error = str(exc)
            row.save(update_fields=["state", "last_error", "port"])
            return
        attempt = f"(attempt {row.restarts + 1}, port {port})"
        try:
            row.pid = backend.launch(row, spec, attempt)
        except backends.Unplaceable as exc:
            _wait_unplaceable(row, str(exc))
            return
        except OSError as exc:  # the runtime's executable or working directory is missing
            process.note(row.name, f"could not start: {exc}")
            row.state = InstanceState.FAILED
            row.last_error = f"could not start the model server: {exc}"
            row.save(update_fields=["state", "last_error", "port"])
            return
        row.log_path = backend.log_path(row)
        row.launched_at = timezone.now()
        row.started_at = row.started_at or row.launched_at
        row.probe_failures = 0
        row.last_probe_at = None
        row.save(update_fields=[
            "pid", "port", "node", "log_path", "started_at", "launched_at", "probe_failures", "last_probe_at",
        ])
    log.info("started %s pid %s port %s", row.name, row.pid, row.port)


def _wait_unplaceable(row: Instance, why: str) -> None:
    """The instance cannot start anywhere yet: it stays Starting (a later pass tries again) and says why,
    once, in its log and on its deployment while that is being provisioned."""
    if row.last_error == why:
        return
    process.note(row.name, f"waiting: {why}")
    log.warning("%s waits: %s", row.name, why)
    Instance.objects.filter(pk=row.pk).update(last_error=why)
    Deployment.objects.filter(
        pk=row.deployment_id, provisioning_state__in=(ProvisioningState.CREATING, ProvisioningState.UPDATING)
    ).update(error=why[:4000])


def _converge_starting(backend: Backend, instance: Instance) -> None:
    if instance.pid is None:
        _launch(backend, instance)
        return
    if not backend.running(instance):
        code = backend.exit_code(instance)
        reason = f"exited{f' with status {code}' if code is not None else ''} before it was ready"
        _fail(backend, instance, reason)
        return
    probe = instance.deployment.readiness_probe or {}
    started = instance.launched_at or instance.started_at or timezone.now()
    elapsed = (timezone.now() - started).total_seconds()
    if elapsed < int(probe.get("initial_delay", 0)):
        return
    spec = _specs(backend, instance)
    timeout = float(probe.get("timeout", 2))
    successes = int(probe.get("success_threshold", 1))
    ok = all(backend.probe(instance, spec.ready_path, timeout, spec.probe_headers) for _ in range(successes))
    if ok:
        updated = Instance.objects.filter(pk=instance.pk, state=InstanceState.STARTING, pid=instance.pid).update(
            state=InstanceState.READY, ready_at=timezone.now(), probe_failures=0, last_probe_at=timezone.now()
        )
        if updated:
            log.info("%s is ready after %.1fs", instance.name, elapsed)
            RouteVersion.bump(acknowledge=False)
        return
    period, threshold = int(probe.get("period", 1)), int(probe.get("failure_threshold", 180))
    deadline = int(probe.get("initial_delay", 0)) + period * threshold
    if elapsed > deadline:
        _fail(backend, instance, f"was not ready after {deadline} s (readiness probe {spec.ready_path})")


def _converge_running(backend: Backend, instance: Instance) -> None:
    if not backend.running(instance):
        code = backend.exit_code(instance)
        _fail(backend, instance, f"process exited{f' with status {code}' if code is not None else ''}")
        return
    probe = instance.deployment.liveness_probe or {}
    now = timezone.now()
    period = int(probe.get("period", 5))
    if instance.last_probe_at and (now - instance.last_probe_at).total_seconds() < period:
        return
    launched = instance.launched_at or instance.started_at
    if launched and (now - launched).total_seconds() < int(probe.get("initial_delay", 0)):
        return
    spec = _specs(backend, instance)
    timeout = float(probe.get("timeout", 2))
    live = backend.probe(instance, spec.live_path, timeout, spec.probe_headers)
    ready = live and backend.probe(instance, spec.ready_path, timeout, spec.probe_headers)
    failures = 0 if live else instance.probe_failures + 1
    if failures >= int(probe.get("failure_threshold", 3)):
        _fail(backend, instance, f"liveness probe {spec.live_path} failed {failures} times")
        return
    state = InstanceState.READY if ready else InstanceState.UNHEALTHY
    updated = Instance.objects.filter(pk=instance.pk, pid=instance.pid, state__in=(InstanceState.READY,
                                      InstanceState.UNHEALTHY)).update(
        state=state, probe_failures=failures, last_probe_at=now
    )
    if updated and state != instance.state:
        log.info("%s is now %s", instance.name, state)
        RouteVersion.bump(acknowledge=False)


def _fail(backend: Backend, instance: Instance, reason: str) -> None:
    """The process died or failed its probes: restart it, or give up after quick repeated failures."""
    if instance.pid is not None:
        backend.stop(instance, grace=2)
    cause = process.last_attempt(instance.log_path or backend.log_path(instance))
    now = timezone.now()
    with transaction.atomic():
        row = (
            Instance.objects.select_for_update(of=("self",))
            .select_related("deployment", "deployment__endpoint__workspace")
            .filter(pk=instance.pk, pid=instance.pid, state=instance.state)
            .first()
        )
        if row is None:
            return  # another pass handled it
        stable = row.ready_at is not None and row.state == InstanceState.READY and now - row.ready_at > STABLE_AFTER
        if stable:
            row.restarts = 0
        was_ready = row.state == InstanceState.READY
        row.last_error = f"{reason}\n{cause}".strip()[:4000]
        row.pid = None
        row.port = None
        row.probe_failures = 0
        deleting = row.deployment.provisioning_state == ProvisioningState.DELETING
        if row.restarts >= settings.STUDIO_MAX_RESTARTS and not deleting:
            row.state = InstanceState.FAILED
            row.stopped_at = now
            process.note(row.name, f"instance {reason}; giving up after {row.restarts} restarts")
        else:
            row.restarts += 1
            row.state = InstanceState.STARTING
            process.note(row.name, f"instance {reason}; restarting (restart {row.restarts})")
            record(SYSTEM, "instance.restart", row, row.deployment.endpoint.workspace, reason=reason,
                   restarts=row.restarts)
        row.save(update_fields=["state", "last_error", "pid", "port", "probe_failures", "restarts", "stopped_at"])
    log.warning("%s %s (restarts %s, now %s)", instance.name, reason, row.restarts, row.state)
    if was_ready:
        RouteVersion.bump(acknowledge=False)


def _converge_stopping(backend: Backend, instance: Instance) -> None:
    now = timezone.now()
    requested = instance.stop_requested_at or now
    # Only an instance the gateway may have routed to needs draining.
    drain = settings.STUDIO_DRAIN_SECONDS if instance.ready_at else 0
    if (now - requested).total_seconds() < drain:
        return
    if instance.pid is not None and backend.running(instance):
        timeout_ms = int((instance.deployment.request_settings or {}).get("request_timeout_ms") or 5000)
        grace = timeout_ms / 1000.0 + 2
        if instance.stopped_at is None:
            # One SIGTERM only (a second one makes uvicorn drop requests in flight); claimed so passes agree.
            claimed = Instance.objects.filter(pk=instance.pk, stopped_at__isnull=True).update(stopped_at=now)
            if claimed:
                backend.signal(instance, signal.SIGTERM)
                process.note(instance.name, "stopping instance (SIGTERM)")
            return
        if (now - instance.stopped_at).total_seconds() > grace:
            backend.signal(instance, signal.SIGKILL)
            process.note(instance.name, "instance did not stop in time (SIGKILL)")
        return
    backend.forget(instance)
    Instance.objects.filter(pk=instance.pk, state=InstanceState.STOPPING).update(
        state=InstanceState.STOPPED, pid=None, stopped_at=instance.stopped_at or now
    )
    log.info("stopped %s", instance.name)


def sweep_orphans(node: Node) -> None:
    """Kill model servers that no instance on this node wants (deleted rows, lost launches)."""
    wanted = {
        name: (node_id, pid)
        for name, node_id, pid in Instance.objects.filter(state__in=LIVE).values_list("name", "node_id", "pid")
    }
    for name, pid in process.pid_files().items():
        owner, wanted_pid = wanted.get(name, (None, None))
        if owner is not None and owner != node.pk:
            continue  # another node's instance (nodes that share a data dir share the pid folder)
        if wanted_pid == pid:
            continue
        if process.pid_file_age(name) < ORPHAN_GRACE_SECONDS:
            continue
        if process.is_running(pid, name):
            log.warning("stopping orphan model server %s (pid %s)", name, pid)
            process.stop(pid, name, grace=3)
        process.forget(name, pid)


def starting_here(node: Node, deployment_id: int | None = None) -> bool:
    rows = Instance.objects.filter(node=node, state=InstanceState.STARTING)
    if deployment_id is not None:
        rows = rows.filter(deployment_id=deployment_id)
    return rows.exists()
