"""Online endpoints: create, update (traffic, mirror traffic, description, tags), delete.

The services write desired state only; the controller (endpoints_app.controller) starts and
stops processes in the worker, woken by a Celery task after commit (ids only)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from endpoints_app import wakeup
from endpoints_app.controller import tasks
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    ProvisioningState,
    RouteVersion,
    Workspace,
)
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.endpoints import create_endpoint
from endpoints_app.services.specs import parse_mapping, validate_traffic

LIVE_INSTANCE_STATES = (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING)


def enqueue_provision(deployment_id: int) -> None:
    wakeup.after_commit(tasks.provision_deployment, deployment_id)


def enqueue_reconcile(deployment_ids: list[int]) -> None:
    for deployment_id in deployment_ids:
        wakeup.after_commit(tasks.reconcile_deployment, deployment_id)


def live_deployments(endpoint: Endpoint) -> dict[str, Deployment]:
    rows = endpoint.deployments.exclude(provisioning_state=ProvisioningState.DELETING)
    return {d.name: d for d in rows}


@transaction.atomic
def do_create_endpoint(actor: Actor, workspace: Workspace, *, name: str, auth_mode: str = "key",
                       description: str = "", tags: dict | None = None) -> Endpoint:
    return create_endpoint(actor, workspace, Endpoint.Kind.ONLINE, name=name, auth_mode=auth_mode,
                           description=description, tags=tags)


def lock_endpoint(endpoint: Endpoint) -> Endpoint:
    locked = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if locked is None:
        raise Conflict(f"Endpoint '{endpoint.name}' no longer exists.")
    if locked.provisioning_state == ProvisioningState.DELETING:
        raise Conflict(f"Endpoint '{endpoint.name}' is being deleted.")
    return locked


def set_description_and_tags(endpoint: Endpoint, description: Any, tags: Any, changed: list[str]) -> None:
    """Apply the description and tags every endpoint kind takes on update, naming what changed in `changed`."""
    if description is not None:
        if not isinstance(description, str):
            raise InvalidInput("description must be a string.", field="description")
        if description != endpoint.description:
            endpoint.description = description
            changed.append("description")
    if tags is not None:
        tags = parse_mapping(tags, "tags")
        if tags != endpoint.tags:
            endpoint.tags = tags
            changed.append("tags")


@transaction.atomic
def do_update_endpoint(
    actor: Actor,
    endpoint: Endpoint,
    *,
    traffic: dict | None = None,
    mirror_traffic: dict | None = None,
    description: str | None = None,
    tags: dict | None = None,
) -> Endpoint:
    endpoint = lock_endpoint(endpoint)
    changed = []
    names = set(live_deployments(endpoint))
    if traffic is not None or mirror_traffic is not None:
        new_traffic, new_mirror = validate_traffic(
            endpoint,
            traffic if traffic is not None else endpoint.traffic,
            mirror_traffic if mirror_traffic is not None else endpoint.mirror_traffic,
            names,
        )
        if new_traffic != endpoint.traffic:
            endpoint.traffic = new_traffic
            changed.append("traffic")
        if new_mirror != endpoint.mirror_traffic:
            endpoint.mirror_traffic = new_mirror
            changed.append("mirror_traffic")
    set_description_and_tags(endpoint, description, tags, changed)
    if changed:
        endpoint.save()
        record(
            actor, "endpoint.update", endpoint, endpoint.workspace, changed=changed,
            traffic=endpoint.traffic, mirror_traffic=endpoint.mirror_traffic,
        )
        if {"traffic", "mirror_traffic"} & set(changed):
            # Returns once every live gateway worker routes by the new split (bounded wait, then logged).
            RouteVersion.bump()
    return endpoint


def request_stop(instances) -> int:
    """Mark live instances Stopping (the gateway stops routing to them; the controller stops them)."""
    now = timezone.now()
    running = instances.filter(state__in=(InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY))
    count = running.update(state=InstanceState.STOPPING, stop_requested_at=now)
    return count


@transaction.atomic
def do_delete_endpoint(actor: Actor, endpoint: Endpoint) -> None:
    """Delete at once if nothing runs; otherwise mark it Deleting, drain and stop its instances in the worker."""
    endpoint = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if endpoint is None:
        return
    deployments = list(endpoint.deployments.select_for_update())
    request_stop(Instance.objects.filter(deployment__endpoint=endpoint))
    running = Instance.objects.filter(deployment__endpoint=endpoint, state__in=LIVE_INSTANCE_STATES).exists()
    record(actor, "endpoint.delete", endpoint, endpoint.workspace, deployments=[d.name for d in deployments])
    endpoint.token_generation += 1  # its aml_tokens stop, whatever is named like it later
    endpoint.save(update_fields=["token_generation"])
    if running:
        endpoint.provisioning_state = ProvisioningState.DELETING
        endpoint.save(update_fields=["provisioning_state", "updated_at"])
        endpoint.deployments.update(provisioning_state=ProvisioningState.DELETING)
        enqueue_reconcile([d.pk for d in deployments])
    else:
        endpoint.mark_deleted()
    RouteVersion.bump()


