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


class Workspace(models.Model):
    name = models.CharField(max_length=32, unique=True, validators=[DNS_LABEL])
    display_name = models.CharField(max_length=100, blank=True)
    description = models.TextField(blank=True)
    monthly_budget = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


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
        from endpoints_app.models.catalog import InstanceType

        families = sorted(set(InstanceType.objects.values_list("family", flat=True)))
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
