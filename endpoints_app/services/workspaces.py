from django.contrib.auth import get_user_model
from django.db import transaction

from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import Membership, Role, Workspace
from endpoints_app.services.audit import Actor, record


def _parse_role(role: str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInput(f"role must be one of Owner, Contributor, Reader; got {role!r}.", field="role") from None


@transaction.atomic
def do_create_workspace(actor: Actor, name: str, display_name: str = "", owner=None) -> Workspace:
    if Workspace.objects.filter(name=name).exists():
        raise Conflict(f"A workspace named '{name}' already exists.", field="name")
    workspace = Workspace(name=name, display_name=display_name or name)
    workspace.full_clean()
    workspace.save()
    if owner is not None:
        Membership.objects.create(workspace=workspace, user=owner, role=Role.OWNER)
    record(actor, "workspace.create", workspace, workspace)
    return workspace


@transaction.atomic
def do_add_member(actor: Actor, workspace: Workspace, username: str, role: str) -> Membership:
    parsed = _parse_role(role)
    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"No user named '{username}'.", field="username")
    if Membership.objects.filter(workspace=workspace, user=user).exists():
        raise Conflict(f"'{username}' is already a member of '{workspace.name}'.", field="username")
    membership = Membership.objects.create(workspace=workspace, user=user, role=parsed)
    record(actor, "member.add", membership, workspace, username=username, role=parsed.value)
    return membership


def _ensure_an_owner_remains(membership: Membership) -> None:
    others = Membership.objects.filter(workspace=membership.workspace, role=Role.OWNER).exclude(pk=membership.pk)
    if not others.exists():
        raise Conflict("A workspace needs at least one Owner; make someone else Owner first.", field="role")


@transaction.atomic
def do_change_member_role(actor: Actor, membership: Membership, role: str) -> Membership:
    parsed = _parse_role(role)
    membership = Membership.objects.select_for_update().get(pk=membership.pk)
    if membership.role == Role.OWNER and parsed != Role.OWNER:
        _ensure_an_owner_remains(membership)
    old = membership.role
    membership.role = parsed
    membership.save(update_fields=["role"])
    record(actor, "member.change_role", membership, membership.workspace, old_role=old, new_role=parsed.value)
    return membership


@transaction.atomic
def do_remove_member(actor: Actor, membership: Membership) -> None:
    if membership.role == Role.OWNER:
        _ensure_an_owner_remains(membership)
    record(actor, "member.remove", membership, membership.workspace, username=membership.user.username)
    membership.delete()
