"""Celery tasks of environments (found by the Celery app's autodiscovery of `<app>.tasks`).

- build_environment(build_id): claim a NotStarted build (or a Building one whose worker died),
  build its venv in the sandbox (runtime/environments.py), record Succeeded or Failed with the
  installer's last lines, wake the deployments waiting for it, then evict unused builds past
  STUDIO_ENV_CACHE_GB. Idempotent: a second run of the same id finds nothing to claim."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endpoints_app.models import BuildState, CatalogModel, Deployment, EnvironmentBuild, ProvisioningState

log = logging.getLogger("studio.environments")


def request_build(build: EnvironmentBuild) -> None:
    """Queue a build after the caller's transaction commits, if it never ran, was evicted, or failed (a
    retry: the index may have been down, a package may have been published since). No-op when built or
    building."""
    EnvironmentBuild.objects.filter(pk=build.pk, state=BuildState.FAILED).update(
        state=BuildState.NOT_STARTED, error="")
    build.refresh_from_db(fields=["state", "error", "started_at"])
    # A build whose worker died stays Building: past the timeout it is queued again (_claim takes it).
    stale = build.state == BuildState.BUILDING and build.started_at is not None and build.started_at < _stale_before()
    if build.state == BuildState.NOT_STARTED or stale:
        pk = build.pk
        transaction.on_commit(lambda: build_environment.delay(pk))


def _stale_before():
    return timezone.now() - timedelta(seconds=settings.STUDIO_ENV_BUILD_TIMEOUT_SECONDS + 60)


def _claim(build_id: int) -> bool:
    return bool(EnvironmentBuild.objects.filter(pk=build_id).filter(
        Q(state=BuildState.NOT_STARTED) | Q(state=BuildState.BUILDING, started_at__lt=_stale_before())
    ).update(state=BuildState.BUILDING, error="", started_at=timezone.now(), finished_at=None))


def _wake_waiting(build: EnvironmentBuild) -> None:
    """Provision the deployments that wait for this build now rather than at the next reconcile."""
    from endpoints_app.controller.tasks import provision_deployment

    waiting = Deployment.objects.filter(
        Q(environment__build=build) | Q(environment__isnull=True, model__environment__build=build),
        provisioning_state__in=(ProvisioningState.CREATING, ProvisioningState.UPDATING),
    ).values_list("pk", flat=True)
    for pk in waiting:
        provision_deployment.delay(pk)


@shared_task(name="endpoints_app.build_environment")
def build_environment(build_id: int) -> str:
    from endpoints_app.runtime import environments as envs

    with envs.build_lock():
        if not _claim(build_id):
            return "nothing to do"
        build = EnvironmentBuild.objects.get(pk=build_id)
        log.info("building environment %s: %s", build.key[:12], " ".join(build.requirements))
        try:
            ok, error = envs.build_venv(build.folder, list(build.requirements))
        except Exception as exc:  # the sandbox could not start, the disk is full...: the build failed
            log.exception("environment build %s failed to run", build.key[:12])
            ok, error = False, f"the build could not run: {exc}"
        now = timezone.now()
        EnvironmentBuild.objects.filter(pk=build_id).update(
            state=BuildState.SUCCEEDED if ok else BuildState.FAILED, error=error[:4000], finished_at=now,
            last_used_at=now, size_bytes=envs.tree_size(build.venv) if ok else 0,
        )
    _wake_waiting(build)
    evict_unused()
    return "succeeded" if ok else "failed"


def builds_in_use() -> set[int]:
    """Builds that a live deployment (its own environment or its model's) or a model names: never evicted."""
    used = set(Deployment.objects.filter(environment__isnull=False).values_list("environment__build", flat=True))
    used |= set(Deployment.objects.filter(model__environment__isnull=False)
                .values_list("model__environment__build", flat=True))
    used |= set(CatalogModel.objects.filter(environment__isnull=False, deployments__deleted_at__isnull=True)
                .values_list("environment__build", flat=True))
    return used


def evict_unused(limit_bytes: int | None = None) -> list[str]:
    """Remove built venvs that nothing in use names, least recently used first, until the built ones fit
    in STUDIO_ENV_CACHE_GB. The rows stay (NotStarted): a later deployment builds them again."""
    import shutil

    from endpoints_app.runtime import environments as envs

    limit = int(settings.STUDIO_ENV_CACHE_GB * 1024**3) if limit_bytes is None else limit_bytes
    built = list(EnvironmentBuild.objects.filter(state=BuildState.SUCCEEDED).order_by("last_used_at", "pk"))
    total = sum(b.size_bytes for b in built)
    in_use = builds_in_use()
    removed = []
    for build in built:
        if total <= limit:
            break
        if build.pk in in_use:
            continue
        if EnvironmentBuild.objects.filter(pk=build.pk, state=BuildState.SUCCEEDED).update(
                state=BuildState.NOT_STARTED, size_bytes=0):
            shutil.rmtree(build.venv, ignore_errors=True)
            (build.folder / envs.ARCHIVE).unlink(missing_ok=True)  # what Ray nodes fetch of it
            total -= build.size_bytes
            removed.append(build.key)
            log.info("evicted environment build %s (%s bytes)", build.key[:12], build.size_bytes)
    return removed
