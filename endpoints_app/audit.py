"""The audit record: who wrote what, through which door. One implementation, outside `services`
so the controller can audit its own decisions (restarts, autoscale, failures) without importing
the services layer; `services.audit` re-exports it for the services, views and API."""

from dataclasses import dataclass

from endpoints_app.models import AuditLog, Workspace


@dataclass(frozen=True)
class Actor:
    """Who asks for a write, and through which door (ui, api, cli, system)."""

    user: object | None
    via: str = AuditLog.Via.SYSTEM

    @classmethod
    def from_request(cls, request) -> "Actor":
        if request.path.startswith("/api/"):
            client = request.headers.get("X-Studio-Client", "")
            via = AuditLog.Via.CLI if client.startswith("studio-cli") else AuditLog.Via.API
        else:
            via = AuditLog.Via.UI
        return cls(user=request.user, via=via)


SYSTEM = Actor(user=None, via=AuditLog.Via.SYSTEM)


def record(actor: Actor, action: str, obj: object, workspace: Workspace | None = None, **details) -> AuditLog:
    user = actor.user if actor.user is not None and getattr(actor.user, "is_authenticated", False) else None
    return AuditLog.objects.create(
        user=user,
        username=user.get_username() if user else "",
        workspace=workspace,
        action=action,
        object_type=type(obj).__name__.lower(),
        object_name=str(obj)[:200],
        via=actor.via,
        details=details,
    )
