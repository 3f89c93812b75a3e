"""Datastores in the admin console: IT's allowlist of folders that workspaces may use as local
datastores (editable, audited), and every workspace's datastores (read-only; credentials never shown)."""

from django.contrib import admin

from endpoints_app.admin.common import AuditedAdmin, ReadOnlyAdmin
from endpoints_app.models import AllowedFolder, Datastore


@admin.register(AllowedFolder)
class AllowedFolderAdmin(AuditedAdmin):
    list_display = ["path", "description", "created_at"]
    search_fields = ["path", "description"]
    fields = ["path", "description"]


@admin.register(Datastore)
class DatastoreAdmin(ReadOnlyAdmin):
    list_display = ["name", "workspace", "type", "location", "has_credentials", "created_at"]
    list_filter = ["type", "workspace"]
    list_select_related = ["workspace"]
    search_fields = ["name", "workspace__name", "description"]
    # The encrypted credentials stay out of the console.
    fields = ["name", "workspace", "type", "description", "location", "has_credentials", "credential_kind",
              "created_by", "created_at", "updated_at"]
    readonly_fields = fields

    @admin.display(boolean=True, description="Credentials")
    def has_credentials(self, obj):
        return obj.has_credentials

    def has_delete_permission(self, request, obj=None):
        return False
