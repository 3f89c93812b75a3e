"""Marketplace subscriptions and serverless rate-limit overrides."""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from endpoints_app.models.catalog import CatalogModel
from endpoints_app.models.workspaces import Workspace


class MarketplaceSubscription(models.Model):
    """A workspace's acceptance of a model offer's terms. A serverless endpoint on the model
    needs a live one; deleting it (deleted_at set, the row stays for the audit) makes the
    workspace's serverless endpoints on that model Unhealthy. `name` is the model's name: one
    live subscription per model name per workspace (it covers every version of the model)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="subscriptions")
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="subscriptions")
    name = models.CharField(max_length=64)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["workspace__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "name"], condition=models.Q(deleted_at__isnull=True),
                name="one_live_subscription_per_model",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.name}"

    @property
    def deleted(self) -> bool:
        return self.deleted_at is not None


class ServerlessRateLimit(models.Model):
    """IT's per-workspace override of an offer's per-endpoint limits; a blank field keeps
    the offer's own (CatalogModel.rate_limit_*)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="serverless_rate_limits")
    model = models.ForeignKey(CatalogModel, on_delete=models.CASCADE, related_name="serverless_rate_limits")
    requests_per_minute = models.PositiveIntegerField(null=True, blank=True)
    tokens_per_minute = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["workspace__name", "model__name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "model"], name="one_rate_limit_per_workspace_model"),
        ]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.model}"

    def clean(self) -> None:
        errors = {}
        for field in ("requests_per_minute", "tokens_per_minute"):
            value = getattr(self, field)
            if value is not None and value < 1:
                errors[field] = "A limit must be at least 1 per minute (leave it blank for the offer's own)."
        if self.requests_per_minute is None and self.tokens_per_minute is None:
            errors["requests_per_minute"] = "Set at least one limit, or delete the override."
        if self.model_id and not self.model.offers_serverless:
            errors["model"] = "This model is not offered serverless."
        if errors:
            raise ValidationError(errors)
