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
            f"Endpoint '{endpoint.name}' uses aml_token auth: get a token instead of keys.", field="auth_mode"
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
    key = keys.derive_key(nonce)
    setattr(endpoint, f"{key_type}_key_nonce", nonce)
    setattr(endpoint, f"{key_type}_key_digest", keys.digest(key))
    endpoint.save(update_fields=[f"{key_type}_key_nonce", f"{key_type}_key_digest", "updated_at"])
    record(actor, "endpoint.regenerate_key", endpoint, endpoint.workspace, key_type=key_type)
    # Returns once every live gateway worker takes the new key and refuses the old one.
    RouteVersion.bump(acknowledge=True)
    return key


def issue_endpoint_token(actor: Actor, endpoint: Endpoint) -> dict:
    """{access_token, expiry_time_utc (Unix seconds), token_type} for an aml_token endpoint."""
    if endpoint.auth_mode != Endpoint.AuthMode.AML_TOKEN:
        raise InvalidInput(
            f"Endpoint '{endpoint.name}' uses key auth; tokens are for aml_token endpoints.", field="auth_mode"
        )
    token, expiry = keys.issue_token(endpoint.name)
    record(actor, "endpoint.token", endpoint, endpoint.workspace, expiry_time_utc=expiry)
    return {"access_token": token, "expiry_time_utc": expiry, "token_type": "Bearer"}


