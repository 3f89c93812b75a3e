"""The gateway's auth step for identity tokens (`auth_mode: aad_token` endpoints and keyless calls
to the model inference API).

A token seen before and not expired costs one dict look-up (endpoints_app/oidc.py keeps validated
tokens); a new one is validated in a thread (it may fetch the provider's keys). Then the identity's
role in the endpoint's workspace comes from the route table (`RouteTable.identity_roles`, loaded
with the routes, never read from the database here): a member with Contributor or Owner, or a
service principal granted that role, may invoke."""

from __future__ import annotations

import asyncio
import time
from typing import NamedTuple

from endpoints_app import oidc

INVOKE_ROLES = ("Contributor", "Owner")
# Denied calls waiting for the next flush into the audit log; past this, more are dropped (and counted).
MAX_BUFFERED_DENIALS = 10_000


class Denial(NamedTuple):
    status: int
    code: str
    message: str
    identity: oidc.Identity | None = None


# The hot path's own memory: the Authorization header's bytes as they arrive -> the identity validated
# for them (no decoding, no parsing of a header seen before). Bounded; expiry is checked on every use.
_by_header: dict[bytes, oidc.Identity] = {}


def cached_identity(authorization: bytes | None) -> oidc.Identity | None:
    """The hot path: the identity of a bearer token validated before and not expired yet (no I/O, no await)."""
    identity = _by_header.get(authorization) if authorization else None
    if identity is not None and identity.expires > time.time():
        return identity
    return None


def _remember(authorization: bytes, identity: oidc.Identity) -> None:
    if len(_by_header) >= oidc.MAX_CACHED_TOKENS:
        now = time.time()
        for header in [h for h, i in _by_header.items() if i.expires <= now] or list(_by_header)[::2]:
            del _by_header[header]
    _by_header[authorization] = identity


async def identify(authorization: bytes | None) -> oidc.Identity | Denial:
    """The identity of an `Authorization: Bearer <JWT>` header, or why there is none."""
    identity = cached_identity(authorization)
    if identity is not None:
        return identity
    token = oidc.bearer(authorization)
    validator = oidc.validator()
    if validator is None:
        return Denial(401, "Unauthorized", "Identity tokens are not configured on this studio (STUDIO_OIDC_ISSUER).")
    if not token:
        return Denial(401, "Unauthorized", "This endpoint takes identity tokens: send Authorization: Bearer <token "
                      "from the identity provider>.")
    try:
        identity = await asyncio.to_thread(validator.validate, token)
    except oidc.TokenRejected as exc:
        return Denial(exc.status, exc.code, exc.message)
    _remember(authorization, identity)
    return identity


def role_of(identity: oidc.Identity, roles: dict[str, str]) -> str | None:
    """The identity's role among one workspace's `{identity key: role}` (a person by issuer and subject;
    a client-credentials token by its client id)."""
    role = roles.get(identity.user_key)
    if role is None and identity.is_app:
        role = roles.get(identity.app_key)
    return role


def may_invoke(identity: oidc.Identity, roles: dict[str, str], workspace: str) -> Denial | None:
    role = role_of(identity, roles)
    if role is None:
        return Denial(403, "NotAMember", f"{identity.describe()} has no role in workspace '{workspace}'.", identity)
    if role not in INVOKE_ROLES:
        return Denial(403, "RoleTooLow", f"{identity.describe()} is {role} in workspace '{workspace}'; invoking "
                      "needs Contributor or Owner.", identity)
    return None


async def authorize(authorization: bytes | None, roles: dict[str, str], workspace: str) -> Denial | None:
    """None when the bearer token's identity may invoke in the workspace whose roles are given."""
    identity = cached_identity(authorization)
    if identity is not None:  # a token seen before: two dict look-ups
        role = roles.get(identity.user_key) or (roles.get(identity.app_key) if identity.is_app else None)
        if role in INVOKE_ROLES:
            return None
    identity = await identify(authorization)
    if isinstance(identity, Denial):
        return identity
    return may_invoke(identity, roles, workspace)


class DeniedCall(NamedTuple):
    workspace_id: int | None
    target: str
    denial: Denial


def write_denials(calls: list[DeniedCall]) -> None:
    """Audit denied calls of known identities (blocking ORM; the gateway's db thread, at its next flush,
    so the row's time is within a flush period of the call). Never the token."""
    from django.db import close_old_connections

    from endpoints_app.models import AuditLog

    close_old_connections()
    AuditLog.objects.bulk_create([
        AuditLog(
            username=call.denial.identity.describe()[:150], workspace_id=call.workspace_id,
            action="endpoint.invoke.denied", object_type="endpoint", object_name=call.target[:200],
            via=AuditLog.Via.API,
            details={"status": call.denial.status, "code": call.denial.code, "issuer": call.denial.identity.issuer,
                     "subject": call.denial.identity.subject, "client_id": call.denial.identity.client_id},
        )
        for call in calls
    ])
