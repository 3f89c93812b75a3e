"""Serverless offers' limits per workspace, and marketplace subscriptions (read-only)."""

from django.contrib import admin

from endpoints_app.admin.common import ReadOnlyAdmin
from endpoints_app.models import CatalogModel, MarketplaceSubscription, ServerlessRateLimit
from endpoints_app.services.audit import Actor
from endpoints_app.services.ratelimits import do_delete_rate_limit_override, do_save_rate_limit_override


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
        do_save_rate_limit_override(Actor.from_request(request), obj)

    def delete_model(self, request, obj):
        do_delete_rate_limit_override(Actor.from_request(request), obj)


@admin.register(MarketplaceSubscription)
class MarketplaceSubscriptionAdmin(ReadOnlyAdmin):
    list_display = ["workspace", "name", "model", "created_by", "created_at", "deleted_at"]
    list_filter = ["workspace", ("deleted_at", admin.EmptyFieldListFilter)]
    list_select_related = ["workspace", "model", "created_by"]
    search_fields = ["workspace__name", "name"]
    fields = list_display
