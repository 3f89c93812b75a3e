"""Datastores: named storage locations of a workspace, and the folders IT allows as local datastores.

A datastore is where data assets and job inputs can live and where job outputs can go, addressed as
`azureml://datastores/<name>/paths/<path>`. `workspaceblobstore` is the studio's own store
($STUDIO_DATA_DIR/datastore/<workspace>/) and has no row."""

from __future__ import annotations

from django.conf import settings as conf
from django.core.validators import RegexValidator
from django.db import models

from endpoints_app.models.workspaces import Workspace

BUILTIN_DATASTORE = "workspaceblobstore"
DATASTORE_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
    "Use 1-64 letters, digits, '-' and '_', starting with a letter or digit.",
)


class Datastore(models.Model):
    """One storage location of a workspace.

    - name: unique in the workspace (`workspaceblobstore` is reserved for the built-in store).
    - type: azure_blob (a Blob container), s3 (an S3-compatible bucket) or local (a folder under a root
      IT allowed: AllowedFolder).
    - config: where it is, without secrets: azure_blob {account_name, container_name, account_url};
      s3 {bucket, endpoint_url, region}; local {path} (absolute, resolved).
    - credentials_encrypted: the credentials as a Fernet token under a key derived from SECRET_KEY
      (endpoints_app.datastores.secrets); credential_kind names which (account_key, sas_token,
      access_key) so answers can say `has_credentials` without decrypting.
    - description, created_by, created_at, updated_at."""

    class Type(models.TextChoices):
        AZURE_BLOB = "azure_blob"
        S3 = "s3"
        LOCAL = "local"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="datastores")
    name = models.CharField(max_length=64, validators=[DATASTORE_NAME])
    type = models.CharField(max_length=16, choices=Type.choices)
    description = models.TextField(blank=True)
    config = models.JSONField(default=dict)
    credentials_encrypted = models.TextField(blank=True)
    credential_kind = models.CharField(max_length=32, blank=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["workspace", "name"], name="unique_datastore_name")]

    def __str__(self) -> str:
        return self.name

    @property
    def has_credentials(self) -> bool:
        return bool(self.credentials_encrypted)

    @property
    def location(self) -> str:
        """Where it is, for people (no secret)."""
        c = self.config or {}
        if self.type == self.Type.AZURE_BLOB:
            return f"{c.get('account_url', '').rstrip('/')}/{c.get('container_name', '')}"
        if self.type == self.Type.S3:
            return f"s3://{c.get('bucket', '')} at {c.get('endpoint_url') or 'AWS'}"
        return str(c.get("path", ""))


class AllowedFolder(models.Model):
    """A folder of the studio's machine under which workspaces may create local datastores (IT sets
    these in the admin console). `path` is absolute; it is compared after resolving symlinks."""

    path = models.CharField(max_length=500, unique=True)
    description = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["path"]
        verbose_name = "allowed datastore folder"

    def __str__(self) -> str:
        return self.path

    def clean(self) -> None:
        from pathlib import Path

        from django.core.exceptions import ValidationError

        raw = (self.path or "").strip()
        if not raw or not Path(raw).is_absolute():
            raise ValidationError({"path": "Give an absolute folder path."})
        resolved = Path(raw).resolve()
        if not resolved.is_dir():
            raise ValidationError({"path": f"{resolved} is not an existing folder."})
        if overlaps_data_dir(resolved):
            raise ValidationError({"path": "This folder holds or is inside the studio's data folder "
                                           "(database, secret key, other workspaces' data): not allowed."})
        if resolved == Path(resolved.anchor):
            raise ValidationError({"path": "The filesystem's root is not allowed."})
        self.path = str(resolved)


def overlaps_data_dir(path) -> bool:
    """True when `path` (resolved) is the studio's data folder, inside it, or holds it."""
    from pathlib import Path

    data = Path(conf.DATA_DIR).resolve()
    path = Path(path).resolve()
    return path == data or data in path.parents or path in data.parents
