"""Serverless pools on a Ray compute: a pool runs where IT says (STUDIO_SERVERLESS_COMPUTE; the session's
worker runs with `cluster`, tests/cluster/conftest.py). A pool started on the local compute moves to the
Ray compute when it is next woken after stopping idle, serves chat there through the gateway, and its
actor goes when it stops idle again."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import requests
from django.db.models import F
from django.utils import timezone

from endpoints_app.models import Deployment, Endpoint, Instance, InstanceState, UsageMinute
from tests import ray_cluster
from tests.foundation.conftest import CHAT, catalog_row
from tests.live import wait_for
from tests.runtime.conftest import seeded_artifacts  # noqa: F401 - the seed's files, a fixture

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WS = "/api/v1/workspaces/team"
MODEL_ID = f"studio://registries/studio/models/{CHAT}"


def chat(url: str, key: str) -> requests.Response:
    return requests.post(f"{url}/inference/chatty/chat/completions", headers={"Authorization": f"Bearer {key}"},
                         json={"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4}, timeout=120)


def ready_instance(pool: Deployment) -> Instance | None:
    return Instance.objects.filter(deployment=pool, state=InstanceState.READY).select_related("node").first()


def stop_idle(pool: Deployment, instance: Instance) -> None:
    """As if the last request came an hour ago: the worker stops the pool (STUDIO_SERVERLESS_IDLE_MINUTES)."""
    time.sleep(3)  # the gateway's flush (every 2 s) has metered the last requests
    long_ago = timezone.now() - timedelta(minutes=60)
    UsageMinute.objects.filter(endpoint__pool=pool).update(minute=F("minute") - timedelta(hours=1))
    Deployment.objects.filter(pk=pool.pk).update(pool_wanted_at=long_ago, last_scaled_at=long_ago)
    wait_for(lambda: Instance.objects.get(pk=instance.pk).state == InstanceState.STOPPED, timeout=60,
             what="the idle pool stopped")


def test_a_stopped_pool_moves_to_the_ray_compute_when_woken_serves_there_and_stops_idle(
        cluster, owner_api, workspace, seeded_artifacts, settings):  # noqa: F811
    catalog_row(CHAT, seeded_artifacts)
    settings.STUDIO_SERVERLESS_COMPUTE = "local"  # this process creates the pool: on the local compute first
    assert owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": MODEL_ID}, format="json").status_code == 201
    created = owner_api.post(f"{WS}/serverless-endpoints", {"name": "chatty", "model_id": MODEL_ID}, format="json")
    assert created.status_code == 201, created.content
    pool = Endpoint.objects.get(name="chatty").pool
    assert pool.compute.name == "local"
    key = owner_api.post(f"{WS}/serverless-endpoints/chatty/list-keys").json()["primary_key"]
    first = wait_for(lambda: ready_instance(pool), timeout=120, interval=0.5, what="the pool on the local compute")
    assert first.node.queue.startswith("node.")
    stop_idle(pool, first)

    # Called while stopped: the gateway wakes it (the worker's STUDIO_SERVERLESS_COMPUTE is `cluster`) and
    # waits a bounded time for it (503 with Retry-After after that); the answer comes from its actor on Ray.
    cold = chat(cluster.web, key)
    assert cold.status_code == 200 or (cold.status_code == 503 and cold.headers.get("Retry-After")), cold.text
    moved = wait_for(lambda: ready_instance(pool), timeout=180, interval=0.5, what="the woken pool on Ray")
    assert Deployment.objects.get(pk=pool.pk).compute_id == cluster.compute.pk
    assert moved.node.queue == f"ray:{cluster.compute.name}" and moved.name in ray_cluster.live_actors(cluster.address)
    answer = wait_for(lambda: (r := chat(cluster.web, key)).status_code == 200 and r, timeout=30,
                      what="a chat answer from the pool on Ray")
    assert answer.json()["choices"][0]["message"]["content"]

    stop_idle(pool, moved)
    assert moved.name not in ray_cluster.live_actors(cluster.address)
    assert Deployment.objects.get(pk=pool.pk).instance_count == 0
