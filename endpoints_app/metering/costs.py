"""Cost meters, with price history.

- Online and batch deployments: instance uptime (started_at until stopped_at, or now
  while it runs) x the instance type's price per hour. Batch scoring processes are
  instances of batch deployments, so their compute minutes are metered the same way.
- Serverless endpoints: tokens x the model's price per 1K input and output tokens.

Prices come from PriceChange rows: a change applies from its minute on, never before.
An item with no history has always had its current price. Sums are exact Decimals;
round_cents() rounds once, at the end."""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from endpoints_app.metering import query
from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance, InstanceState, InstanceType, PriceChange

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CENT = Decimal("0.01")
MICROS_PER_HOUR = Decimal(3_600_000_000)
THOUSAND = Decimal(1000)


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def floor_minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


# --- price history -------------------------------------------------------------------------------------------------


@transaction.atomic
def record_instance_price(instance_type: InstanceType, old_price: Decimal, new_price: Decimal, at: datetime) -> None:
    """Called when IT changes an instance type's price: the new price applies from `at`'s minute on."""
    if old_price == new_price:
        return
    if not PriceChange.objects.filter(instance_type=instance_type).exists():
        # Keep the price that applied until now, so earlier usage keeps its price.
        PriceChange.objects.create(instance_type=instance_type, effective_from=EPOCH, price_per_hour=old_price)
    PriceChange.objects.create(instance_type=instance_type, effective_from=floor_minute(at), price_per_hour=new_price)


@transaction.atomic
def record_token_price(model: CatalogModel, old: tuple, new: tuple, at: datetime) -> None:
    """Called when IT changes a model's (input, output) price per 1K tokens."""
    if tuple(old) == tuple(new):
        return
    if not PriceChange.objects.filter(catalog_model=model).exists():
        PriceChange.objects.create(
            catalog_model=model, effective_from=EPOCH, price_input_per_1k=old[0], price_output_per_1k=old[1]
        )
    PriceChange.objects.create(
        catalog_model=model, effective_from=floor_minute(at), price_input_per_1k=new[0], price_output_per_1k=new[1]
    )


Timeline = list[tuple[datetime, object]]  # (effective_from, price), sorted; the first starts at EPOCH


def instance_price_timeline(instance_type: InstanceType, history: list[PriceChange] | None = None) -> Timeline:
    rows = history if history is not None else list(instance_type.price_changes.all())
    if not rows:
        return [(EPOCH, instance_type.price_per_hour)]
    return [(row.effective_from, row.price_per_hour) for row in rows]


def token_price_timeline(model: CatalogModel, history: list[PriceChange] | None = None) -> Timeline:
    rows = history if history is not None else list(model.price_changes.all())
    if not rows:
        return [(EPOCH, (model.price_input_per_1k or Decimal(0), model.price_output_per_1k or Decimal(0)))]
    return [(r.effective_from, (r.price_input_per_1k or Decimal(0), r.price_output_per_1k or Decimal(0))) for r in rows]


def split_by_prices(start: datetime, end: datetime, timeline: Timeline) -> list[tuple[datetime, datetime, object]]:
    """Cut [start, end) where the price changes."""
    out = []
    for i, (since, price) in enumerate(timeline):
        until = timeline[i + 1][0] if i + 1 < len(timeline) else None
        lo = max(start, since)
        hi = end if until is None else min(end, until)
        if lo < hi:
            out.append((lo, hi, price))
    return out


# --- meters --------------------------------------------------------------------------------------------------------


@dataclass
class CostLine:
    """What one deployment cost in one bucket, for one kind of meter."""

    bucket: int  # epoch seconds of the bucket start
    endpoint_id: int
    endpoint: str
    deployment: str
    model: str
    kind: str  # "instance" (quantity in instance-hours) or "tokens" (quantity in tokens)
    instance_type: str = ""
    instance_hours: Decimal = Decimal(0)
    tokens_in: int = 0
    tokens_out: int = 0
    cost: Decimal = Decimal(0)


def _uptime(started_at, stopped_at, state: str, now: datetime) -> tuple[datetime, datetime] | None:
    if started_at is None:
        return None
    if stopped_at is not None:
        return started_at, stopped_at
    if state in (InstanceState.STOPPED, InstanceState.FAILED):
        # A stopped instance the controller gave no stop time: it bills nothing past its start.
        return None
    return started_at, now


INSTANCE_COLUMNS = (
    "started_at", "stopped_at", "state", "deployment__endpoint_id", "deployment__name",
    "deployment__instance_type_id", "deployment__instance_type__name", "deployment__instance_type__price_per_hour",
    "deployment__model__name",
)


