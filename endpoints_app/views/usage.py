"""The workspace Usage page: cost by endpoint, model and day, CSV export, monthly budget."""

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from endpoints_app import csvsafe
from endpoints_app.errors import StudioError
from endpoints_app.metering import costs
from endpoints_app.metering.charts import PALETTE, bar, new_figure
from endpoints_app.metering.query import DAY
from endpoints_app.models import BatchJob, Endpoint, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services.audit import Actor
from endpoints_app.services.usage import budget_status, check_budget, do_set_budget, month_start, parse_month
from endpoints_app.views.common import require_workspace, script_safe

JOBS_SHOWN = 50


def _month(request, now: datetime) -> tuple[datetime, datetime]:
    return parse_month(request.GET.get("month", ""), now)


def _lines(workspace, start: datetime, end: datetime, now: datetime) -> list[costs.CostLine]:
    endpoints = list(Endpoint.all_objects.filter(workspace=workspace))  # deleted ones cost too
    if not endpoints or start >= now:
        return []
    return costs.cost_lines(endpoints, start, min(end, now), DAY, now=now)


def _group(lines, key) -> list[dict]:
    groups: dict = defaultdict(lambda: {"instance_hours": Decimal(0), "tokens_in": 0, "tokens_out": 0,
                                        "cost": Decimal(0)})
    for line in lines:
        g = groups[key(line)]
        g["instance_hours"] += line.instance_hours
        g["tokens_in"] += line.tokens_in
        g["tokens_out"] += line.tokens_out
        g["cost"] += line.cost
    rows = [{"key": k, **v, "cost": costs.round_cents(v["cost"]), "instance_hours": round(v["instance_hours"], 3)}
            for k, v in groups.items()]
    return rows


@login_required
def usage_page(request):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name)
    now = timezone.now()
    start, end = _month(request, now)
    lines = _lines(workspace, start, end, now)
    total = costs.round_cents(sum((line.cost for line in lines), Decimal(0)))
    by_endpoint = sorted(_group(lines, lambda ln: ln.endpoint), key=lambda r: (-r["cost"], r["key"]))
    by_model = sorted(_group(lines, lambda ln: ln.model), key=lambda r: (-r["cost"], r["key"]))
    by_day = sorted(_group(lines, lambda ln: datetime.fromtimestamp(ln.bucket, UTC).date()), key=lambda r: r["key"])

    fig = new_figure("Cost per day, by endpoint", "USD", barmode="stack")
    day_endpoint = defaultdict(Decimal)
    for line in lines:
        day_endpoint[(datetime.fromtimestamp(line.bucket, UTC).date(), line.endpoint)] += line.cost
    days = [start.date() + timedelta(days=i) for i in range((end - start).days)]
    x = [d.isoformat() for d in days]
    for i, name in enumerate(sorted({e for (_, e) in day_endpoint})):
        fig.add_trace(bar(x=x, y=[float(day_endpoint.get((d, name), 0)) for d in days], name=name,
                          marker={"color": PALETTE[i % len(PALETTE)]}))

    this_month = month_start(now)
    status = None
    if workspace.monthly_budget is not None:
        spent = total if start == this_month else costs.round_cents(
            sum((ln.cost for ln in _lines(workspace, this_month, now, now)), Decimal(0)))
        status = budget_status(workspace, spent)
    context = {
        "month": start,
        "prev_month": (start - timedelta(days=1)).strftime("%Y-%m"),
        "next_month": end.strftime("%Y-%m") if end <= now else None,
        "total": total,
        "by_endpoint": by_endpoint,
        "by_model": by_model,
        "by_day": by_day,
        "chart_json": script_safe(fig.to_json()),
        "budget": status,
        "is_owner": can(request.user, workspace, Role.OWNER),
        # Batch jobs of the month, costliest first (their instance time is in the endpoint rows too).
        "jobs": list(BatchJob.objects.filter(workspace=workspace, created_at__gte=start, created_at__lt=end)
                     .select_related("endpoint").order_by("-cost", "-created_at")[:JOBS_SHOWN]),
    }
    return render(request, "usage/index.html", context)


@login_required
def usage_csv(request):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name)
    now = timezone.now()
    start, end = _month(request, now)
    lines = sorted(_lines(workspace, start, end, now), key=lambda ln: (ln.bucket, ln.endpoint, ln.deployment, ln.kind))
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{workspace.name}-{start:%Y-%m}.csv"'
    # Names users chose (endpoints, deployments, models) reach a spreadsheet: formula-safe cells (csvsafe).
    response.write(csvsafe.row(["date", "endpoint", "deployment", "model", "meter", "instance_type",
                                "instance_hours", "tokens_in", "tokens_out", "cost"]))
    response.write(csvsafe.rows(
        [datetime.fromtimestamp(ln.bucket, UTC).date().isoformat(), ln.endpoint, ln.deployment, ln.model, ln.kind,
         ln.instance_type, f"{ln.instance_hours:.6f}", ln.tokens_in, ln.tokens_out, f"{ln.cost:.6f}"]
        for ln in lines
    ))
    return response


@login_required
@require_POST
def set_budget(request):
    workspace = require_workspace(request)
    workspace = check_workspace(request.user, workspace.name, Role.OWNER)
    try:
        workspace = do_set_budget(Actor.from_request(request), workspace, request.POST.get("monthly_budget", ""))
    except StudioError as error:
        messages.error(request, error.message)
    else:
        messages.success(request, "Budget saved.")
        # A budget already crossed is recorded now, not at the next rollup.
        check_budget(workspace)
    return redirect("usage")
