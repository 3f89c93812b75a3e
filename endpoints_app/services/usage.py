"""Workspace budgets: set by an Owner; warnings at 80% and 100% of the month's cost,
each recorded once per month in the audit log."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone

from endpoints_app.errors import InvalidInput
from endpoints_app.metering import costs
from endpoints_app.models import AuditLog, CatalogModel, Endpoint, InstanceType, Role, Workspace
from endpoints_app.permissions import can
from endpoints_app.services.audit import SYSTEM, Actor, record
from endpoints_app.services.specs import clean_or_refuse

THRESHOLDS = (80, 100)


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def parse_month(value: str, now: datetime) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) for "YYYY-MM"; this month otherwise."""
    try:
        start = datetime.strptime(value or "", "%Y-%m").replace(tzinfo=UTC)
    except ValueError:
        start = month_start(now)
    if not 2000 <= start.year <= 2999:
        start = month_start(now)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def parse_amount(value) -> Decimal | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise InvalidInput(f"The budget must be a number; got {value!r}.", field="monthly_budget") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidInput("The budget must be zero or more.", field="monthly_budget")
    if amount >= Decimal("1e10"):
        raise InvalidInput("The budget is too large.", field="monthly_budget")
    return amount.quantize(Decimal("0.01"))


@transaction.atomic
def do_set_budget(actor: Actor, workspace: Workspace, amount) -> Workspace:
    """Set (or clear, with None or "") the workspace's monthly budget. Owners only."""
    if actor.user is None or not can(actor.user, workspace, Role.OWNER):
        raise PermissionDenied("Only an Owner can set the workspace budget.")
    parsed = parse_amount(amount)
    workspace = Workspace.objects.select_for_update().get(pk=workspace.pk)
    old = workspace.monthly_budget
    workspace.monthly_budget = parsed
    workspace.save(update_fields=["monthly_budget"])
    record(actor, "budget.set", workspace, workspace,
           old=str(old) if old is not None else None, new=str(parsed) if parsed is not None else None)
    return workspace


def month_to_date_cost(workspace: Workspace, now: datetime | None = None) -> Decimal:
    now = now or timezone.now()
    start = month_start(now)
    endpoints = list(Endpoint.all_objects.filter(workspace=workspace))  # deleted ones cost too
    if not endpoints:
        return Decimal(0)
    lines = costs.cost_lines(endpoints, start, now, 31 * 86400, now=now)
    return costs.round_cents(sum((line.cost for line in lines), Decimal(0)))


def budget_status(workspace: Workspace, spent: Decimal) -> dict:
    budget = workspace.monthly_budget
    if budget is None:
        return {"budget": None, "spent": spent, "percent": None, "level": None}
    percent = (spent / budget * 100) if budget > 0 else (Decimal(100) if spent > 0 else Decimal(0))
    level = next((t for t in reversed(THRESHOLDS) if percent >= t), None)
    return {"budget": budget, "spent": spent, "percent": percent, "level": level}


def check_budget(workspace: Workspace, now: datetime | None = None) -> dict:
    """Compute the month's spend and record any threshold crossed, once per month each."""
    now = now or timezone.now()
    status = budget_status(workspace, month_to_date_cost(workspace, now))
    if status["level"] is None:
        return status
    month = month_start(now).strftime("%Y-%m")
    with transaction.atomic():
        # Lock the workspace row so two checks at once record a threshold once.
        Workspace.objects.select_for_update().filter(pk=workspace.pk).first()
        for threshold in THRESHOLDS:
            if status["percent"] < threshold:
                continue
            seen = AuditLog.objects.filter(
                workspace=workspace, action="budget.warning", details__month=month, details__threshold=threshold
            ).exists()
            if not seen:
                record(SYSTEM, "budget.warning", workspace, workspace, month=month, threshold=threshold,
                       spent=str(status["spent"]), budget=str(status["budget"]))
    return status


def check_all_budgets(now: datetime | None = None) -> None:
    for workspace in Workspace.objects.filter(monthly_budget__isnull=False):
        check_budget(workspace, now)


@transaction.atomic
def do_change_instance_price(actor: Actor, instance_type: InstanceType, new_price: Decimal) -> InstanceType:
    """IT changes an instance type's price; it applies from this minute on."""
    current = InstanceType.objects.select_for_update().get(pk=instance_type.pk)
    old = current.price_per_hour
    instance_type.price_per_hour = new_price
    clean_or_refuse(instance_type)  # the same rules as the admin's form: no negative price
    now = timezone.now()
    costs.record_instance_price(current, old, new_price, now)
    instance_type.save()
    if old != new_price:
        record(actor, "price.change", instance_type, None, old=str(old), new=str(new_price),
               effective_from=costs.floor_minute(now).isoformat())
    return instance_type


@transaction.atomic
def do_change_token_price(actor: Actor, model: CatalogModel, price_in, price_out) -> CatalogModel:
    """IT changes a foundation model's price per 1K input/output tokens; it applies from this minute on."""
    current = CatalogModel.objects.select_for_update().get(pk=model.pk)
    old = (current.price_input_per_1k, current.price_output_per_1k)
    new = (price_in, price_out)
    model.price_input_per_1k, model.price_output_per_1k = new
    clean_or_refuse(model)
    now = timezone.now()
    if old != new:
        # A model that had no price cost nothing until now.
        costs.record_token_price(current, tuple(p or 0 for p in old), tuple(p or 0 for p in new), now)
    model.price_input_per_1k, model.price_output_per_1k = new
    model.save()
    if old != new:
        record(actor, "price.change", model, model.workspace, old=[str(p) for p in old], new=[str(p) for p in new],
               effective_from=costs.floor_minute(now).isoformat())
    return model
