"""Serverless pools in the controller: started on first need, scaled with the load metered on
the serverless endpoints they serve, stopped when idle, woken again on demand; then the same
with the real worker and a real MiniLM model server."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from endpoints_app.controller import reconcile, tasks
from endpoints_app.models import (
    AuditLog,
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    UsageMinute,
)
from tests.foundation.conftest import catalog_row
from tests.live import register_test_node, wait_for

WS = "/api/v1/workspaces/team"
EMBEDDINGS = "studio://registries/studio/models/all-minilm-l6-v2"


def embeddings_offer() -> CatalogModel:
    return CatalogModel.objects.create(
        name="all-minilm-l6-v2", task="embeddings", format="sentence-transformers", license="Apache-2.0",
        artifact_path="/nowhere", deployment_kinds=["online", "serverless"],
        price_input_per_1k=Decimal("0.00002"), price_output_per_1k=Decimal("0"),
    )


def deploy_serverless(api, name: str = "embed") -> Endpoint:
    assert api.post(f"{WS}/marketplace-subscriptions", {"model_id": EMBEDDINGS}, format="json").status_code == 201
    response = api.post(f"{WS}/serverless-endpoints", {"name": name, "model_id": EMBEDDINGS}, format="json")
    assert response.status_code == 201, response.content
    return Endpoint.objects.get(name=name)


def ready_as_if_provisioned(pool: Deployment) -> None:
    reconcile.plan_deployment(pool.pk)
    Instance.objects.filter(deployment=pool, state=InstanceState.STARTING).update(
        state=InstanceState.READY, ready_at=timezone.now()
    )
    reconcile.refresh_deployment_state(pool.pk)


def load(endpoint: Endpoint, seconds_in_flight: float, minute=None) -> None:
    minute = minute or timezone.now().replace(second=0, microsecond=0)
    UsageMinute.objects.update_or_create(
        endpoint=endpoint, deployment="", minute=minute,
        defaults={"requests": 100, "status_2xx": 100, "latency_ms_sum": seconds_in_flight * 1000},
    )


@pytest.mark.django_db
def test_a_pool_scales_with_the_load_of_all_its_endpoints(owner_api, workspace):
    register_test_node()
    embeddings_offer()
    endpoint = deploy_serverless(owner_api)
    pool = endpoint.pool
    ready_as_if_provisioned(pool)
    pool.refresh_from_db()
    assert (pool.instance_count, pool.provisioning_state) == (1, "Succeeded")
    Deployment.objects.filter(pk=pool.pk).update(last_scaled_at=timezone.now() - timedelta(minutes=5))
    # Way past 4 concurrent requests x 70% per instance: the pool goes to its maximum (2).
    load(endpoint, 600)
    reconcile.plan_deployment(pool.pk)
    pool.refresh_from_db()
    assert pool.instance_count == 2
    assert Instance.objects.filter(deployment=pool, state=InstanceState.STARTING).count() == 1
    entry = AuditLog.objects.filter(action="pool.scale").latest("id")
    assert (entry.details["from_instances"], entry.details["to_instances"]) == (1, 2)
    assert entry.workspace.is_platform


@pytest.mark.django_db
def test_an_idle_pool_stops_and_stays_stopped_until_woken(owner_api, workspace, settings):
    register_test_node()
    embeddings_offer()
    endpoint = deploy_serverless(owner_api)
    pool = endpoint.pool
    ready_as_if_provisioned(pool)
    # A request 10 minutes ago keeps it (idle limit 15 min) ...
    long_ago = timezone.now() - timedelta(minutes=30)
    Deployment.objects.filter(pk=pool.pk).update(pool_wanted_at=long_ago, last_scaled_at=long_ago)
    load(endpoint, 1, minute=(timezone.now() - timedelta(minutes=10)).replace(second=0, microsecond=0))
    reconcile.plan_deployment(pool.pk)
    pool.refresh_from_db()
    assert pool.instance_count == 1
    # ... a limit of 5 minutes stops it: its instance is asked to stop.
    settings.STUDIO_SERVERLESS_IDLE_MINUTES = 5
    reconcile.plan_deployment(pool.pk)
    pool.refresh_from_db()
    assert pool.instance_count == 0
    assert Instance.objects.get(deployment=pool).state == InstanceState.STOPPING
    assert AuditLog.objects.filter(action="pool.scale", details__reason="no request for 5 min").exists()
    # Load metered long ago does not bring it back; waking it does.
    reconcile.plan_deployment(pool.pk)
    assert Deployment.objects.get(pk=pool.pk).instance_count == 0
    assert pool.wake_pool() is True
    assert pool.wake_pool() is False  # already wanted: cheap and idempotent
    reconcile.plan_deployment(pool.pk)
    pool.refresh_from_db()
    assert (pool.instance_count, pool.provisioning_state) == (1, "Updating")
    assert Instance.objects.filter(deployment=pool, state=InstanceState.STARTING).count() == 1


@pytest.mark.django_db
def test_a_pool_nobody_uses_stops(owner_api, workspace):
    register_test_node()
    embeddings_offer()
    endpoint = deploy_serverless(owner_api)
    ready_as_if_provisioned(endpoint.pool)
    assert owner_api.delete(f"{WS}/serverless-endpoints/embed").status_code == 204
    reconcile.plan_deployment(endpoint.pool_id)
    assert Deployment.objects.get(pk=endpoint.pool_id).instance_count == 0
    assert AuditLog.objects.filter(action="pool.scale", details__reason="no serverless endpoint uses it").exists()


@pytest.mark.django_db
def test_waking_something_that_is_not_a_pool_does_nothing(owner_api, workspace):
    assert tasks.wake_serverless_pool(12345) == "not a pool"


def test_the_worker_starts_a_pool_on_create_stops_it_when_idle_and_wakes_it(
    live_worker, owner_api, workspace, seeded_artifacts
):
    catalog_row("all-minilm-l6-v2", seeded_artifacts)
    endpoint = deploy_serverless(owner_api)
    pool = endpoint.pool

    def ready_instance():
        return Instance.objects.filter(deployment=pool, state=InstanceState.READY).first()

    first = wait_for(ready_instance, timeout=180, what="the pool's first instance")
    assert first.pid and first.port
    # Ready comes first; Succeeded once every live gateway worker has loaded the route.
    wait_for(lambda: Deployment.objects.get(pk=pool.pk).provisioning_state == "Succeeded", timeout=60,
             what="the pool's deployment to report Succeeded")
    # Idle for longer than STUDIO_SERVERLESS_IDLE_MINUTES: the worker stops the process.
    long_ago = timezone.now() - timedelta(minutes=60)
    Deployment.objects.filter(pk=pool.pk).update(pool_wanted_at=long_ago, last_scaled_at=long_ago)
    wait_for(lambda: Instance.objects.get(pk=first.pk).state == InstanceState.STOPPED, timeout=60,
             what="the idle pool to stop")
    assert Deployment.objects.get(pk=pool.pk).instance_count == 0
    # The gateway's wake-up (the Celery task) starts it again.
    tasks.wake_serverless_pool.delay(pool.pk)
    second = wait_for(ready_instance, timeout=180, what="the woken pool")
    assert second.pk != first.pk


@pytest.mark.django_db
def test_pools_start_on_the_serverless_compute_and_a_stopped_one_moves_there_when_woken(owner_api, workspace,
                                                                                          settings):
    from django.db import transaction

    from endpoints_app.models.computes import Compute
    from endpoints_app.services import serverless

    register_test_node()
    embeddings_offer()
    Compute.objects.create(name="cluster", type="ray", address="127.0.0.1:1", state="Ready")
    settings.STUDIO_SERVERLESS_COMPUTE = "elsewhere"  # no such compute: pools stay on local
    pool = deploy_serverless(owner_api).pool
    assert pool.compute.name == "local"
    ready_as_if_provisioned(pool)
    settings.STUDIO_SERVERLESS_COMPUTE = "cluster"
    # Stopped idle, but its instance still drains: woken now, it starts where it is.
    long_ago = timezone.now() - timedelta(minutes=60)
    Deployment.objects.filter(pk=pool.pk).update(pool_wanted_at=long_ago, last_scaled_at=long_ago)
    reconcile.plan_deployment(pool.pk)
    assert Instance.objects.get(deployment=pool).state == InstanceState.STOPPING
    assert pool.wake_pool() is True
    assert Deployment.objects.get(pk=pool.pk).compute.name == "local"
    # Stopped with nothing left running: woken, it moves to the serverless compute.
    Deployment.objects.filter(pk=pool.pk).update(instance_count=0)
    Instance.objects.filter(deployment=pool).update(state=InstanceState.STOPPED)
    assert pool.wake_pool() is True
    assert Deployment.objects.get(pk=pool.pk).compute.name == "cluster"
    # A pool made from now on starts there.
    newer = CatalogModel.objects.get(name="all-minilm-l6-v2")
    newer.pk, newer.version = None, 2
    newer.save()
    with transaction.atomic():
        assert serverless.ensure_pool(newer).compute.name == "cluster"
