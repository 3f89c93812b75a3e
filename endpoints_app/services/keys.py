"""Endpoint keys and aml_tokens: read, regenerate, issue."""

from __future__ import annotations

from django.db import transaction

from endpoints_app import keys
from endpoints_app.errors import InvalidInput
from endpoints_app.models import (
    Endpoint,
    RouteVersion,
)
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.online import lock_endpoint


def get_keys(endpoint: Endpoint) -> dict:
    """{primary_key, secondary_key} of a key-auth endpoint (derived again; never stored)."""
    if endpoint.auth_mode != Endpoint.AuthMode.KEY:
        raise InvalidInput(
            f"Endpoint '{endpoint.name}' uses {endpoint.auth_mode} auth: "
            + ("get a token instead of keys." if endpoint.auth_mode == Endpoint.AuthMode.AML_TOKEN
               else "callers present identity tokens from the identity provider; it has no keys."),
            field="auth_mode",
        )
    return {
        "primary_key": keys.derive_key(endpoint.primary_key_nonce),
        "secondary_key": keys.derive_key(endpoint.secondary_key_nonce),
    }


@transaction.atomic
def do_regenerate_key(actor: Actor, endpoint: Endpoint, key_type: str) -> str:
    """A new key for the slot; the old one has stopped working when this returns (after the commit, every live
    gateway worker has reloaded its routes, or ACK_TIMEOUT_SECONDS passed and it was logged)."""
    if key_type not in ("primary", "secondary"):
        raise InvalidInput(f"key_type must be primary or secondary, not {key_type!r}.", field="key_type")
    endpoint = lock_endpoint(endpoint)
    nonce = keys.new_nonce()
    setattr(endpoint, f"{key_type}_key_nonce", nonce)
    endpoint.token_generation += 1  # regenerating also revokes the endpoint's aml_tokens
    endpoint.save(update_fields=[f"{key_type}_key_nonce", "token_generation", "updated_at"])
    record(actor, "endpoint.regenerate_key", endpoint, endpoint.workspace, key_type=key_type)
    # Returns once every live gateway worker takes the new key and refuses the old one.
    RouteVersion.bump()
    return keys.derive_key(nonce)


@transaction.atomic
def do_regenerate_all_keys(actor: Actor) -> int:
    """New keys for both slots of every endpoint and a new token generation (after a leak, or to
    retire a secret at once instead of waiting for it to leave SECRET_KEY_FALLBACKS)."""
    count = 0
    for endpoint in Endpoint.objects.select_for_update().order_by("pk"):
        endpoint.primary_key_nonce, endpoint.secondary_key_nonce = keys.new_nonce(), keys.new_nonce()
        endpoint.token_generation += 1
        endpoint.save(update_fields=["primary_key_nonce", "secondary_key_nonce", "token_generation", "updated_at"])
        record(actor, "endpoint.regenerate_key", endpoint, endpoint.workspace, key_type="all")
        count += 1
    RouteVersion.bump()
    return count


def issue_endpoint_token(actor: Actor, endpoint: Endpoint) -> dict:
    """{access_token, expiry_time_utc (Unix seconds), token_type} for an aml_token endpoint."""
    if endpoint.auth_mode != Endpoint.AuthMode.AML_TOKEN:
        raise InvalidInput(
            f"Endpoint '{endpoint.name}' uses {endpoint.auth_mode} auth; studio tokens are for aml_token endpoints"
            + (" (aad_token endpoints take tokens from the identity provider)."
               if endpoint.auth_mode == Endpoint.AuthMode.AAD_TOKEN else "."),
            field="auth_mode",
        )
    token, expiry = keys.issue_token(endpoint.pk, endpoint.token_generation)
    record(actor, "endpoint.token", endpoint, endpoint.workspace, expiry_time_utc=expiry)
    return {"access_token": token, "expiry_time_utc": expiry, "token_type": "Bearer"}


