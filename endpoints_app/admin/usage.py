"""Usage rows, mirror comparisons, price history, and cost across all workspaces."""

from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

from django.contrib import admin
from django.template.response import TemplateResponse
from django.utils import timezone

from endpoints_app.admin.common import ReadOnlyAdmin
from endpoints_app.metering import costs
from endpoints_app.metering.query import DAY
from endpoints_app.models import Endpoint, MirrorComparison, PriceChange, UsageMinute, WorkspaceCost
from endpoints_app.services.usage import parse_month


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


@admin.register(PriceChange)
class PriceChangeAdmin(ReadOnlyAdmin):
    # What is priced and its price in one column each, so the row (Created at included) fits at 1400 px.
    list_display = ["effective", "priced", "price", "created"]
    list_filter = ["instance_type", "catalog_model"]
    list_select_related = ["instance_type", "catalog_model"]
    ordering = ["-effective_from"]

    @admin.display(description="Effective from", ordering="effective_from")
    def effective(self, obj):
        # The first row keeps the price that applied before any change: it has no start date.
        if obj.effective_from == costs.EPOCH:
            return "the start (price before the first change)"
        return timezone.localtime(obj.effective_from).strftime("%Y-%m-%d %H:%M")

    @admin.display(description="Instance type or model")
    def priced(self, obj):
        return obj.instance_type or obj.catalog_model or "—"

    @admin.display(description="Price")
    def price(self, obj):
        if obj.instance_type_id:
            return f"${obj.price_per_hour} per hour"
        return f"${obj.price_input_per_1k} in / ${obj.price_output_per_1k} out per 1K tokens"

    @admin.display(description="Created at", ordering="created_at")
    def created(self, obj):
        return timezone.localtime(obj.created_at).strftime("%Y-%m-%d %H:%M")


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
