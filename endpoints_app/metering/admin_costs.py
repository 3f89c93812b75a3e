"""Admin console additions for costs: price edits that keep their history (a change
applies from its minute on), the price history itself, and cost across all workspaces."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone

from endpoints_app.admin import CatalogModelAdmin, InstanceTypeAdmin, ReadOnlyAdmin
from endpoints_app.metering import costs
from endpoints_app.metering.query import DAY
from endpoints_app.models import CatalogModel, Endpoint, InstanceType, PriceChange, WorkspaceCost
from endpoints_app.services.audit import Actor
from endpoints_app.services.usage import do_change_instance_price, do_change_token_price, parse_month

admin.site.unregister(InstanceType)
admin.site.unregister(CatalogModel)


@admin.register(InstanceType)
class PricedInstanceTypeAdmin(InstanceTypeAdmin):
    def save_model(self, request, obj, form, change):
        if change and "price_per_hour" in form.changed_data:
            new_price = obj.price_per_hour
            obj.price_per_hour = InstanceType.objects.get(pk=obj.pk).price_per_hour
            super().save_model(request, obj, form, change)  # the other fields
            do_change_instance_price(Actor.from_request(request), obj, new_price)
            return
        super().save_model(request, obj, form, change)


@admin.register(CatalogModel)
class PricedCatalogModelAdmin(CatalogModelAdmin):
    def save_model(self, request, obj, form, change):
        fields = {"price_input_per_1k", "price_output_per_1k"}
        if change and fields & set(form.changed_data):
            new = (obj.price_input_per_1k, obj.price_output_per_1k)
            stored = CatalogModel.objects.get(pk=obj.pk)
            obj.price_input_per_1k, obj.price_output_per_1k = stored.price_input_per_1k, stored.price_output_per_1k
            super().save_model(request, obj, form, change)
            do_change_token_price(Actor.from_request(request), obj, *new)
            return
        super().save_model(request, obj, form, change)


@admin.register(PriceChange)
class PriceChangeAdmin(ReadOnlyAdmin):
    list_display = ["effective_from", "instance_type", "catalog_model", "price_per_hour", "price_input_per_1k",
                    "price_output_per_1k", "created_at"]
    list_filter = ["instance_type"]
    list_select_related = ["instance_type", "catalog_model"]
    ordering = ["-effective_from"]


@admin.register(WorkspaceCost)
class WorkspaceCostAdmin(admin.ModelAdmin):
    """One page: this month's (or ?month=YYYY-MM's) cost of every workspace."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    def changelist_view(self, request, extra_context=None):
        now = timezone.now()
        start, end = parse_month(request.GET.get("month", ""), now)
        endpoints_by_ws = defaultdict(list)
        for ep in Endpoint.all_objects.select_related("workspace"):
            endpoints_by_ws[ep.workspace_id].append(ep)
        rows = []
        grand = Decimal(0)
        for ws in WorkspaceCost.objects.order_by("name"):
            lines = []
            if endpoints_by_ws[ws.pk] and start < now:
                lines = costs.cost_lines(endpoints_by_ws[ws.pk], start, min(end, now), DAY, now=now)
            by_kind = defaultdict(Decimal)
            hours = Decimal(0)
            tokens = 0
            for line in lines:
                by_kind[line.kind] += line.cost
                hours += line.instance_hours
                tokens += line.tokens_in + line.tokens_out
            total = sum(by_kind.values(), Decimal(0))
            grand += total
            budget = ws.monthly_budget
            rows.append({
                "workspace": ws, "endpoints": len(endpoints_by_ws[ws.pk]),
                "instance_hours": round(hours, 2), "tokens": tokens,
                "instance_cost": costs.round_cents(by_kind["instance"]),
                "token_cost": costs.round_cents(by_kind["tokens"]),
                "total": costs.round_cents(total), "budget": budget,
                "percent": round(total / budget * 100) if budget else None,
            })
        rows.sort(key=lambda r: -r["total"])
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cost by workspace, {start:%B %Y}",
            "opts": self.model._meta,
            "rows": rows,
            "grand_total": costs.round_cents(grand),
            "prev_month": (start - timedelta(days=1)).strftime("%Y-%m"),
            "next_month": end.strftime("%Y-%m") if end <= now else None,
        }
        return TemplateResponse(request, "admin/endpoints_app/workspacecost/costs.html", context)
