from datetime import timedelta

from django.core.validators import RegexValidator
from django.db import models, transaction
from django.db.models import F
from django.utils import timezone

from endpoints_app.models.catalog import CatalogModel, InstanceType, LiveManager
from endpoints_app.models.computes import Compute, local_compute_id, serverless_compute_id
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


class Endpoint(models.Model):
    """A stable URL plus an auth mechanism.

    Serverless endpoints (`kind == "serverless"`): a user workspace's pay-per-token API on one
    foundation model (`model`, a CatalogModel offered serverless). They have no Deployments of
    their own, no traffic and no quota: `pool` is the platform-managed Deployment that serves
    `model` for every workspace (see Workspace.is_platform). Auth is key auth with the usual
    primary/secondary nonce + digest fields. One live serverless endpoint per model name per
    workspace.

    Health (`status`): Healthy while the workspace holds a live MarketplaceSubscription to the
    model; otherwise `unhealthy_reason` says why (set by unsubscribing, cleared by subscribing
    again) and the gateway answers 403 with that reason. Every change bumps RouteVersion.

    Limits: `model.effective_rate_limits(workspace)` -> (requests/min, tokens/min) per endpoint.

    Cold pools: when `pool` has no ready instance (stopped while idle), the gateway asks for it
    with `endpoints_app.controller.tasks.wake_serverless_pool.delay(pool_id)` (off the hot path;
    idempotent) and answers 503 with Retry-After until an instance is ready. Usage of a serverless
    endpoint is metered on the endpoint itself with deployment "" (or the pool's name): tokens are
    priced by `model` (metering/costs.py); the pool's instance-hours are the platform's."""

    class Kind(models.TextChoices):
        ONLINE = "online"
        BATCH = "batch"
        SERVERLESS = "serverless"

    class AuthMode(models.TextChoices):
        KEY = "key"
        AML_TOKEN = "aml_token"
        AAD_TOKEN = "aad_token"  # identity tokens from the configured OpenID provider

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="endpoints")
    # Unique among live endpoints (see Meta); a deleted endpoint's name may be used again.
    name = models.CharField(max_length=32, validators=[DNS_LABEL])
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ONLINE)
    auth_mode = models.CharField(max_length=16, choices=AuthMode.choices, default=AuthMode.KEY)
    description = models.TextField(blank=True)
    tags = models.JSONField(default=dict, blank=True)
    traffic = models.JSONField(default=dict, blank=True)
    mirror_traffic = models.JSONField(default=dict, blank=True)
    # Batch endpoints: {"deployment_name": <the deployment an invocation goes to unless it names one>}.
    defaults = models.JSONField(default=dict, blank=True)
    provisioning_state = models.CharField(
        max_length=16, choices=ProvisioningState.choices, default=ProvisioningState.CREATING
    )
    error = models.TextField(blank=True)
    # Keys are derived from SECRET_KEY and a per-slot nonce; only the nonces are stored (endpoints_app/keys.py).
    primary_key_nonce = models.CharField(max_length=64, blank=True)
    secondary_key_nonce = models.CharField(max_length=64, blank=True)
    # aml_tokens name this; key regeneration and deletion bump it, so older tokens stop.
    token_generation = models.PositiveIntegerField(default=1)
    # Serverless only (see the class docstring).
    model = models.ForeignKey(
        CatalogModel, null=True, blank=True, on_delete=models.PROTECT, related_name="serverless_endpoints"
    )
    pool = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="serverless_endpoints"
    )
    unhealthy_reason = models.CharField(max_length=300, blank=True)
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

    @property
    def status(self) -> str:
        """Serverless health: "Healthy" or "Unhealthy" (why: `unhealthy_reason`)."""
        return "Unhealthy" if self.unhealthy_reason else "Healthy"

    @property
    def is_platform(self) -> bool:
        return self.workspace.is_platform

    def mark_deleted(self) -> None:
        """Finish a delete: the endpoint and its deployments leave every list and route,
        and their meter history stays."""
        now = timezone.now()
        Deployment.objects.filter(endpoint=self).update(deleted_at=now, updated_at=now)
        self.deleted_at = now
        self.save(update_fields=["deleted_at", "updated_at"])