def instance_costs(
    endpoints: Iterable[Endpoint], start: datetime, end: datetime, step: int, deployment: str | None = None,
    now: datetime | None = None,
) -> list[CostLine]:
    now = now or timezone.now()
    end = min(end, now)
    by_id = {e.pk: e for e in endpoints}
    instances = (
        Instance.objects.filter(deployment__endpoint_id__in=list(by_id), started_at__lt=end)
        .filter(Q(stopped_at__isnull=True) | Q(stopped_at__gt=start))
    )
    if deployment is not None:
        instances = instances.filter(deployment__name=deployment)
    # Plain values: model instances (with the catalog model's JSON fields) cost more than the meter.
    instances = list(instances.values_list(*INSTANCE_COLUMNS))
    type_ids = {row[5] for row in instances}
    history: dict[int, list[PriceChange]] = defaultdict(list)
    for change in PriceChange.objects.filter(instance_type_id__in=type_ids):
        history[change.instance_type_id].append(change)
    timelines = {}
    # Exact integer microseconds per (bucket, deployment, instance type, price); Decimals once per line.
    micros: dict[tuple, dict] = {}
    names: dict[tuple, tuple] = {}
    step_us = step * 1_000_000
    for started_at, stopped_at, state, endpoint_id, dep_name, type_id, type_name, type_price, model in instances:
        span = _uptime(started_at, stopped_at, state, now)
        if span is None:
            continue
        lo, hi = max(span[0], start), min(span[1], end)
        if lo >= hi:
            continue
        if type_id not in timelines:
            changes = history.get(type_id)
            timelines[type_id] = (
                [(c.effective_from, c.price_per_hour) for c in changes] if changes else [(EPOCH, type_price)]
            )
        label = (by_id[endpoint_id].name, model)
        for plo, phi, price in split_by_prices(lo, hi, timelines[type_id]):
            lo_us, hi_us = _micros(plo), _micros(phi)
            for bucket_us in range(lo_us - lo_us % step_us, hi_us, step_us):
                overlap = min(hi_us, bucket_us + step_us) - max(lo_us, bucket_us)
                key = (bucket_us // 1_000_000, endpoint_id, dep_name, type_name)
                by_price = micros.get(key)
                if by_price is None:
                    micros[key] = {price: overlap}
                    names[key] = label
                else:
                    by_price[price] = by_price.get(price, 0) + overlap
    lines = []
    # Most lines are a whole bucket at one price: the same Decimals again and again, computed once each.
    amounts: dict[tuple, tuple[Decimal, Decimal]] = {}
    for key, by_price in micros.items():
        bucket, endpoint_id, dep_name, type_name = key
        spent = tuple(by_price.items())
        amount = amounts.get(spent)
        if amount is None:
            amount = amounts[spent] = (
                Decimal(sum(by_price.values())) / MICROS_PER_HOUR,
                sum((Decimal(us) * Decimal(price) for price, us in spent), Decimal(0)) / MICROS_PER_HOUR,
            )
        endpoint_name, model = names[key]
        lines.append(CostLine(bucket, endpoint_id, endpoint_name, dep_name, model, "instance", type_name,
                              instance_hours=amount[0], cost=amount[1]))
    return lines


def _micros(t: datetime) -> int:
    return (t - EPOCH) // timedelta(microseconds=1)


def serverless_models(endpoints: Iterable[Endpoint]) -> dict[tuple[int, str], CatalogModel]:
    """Which model each serverless endpoint's usage rows are priced by: its deployments'
    models by name, and under "" (rows with no deployment) the endpoint's only model."""
    serverless = [e for e in endpoints if e.kind == Endpoint.Kind.SERVERLESS]
    out: dict[tuple[int, str], CatalogModel] = {}
    for dep in Deployment.all_objects.filter(endpoint__in=serverless).select_related("model"):
        out[(dep.endpoint_id, dep.name)] = dep.model
        out.setdefault((dep.endpoint_id, ""), dep.model)
    for endpoint in serverless:
        model = getattr(endpoint, "model", None)
        if isinstance(model, CatalogModel):
            out.setdefault((endpoint.pk, ""), model)
    return out


def token_costs(
    endpoints: Iterable[Endpoint], start: datetime, end: datetime, step: int, deployment: str | None = None,
    series_rows: dict | None = None,
) -> list[CostLine]:
    """`series_rows`: query.series() of these endpoints over the same range and step, if the
    caller has it (read again only when a price changes inside the range)."""
    endpoints = list(endpoints)
    by_id = {e.pk: e for e in endpoints}
    models = serverless_models(endpoints)
    if not models:
        return []
    history: dict[int, list[PriceChange]] = defaultdict(list)
    for change in PriceChange.objects.filter(catalog_model_id__in={m.pk for m in models.values()}):
        history[change.catalog_model_id].append(change)
    # Group endpoints by model timeline cut points, so each price period is read once.
    cuts = sorted({c.effective_from for changes in history.values() for c in changes if c.effective_from > start})
    bounds = [start, *[c for c in cuts if c < end], end]
    lines: dict[tuple, CostLine] = {}
    timelines = {m.pk: token_price_timeline(m, history.get(m.pk, [])) for m in models.values()}
    endpoint_ids = {e_id for e_id, _ in models}
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if series_rows is not None and (lo, hi) == (start, end):
            rows = series_rows
        else:
            rows = query.series(endpoint_ids, lo, hi, step, deployment=deployment, with_latency=False)
        for (bucket, endpoint_id, dep_name), acc in rows.items():
            if endpoint_id not in endpoint_ids:
                continue
            model = models.get((endpoint_id, dep_name)) or models.get((endpoint_id, ""))
            if model is None:
                continue
            price_in, price_out = _price_at(timelines[model.pk], lo)
            tokens_in, tokens_out = acc.tokens_in, acc.tokens_out
            key = (bucket, endpoint_id, dep_name)
            line = lines.get(key)
            if line is None:
                name = by_id[endpoint_id].name
                line = lines[key] = CostLine(bucket, endpoint_id, name, dep_name, model.name, "tokens")
            line.tokens_in += tokens_in
            line.tokens_out += tokens_out
            line.cost += Decimal(tokens_in) * Decimal(price_in) / THOUSAND
            line.cost += Decimal(tokens_out) * Decimal(price_out) / THOUSAND
    return list(lines.values())


def _price_at(timeline: Timeline, t: datetime):
    price = timeline[0][1]
    for since, value in timeline:
        if since <= t:
            price = value
    return price


def cost_lines(
    endpoints: Iterable[Endpoint], start: datetime, end: datetime, step: int, deployment: str | None = None,
    now: datetime | None = None, series_rows: dict | None = None,
) -> list[CostLine]:
    endpoints = list(endpoints)
    return instance_costs(endpoints, start, end, step, deployment, now) + token_costs(
        endpoints, start, end, step, deployment, series_rows
    )


def batch_job_cost(job_id: int, now: datetime | None = None) -> tuple[Decimal, Decimal]:
    """(instance-hours, cost) of one batch job: the uptime of the model servers started for it
    (Instance.batch_job) x their instance type's price, with price history, unrounded."""
    hours, cost, _prices, _final = batch_job_charges(job_id, now)
    return hours, cost


def batch_job_charges(job_id: int, now: datetime | None = None) -> tuple[Decimal, Decimal, list[Decimal], bool]:
    """batch_job_cost() with the prices per hour it was charged at (in order, each once) and whether it is
    final: every model server of the job has stopped, so its uptime, and so its cost, no longer grows."""
    now = now or timezone.now()
    rows = list(
        Instance.objects.filter(batch_job_id=job_id).values_list(
            "started_at", "stopped_at", "state", "deployment__instance_type_id",
            "deployment__instance_type__price_per_hour",
        )
    )
    type_ids = {row[3] for row in rows}
    history: dict[int, list[PriceChange]] = defaultdict(list)
    for change in PriceChange.objects.filter(instance_type_id__in=type_ids):
        history[change.instance_type_id].append(change)
    micros = 0
    cost = Decimal(0)
    prices: list[Decimal] = []
    final = True
    for started_at, stopped_at, state, type_id, type_price in rows:
        if stopped_at is None and state not in (InstanceState.STOPPED, InstanceState.FAILED):
            final = False
        span = _uptime(started_at, stopped_at, state, now)
        if span is None or span[0] >= span[1]:
            continue
        changes = history.get(type_id)
        timeline = [(c.effective_from, c.price_per_hour) for c in changes] if changes else [(EPOCH, type_price)]
        for lo, hi, price in split_by_prices(span[0], span[1], timeline):
            us = _micros(hi) - _micros(lo)
            micros += us
            cost += Decimal(us) * Decimal(price)
            if us > 0 and Decimal(price) not in prices:
                prices.append(Decimal(price))
    return Decimal(micros) / MICROS_PER_HOUR, cost / MICROS_PER_HOUR, prices, final
