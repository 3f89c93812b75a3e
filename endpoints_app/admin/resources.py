"""The audit log, and every endpoint, deployment, instance and node across workspaces (read-only:
changes go through the studio's services, which audit them and let the controller reconcile)."""

from django.contrib import admin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from endpoints_app.admin.common import AuditedAdmin, ReadOnlyAdmin, ReadOnlyInline, admin_link, state_badge
from endpoints_app.models import AuditLog, Deployment, Endpoint, Instance, InstanceState, Node


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    # Object type and name share a column, so every column (Object, Old → new, Via) fits at 1400 px.
    list_display = ["when", "who", "workspace", "action", "object", "values", "via"]
    list_filter = ["via", "action", "object_type", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["username", "object_name", "action"]
    date_hierarchy = "time"
    fields = ["time", "user", "username", "workspace", "via", "action", "object_type", "object_name", "details"]

    @admin.display(description="User", ordering="username")
    def who(self, obj):
        return obj.username or ("system" if obj.via == AuditLog.Via.SYSTEM else "—")

    @admin.display(description="Object", ordering="object_name")
    def object(self, obj):
        return format_html('<span class="small muted">{}</span><br>{}', obj.object_type, obj.object_name)

    @admin.display(description="Old → new")
    def values(self, obj):
        """What changed, from the entry's details (a service's old/new, or the console's per-field changes)."""
        details = obj.details or {}
        parts = []
        if "old" in details and "new" in details:
            parts.append(f"{_flat(details['old'])} → {_flat(details['new'])}")
        for field, change in (details.get("changes") or {}).items():
            if isinstance(change, dict):
                parts.append(f"{field}: {change.get('old', '')} → {change.get('new', '')}")
        return "; ".join(parts)[:200] or "—"

    @admin.display(description="Time", ordering="time")
    def when(self, obj):
        # Whole and short, so the columns fit at 1400 px and the time never wraps.
        return format_html('<span class="nowrap">{}</span>', timezone.localtime(obj.time).strftime("%Y-%m-%d %H:%M:%S"))


def _flat(value) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else str(value)


# --- Endpoints, deployments, instances, nodes -----------------------------------------


class DeploymentInline(ReadOnlyInline):
    model = Deployment
    fields = ["name", "model", "instance_type", "instance_count", "provisioning_state", "updated_at"]
    readonly_fields = fields


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = [
        "name", "workspace", "kind", "state", "deployment_count", "traffic_display", "created"
    ]
    list_filter = ["kind", "provisioning_state", "auth_mode", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["name", "workspace__name", "description"]
    date_hierarchy = "created_at"
    # Key nonces and digests stay out of the console.
    fields = [
        "name", "workspace", "kind", "auth_mode", "description", "tags", "traffic", "mirror_traffic",
        "model", "pool", "unhealthy_reason", "provisioning_state", "error", "created_at", "updated_at",
    ]
    inlines = [DeploymentInline]

    def has_delete_permission(self, request, obj=None):
        return False

    def get_queryset(self, request):
        # The live endpoints; deleted ones are kept for billing and are visible in the cost pages.
        live = Count("deployments", filter=Q(deployments__deleted_at__isnull=True))
        return super().get_queryset(request).annotate(_deployments=live)

    @admin.display(description="State", ordering="provisioning_state")
    def state(self, obj):
        return state_badge(obj.provisioning_state)

    @admin.display(description="Deployments", ordering="_deployments")
    def deployment_count(self, obj):
        url = reverse("admin:endpoints_app_deployment_changelist") + f"?endpoint__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj._deployments)

    @admin.display(description="Traffic")
    def traffic_display(self, obj):
        # Compact: "blue 90% · green 10% · mirror red 10%", wrapping only between deployments.
        parts = [(name, percent) for name, percent in (obj.traffic or {}).items() if percent]
        parts += [(f"mirror {name}", percent) for name, percent in (obj.mirror_traffic or {}).items()]
        if not parts:
            return "—"
        return format_html_join(" · ", '<span class="nowrap">{} {}%</span>', parts)

    @admin.display(description="Created", ordering="created_at")
    def created(self, obj):
        when = timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M")
        return format_html('<span class="nowrap">{}</span>', when)


class InstanceInline(ReadOnlyInline):
    model = Instance
    fields = ["name", "node", "state", "port", "pid", "generation", "restarts", "started_at", "ready_at"]
    readonly_fields = fields


class PoolFilter(admin.SimpleListFilter):
    title = "serverless pool"
    parameter_name = "pool"

    def lookups(self, request, model_admin):
        return [("yes", "Serverless pools (platform)"), ("no", "Workspaces' deployments")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(endpoint__workspace__is_platform=True)
        if self.value() == "no":
            return queryset.filter(endpoint__workspace__is_platform=False)
        return queryset


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    """Every deployment, and the platform's serverless pools (one per model offered serverless,
    shared by every workspace; started, scaled and stopped by the controller)."""

    list_display = [
        "name", "endpoint_link", "workspace", "model", "instance_type", "instance_count", "ready_instances",
        "state", "updated_at",
    ]
    list_filter = [PoolFilter, "provisioning_state", "endpoint__kind", "instance_type", "endpoint__workspace"]
    list_select_related = ["endpoint__workspace", "model", "instance_type"]
    search_fields = ["name", "endpoint__name", "endpoint__workspace__name", "model__name"]
    inlines = [InstanceInline]
    exclude = ["environment_variables"]  # may hold users' secrets

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(_ready=Count("instances", filter=Q(instances__state=InstanceState.READY)))
        )

    @admin.display(description="Endpoint", ordering="endpoint__name")
    def endpoint_link(self, obj):
        return admin_link(obj.endpoint)

    @admin.display(description="Workspace", ordering="endpoint__workspace__name")
    def workspace(self, obj):
        if obj.endpoint.workspace.is_platform:
            return "platform (serverless pool)"
        return obj.endpoint.workspace.name

    @admin.display(description="Ready", ordering="_ready")
    def ready_instances(self, obj):
        return f"{obj._ready}/{obj.instance_count}"

    @admin.display(description="State", ordering="provisioning_state")
    def state(self, obj):
        return state_badge(obj.provisioning_state)


@admin.register(Instance)
class InstanceAdmin(ReadOnlyAdmin):
    list_display = [
        "name", "deployment_link", "node", "state_display", "port", "pid", "generation", "restarts", "started_at"
    ]
    list_filter = ["state", "node", "deployment__endpoint__workspace"]
    list_select_related = ["deployment__endpoint", "node"]
    search_fields = ["name", "deployment__name", "deployment__endpoint__name"]

    @admin.display(description="Deployment", ordering="deployment__endpoint__name")
    def deployment_link(self, obj):
        return admin_link(obj.deployment)

    @admin.display(description="State", ordering="state")
    def state_display(self, obj):
        return state_badge(obj.state)


@admin.register(Node)
class NodeAdmin(AuditedAdmin):
    list_display = ["name", "host", "cores", "memory_gb", "queue", "instance_count", "last_heartbeat"]
    search_fields = ["name", "host", "queue"]
    readonly_fields = ["last_heartbeat"]

    def get_queryset(self, request):
        live = ~Q(instances__state__in=[InstanceState.STOPPED, InstanceState.FAILED])
        return super().get_queryset(request).annotate(_instances=Count("instances", filter=live))

    @admin.display(description="Running instances", ordering="_instances")
    def instance_count(self, obj):
        return obj._instances
