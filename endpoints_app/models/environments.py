"""Environments: the packages a model needs, built once per distinct content and shared.

- `Environment`: a workspace's named, versioned resource (`azureml:<name>:<version>`), as the user
  wrote it (`conda_file` or `pip_requirements`, optional Python version). Inline environments of a
  deployment are Environment rows too, named `inline-<hash>` (`is_inline`), so every deployment
  names one row.
- `EnvironmentBuild`: one virtual environment under `$STUDIO_DATA_DIR/environments/<key>/`, keyed
  by the hash of the normalised requirements (plus the Python version and the model server's own
  pinned dependencies), so equal environments of any workspace share one build. Its `state` goes
  NotStarted -> Building -> Succeeded | Failed; `build.log` beside the venv holds the installer's
  output (runtime/environments.py builds it)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models

from endpoints_app.models.workspaces import Workspace

ENVIRONMENT_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit.",
)


def environments_root() -> Path:
    return Path(settings.DATA_DIR) / "environments"


class BuildState(models.TextChoices):
    NOT_STARTED = "NotStarted"
    BUILDING = "Building"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class EnvironmentBuild(models.Model):
    key = models.CharField(max_length=64, unique=True)
    python_version = models.CharField(max_length=16)
    # The user's requirements, normalised (sorted, deduplicated); the server's pins are added at build time.
    requirements = models.JSONField(default=list)
    state = models.CharField(max_length=16, choices=BuildState.choices, default=BuildState.NOT_STARTED)
    error = models.TextField(blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"build {self.key[:12]} ({self.state})"

    @property
    def folder(self) -> Path:
        return environments_root() / self.key

    @property
    def venv(self) -> Path:
        return self.folder / "venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def log_path(self) -> Path:
        return self.folder / "build.log"


class Environment(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="environments")
    name = models.CharField(max_length=64, validators=[ENVIRONMENT_NAME])
    version = models.CharField(max_length=32)
    description = models.TextField(blank=True)
    # What the user wrote: the conda file as a mapping, or a pip requirements list.
    conda_file = models.JSONField(default=dict, blank=True)
    pip_requirements = models.JSONField(default=list, blank=True)
    python_version = models.CharField(max_length=16, blank=True)
    is_inline = models.BooleanField(default=False)
    build = models.ForeignKey(EnvironmentBuild, on_delete=models.PROTECT, related_name="environments")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name", "version"], name="unique_environment_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def asset_id(self) -> str:
        return f"azureml:{self.name}:{self.version}"
