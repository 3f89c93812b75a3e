"""Serverless rate limits written by IT in the admin console: an offer's own limits (on its
catalog model) and a workspace's overrides. Every change is audited, and bumps the route
version so that the gateways reload the limits with their routes."""

from __future__ import annotations

from django.db import transaction

from endpoints_app.models import CatalogModel, RouteVersion, ServerlessRateLimit, Workspace
from endpoints_app.services.audit import Actor, record


@transaction.atomic
def do_change_offer_rate_limits(actor: Actor, model: CatalogModel) -> None:
    """An offer's limits per endpoint per minute changed (the console saves the model's form itself)."""
    record(actor, "rate_limit.change", model, None,
           requests_per_minute=model.rate_limit_requests_per_minute,
           tokens_per_minute=model.rate_limit_tokens_per_minute)
    RouteVersion.bump()


@transaction.atomic
def do_save_rate_limit_override(actor: Actor, override: ServerlessRateLimit) -> ServerlessRateLimit:
    override.save()
    record(actor, "rate_limit.override", override, override.workspace, model=override.model.asset_id,
           requests_per_minute=override.requests_per_minute, tokens_per_minute=override.tokens_per_minute)
    RouteVersion.bump()
    return override


@transaction.atomic
def do_delete_rate_limit_override(actor: Actor, override: ServerlessRateLimit) -> None:
    record(actor, "rate_limit.override_delete", override, override.workspace)
    override.delete()
    RouteVersion.bump()


@transaction.atomic
def do_overrides_changed(actor: Actor, workspace: Workspace) -> None:
    """A workspace's overrides changed together in its console page (the page's inline saved them)."""
    record(actor, "rate_limit.override", workspace, workspace)
    RouteVersion.bump()
