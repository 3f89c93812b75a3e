"""Serverless endpoints, their platform pools, and the workspace's unified inference keys.

A serverless endpoint is a name, two keys and a model; no quota, no instance choice. It is
served by the model's **pool**: a Deployment of the hidden platform workspace (see
Workspace.is_platform), shared by every workspace, which the controller starts on first need,
scales with load and stops when idle (controller/reconcile.py `_scale_pool`). Pools run on the compute
IT names in STUDIO_SERVERLESS_COMPUTE (`local` by default, or a Ray compute); a stopped pool moves
there when it is next woken (Deployment.wake_pool)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import transaction

from endpoints_app import keys
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import (
    CatalogModel,
    Deployment,
    Endpoint,
    InstanceType,
    ProvisioningState,
    Role,
    RouteVersion,
    Workspace,
)
from endpoints_app.models.computes import serverless_compute_id
from endpoints_app.models.workspaces import DNS_LABEL
from endpoints_app.permissions import check_actor
from endpoints_app.services.audit import SYSTEM, Actor, record
from endpoints_app.services.marketplace import live_subscription, resolve_offer
from endpoints_app.services.online import enqueue_provision
from endpoints_app.services.specs import (
    RESERVED_ENDPOINT_NAMES,
    parse_name,
    parse_probe,
    parse_request_settings,
)

POOL_ENDPOINT_NAME = "_serverless"  # not a DNS label: no user endpoint can take it
SERVERLESS_FIELDS = {"name", "model_id", "description", "tags", "auth_mode", "kind", "$schema"}
# A pool instance takes several requests at once (llama.cpp queues them; the gateway's
# in-flight limit is twice this per instance).
POOL_CONCURRENCY = 4
POOL_LIVENESS = {"period": 10, "timeout": 10, "failure_threshold": 12}


class SubscriptionRequired(Conflict):
    code = "SubscriptionRequired"


# -- pools ----------------------------------------------------------------------------------------------------------

def pool_endpoint() -> Endpoint:
    """The platform workspace's one endpoint that holds every pool, made on first use."""
    platform = Workspace.platform()
    # get_or_create: two first-ever serverless creates race here; the unique live name settles it.
    endpoint, _ = Endpoint.objects.get_or_create(
        workspace=platform, name=POOL_ENDPOINT_NAME,
        # No keys: nothing can call the pools' endpoint directly, only through serverless endpoints.
        defaults={"kind": Endpoint.Kind.ONLINE, "provisioning_state": ProvisioningState.SUCCEEDED,
                  "description": "Platform-managed model servers behind serverless endpoints."},
    )
    return endpoint


def pool_name(model: CatalogModel) -> str:
    base = "".join(c if c.isalnum() else "-" for c in model.name.lower()).strip("-")[:24].strip("-")
    return f"{base}-v{model.version}"


def pool_instance_type() -> InstanceType:
    """The smallest active type with at least two cores (a llama.cpp server on one core is half as fast)."""
    active = InstanceType.objects.filter(is_active=True).order_by("cores", "memory_gb", "name")
    found = active.filter(cores__gte=2).first() or active.last()
    if found is None:
        raise InvalidInput("No instance types are defined; IT must add one before serverless endpoints run.")
    return found


def ensure_pool(model: CatalogModel) -> Deployment:
    """The model's pool, made (stopped: no instance yet) on first use. Call inside a transaction."""
    endpoint = Endpoint.objects.select_for_update().get(pk=pool_endpoint().pk)
    pool = Deployment.objects.filter(endpoint=endpoint, model=model).first()
    if pool is not None:
        return pool
    pool = Deployment.objects.create(
        endpoint=endpoint,
        name=pool_name(model),
        model=model,
        instance_type=pool_instance_type(),
        # Where IT runs pools (STUDIO_SERVERLESS_COMPUTE); `local` while no compute has that name.
        compute_id=serverless_compute_id(),
        instance_count=0,
        scale_settings={
            "type": "target_utilization", "min_instances": 1,
            "max_instances": settings.STUDIO_SERVERLESS_MAX_INSTANCES, "target_utilization_percentage": 70,
        },
        request_settings=parse_request_settings(
            {"max_concurrent_requests_per_instance": POOL_CONCURRENCY}, model=model
        ),
        # A llama.cpp server answers no probe while it generates on a busy CPU: give it as long as
        # a request may take (GGUF request timeout, 120 s) before it counts as dead.
        liveness_probe=parse_probe(POOL_LIVENESS, "liveness_probe"),
        readiness_probe=parse_probe(None, "readiness_probe"),
        provisioning_state=ProvisioningState.SUCCEEDED,
    )
    record(SYSTEM, "pool.create", pool, endpoint.workspace, model=model.asset_id)
    return pool


def wake_pool(pool: Deployment) -> None:
    """Start a stopped pool (after commit); cheap when it already runs."""
    if pool.wake_pool():
        enqueue_provision(pool.pk)


# -- serverless endpoints -------------------------------------------------------------------------------------------

def list_serverless_endpoints(workspace: Workspace):
    return Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.SERVERLESS).select_related("model")


def get_serverless_endpoint(workspace: Workspace, name: str) -> Endpoint | None:
    return list_serverless_endpoints(workspace).filter(name=name).first()


