from datetime import timedelta

from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from endpoints_app.models.catalog import CatalogModel, InstanceType
from endpoints_app.models.workspaces import DNS_LABEL, Workspace

DEPLOYMENT_NAME = RegexValidator(
    r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$",
    "Use 1-32 lowercase letters, digits and hyphens, not starting or ending with a hyphen.",
)


class ProvisioningState(models.TextChoices):
    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    DELETING = "Deleting"


class LiveManager(models.Manager):
    """Deleted endpoints and deployments stay in the database, because their usage
    and instance-hours are billed from them; everyday queries never see them.
    `all_objects` sees them (the meters use it)."""

    def get_queryset(self):
        return super().get_queryset().filter(deleted_at__isnull=True)


class Endpoint(models.Model):
    class Kind(models.TextChoices):
        ONLINE = "online"
        BATCH = "batch"
        SERVERLESS = "serverless"

    class AuthMode(models.TextChoices):
        KEY = "key"
        AML_TOKEN = "aml_token"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="endpoints")
    # Unique among live endpoints (see Meta); a deleted endpoint's name may be used again.
    name = models.CharField(max_length=32, validators=[DNS_LABEL])
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ONLINE)
    auth_mode = models.CharField(max_length=16, choices=AuthMode.choices, default=AuthMode.KEY)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    traffic = models.JSONField(default=dict, blank=True)
    mirror_traffic = models.JSONField(default=dict, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningState.choices, default=ProvisioningState.CREATING
    )
    error = models.TextField(blank=True)
    # Keys are derived from SECRET_KEY and a per-slot nonce; only the nonce and a digest are stored.
    primary_key_nonce = models.CharField(max_length=64, blank=True)
    primary_key_digest = models.CharField(max_length=64, blank=True)
    secondary_key_nonce = models.CharField(max_length=64, blank=True)
    secondary_key_digest = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = LiveManager()
    all_objects = models.Manager()

    class Meta:
        ordering = ["name"]
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(deleted_at__isnull=True), name="unique_live_endpoint_name"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def mark_deleted(self) -> None:
        """Finish a delete: the endpoint and its deployments leave every list and route,
        and their meter history stays."""
        now = timezone.now()
        Deployment.objects.filter(endpoint=self).update(deleted_at=now, updated_at=now)
        self.deleted_at = now
        self.save(update_fields=["deleted_at", "updated_at"])


class Deployment(models.Model):
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="deployments")
    name = models.CharField(max_length=32, validators=[DEPLOYMENT_NAME])
    model = models.ForeignKey(CatalogModel, on_delete=models.PROTECT, related_name="deployments")
    instance_type = models.ForeignKey(InstanceType, on_delete=models.PROTECT, related_name="deployments")
    instance_count = models.PositiveIntegerField(default=1)
    code_configuration = models.JSONField(default=dict, blank=True)
    environment_variables = models.JSONField(default=dict, blank=True)
    scale_settings = models.JSONField(default=dict, blank=True)
    request_settings = models.JSONField(default=dict, blank=True)
    liveness_probe = models.JSONField(default=dict, blank=True)
    readiness_probe = models.JSONField(default=dict, blank=True)
    # Batch deployments: mini_batch_size, max_concurrency_per_instance, error_threshold, ...
    batch_settings = models.JSONField(default=dict, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningState.choices, default=ProvisioningState.CREATING
    )
    error = models.TextField(blank=True)
    # Bumped on every change that needs new processes (model, code, environment);
    # the controller replaces instances of older generations with a surge.
    generation = models.PositiveIntegerField(default=1)
    # Autoscale: when the controller last changed instance_count (for the cool-down).
    last_scaled_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    deleted_at = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = LiveManager()
    all_objects = models.Manager()

    class Meta:
        ordering = ["endpoint__name", "name"]
        base_manager_name = "all_objects"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "name"], condition=models.Q(deleted_at__isnull=True),
                name="unique_live_deployment_name",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint.name}/{self.name}"

    def mark_deleted(self) -> None:
        """Finish a delete; the row stays for the meters (see LiveManager)."""
        self.deleted_at = timezone.now()
        self.save(update_fields=["deleted_at", "updated_at"])


class Node(models.Model):
    """A host that runs a worker on its own queue and model-server instances."""

    name = models.CharField(max_length=64, unique=True)
    host = models.CharField(max_length=255, default="127.0.0.1")
    cores = models.PositiveIntegerField()
    memory_gb = models.DecimalField(max_digits=8, decimal_places=2)
    queue = models.CharField(max_length=100)
    last_heartbeat = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class InstanceState(models.TextChoices):
    STARTING = "Starting"
    READY = "Ready"
    UNHEALTHY = "Unhealthy"
    STOPPING = "Stopping"
    STOPPED = "Stopped"
    FAILED = "Failed"


