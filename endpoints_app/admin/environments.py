"""Environments and their builds across workspaces (read-only: environments are created through the
studio's services, and builds are the worker's)."""

from django.contrib import admin

from endpoints_app.admin.common import ReadOnlyAdmin
from endpoints_app.models import Environment, EnvironmentBuild


@admin.register(Environment)
class EnvironmentAdmin(ReadOnlyAdmin):
    list_display = ["name", "version", "workspace", "is_inline", "python_version", "build", "created_at"]
    list_filter = ["workspace", "is_inline"]
    list_select_related = ["workspace", "build"]
    search_fields = ["name", "workspace__name"]
    fields = ["name", "version", "workspace", "description", "conda_file", "pip_requirements", "python_version",
              "is_inline", "build", "created_by", "created_at"]


@admin.register(EnvironmentBuild)
class EnvironmentBuildAdmin(ReadOnlyAdmin):
    list_display = ["key", "state", "python_version", "size_bytes", "started_at", "finished_at", "last_used_at"]
    list_filter = ["state"]
    search_fields = ["key"]
    fields = ["key", "state", "python_version", "requirements", "error", "size_bytes", "created_at", "started_at",
              "finished_at", "last_used_at"]
