"""The admin console for IT: users and roles, workspaces, quotas, instance types,
catalog models, the read-only audit log, and every endpoint, deployment and
instance across workspaces.

Endpoints, deployments and instances are shown read-only here: changes to them go
through the studio's services (UI, API, CLI), which audit them, bump the route
table and let the controller reconcile; an edit in a form here would do none of that."""

from decimal import Decimal

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import Count, Q
from django.urls import reverse
from django.utils.html import format_html

from endpoints_app.models import (
    ApiToken,
    AuditLog,
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    InstanceType,
    MarketplaceSubscription,
    Membership,
    MirrorComparison,
    Node,
    QuotaLimit,
    RouteVersion,
    ServerlessRateLimit,
    UsageMinute,
    Workspace,
)
from endpoints_app.services.audit import Actor, record

admin.site.site_header = "Studio admin console"
admin.site.site_title = "Studio admin"
admin.site.index_title = "IT administration"
admin.site.site_url = "/"

User = get_user_model()


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


class AuditedAdmin(admin.ModelAdmin):
    """Every write in the console lands in the studio's audit log, as writes elsewhere do,
    in the same transaction as the write (Django's admin calls these hooks inside it)."""

    def _audit(self, request, verb: str, obj, **details) -> None:
        workspace = obj if isinstance(obj, Workspace) else getattr(obj, "workspace", None)
        if workspace is not None and not isinstance(workspace, Workspace):
            workspace = None
        actor = Actor(user=request.user, via=AuditLog.Via.ADMIN)
        record(actor, f"admin.{obj._meta.model_name}.{verb}", obj, workspace, **details)

    def log_addition(self, request, obj, message):
        self._audit(request, "add", obj, change=message)
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        self._audit(request, "change", obj, change=message)
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for obj in queryset:
            self._audit(request, "delete", obj)
        return super().log_deletions(request, queryset)


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


# --- Users, workspaces, roles, quotas -------------------------------------------------


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class UserMembershipInline(admin.TabularInline):
    model = Membership
    fk_name = "user"
    extra = 0
    autocomplete_fields = ["workspace"]
    verbose_name = "workspace role"
    verbose_name_plural = "Workspace roles"


def serverless_offers():
    # JSON "contains" is not available on SQLite: filter the few foundation models in Python.
    offers = [m.pk for m in CatalogModel.objects.filter(price_input_per_1k__isnull=False) if m.offers_serverless]
    return CatalogModel.objects.filter(pk__in=offers)


class ServerlessRateLimitInline(admin.TabularInline):
    model = ServerlessRateLimit
    extra = 0
    fields = ["model", "requests_per_minute", "tokens_per_minute"]
    verbose_name = "serverless rate limit override"

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model":
            kwargs["queryset"] = serverless_offers()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class QuotaInline(admin.TabularInline):
    model = QuotaLimit
    extra = 0


admin.site.unregister(User)