class Deployment(models.Model):
    """Resources that serve one model behind an endpoint. A Deployment of the platform
    workspace's `_serverless` endpoint is a serverless **pool** (`is_pool`): the controller
    starts it on first need, autoscales it with load and stops it (instance_count 0) after
    STUDIO_SERVERLESS_IDLE_MINUTES without a request; `serverless_endpoints` are the user
    endpoints it serves."""

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
    # The packages its model server runs with (models/environments.py); None: the model's own, or the studio's.
    environment = models.ForeignKey(
        "endpoints_app.Environment", null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )
    # Where its instances run (models/computes.py): `local` unless the spec names another compute. No
    # field default (a callable one would read the database whenever a Deployment is built): save() fills it.
    compute = models.ForeignKey(Compute, on_delete=models.PROTECT, related_name="deployments")
    # Batch deployments: mini_batch_size, max_concurrency_per_instance, error_threshold,
    # retry_settings{max_retries, timeout}, output_action, output_file_name (services/batch.py).
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
    # Serverless pools: when the pool was last asked for (created, or woken by the gateway); with
    # the last request metered on its endpoints, it says how long the pool has been idle.
    pool_wanted_at = models.DateTimeField(null=True, blank=True)
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

    def save(self, *args, **kwargs) -> None:
        if self.compute_id is None:
            self.compute_id = local_compute_id()
        super().save(*args, **kwargs)

    @property
    def is_pool(self) -> bool:
        return self.endpoint.workspace.is_platform

    # A pool whose instances all failed is tried again on demand, at most this often.
    POOL_RETRY_SECONDS = 60

    def wake_pool(self) -> bool:
        """Ask for this serverless pool now (a serverless endpoint was created or called).
        Idempotent and cheap: marks it wanted, and if it is stopped (no instance wanted) or
        failed a while ago, wants one instance again. True if the caller must enqueue
        provisioning (controller.tasks.provision_deployment)."""
        now = timezone.now()
        rows = Deployment.objects.filter(pk=self.pk).exclude(provisioning_state=ProvisioningState.DELETING)
        wanted = {"provisioning_state": ProvisioningState.UPDATING, "error": "", "pool_wanted_at": now,
                  "last_scaled_at": now, "updated_at": now}
        # A pool with nothing running moves to the serverless compute as it starts (nothing to drain);
        # one still stopping instances starts where it is.
        target = serverless_compute_id()
        if target is not None and not Instance.objects.filter(deployment_id=self.pk, state__in=(
                InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING)).exists():
            wanted["compute_id"] = target
        started = rows.filter(instance_count=0).exclude(provisioning_state=ProvisioningState.FAILED).update(
            instance_count=1, **wanted
        )
        # A new generation, so the failed instances of the last attempt do not fail this one.
        started += rows.filter(
            provisioning_state=ProvisioningState.FAILED, updated_at__lt=now - timedelta(seconds=self.POOL_RETRY_SECONDS)
        ).update(
            instance_count=models.Case(
                models.When(instance_count=0, then=models.Value(1)), default=F("instance_count"),
                output_field=models.PositiveIntegerField(),
            ),
            generation=F("generation") + 1, **wanted,
        )
        if not started:
            rows.update(pool_wanted_at=now)
        return bool(started)

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
    # Batch deployments run instances only for a job: the job this instance was started for.
    batch_job = models.ForeignKey(
        "endpoints_app.BatchJob", null=True, blank=True, on_delete=models.SET_NULL, related_name="instances"
    )
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
    def bump(cls, acknowledge: bool = True) -> None:
        """Tell every gateway worker to reload its route table (visible when the caller's transaction commits).

        The one mechanism behind "created", "deleted" and "Succeeded" meaning routed: the commit is followed by a
        wait (at most GatewayWorker.ACK_TIMEOUT_SECONDS, then logged) until every live gateway worker has loaded
        the new table, so whatever the caller changed (an endpoint, a key, a subscription, a split) is in force
        when it returns. Only the controller's own passes skip the wait (`acknowledge=False`): what they change
        takes instances out of routing, and a rollout's Succeeded waits in refresh_deployment_state instead."""
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
