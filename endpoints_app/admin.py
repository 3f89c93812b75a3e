from django.contrib import admin

from endpoints_app.models import AuditLog, CatalogModel, InstanceType, Membership, QuotaLimit, Workspace

admin.site.site_header = "Studio admin console"
admin.site.site_title = "Studio admin"
admin.site.index_title = "IT administration"


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class QuotaInline(admin.TabularInline):
    model = QuotaLimit
    extra = 0


@admin.register(Workspace)
class WorkspaceAdmin(admin.ModelAdmin):
    list_display = ["name", "display_name", "monthly_budget", "created_at"]
    search_fields = ["name", "display_name"]
    inlines = [MembershipInline, QuotaInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "workspace", "role", "created_at"]
    list_filter = ["role", "workspace"]
    search_fields = ["user__username", "workspace__name"]
    autocomplete_fields = ["user", "workspace"]


@admin.register(QuotaLimit)
class QuotaLimitAdmin(admin.ModelAdmin):
    list_display = ["workspace", "family", "max_cores"]
    list_filter = ["family"]
    search_fields = ["workspace__name"]


@admin.register(InstanceType)
class InstanceTypeAdmin(admin.ModelAdmin):
    list_display = ["name", "family", "cores", "memory_gb", "price_per_hour", "is_active"]
    list_filter = ["family", "is_active"]
    search_fields = ["name"]
    list_editable = ["price_per_hour", "is_active"]


@admin.register(CatalogModel)
class CatalogModelAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "registry", "task", "format", "license", "created_at"]
    list_filter = ["registry", "task", "format", "license"]
    search_fields = ["name", "display_name", "summary"]
    readonly_fields = ["created_at", "created_by"]


@admin.register(AuditLog)
class AuditLogAdmin(admin.ModelAdmin):
    list_display = ["time", "username", "workspace", "action", "object_type", "object_name", "via"]
    list_filter = ["via", "action", "workspace"]
    search_fields = ["username", "object_name", "action"]
    date_hierarchy = "time"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
