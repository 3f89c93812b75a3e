from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from endpoints_app.models.workspaces import Workspace


class LiveManager(models.Manager):
    """Deleted endpoints, deployments and registered models stay in the database, because usage and
    instance-hours are billed from them (and deleted deployments still name their model); everyday
    queries never see them. `all_objects` sees them (the meters use it)."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class InstanceType(models.Model):
    name = models.CharField(max_length=64, unique=True)
    family = models.CharField(max_length=40, help_text="Quota family, e.g. DSv2")
    cores = models.PositiveIntegerField()
    memory_gb = models.DecimalField(max_digits=8, decimal_places=2)
    price_per_hour = models.DecimalField(max_digits=10, decimal_places=4)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["cores", "memory_gb", "name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules every writer (admin, API, services) runs, through full_clean()."""
        errors = {}
        if self.price_per_hour is not None and self.price_per_hour < 0:
            errors["price_per_hour"] = "The price per hour cannot be negative."
        if self.cores is not None and self.cores < 1:
            errors["cores"] = "An instance type has at least one core."
        if self.memory_gb is not None and self.memory_gb <= 0:
            errors["memory_gb"] = "An instance type has some memory."
        if errors:
            raise ValidationError(errors)


class CatalogModel(models.Model):
    class Format(models.TextChoices):
        SKLEARN = "sklearn", "scikit-learn"
        ONNX = "onnx", "ONNX"
        SENTENCE_TRANSFORMERS = "sentence-transformers", "sentence-transformers"
        CUSTOM = "custom", "Custom (score.py)"
        GGUF = "gguf", "GGUF (llama.cpp)"
        MLFLOW = "mlflow", "MLflow model"

    class Task(models.TextChoices):
        CLASSIFICATION = "classification"
        REGRESSION = "regression"
        IMAGE_CLASSIFICATION = "image-classification"
        EMBEDDINGS = "embeddings"
        CHAT_COMPLETION = "chat-completion"
        TEXT_GENERATION = "text-generation"
        CUSTOM = "custom"

    # "studio" for the shared catalog; a workspace's name for models it registered itself.
    registry = models.CharField(max_length=64, default="studio")
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=64)
    version = models.PositiveIntegerField(default=1)
    display_name = models.CharField(max_length=120, blank=True)
    task = models.CharField(max_length=32, choices=Task.choices)
    format = models.CharField(max_length=32, choices=Format.choices)
    license = models.CharField(max_length=64)
    publisher = models.CharField(max_length=64, default="Studio")
    summary = models.CharField(max_length=300, blank=True)
    description = models.TextField(blank=True)
    intended_use = models.TextField(blank=True)
    limitations = models.TextField(blank=True)
    input_schema = models.JSONField(default=dict, blank=True)
    output_schema = models.JSONField(default=dict, blank=True)
    sample_request = models.JSONField(default=dict, blank=True)
    sample_response = models.JSONField(default=dict, blank=True)
    deployment_kinds = models.JSONField(default=list)
    # Foundation models: price per 1K tokens.
    price_input_per_1k = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    price_output_per_1k = models.DecimalField(max_digits=10, decimal_places=6, null=True, blank=True)
    # Serverless offer (models whose deployment_kinds hold "serverless"): the terms a workspace
    # accepts by subscribing, and the default per-endpoint limits per minute. A workspace may
    # have its own limits (ServerlessRateLimit); effective_rate_limits() says which apply.
    offer_terms = models.TextField(blank=True)
    rate_limit_requests_per_minute = models.PositiveIntegerField(default=1000)
    rate_limit_tokens_per_minute = models.PositiveIntegerField(default=200_000)
    # Where the artifact lives: relative to MEDIA_ROOT, or absolute for files a package ships.
    artifact_path = models.CharField(max_length=500, blank=True)
    scoring_script = models.CharField(max_length=200, blank=True)
    # The packages the model needs (models/environments.py); MLflow models get one from their requirements.
    environment = models.ForeignKey(
        "endpoints_app.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="models"
    )
    tags = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # A workspace's own model version that was deleted: hidden everywhere, kept for its deployments' history.
    deleted_at = models.DateTimeField(null=True, blank=True)

    objects = LiveManager()
    all_objects = models.Manager()

    class Meta:
        base_manager_name = "all_objects"
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["registry", "name", "version"], name="unique_model_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def asset_id(self) -> str:
        return f"studio://registries/{self.registry}/models/{self.name}/versions/{self.version}"

    @property
    def measured(self) -> list[tuple[str, str]]:
        """Quality measured when the model was made (seed time: tags["metrics"]), as (label, value) to show."""
        metrics = (self.tags or {}).get("metrics") or {}
        shown = []
        if isinstance(metrics.get("accuracy"), (int, float)):
            shown.append(("Accuracy", f"{100 * metrics['accuracy']:.1f}%"))
        if isinstance(metrics.get("r2"), (int, float)):
            shown.append(("R²", f"{metrics['r2']:.3f}"))
        if isinstance(metrics.get("mae"), (int, float)):
            shown.append(("Mean absolute error", f"{metrics['mae']:g}"))
        if shown and isinstance(metrics.get("test_rows"), int):
            shown.append(("Held-out rows", str(metrics["test_rows"])))
        return shown

    @property
    def is_foundation(self) -> bool:
        return self.price_input_per_1k is not None

    @property
    def offers_serverless(self) -> bool:
        return self.is_foundation and "serverless" in (self.deployment_kinds or [])

    def effective_rate_limits(self, workspace: Workspace) -> tuple[int, int]:
        """(requests per minute, tokens per minute) for `workspace`'s serverless endpoint on this model:
        the workspace's override (ServerlessRateLimit) where it sets one, else the offer's own."""
        requests, tokens = self.rate_limit_requests_per_minute, self.rate_limit_tokens_per_minute
        override = self.serverless_rate_limits.filter(workspace=workspace).first()
        if override is not None:
            requests = override.requests_per_minute or requests
            tokens = override.tokens_per_minute or tokens
        return requests, tokens

    def clean(self) -> None:
        """The rules every writer (admin, API, services) runs, through full_clean()."""
        errors = {}
        for field in ("rate_limit_requests_per_minute", "rate_limit_tokens_per_minute"):
            if getattr(self, field) is not None and getattr(self, field) < 1:
                errors[field] = "A limit must be at least 1 per minute."
        for field in ("price_input_per_1k", "price_output_per_1k"):
            value = getattr(self, field)
            if value is not None and value < 0:
                errors[field] = "A price per 1K tokens cannot be negative."
        if "serverless" in (self.deployment_kinds or []) and self.price_input_per_1k is None:
            errors["price_input_per_1k"] = "A model offered serverless needs prices per 1K tokens."
        if errors:
            raise ValidationError(errors)