@admin.register(User)
class StudioUserAdmin(AuditedAdmin, DjangoUserAdmin):
    list_display = ["username", "email", "workspaces", "is_staff", "is_active", "last_login"]
    list_filter = ["is_staff", "is_superuser", "is_active", "memberships__role"]
    inlines = [UserMembershipInline]

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("memberships__workspace")

    @admin.display(description="Workspaces")
    def workspaces(self, obj):
        return ", ".join(f"{m.workspace.name} ({m.role})" for m in obj.memberships.all()) or "—"


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    """Tokens by prefix only: the database holds digests, and values are shown once to their user."""

    list_display = ("prefix_label", "user", "created", "last_used", "expiry")
    list_filter = ("expiry",)
    search_fields = ("user__username", "token_key")
    fields = ("prefix_label", "user", "created", "last_used", "expiry")
    readonly_fields = fields

    @admin.display(description="prefix", ordering="token_key")
    def prefix_label(self, obj):
        return f"{obj.token_key}…"

    def has_add_permission(self, request, obj=None):
        return False  # made by their user on the Tokens page, the API or drf_create_token

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Workspace)
class WorkspaceAdmin(AuditedAdmin):
    list_display = ["name", "display_name", "member_count", "endpoint_count", "monthly_budget", "created_at"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline, QuotaInline, ServerlessRateLimitInline]

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _members=Count("memberships", distinct=True),
                _endpoints=Count("endpoints", distinct=True),
            )
        )

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        for formset in formsets:
            if formset.model is ServerlessRateLimit and formset.has_changed():
                record(Actor.from_request(request), "rate_limit.override", form.instance, form.instance)
                RouteVersion.bump()

    @admin.display(description="Members", ordering="_members")
    def member_count(self, obj):
        return obj._members

    @admin.display(description="Endpoints", ordering="_endpoints")
    def endpoint_count(self, obj):
        url = reverse("admin:endpoints_app_endpoint_changelist") + f"?workspace__id__exact={obj.pk}"
        return format_html('<a href="{}">{}</a>', url, obj._endpoints)


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    list_select_related = ["user", "workspace"]
    search_fields = ["user__username", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(QuotaLimit)
class QuotaLimitAdmin(AuditedAdmin):
    list_display = ["workspace", "family", "max_cores"]
    list_editable = ["max_cores"]
    list_filter = ["family", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["workspace__name", "family"]
    autocomplete_fields = ["workspace"]


@admin.register(InstanceType)
class InstanceTypeAdmin(AuditedAdmin):
    list_display = ["name", "family", "cores", "memory_gb", "price_per_hour", "is_active"]
    list_filter = ["family", "is_active"]
    search_fields = ["name", "family"]
    list_editable = ["price_per_hour", "is_active"]


# --- Catalog --------------------------------------------------------------------------


class CatalogOwnerFilter(admin.SimpleListFilter):
    title = "catalog"
    parameter_name = "owner"

    def lookups(self, request, model_admin):
        return [("shared", "Shared catalog"), ("workspace", "Registered by a workspace")]

    def queryset(self, request, queryset):
        if self.value() == "shared":
            return queryset.filter(workspace__isnull=True)
        if self.value() == "workspace":
            return queryset.filter(workspace__isnull=False)
        return queryset


@admin.register(CatalogModel)
class CatalogModelAdmin(AuditedAdmin):
    list_display = ["name", "version", "registry", "task", "format", "license", "kinds", "pricing", "created_at"]
    list_filter = [CatalogOwnerFilter, "task", "format", "license", "registry"]
    list_select_related = ["workspace"]
    search_fields = ["name", "display_name", "summary", "publisher"]
    readonly_fields = ["asset_id", "created_at", "created_by"]
    autocomplete_fields = ["workspace"]
    fieldsets = [
        (None, {"fields": ["asset_id", "registry", "workspace", "name", "version", "display_name", "publisher"]}),
        ("Card", {"fields": ["task", "format", "license", "summary", "description", "intended_use", "limitations"]}),
        ("Serving", {"fields": ["deployment_kinds", "artifact_path", "scoring_script", "tags"]}),
        ("Samples and schemas", {"classes": ["collapse"], "fields": [
            "input_schema", "output_schema", "sample_request", "sample_response"]}),
        ("Pricing (foundation models, per 1K tokens)", {"fields": ["price_input_per_1k", "price_output_per_1k"]}),
        ("Serverless offer (terms, and limits per endpoint per minute; workspaces may have their own)", {"fields": [
            "offer_terms", "rate_limit_requests_per_minute", "rate_limit_tokens_per_minute"]}),
        ("History", {"fields": ["created_by", "created_at"]}),
    ]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if {"rate_limit_requests_per_minute", "rate_limit_tokens_per_minute"} & set(form.changed_data):
            record(Actor.from_request(request), "rate_limit.change", obj, None,
                   requests_per_minute=obj.rate_limit_requests_per_minute,
                   tokens_per_minute=obj.rate_limit_tokens_per_minute)
            RouteVersion.bump()  # gateways reload the offer's limits with their routes

    @admin.display(description="Deployment kinds")
    def kinds(self, obj):
        return ", ".join(obj.deployment_kinds) or "—"

    @admin.display(description="Price / 1K tokens (in, out)")
    def pricing(self, obj):
        if not obj.is_foundation:
            return "—"
        output = obj.price_output_per_1k if obj.price_output_per_1k is not None else Decimal(0)
        return f"{obj.price_input_per_1k.normalize():f} / {output.normalize():f}"


@admin.register(ServerlessRateLimit)
class ServerlessRateLimitAdmin(admin.ModelAdmin):
    """A workspace's own limits on one serverless offer (the gateway reloads them with its routes)."""

    list_display = ["workspace", "model", "requests_per_minute", "tokens_per_minute"]
    list_select_related = ["workspace", "model"]
    search_fields = ["workspace__name", "model__name"]
    autocomplete_fields = ["workspace"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "model":
            kwargs["queryset"] = serverless_offers()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record(Actor.from_request(request), "rate_limit.override", obj, obj.workspace, model=obj.model.asset_id,
               requests_per_minute=obj.requests_per_minute, tokens_per_minute=obj.tokens_per_minute)
        RouteVersion.bump()

    def delete_model(self, request, obj):
        record(Actor.from_request(request), "rate_limit.override_delete", obj, obj.workspace)
        super().delete_model(request, obj)
        RouteVersion.bump()


@admin.register(MarketplaceSubscription)
class MarketplaceSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "name", "model", "created_by", "created_at", "deleted_at"]
    list_filter = ["workspace", ("deleted_at", admin.EmptyFieldListFilter)]
    list_select_related = ["workspace", "model", "created_by"]
    search_fields = ["workspace__name", "name"]
    fields = list_display


# --- Audit log ------------------------------------------------------------------------


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ["time", "username", "workspace", "action", "object_type", "object_name", "via"]
    list_filter = ["via", "action", "object_type", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["username", "object_name", "action"]
    date_hierarchy = "time"
    fields = ["time", "user", "username", "workspace", "via", "action", "object_type", "object_name", "details"]


# --- Endpoints, deployments, instances, nodes -----------------------------------------


class DeploymentInline(ReadOnlyInline):
    model = Deployment
    fields = ["name", "model", "instance_type", "instance_count", "provisioning_state", "updated_at"]
    readonly_fields = fields


@admin.register(Endpoint)
class EndpointAdmin(ReadOnlyAdmin):
    list_display = [
        "name", "workspace", "kind", "auth_mode", "state", "deployment_count", "traffic_display", "created_at"
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
        parts = [f"{name} {percent}%" for name, percent in (obj.traffic or {}).items()]
        parts += [f"{name} mirror {percent}%" for name, percent in (obj.mirror_traffic or {}).items()]
        return ", ".join(parts) or "—"


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


# --- Usage and mirroring --------------------------------------------------------------


@admin.register(UsageMinute)
class UsageMinuteAdmin(ReadOnlyAdmin):
    list_display = [
        "minute", "endpoint", "deployment", "requests", "status_2xx", "status_4xx", "status_5xx",
        "tokens_in", "tokens_out", "mean_latency_ms",
    ]
    list_filter = ["endpoint__workspace", "endpoint__kind"]
    list_select_related = ["endpoint"]
    search_fields = ["endpoint__name", "deployment"]
    date_hierarchy = "minute"
    ordering = ["-minute"]

    @admin.display(description="Mean latency (ms)")
    def mean_latency_ms(self, obj):
        return f"{obj.latency_ms_sum / obj.requests:.1f}" if obj.requests else "—"


@admin.register(MirrorComparison)
class MirrorComparisonAdmin(ReadOnlyAdmin):
    list_display = [
        "time", "endpoint", "live_deployment", "shadow_deployment", "live_status", "shadow_status",
        "live_latency_ms", "shadow_latency_ms", "agreed",
    ]
    list_filter = ["agreed", "endpoint__workspace"]
    list_select_related = ["endpoint"]
    search_fields = ["endpoint__name", "live_deployment", "shadow_deployment"]
    date_hierarchy = "time"


# Price edits with history, price history, and cost across workspaces (endpoints_app/metering/admin_costs.py).
from endpoints_app.metering import admin_costs  # noqa: E402, F401
