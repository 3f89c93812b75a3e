"""The one permission helper. Every view, API view, task and CLI path that
touches a workspace asks it: a non-member gets 404, a member whose role is
too low gets 403."""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from endpoints_app.models import Membership, Role, Workspace

RANK = {Role.READER: 1, Role.CONTRIBUTOR: 2, Role.OWNER: 3}


def role_in(user, workspace: Workspace) -> Role | None:
    if not user or not user.is_authenticated:
        return None
    cached = getattr(workspace, "_role_cache", {})
    if user.pk in cached:
        return cached[user.pk]
    role = Membership.objects.filter(workspace=workspace, user=user).values_list("role", flat=True).first()
    role = Role(role) if role else None
    cached[user.pk] = role
    workspace._role_cache = cached
    return role


def check_workspace(user, workspace_name: str, need: Role = Role.READER) -> Workspace:
    """Return the workspace if `user` holds at least `need` in it.

    Raises Http404 for non-members (the workspace's existence is not revealed)
    and PermissionDenied when the role is too low."""
    workspace = Workspace.objects.filter(name=workspace_name).first()
    if workspace is None:
        raise Http404("No such workspace.")
    role = role_in(user, workspace)
    if role is None:
        raise Http404("No such workspace.")
    if RANK[role] < RANK[need]:
        raise PermissionDenied(
            f"This needs the {need.value} role in workspace '{workspace.name}'; you are {role.value}."
        )
    return workspace


def can(user, workspace: Workspace, need: Role) -> bool:
    role = role_in(user, workspace)
    return role is not None and RANK[role] >= RANK[need]


def can_see_env_values(user, workspace: Workspace) -> bool:
    """Deployment environment variable values (often credentials) are for those who may write
    them: Contributors and Owners. Readers see the names."""
    return can(user, workspace, Role.CONTRIBUTOR)
def check_actor(user, workspace: Workspace, need: Role) -> None:
    """A service's own check of a write: a real user needs `need` in `workspace` (404 for a
    non-member, 403 below it); the system (tasks, the controller) passes."""
    if user is None:
        return
    role = role_in(user, workspace)
    if role is None:
        raise Http404("No such workspace.")
    if RANK[role] < RANK[need]:
        raise PermissionDenied(
            f"This needs the {need.value} role in workspace '{workspace.name}'; you are {role.value}."
        )
