"""The UI's current workspace: kept in the session, switched from the header."""

from django.conf import settings

from endpoints_app.models import Membership

SESSION_KEY = "workspace"


class WorkspaceMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.workspace = None
        request.workspace_role = None
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and not request.path.startswith(("/api/", "/static/")):
            memberships = list(Membership.objects.filter(user=user).select_related("workspace"))
            request.memberships = memberships
            wanted = request.session.get(SESSION_KEY)
            chosen = next((m for m in memberships if m.workspace.name == wanted), None)
            if chosen is None and memberships:
                chosen = next((m for m in memberships if m.workspace.name == "default"), memberships[0])
            if chosen is not None:
                request.workspace = chosen.workspace
                request.workspace_role = chosen.role
        return self.get_response(request)


def workspace_context(request) -> dict:
    return {
        "workspace": getattr(request, "workspace", None),
        "workspace_role": getattr(request, "workspace_role", None),
        "memberships": getattr(request, "memberships", []),
        # Upload forms check the size before sending (base.html): STUDIO_MAX_UPLOAD_MB.
        "upload_limit_mb": settings.STUDIO_MAX_UPLOAD_BYTES // (1024 * 1024),
    }
