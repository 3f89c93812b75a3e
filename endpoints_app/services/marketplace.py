"""Marketplace subscriptions: a workspace accepts a foundation model offer's terms.

A serverless endpoint needs a live subscription to its model. Subscribing twice is idempotent;
unsubscribing makes the workspace's serverless endpoints on the model Unhealthy (the gateway
answers 403 naming the missing subscription) and subscribing again heals them."""

from __future__ import annotations

import re
from typing import Any

from django.db import transaction
from django.utils import timezone

from endpoints_app.errors import InvalidInput
from endpoints_app.models import CatalogModel, Endpoint, MarketplaceSubscription, Role, RouteVersion, Workspace
from endpoints_app.permissions import check_actor
from endpoints_app.services.audit import Actor, record

# studio://registries/<r>/models/<name>[/versions/<n>]: without a version, the latest.
OFFER_ID = re.compile(
    r"^(?:azureml:)?studio://registries/(?P<registry>[^/]+)/models/(?P<name>[^/]+)(?:/versions/(?P<version>\d+))?/?$"
)


def unhealthy_reason(name: str) -> str:
    return (
        f"The workspace has no marketplace subscription to model '{name}' (it was deleted); "
        "subscribe again to heal this endpoint."
    )


def resolve_offer(value: Any, field: str = "model_id") -> CatalogModel:
    """A shared-catalog model offered serverless, from its id (`studio://registries/<r>/models/<name>`
    with or without `/versions/<n>`), `<name>` or `<name>:<version>`; no version means the latest."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{field} is required: a model id such as studio://registries/studio/models/<name>.",
                           field=field)
    text = value.strip()
    rows = CatalogModel.objects.filter(workspace__isnull=True)
    match = OFFER_ID.match(text)
    if match:
        rows = rows.filter(registry=match["registry"], name=match["name"])
        version = match["version"]
    else:
        name, _, version = text.removeprefix("azureml:").partition(":")
        rows = rows.filter(name=name)
        if version and not version.isdigit():
            raise InvalidInput(f"{field} {value!r}: the version must be a number.", field=field)
    if version:
        rows = rows.filter(version=int(version))
    found = rows.order_by("-version").first()
    if found is None:
        raise InvalidInput(f"No model {value!r} in the catalog.", field=field)
    if not found.offers_serverless:
        raise InvalidInput(
            f"Model {found.asset_id} is not offered as a serverless API (it supports: "
            f"{', '.join(found.deployment_kinds) or 'nothing'}).",
            field=field,
        )
    return found


def live_subscription(workspace: Workspace, model: CatalogModel) -> MarketplaceSubscription | None:
    return MarketplaceSubscription.objects.filter(workspace=workspace, name=model.name, deleted_at__isnull=True).first()


def list_subscriptions(workspace: Workspace):
    return MarketplaceSubscription.objects.filter(workspace=workspace, deleted_at__isnull=True).select_related(
        "model", "created_by"
    )


def get_subscription(workspace: Workspace, name: str) -> MarketplaceSubscription | None:
    return list_subscriptions(workspace).filter(name=name).first()


def _endpoints_on(workspace: Workspace, name: str):
    return Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.SERVERLESS, model__name=name)


@transaction.atomic
def do_create_subscription(actor: Actor, workspace: Workspace, model_id: Any) -> tuple[MarketplaceSubscription, bool]:
    """Subscribe `workspace` to the offer; (subscription, created). A second call returns the first."""
    check_actor(actor.user, workspace, Role.CONTRIBUTOR)
    model = resolve_offer(model_id)
    # Lock the workspace row so two concurrent subscribes make one subscription.
    Workspace.all_objects.select_for_update().filter(pk=workspace.pk).first()
    existing = live_subscription(workspace, model)
    if existing is not None:
        return existing, False
    user = actor.user if getattr(actor.user, "is_authenticated", False) else None
    subscription = MarketplaceSubscription.objects.create(
        workspace=workspace, model=model, name=model.name, created_by=user
    )
    healed = _endpoints_on(workspace, model.name).exclude(unhealthy_reason="").update(
        unhealthy_reason="", updated_at=timezone.now()
    )
    record(actor, "subscription.create", subscription, workspace, model=model.asset_id, healed_endpoints=healed)
    if healed:
        RouteVersion.bump()
    return subscription, True


@transaction.atomic
def do_delete_subscription(actor: Actor, subscription: MarketplaceSubscription) -> int:
    """Unsubscribe; the workspace's serverless endpoints on the model turn Unhealthy. Returns how many."""
    workspace = subscription.workspace
    check_actor(actor.user, workspace, Role.CONTRIBUTOR)
    updated = MarketplaceSubscription.objects.filter(pk=subscription.pk, deleted_at__isnull=True).update(
        deleted_at=timezone.now()
    )
    if not updated:
        return 0
    broken = _endpoints_on(workspace, subscription.name).update(
        unhealthy_reason=unhealthy_reason(subscription.name), updated_at=timezone.now()
    )
    record(actor, "subscription.delete", subscription, workspace, unhealthy_endpoints=broken)
    RouteVersion.bump()
    return broken