class Instance(models.Model):
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="instances")
    name = models.CharField(max_length=64, unique=True)
    node = models.ForeignKey(Node, on_delete=models.PROTECT, related_name="instances")
    port = models.PositiveIntegerField(null=True, blank=True)
    pid = models.PositiveIntegerField(null=True, blank=True)
    state = models.CharField(max_length=16, choices=InstanceState.choices, default=InstanceState.STARTING)
    generation = models.PositiveIntegerField(default=1)
    log_path = models.CharField(max_length=500, blank=True)
    restarts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    # Liveness probing: consecutive failures and when the last probe ran.
    probe_failures = models.PositiveIntegerField(default=0)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    # Set when the controller decides to stop it: the gateway drains it before the signal.
    stop_requested_at = models.DateTimeField(null=True, blank=True)
    # First start (billing counts from here to stopped_at); launched_at is the current process's start.
    started_at = models.DateTimeField(null=True, blank=True)
    launched_at = models.DateTimeField(null=True, blank=True)
    ready_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["deployment_id", "name"]

    def __str__(self) -> str:
        return self.name


class RouteVersion(models.Model):
    """One row; its number goes up whenever anything the gateway routes on changes,
    so gateway workers reload their in-memory route table off the hot path."""

    version = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    @classmethod
    def bump(cls, acknowledge: bool = False) -> None:
        """Tell every gateway worker to reload its route table (visible when the caller's transaction commits).

        With `acknowledge`, the commit is followed by a wait (at most ACK_TIMEOUT_SECONDS) until every live
        gateway worker has loaded the new table: a traffic or key change is in force when the caller returns."""
        with transaction.atomic():
            if not cls.objects.filter(pk=1).update(version=F("version") + 1):
                cls.objects.get_or_create(pk=1, defaults={"version": 1})
        if acknowledge:
            transaction.on_commit(lambda: GatewayWorker.wait_for(cls.current()))

    @classmethod
    def current(cls) -> int:
        row = cls.objects.filter(pk=1).values_list("version", flat=True).first()
        return int(row) if row is not None else 0


class GatewayWorker(models.Model):
    """One row per running gateway worker: the route version it has loaded, written off the hot path
    (after each reload and every HEARTBEAT_SECONDS). Lets writers wait until every live worker routes on
    what they wrote."""

    HEARTBEAT_SECONDS = 1.0
    # A worker not heard from for this long is gone (or stuck) and is not waited for.
    LIVE_SECONDS = 5.0
    ACK_TIMEOUT_SECONDS = 3.0

    worker = models.CharField(max_length=120, primary_key=True)
    version = models.PositiveBigIntegerField(default=0)
    seen_at = models.DateTimeField(db_index=True)

    class Meta:
        verbose_name = "gateway worker"

    def __str__(self) -> str:
        return f"{self.worker} at version {self.version}"

    @classmethod
    def beat(cls, worker: str, version: int) -> None:
        cls.objects.update_or_create(worker=worker, defaults={"version": version, "seen_at": timezone.now()})

    @classmethod
    def lagging(cls, version: int) -> list[str]:
        """Live workers that have not loaded `version` yet."""
        since = timezone.now() - timedelta(seconds=cls.LIVE_SECONDS)
        return list(cls.objects.filter(seen_at__gte=since, version__lt=version).values_list("worker", flat=True))

    @classmethod
    def wait_for(cls, version: int, timeout: float | None = None) -> bool:
        """Block until every live gateway worker has loaded `version` (True), or `timeout` passes (False, logged)."""
        import logging
        import time

        deadline = time.monotonic() + (cls.ACK_TIMEOUT_SECONDS if timeout is None else timeout)
        while True:
            behind = cls.lagging(version)
            if not behind:
                return True
            if time.monotonic() >= deadline:
                logging.getLogger("studio.gateway").warning(
                    "gateway workers %s have not loaded route version %s yet", ", ".join(behind), version)
                return False
            time.sleep(0.05)


class MirrorComparison(models.Model):
    """One mirrored request: how the live and the shadow deployment answered it."""

    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="mirror_comparisons")
    live_deployment = models.CharField(max_length=32)
    shadow_deployment = models.CharField(max_length=32)
    time = models.DateTimeField(db_index=True)
    live_status = models.PositiveSmallIntegerField()
    shadow_status = models.PositiveSmallIntegerField()
    live_latency_ms = models.FloatField()
    shadow_latency_ms = models.FloatField()
    agreed = models.BooleanField()

    class Meta:
        ordering = ["-time"]
