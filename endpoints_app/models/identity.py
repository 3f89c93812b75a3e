"""Identities from the company's OpenID provider.

- `OidcIdentity`: a person's account at the provider (issuer + subject), linked to the studio
  user made at their first sign-in. Their workspace roles are ordinary Memberships.
- `GroupRoleMapping`: set by IT in the admin console: members of a provider group get a role in a
  workspace, applied at each sign-in (services/identity.py).
- `ServicePrincipal`: a machine identity (the provider's client-credentials client), registered
  with a studio user of its own, so its workspace roles are Memberships too and every permission
  check treats it like a person. Its user has no usable password: it signs in only with tokens."""

from django.conf import settings
from django.db import models

from endpoints_app.models.workspaces import Role, Workspace


class OidcIdentity(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="oidc_identities")
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    # {workspace name: role} the group mapping gave at the last sign-in (taken back when it no longer does).
    granted = models.JSONField(default=dict, blank=True)
    groups = models.JSONField(default=list, blank=True)
    last_sign_in = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["issuer", "subject"], name="one_user_per_oidc_subject")]
        verbose_name = "OpenID identity"
        verbose_name_plural = "OpenID identities"

    def __str__(self) -> str:
        return f"{self.subject} at {self.issuer}"


class GroupRoleMapping(models.Model):
    group = models.CharField(max_length=200,
                             help_text="The group's name or id as the provider's groups claim carries it.")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="group_mappings")
    role = models.CharField(max_length=16, choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "workspace"], name="one_role_per_group_and_workspace")]
        ordering = ["workspace__name", "group"]
        verbose_name = "group to role mapping"

    def __str__(self) -> str:
        return f"{self.group} → {self.role} in {self.workspace}"


class ServicePrincipal(models.Model):
    client_id = models.CharField(max_length=200, unique=True)
    display_name = models.CharField(max_length=200, blank=True)
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="service_principal",
                                editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["client_id"]
        verbose_name = "service principal"

    def __str__(self) -> str:
        return f"service principal {self.client_id}"
