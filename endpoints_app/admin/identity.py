"""Identity in the admin console: IT maps the provider's groups to workspace roles (applied at each
sign-in), registers service principals with their workspace roles, and sees who signed in how."""

from django import forms
from django.contrib import admin

from endpoints_app.admin.common import AuditedAdmin, ReadOnlyAdmin, admin_link
from endpoints_app.models import GroupRoleMapping, OidcIdentity, ServicePrincipal
from endpoints_app.services.identity import CLIENT_ID, service_principal_user


@admin.register(GroupRoleMapping)
class GroupRoleMappingAdmin(AuditedAdmin):
    list_display = ["group", "workspace", "role"]
    list_filter = ["workspace", "role"]
    search_fields = ["group", "workspace__name"]
    autocomplete_fields = ["workspace"]


class ServicePrincipalForm(forms.ModelForm):
    class Meta:
        model = ServicePrincipal
        fields = ["client_id", "display_name"]

    def clean_client_id(self):
        value = self.cleaned_data["client_id"].strip()
        if not CLIENT_ID.match(value):
            raise forms.ValidationError("Use the provider's client id (letters, digits and . _ - : / @ +).")
        return value


@admin.register(ServicePrincipal)
class ServicePrincipalAdmin(AuditedAdmin):
    form = ServicePrincipalForm
    list_display = ["client_id", "display_name", "roles", "created_at"]
    readonly_fields = ["roles"]
    search_fields = ["client_id", "display_name"]

    @admin.display(description="Workspace roles")
    def roles(self, obj):
        """Its roles are its studio user's workspace roles: edited on that user's page."""
        if obj is None or not obj.pk:
            return "Save first; then give it workspace roles."
        text = ", ".join(f"{m.workspace.name}: {m.role}" for m in obj.user.memberships.select_related("workspace"))
        return admin_link(obj.user, f"{text or 'none'} (edit on user {obj.user.username})")

    def save_model(self, request, obj, form, change):
        if change:
            obj.save()
            return
        made = service_principal_user(obj.client_id, obj.display_name)
        obj.pk, obj.user, obj.created_at = made.pk, made.user, made.created_at


@admin.register(OidcIdentity)
class OidcIdentityAdmin(ReadOnlyAdmin):
    list_display = ["user", "subject", "issuer", "groups", "granted", "last_sign_in"]
    search_fields = ["user__username", "subject"]
    list_filter = ["issuer"]
