"""Shared pieces of the admin console: state badges, links, read-only admins."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from endpoints_app.models import AuditLog, Workspace
from endpoints_app.services.audit import Actor, record

STATE_COLOURS = {
    "Succeeded": ("#dcfce7", "#15803d"),
    "Ready": ("#dcfce7", "#15803d"),
    "Creating": ("#fef3c7", "#b45309"),
    "Updating": ("#fef3c7", "#b45309"),
    "Starting": ("#fef3c7", "#b45309"),
    "Failed": ("#fee2e2", "#b91c1c"),
    "Unhealthy": ("#fee2e2", "#b91c1c"),
    "Unreachable": ("#fee2e2", "#b91c1c"),
    "Alive": ("#dcfce7", "#15803d"),
    "Dead": ("#fee2e2", "#b91c1c"),
}


def state_badge(state: str):
    background, colour = STATE_COLOURS.get(state, ("#e5e7eb", "#374151"))
    return format_html(
        '<span style="background:{};color:{};padding:1px 8px;border-radius:10px">{}</span>', background, colour, state
    )


def admin_link(obj, label: str | None = None):
    if obj is None:
        return "—"
    url = reverse(f"admin:{obj._meta.app_label}_{obj._meta.model_name}_change", args=[obj.pk])
    return format_html('<a href="{}">{}</a>', url, label or str(obj))


class AuditedAdmin(admin.ModelAdmin):
    """Every write in the console lands in the studio's audit log, as writes elsewhere do,
    in the same transaction as the write (Django's admin calls these hooks inside it)."""

    def _audit(self, request, verb: str, obj, **details) -> None:
        workspace = obj if isinstance(obj, Workspace) else getattr(obj, "workspace", None)
        if workspace is not None and not isinstance(workspace, Workspace):
            workspace = None
        actor = Actor(user=request.user, via=AuditLog.Via.ADMIN)
        record(actor, f"admin.{obj._meta.model_name}.{verb}", obj, workspace, **details)

    # Fields whose change a service audits itself (with old and new values): not audited twice.
    audited_by_service: tuple[str, ...] = ()

    def save_model(self, request, obj, form, change):
        if change:
            # Old and new values of what the form changed, for the audit entry (log_change has only names).
            changes = {f: {"old": _shown(form.initial.get(f)), "new": _shown(form.cleaned_data.get(f))}
                       for f in form.changed_data}
            request.studio_admin_changes = {**getattr(request, "studio_admin_changes", {}), obj.pk: changes}
        super().save_model(request, obj, form, change)

    def log_addition(self, request, obj, message):
        self._audit(request, "add", obj, change=message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        changes = getattr(request, "studio_admin_changes", {}).get(obj.pk, {})
        rest = {f: v for f, v in changes.items() if f not in self.audited_by_service}
        if rest or not changes:
            self._audit(request, "change", obj, change=message, changes=rest)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "delete", obj)
        return super().log_deletions(request, queryset)


def _shown(value) -> str:
    """A form value as the audit log shows it (a related object by its name)."""
    if value is None:
        return ""
    if hasattr(value, "all") and callable(value.all):
        return ", ".join(str(v) for v in value.all())
    if isinstance(value, (list, tuple, set)):
        return ", ".join(str(v) for v in value)
    return str(value)[:200]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable by IT, written only by the studio's services and controller."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False