@transaction.atomic
def do_create_serverless_endpoint(actor: Actor, workspace: Workspace, spec: Any) -> Endpoint:
    """{name, model_id}: needs the workspace's subscription to the model; one per model per workspace."""
    check_actor(actor.user, workspace, Role.CONTRIBUTOR)
    if not isinstance(spec, dict):
        raise InvalidInput("The serverless endpoint must be an object with name and model_id.")
    for key in spec:
        if key not in SERVERLESS_FIELDS:
            raise InvalidInput(f"Unknown serverless endpoint field {key!r} (use name and model_id).", field=str(key))
    if spec.get("kind") not in (None, "", "serverless"):
        raise InvalidInput("kind must be serverless here.", field="kind")
    if spec.get("auth_mode") not in (None, "", "key"):
        raise InvalidInput("Serverless endpoints use key auth only.", field="auth_mode")
    name = parse_name(spec.get("name"), DNS_LABEL, "name", "Endpoint")
    if name in RESERVED_ENDPOINT_NAMES:
        raise InvalidInput(f"Endpoint name '{name}' is reserved by the studio's pages; pick another.", field="name")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    tags = spec.get("tags") or {}
    if not isinstance(tags, dict):
        raise InvalidInput("tags must be a mapping.", field="tags")
    model = resolve_offer(spec.get("model_id"))
    # Lock the workspace row: two concurrent creates must not both pass the one-per-model check.
    Workspace.all_objects.select_for_update().filter(pk=workspace.pk).first()
    if live_subscription(workspace, model) is None:
        raise SubscriptionRequired(
            f"Workspace '{workspace.name}' has no marketplace subscription to model '{model.name}'; "
            "subscribe first (marketplace-subscriptions, or Deploy > Serverless API on the model's card).",
            field="model_id",
        )
    existing = list_serverless_endpoints(workspace).filter(model__name=model.name).first()
    if existing is not None:
        raise Conflict(
            f"Workspace '{workspace.name}' already has serverless endpoint '{existing.name}' on model "
            f"'{model.name}'; a workspace has one serverless endpoint per model.",
            field="model_id",
        )
    if Endpoint.objects.filter(name=name).exists():
        raise Conflict(f"The endpoint name '{name}' is taken; endpoint names are unique in the studio.", field="name")
    pool = ensure_pool(model)
    primary, secondary = keys.new_nonce(), keys.new_nonce()
    endpoint = Endpoint.objects.create(
        workspace=workspace,
        name=name,
        kind=Endpoint.Kind.SERVERLESS,
        auth_mode=Endpoint.AuthMode.KEY,
        description=description,
        tags=tags,
        model=model,
        pool=pool,
        provisioning_state=ProvisioningState.SUCCEEDED,
        primary_key_nonce=primary,
        secondary_key_nonce=secondary,
    )
    record(actor, "endpoint.create", endpoint, workspace, kind="serverless", model=model.asset_id)
    wake_pool(pool)
    RouteVersion.bump()
    return endpoint


@transaction.atomic
def do_delete_serverless_endpoint(actor: Actor, endpoint: Endpoint) -> None:
    """Gone at once (it has no processes of its own); its usage history stays for billing.
    The pool stops by itself once idle."""
    check_actor(actor.user, endpoint.workspace, Role.CONTRIBUTOR)
    endpoint = Endpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    if endpoint is None:
        return
    record(actor, "endpoint.delete", endpoint, endpoint.workspace, kind="serverless")
    endpoint.mark_deleted()
    RouteVersion.bump()


def scoring_uri(base_url: str, endpoint: Endpoint) -> str:
    return f"{base_url}/inference/{endpoint.name}"


# -- the unified inference endpoint ----------------------------------------------------------------------------------

SLOTS = ("primary", "secondary")


def _set_inference_key(workspace: Workspace, slot: str) -> str:
    nonce = keys.new_nonce()
    setattr(workspace, f"inference_{slot}_key_nonce", nonce)
    return keys.derive_key(nonce)


@transaction.atomic
def do_ensure_inference_keys(actor: Actor, workspace: Workspace) -> dict:
    """{primary_key, secondary_key} of the workspace's unified endpoint. A write: the keys are
    made (audited, and the gateways told) on the first ask, as Azure's listKeys is a POST."""
    check_actor(actor.user, workspace, Role.CONTRIBUTOR)
    locked = Workspace.all_objects.select_for_update().get(pk=workspace.pk)
    missing = [slot for slot in SLOTS if not getattr(locked, f"inference_{slot}_key_nonce")]
    for slot in missing:
        _set_inference_key(locked, slot)
    if missing:
        locked.save(update_fields=[f"inference_{slot}_key_nonce" for slot in missing])
        record(actor, "inference_keys.create", locked, locked)
        RouteVersion.bump()
    return {f"{slot}_key": keys.derive_key(getattr(locked, f"inference_{slot}_key_nonce")) for slot in SLOTS}


@transaction.atomic
def do_regenerate_inference_key(actor: Actor, workspace: Workspace, key_type: str) -> str:
    check_actor(actor.user, workspace, Role.CONTRIBUTOR)
    if key_type not in SLOTS:
        raise InvalidInput(f"key_type must be primary or secondary, not {key_type!r}.", field="key_type")
    do_ensure_inference_keys(actor, workspace)  # the other slot exists too once one is regenerated
    locked = Workspace.all_objects.select_for_update().get(pk=workspace.pk)
    key = _set_inference_key(locked, key_type)
    locked.save(update_fields=[f"inference_{key_type}_key_nonce"])
    record(actor, "inference_keys.regenerate", locked, locked, key_type=key_type)
    RouteVersion.bump()
    return key


def inference_base_uri(base_url: str) -> str:
    """What OpenAI(base_url=...) takes for the unified endpoint: `/models/chat/completions` hang off it."""
    return f"{base_url}/models"

