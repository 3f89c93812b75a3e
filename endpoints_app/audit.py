"""The audit record: who wrote what, through which door. One implementation, outside `services`
so the controller can audit its own decisions (restarts, autoscale, failures) without importing
the services layer; `services.audit` re-exports it for the services, views and API."""

from dataclasses import dataclass

from endpoints_app.models import AuditLog, Workspace
from endpoints_app.oidc import Identity


@dataclass(frozen=True)
class Actor:
    """Who asks for a write, and through which door (ui, api, cli, system)."""

    user: object | None
    via: str = AuditLog.Via.SYSTEM
    # Who it was when no user is signed in (a host command such as `manage.py drf_create_token`).
    name: str = ""
    # The provider identity behind the user ("issuer subject", or "service principal <client id>").
    identity: str = ""

    @classmethod
    def from_request(cls, request) -> "Actor":
        if request.path.startswith("/api/"):
            client = request.headers.get("X-Studio-Client", "")
            via = AuditLog.Via.CLI if client.startswith("studio-cli") else AuditLog.Via.API
        elif request.path.startswith("/admin/"):
            via = AuditLog.Via.ADMIN  # the console's own edits (prices...) through the services
        else:
            via = AuditLog.Via.UI
        return cls(user=request.user, via=via, identity=_identity_of(request))


def _identity_of(request) -> str:
    """A token's identity (the API), or the provider account the session signed in with (the UI)."""
    auth = getattr(request, "auth", None)
    if isinstance(auth, Identity):
        return auth.audit_label()
    session = getattr(request, "session", None)
    return str(session.get("oidc_identity", "")) if session is not None else ""


SYSTEM = Actor(user=None, via=AuditLog.Via.SYSTEM)


def record(actor: Actor, action: str, obj: object, workspace: Workspace | None = None, **details) -> AuditLog:
    user = actor.user if actor.user is not None and getattr(actor.user, "is_authenticated", False) else None
    return AuditLog.objects.create(
        user=user,
        username=user.get_username() if user else actor.name[:150],
        workspace=workspace,
        action=action,
        object_type=type(obj).__name__.lower(),
        object_name=str(obj)[:200],
        via=actor.via,
        details={**details, "identity": actor.identity} if actor.identity else details,
    )
