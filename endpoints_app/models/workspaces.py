from django.apps import apps
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator
from django.db import models

DNS_LABEL = RegexValidator(
    r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$",
    "Use 1-32 lowercase letters, digits and hyphens, starting with a letter and not ending with a hyphen.",
)


class Role(models.TextChoices):
    OWNER = "Owner"
    CONTRIBUTOR = "Contributor"
    READER = "Reader"

    @property
    def rank(self) -> int:
        return {"Reader": 1, "Contributor": 2, "Owner": 3}[self.value]


PLATFORM_WORKSPACE_NAME = "_platform"  # not a DNS label, so no user workspace can ever take it


class WorkspaceManager(models.Manager):
    """Everyday queries see user workspaces only; the platform workspace (see
    Workspace.is_platform) is reached through `Workspace.all_objects` or `platform()`."""

    def get_queryset(self):
        return super().get_queryset().filter(is_platform=False)


class Workspace(models.Model):
    """A team's space.

    `is_platform`: the one hidden workspace (named `_platform`) that owns the platform-managed
    model servers behind serverless endpoints: one Endpoint (kind "online", name `_serverless`)
    whose Deployments are the per-model **pools** (one live Deployment per CatalogModel offered
    serverless). It is excluded from every user-facing list and from quotas (`Workspace.objects`
    never returns it); only IT sees it in the admin console. The controller provisions its
    deployments like any other, so instances, reconcile, logs and admin work unchanged.

    Unified inference endpoint (`/models/...`, `/openai/deployments/<name>/...`): each workspace
    has two keys of its own, derived like endpoint keys (endpoints_app/keys.py: key =
    derive_key(nonce); only the nonces are stored, so the keys follow SECRET_KEY rotation as
    endpoint keys do). A call presenting a key of workspace W routes by the body's `model` (or
    the `<name>` in the path) to W's live serverless endpoint of that name, case-insensitively.
    Both nonces are blank until the workspace first asks for its keys
    (services.serverless.do_ensure_inference_keys), so a workspace has no key before then."""

    name = models.CharField(max_length=32, unique=True, validators=[DNS_LABEL])
    display_name = models.CharField(max_length=100, blank=True)
    description = models.TextField(blank=True)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    is_platform = models.BooleanField(default=False, editable=False)
    inference_primary_key_nonce = models.CharField(max_length=64, blank=True, editable=False)
    inference_secondary_key_nonce = models.CharField(max_length=64, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = WorkspaceManager()
    all_objects = models.Manager()

    class Meta:
        ordering = ["name"]
        base_manager_name = "all_objects"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def platform(cls) -> "Workspace":
        """The hidden platform workspace, made on first use."""
        workspace = cls.all_objects.filter(is_platform=True).first()
        if workspace is None:
            workspace, _ = cls.all_objects.get_or_create(
                name=PLATFORM_WORKSPACE_NAME,
                defaults={"is_platform": True, "display_name": "Platform (serverless pools)"},
            )
        return workspace


class Membership(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.READER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "user"], name="one_membership_per_user")]
        ordering = ["workspace__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} ({self.role})"


class QuotaLimit(models.Model):
    """Cores a workspace may use in one instance family (IT sets these)."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="quotas")
    family = models.CharField(max_length=40)
    max_cores = models.PositiveIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["workspace", "family"], name="one_quota_per_family")]
        ordering = ["workspace__name", "family"]

    def __str__(self) -> str:
        return f"{self.workspace}: {self.family} ≤ {self.max_cores} core{'' if self.max_cores == 1 else 's'}"

    def clean(self) -> None:
        # By name: models/catalog.py imports this module (a catalog model may belong to a workspace).
        instance_types = apps.get_model("endpoints_app", "InstanceType")
        families = sorted(set(instance_types.objects.values_list("family", flat=True)))
        if self.family not in families:
            raise ValidationError(
                {"family": f"No instance type is in family {self.family!r}: choose one of {', '.join(families)}."}
            )


class AuditLog(models.Model):
    """Every write: who, what, which object, when, and through which door."""

    class Via(models.TextChoices):
        UI = "ui"
        API = "api"
        CLI = "cli"
        ADMIN = "admin"
        SYSTEM = "system"

    time = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True)
    workspace = models.ForeignKey(Workspace, null=True, blank=True, on_delete=models.SET_NULL)
    action = models.CharField(max_length=64)
    object_type = models.CharField(max_length=64)
    object_name = models.CharField(max_length=200)
    via = models.CharField(max_length=8, choices=Via.choices)
    details = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-time", "-id"]

    def __str__(self) -> str:
        return f"{self.time:%Y-%m-%d %H:%M:%S} {self.username or 'system'} {self.action} {self.object_name}"
