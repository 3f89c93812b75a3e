"""Instance types and catalog models; price edits go through the services, which keep their history."""

from decimal import Decimal

from django.contrib import admin

from endpoints_app.admin.common import AuditedAdmin
from endpoints_app.models import CatalogModel, InstanceType
from endpoints_app.services.audit import Actor
from endpoints_app.services.ratelimits import do_change_offer_rate_limits
from endpoints_app.services.usage import do_change_instance_price, do_change_token_price


@admin.register(InstanceType)
class InstanceTypeAdmin(AuditedAdmin):
    list_display = ["name", "family", "cores", "memory_gb", "price_per_hour", "is_active"]
    list_filter = ["family", "is_active"]
    search_fields = ["name", "family"]
    list_editable = ["price_per_hour", "is_active"]
    audited_by_service = ("price_per_hour",)  # the service's "price.change" entry has old and new

    def save_model(self, request, obj, form, change):
        # A price change applies from its minute on, with a history row: the service records it.
        if change and "price_per_hour" in form.changed_data:
            new_price = obj.price_per_hour
            obj.price_per_hour = InstanceType.objects.get(pk=obj.pk).price_per_hour
            super().save_model(request, obj, form, change)  # the other fields
            do_change_instance_price(Actor.from_request(request), obj, new_price)
            return
        super().save_model(request, obj, form, change)


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
    audited_by_service = ("price_input_per_1k", "price_output_per_1k")
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
        if {"rate_limit_requests_per_minute", "rate_limit_tokens_per_minute"} & set(form.changed_data):
            do_change_offer_rate_limits(Actor.from_request(request), obj)
        fields = {"price_input_per_1k", "price_output_per_1k"}
        if change and fields & set(form.changed_data):
            new = (obj.price_input_per_1k, obj.price_output_per_1k)
            stored = CatalogModel.objects.get(pk=obj.pk)
            obj.price_input_per_1k, obj.price_output_per_1k = stored.price_input_per_1k, stored.price_output_per_1k
            super().save_model(request, obj, form, change)
            do_change_token_price(Actor.from_request(request), obj, *new)
            return
        super().save_model(request, obj, form, change)

    @admin.display(description="Deployment kinds")
    def kinds(self, obj):
        return ", ".join(obj.deployment_kinds) or "—"

    @admin.display(description="Price / 1K tokens (in, out)")
    def pricing(self, obj):
        if not obj.is_foundation:
            return "—"
        output = obj.price_output_per_1k if obj.price_output_per_1k is not None else Decimal(0)
        return f"{obj.price_input_per_1k.normalize():f} / {output.normalize():f}"
