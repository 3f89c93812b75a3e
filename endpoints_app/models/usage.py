from django.db import models

from endpoints_app.models.endpoints import Endpoint


class UsageMinute(models.Model):
    """Per deployment per minute counters, flushed by gateway workers as deltas."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="usage_minutes")
    deployment = models.CharField(max_length=32, blank=True)
    minute = models.DateTimeField()
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

    class Meta:
        ordering = ["minute"]
        constraints = [
            models.UniqueConstraint(fields=["endpoint", "deployment", "minute"], name="one_usage_row_per_minute"),
        ]
        indexes = [models.Index(fields=["endpoint", "minute"])]
