"""Shared pieces of the admin console: state badges, links, read-only admins."""

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

STATE_COLOURS = {
    "Succeeded": ("#dcfce7", "#15803d"),
    "Ready": ("#dcfce7", "#15803d"),
    "Creating": ("#fef3c7", "#b45309"),
    "Updating": ("#fef3c7", "#b45309"),
    "Starting": ("#fef3c7", "#b45309"),
    "Failed": ("#fee2e2", "#b91c1c"),
    "Unhealthy": ("#fee2e2", "#b91c1c"),
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
