"""Identities from the OpenID provider: sign-in (users made on first sign-in, group-to-role mapping
applied at each), service principals, and the studio user behind a validated token."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import GroupRoleMapping, Membership, OidcIdentity, Role, ServicePrincipal, Workspace
from endpoints_app.oidc import Identity
from endpoints_app.permissions import RANK, check_actor
from endpoints_app.services.audit import Actor, record

USERNAME_UNSAFE = re.compile(r"[^\w.@+-]")
CLIENT_ID = re.compile(r"^[\w.@:/+-]{1,200}$")


def user_for_identity(identity: Identity):
    """The studio user a validated token speaks for: the person linked to (issuer, subject) at their
    first sign-in, else, for a client-credentials token, the registered service principal; or None."""
    found = OidcIdentity.objects.filter(issuer=identity.issuer, subject=identity.subject).select_related("user").first()
    if found is not None:
        return found.user
    if identity.is_app:
        principal = ServicePrincipal.objects.filter(client_id=identity.client_id).select_related("user").first()
        if principal is not None:
            return principal.user
    return None


def _free_username(wanted: str) -> str:
    """`wanted` made a valid username that no one has yet (a local account of the same name is never
    taken over: the newcomer gets a suffix)."""
    User = get_user_model()
    base = USERNAME_UNSAFE.sub("-", wanted)[:140].strip("-") or "user"
    name, n = base, 1
    while User.objects.filter(username=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _groups(claims: dict) -> list[str]:
    value = claims.get(settings.STUDIO_OIDC_GROUPS_CLAIM) or []
    if isinstance(value, str):
        value = [value]
    return sorted({str(g) for g in value if isinstance(g, str | int)}) if isinstance(value, list) else []


@transaction.atomic
def do_sign_in_oidc_user(issuer: str, claims: dict):
    """The user for a validated ID token's claims: made on the first sign-in; name and email kept up to
    date; workspace roles set from the provider's groups by IT's GroupRoleMapping rows:
    - a membership the mapping made follows it, and goes when no group maps to that workspace anymore
      (except a workspace's last Owner);
    - a membership someone added by hand is raised to the mapped role, never lowered;
    - members of STUDIO_OIDC_ADMIN_GROUPS (when set) are IT: staff and superuser of the admin console."""
    User = get_user_model()
    subject = str(claims["sub"])
    identity = OidcIdentity.objects.select_for_update().filter(issuer=issuer, subject=subject).first()
    if identity is None:
        wanted = str(claims.get("preferred_username") or claims.get("email") or subject).split("@")[0]
        user = User(username=_free_username(wanted))
        user.set_unusable_password()
        user.save()
        identity = OidcIdentity.objects.create(user=user, issuer=issuer, subject=subject)
        record(Actor(user=user, via="ui"), "user.create_from_oidc", user, None, issuer=issuer, subject=subject)
    user = identity.user
    if not user.is_active:
        raise InvalidInput(f"The studio account '{user.username}' is deactivated; ask IT.", field="user")
    groups = _groups(claims)
    user.email = str(claims.get("email") or user.email)[:254]
    name = str(claims.get("name") or "")
    if name:
        first, _, last = name.partition(" ")
        user.first_name, user.last_name = first[:150], last[:150]
    if settings.STUDIO_OIDC_ADMIN_GROUPS:
        user.is_staff = user.is_superuser = bool(set(groups) & set(settings.STUDIO_OIDC_ADMIN_GROUPS))
    user.save()

    wanted_roles: dict[int, str] = {}
    for mapping in GroupRoleMapping.objects.filter(group__in=groups):
        if RANK[Role(mapping.role)] > RANK[Role(wanted_roles.get(mapping.workspace_id, "Reader"))] \
                or mapping.workspace_id not in wanted_roles:
            wanted_roles[mapping.workspace_id] = mapping.role
    previous = {int(k): v for k, v in (identity.granted or {}).items()}
    memberships = {m.workspace_id: m for m in Membership.objects.filter(user=user).select_for_update()}
    granted: dict[int, str] = {}
    changes = []
    for workspace_id, role in wanted_roles.items():
        membership = memberships.get(workspace_id)
        if membership is None:
            Membership.objects.create(workspace_id=workspace_id, user=user, role=role)
            granted[workspace_id] = role
            changes.append((workspace_id, None, role))
        elif workspace_id in previous and membership.role == previous[workspace_id]:
            granted[workspace_id] = role  # the mapping's own membership follows it
            if membership.role != role and not _last_owner(membership):
                changes.append((workspace_id, membership.role, role))
                membership.role = role
                membership.save(update_fields=["role"])
        elif RANK[Role(role)] > RANK[Role(membership.role)]:
            changes.append((workspace_id, membership.role, role))
            membership.role = role
            membership.save(update_fields=["role"])
    for workspace_id, role in previous.items():
        membership = memberships.get(workspace_id)
        if workspace_id not in wanted_roles and membership is not None and membership.role == role \
                and not _last_owner(membership):
            changes.append((workspace_id, role, None))
            membership.delete()
    identity.granted = {str(k): v for k, v in granted.items()}
    identity.groups = groups
    identity.last_sign_in = timezone.now()
    identity.save(update_fields=["granted", "groups", "last_sign_in"])
    actor = Actor(user=user, via="ui")
    names = dict(Workspace.objects.filter(pk__in=[c[0] for c in changes]).values_list("pk", "name"))
    for workspace_id, old, new in changes:
        record(actor, "member.role_from_groups", user, Workspace(pk=workspace_id, name=names.get(workspace_id, "")),
               issuer=issuer, subject=subject, old_role=old, new_role=new, groups=groups)
    record(actor, "user.sign_in_oidc", user, None, issuer=issuer, subject=subject, groups=groups)
    return user


def _last_owner(membership: Membership) -> bool:
    """A workspace keeps at least one Owner: the mapping never takes the last one away."""
    return membership.role == Role.OWNER and not Membership.objects.filter(
        workspace_id=membership.workspace_id, role=Role.OWNER).exclude(pk=membership.pk).exists()


# ---------------------------------------------------------------- service principals

def _parse_client_id(value) -> str:
    if not isinstance(value, str) or not CLIENT_ID.match(value.strip()):
        raise InvalidInput("client_id must be the provider's client id (1-200 letters, digits and . _ - : / @ +).",
                           field="client_id")
    return value.strip()


def _parse_role(value) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"role must be one of Owner, Contributor, Reader; got {value!r}.", field="role") from None


def service_principal_user(client_id: str, display_name: str = ""):
    """The principal's studio user, made with it on first registration (no password: tokens only)."""
    principal = ServicePrincipal.objects.filter(client_id=client_id).select_related("user").first()
    if principal is not None:
        return principal
    User = get_user_model()
    user = User(username=_free_username(f"sp-{client_id}"), first_name=(display_name or client_id)[:150])
    user.set_unusable_password()
    user.save()
    return ServicePrincipal.objects.create(client_id=client_id, display_name=display_name, user=user)


@transaction.atomic
def do_grant_service_principal(actor: Actor, workspace: Workspace, client_id, role, display_name: str = ""
                               ) -> Membership:
    """Register the provider's client `client_id` (if new) and give it `role` in the workspace."""
    check_actor(actor.user, workspace, Role.OWNER)
    client_id, parsed = _parse_client_id(client_id), _parse_role(role)
    try:
        with transaction.atomic():
            principal = service_principal_user(client_id, str(display_name or "")[:200])
    except IntegrityError:
        raise Conflict(f"Service principal '{client_id}' is being registered by another request; try again.",
                       field="client_id") from None
    membership, created = Membership.objects.get_or_create(workspace=workspace, user=principal.user,
                                                           defaults={"role": parsed})
    if not created and membership.role != parsed:
        membership.role = parsed
        membership.save(update_fields=["role"])
    record(actor, "service_principal.grant", principal, workspace, client_id=client_id, role=parsed.value)
    return membership


@transaction.atomic
def do_revoke_service_principal(actor: Actor, workspace: Workspace, client_id: str) -> None:
    check_actor(actor.user, workspace, Role.OWNER)
    membership = Membership.objects.filter(workspace=workspace, user__service_principal__client_id=client_id).first()
    if membership is None:
        raise Http404(f"Service principal '{client_id}' has no role in workspace '{workspace.name}'.")
    record(actor, "service_principal.revoke", membership.user.service_principal, workspace, client_id=client_id)
    membership.delete()


def service_principals_of(workspace: Workspace) -> QuerySet[Membership]:
    """The workspace's memberships of service principals, by client id."""
    return (Membership.objects.filter(workspace=workspace, user__service_principal__isnull=False)
            .select_related("user__service_principal").order_by("user__service_principal__client_id"))
