from django.db import models

from endpoints_app.models.endpoints import Endpoint
from endpoints_app.models.workspaces import Workspace


class UsageCounters(models.Model):
    """What the gateway counts per deployment, summed alike at every granularity."""

    requests = models.PositiveBigIntegerField(default=0)
    status_2xx = models.PositiveBigIntegerField(default=0)
    status_4xx = models.PositiveBigIntegerField(default=0)
    status_5xx = models.PositiveBigIntegerField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    tokens_in = models.PositiveBigIntegerField(default=0)
    tokens_out = models.PositiveBigIntegerField(default=0)
    latency_ms_sum = models.FloatField(default=0)
    # Histogram buckets (upper bounds in ms, see endpoints_app.metering) as a list of counts.
    latency_histogram = models.JSONField(default=list)
    # Requests per HTTP status code: {"200": n, "401": n, ...}.
    status_codes = models.JSONField(default=dict)

    class Meta:
        abstract = True


class UsageMinute(UsageCounters):
    """Per deployment per minute counters, flushed by gateway workers as deltas."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="usage_minutes")
    deployment = models.CharField(max_length=32, blank=True)
    minute = models.DateTimeField()

    class Meta:
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "deployment", "minute"], name="one_usage_row_per_minute"),
        ]
        indexes = [models.Index(fields=["endpoint", "minute"])]


class UsageJournalSegment(models.Model):
    """A gateway worker's usage journal segment (endpoints_app/gateway/metering.py) whose counts are in
    UsageMinute: written in the same transaction as those counts, so a segment is added exactly once
    whether its own worker flushes it or, after that worker was killed, another worker drains it."""

    name = models.CharField(max_length=200, unique=True)
    applied_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = "usage journal segment"

    def __str__(self) -> str:
        return self.name


class UsageRollup(UsageCounters):
    """UsageMinute rows summed per hour, per 6 hours or per day, so reads over long ranges stay fast.
    Written only by endpoints_app.metering.rollup (recomputed, so it may run twice)."""

    class Period(models.TextChoices):
        HOUR = "hour"
        SIX_HOURS = "6h"
        DAY = "day"

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="usage_rollups")
    deployment = models.CharField(max_length=32, blank=True)
    period = models.CharField(max_length=8, choices=Period.choices)
    start = models.DateTimeField()

    class Meta:
        ordering = ["start"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "deployment", "period", "start"], name="one_usage_rollup_row"),
        ]
        indexes = [models.Index(fields=["period", "endpoint", "start"])]


class RollupCursor(models.Model):
    """One row: every whole hour before `rolled_until` has its UsageRollup rows (and every
    whole day before it too). Readers use rollups before it and minute rows after it."""

    rolled_until = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)


class PriceChange(models.Model):
    """Price history: one row per price that IT set, effective from a whole minute on.
    Exactly one of instance_type / catalog_model is set. Before an item's first row,
    its current price applies (a price nobody changed has always been the price)."""

    instance_type = models.ForeignKey(
        "endpoints_app.InstanceType", null=True, blank=True, on_delete=models.CASCADE, related_name="price_changes"
    )
    catalog_model = models.ForeignKey(
        "endpoints_app.CatalogModel", null=True, blank=True, on_delete=models.CASCADE, related_name="price_changes"
    )
    effective_from = models.DateTimeField()
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4, null=True, blank=True)
    price_input_per_1k = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    price_output_per_1k = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["effective_from", "id"]
        indexes = [models.Index(fields=["instance_type", "effective_from"])]


class InstanceSample(models.Model):
    """CPU and memory of one instance process, sampled by its node's worker."""

    instance = models.ForeignKey("endpoints_app.Instance", on_delete=models.CASCADE, related_name="samples")
    time = models.DateTimeField()
    cpu_percent = models.FloatField()
    memory_mb = models.FloatField()

    class Meta:
        ordering = ["time"]
        indexes = [models.Index(fields=["instance", "time"])]


class WorkspaceCost(Workspace):
    """Workspaces seen by their cost: the admin console's cost-across-workspaces page."""

    class Meta:
        proxy = True
        verbose_name = "cost by workspace"
        verbose_name_plural = "cost by workspace"
