"""Datastores of a workspace: create, delete, find, open, browse; and IT's allowed folders.

A datastore spec follows the cloud CLI's datastore YAML: `name`, `type: azure_blob |
s3 | local`, `description`; azure_blob: `account_name`, `container_name`, `credentials: {account_key}
| {sas_token}`, and `account_url` or `endpoint` + `protocol`; s3: `bucket`, `endpoint_url`, `region`,
`credentials: {access_key_id, secret_access_key}`; local: `path`, under a folder IT allowed.

A datastore is checked before it is saved (the container, bucket or folder must answer with the
credentials given), so a wrong key is a 400 naming `credentials` at create, not a failed job later.
Credentials are stored encrypted (endpoints_app.datastores.secrets) and never answered or logged."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from django.db import IntegrityError, transaction

from endpoints_app.datastores import secrets as ds_secrets
from endpoints_app.datastores.storage import (
    BlobStore,
    FolderStore,
    S3Store,
    StorageError,
    Store,
    blob_account_url,
    clean_path,
    parse_uri,
)
from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import BUILTIN_DATASTORE, AllowedFolder, Datastore, Workspace, datastore_root
from endpoints_app.models.datastores import DATASTORE_NAME, overlaps_data_dir
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.specs import parse_mapping, parse_name

COMMON_FIELDS = {"name", "type", "description", "$schema"}
TYPE_FIELDS = {
    "azure_blob": {"account_name", "container_name", "account_url", "endpoint", "protocol", "credentials"},
    "s3": {"bucket", "endpoint_url", "region", "credentials"},
    "local": {"path"},
}
CREDENTIAL_FIELDS = {
    "azure_blob": ({"account_key"}, {"sas_token"}),
    "s3": ({"access_key_id", "secret_access_key"},),
    "local": (),
}


def _text(spec: dict, key: str, required: bool = True, default: str = "") -> str:
    value = spec.get(key, default)
    if value in (None, ""):
        if required:
            raise InvalidInput(f"{key} is required for this datastore type.", field=key)
        return default
    if not isinstance(value, str):
        raise InvalidInput(f"{key} must be a string.", field=key)
    return value.strip()


def _http_url(value: str, field: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(f"{field} must be an http(s) URL, not {value!r}.", field=field)
    return value.rstrip("/")


def _credentials(kind: str, spec: dict) -> tuple[dict[str, str], str]:
    given = parse_mapping(spec.get("credentials"), "credentials")
    for key, value in given.items():
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"credentials.{key} must be a non-empty string.", field=f"credentials.{key}")
    options = CREDENTIAL_FIELDS[kind]
    for option in options:
        if set(given) == option:
            cred_kind = "access_key" if kind == "s3" else next(iter(option))
            return {k: given[k].strip() for k in option}, cred_kind
    if kind == "azure_blob" and not given:
        return {}, ""  # a public container (anonymous read)
    shown = " or ".join("{" + ", ".join(sorted(o)) + "}" for o in options)
    unknown = sorted(set(given) - set().union(*options)) if options else sorted(given)
    field = f"credentials.{unknown[0]}" if unknown else "credentials"
    raise InvalidInput(f"credentials must be {shown}.", field=field)


def allowed_roots() -> list[Path]:
    return [Path(p).resolve() for p in AllowedFolder.objects.values_list("path", flat=True)]


def check_local_path(raw: Any, field: str = "path") -> Path:
    """An existing folder that is (after resolving symlinks) inside a root IT allowed."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{field} is required: an absolute folder under a root your IT allowed.", field=field)
    if "\0" in raw:
        raise InvalidInput(f"{field} holds a NUL character.", field=field)
    given = Path(raw.strip())
    if not given.is_absolute():
        raise InvalidInput(f"{field} {raw!r} must be an absolute path.", field=field)
    resolved = given.resolve()
    roots = allowed_roots()
    if not any(resolved == root or root in resolved.parents for root in roots):
        allowed = ", ".join(str(r) for r in roots) or "none yet (IT adds them in the admin console)"
        raise InvalidInput(f"{field} {raw!r} is not under a folder IT allows for datastores (allowed: {allowed}).",
                           field=field)
    if overlaps_data_dir(resolved):
        raise InvalidInput(f"{field} {raw!r} overlaps the studio's own data folder; that is never allowed.",
                           field=field)
    if not resolved.is_dir():
        raise InvalidInput(f"{field} {raw!r} is not an existing folder.", field=field)
    return resolved


def _parse_spec(spec: Any) -> tuple[str, str, str, dict, dict[str, str], str]:
    spec = parse_mapping(spec, "datastore")
    name = parse_name(spec.get("name"), DATASTORE_NAME, "name", "Datastore")
    if name == BUILTIN_DATASTORE:
        raise Conflict(f"'{BUILTIN_DATASTORE}' is the studio's built-in datastore; pick another name.", field="name")
    kind = spec.get("type")
    if kind not in TYPE_FIELDS:
        raise InvalidInput(f"type must be azure_blob, s3 or local, not {kind!r}.", field="type")
    unknown = sorted(set(spec) - COMMON_FIELDS - TYPE_FIELDS[kind])
    if unknown:
        raise InvalidInput(f"Unknown {kind} datastore field {unknown[0]!r}.", field=unknown[0])
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    credentials, cred_kind = _credentials(kind, spec) if kind != "local" else ({}, "")
    if kind == "azure_blob":
        account_name = _text(spec, "account_name")
        container = _text(spec, "container_name")
        account_url = _text(spec, "account_url", required=False)
        if account_url:
            account_url = _http_url(account_url, "account_url")
        protocol = _text(spec, "protocol", required=False, default="https")
        if protocol not in ("http", "https"):
            raise InvalidInput("protocol must be https or http.", field="protocol")
        endpoint = _text(spec, "endpoint", required=False, default="core.windows.net")
        url = blob_account_url(account_name, account_url, endpoint, protocol)
        config = {"account_name": account_name, "container_name": container, "account_url": url}
    elif kind == "s3":
        endpoint_url = _text(spec, "endpoint_url", required=False)
        config = {"bucket": _text(spec, "bucket"), "endpoint_url": _http_url(endpoint_url, "endpoint_url")
                  if endpoint_url else "", "region": _text(spec, "region", required=False, default="us-east-1")}
    else:
        config = {"path": str(check_local_path(spec.get("path")))}
    return name, kind, description, config, credentials, cred_kind


def _store(kind: str, config: dict, credentials: dict[str, str]) -> Store:
    if kind == Datastore.Type.AZURE_BLOB:
        return BlobStore(config["account_url"], config["account_name"], config["container_name"], credentials)
    if kind == Datastore.Type.S3:
        return S3Store(config["bucket"], config.get("endpoint_url", ""), config.get("region", ""), credentials)
    return FolderStore(Path(config["path"]), hide_dot=False)


def storage_error(exc: StorageError, datastore: str, field_prefix: str = "") -> InvalidInput:
    field = f"{field_prefix}{exc.field}" if field_prefix else exc.field
    return InvalidInput(f"Datastore '{datastore}': {exc.message}", field=field)


def do_create_datastore(actor: Actor, workspace: Workspace, spec: Any) -> Datastore:
    name, kind, description, config, credentials, cred_kind = _parse_spec(spec)
    if Datastore.objects.filter(workspace=workspace, name=name).exists():
        raise Conflict(f"Workspace '{workspace.name}' already has a datastore named '{name}'.", field="name")
    try:
        _store(kind, config, credentials).check()
    except StorageError as exc:
        raise storage_error(exc, name) from None
    try:
        with transaction.atomic():
            datastore = Datastore.objects.create(
                workspace=workspace, name=name, type=kind, description=description, config=config,
                credentials_encrypted=ds_secrets.encrypt(credentials), credential_kind=cred_kind,
                created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
            )
            record(actor, "datastore.create", datastore, workspace, type=kind, location=datastore.location,
                   credentials=cred_kind or "none")
    except IntegrityError:
        raise Conflict(f"Workspace '{workspace.name}' already has a datastore named '{name}'.", field="name") from None
    return datastore


@transaction.atomic
def do_delete_datastore(actor: Actor, datastore: Datastore) -> None:
    """Forget a datastore (its files stay where they are); refused while data assets point at it."""
    used = datastore.data_assets.order_by("name", "version").first()
    if used is not None:
        raise Conflict(f"Data asset {used.name}:{used.version} points at datastore '{datastore.name}'; "
                       "it cannot be deleted while assets use it.", field="name")
    record(actor, "datastore.delete", datastore, datastore.workspace, type=datastore.type)
    datastore.delete()


def find_datastore(workspace: Workspace, name: str) -> Datastore | None:
    return Datastore.objects.filter(workspace=workspace, name=name).first()


def builtin_root(workspace: Workspace) -> Path:
    root = datastore_root() / workspace.name
    root.mkdir(parents=True, exist_ok=True)
    return root


def credentials_of(datastore: Datastore) -> dict[str, str]:
    """Decrypt (for the trusted side only: the worker and the web process, never a sandbox); a token
    made under a SECRET_KEY_FALLBACKS entry is re-encrypted under the current secret."""
    token = datastore.credentials_encrypted
    if ds_secrets.needs_rotation(token):
        rotated = ds_secrets.rotate(token)
        Datastore.objects.filter(pk=datastore.pk, credentials_encrypted=token).update(credentials_encrypted=rotated)
        datastore.credentials_encrypted = rotated
    return ds_secrets.decrypt(datastore.credentials_encrypted)


def open_store(workspace: Workspace, name: str, field: str = "datastore") -> tuple[Datastore | None, Store]:
    """(the row or None for the built-in store, an opened Store); InvalidInput for an unknown name or
    a local datastore whose folder IT no longer allows."""
    if name == BUILTIN_DATASTORE:
        return None, FolderStore(builtin_root(workspace))
    datastore = find_datastore(workspace, name)
    if datastore is None:
        raise InvalidInput(f"No datastore '{name}' in workspace '{workspace.name}'.", field=field)
    return datastore, open_datastore(datastore, field)


def open_datastore(datastore: Datastore, field: str = "datastore") -> Store:
    if datastore.type == Datastore.Type.LOCAL:
        check_local_path(datastore.config.get("path"), field)  # IT may have withdrawn the root since
    try:
        credentials = credentials_of(datastore)
    except ds_secrets.UnreadableCredentials as exc:
        raise InvalidInput(f"Datastore '{datastore.name}': {exc}.", field=field) from None
    return _store(datastore.type, datastore.config, credentials)


def datastores_of(workspace: Workspace) -> list[Datastore]:
    return list(Datastore.objects.filter(workspace=workspace))


def browse(workspace: Workspace, name: str, path: str = "") -> list[dict]:
    """The folders and files directly under `path` of a datastore."""
    try:
        clean = clean_path(path or "", "path")
        _, store = open_store(workspace, name, "name")
        store.check()
        entries = store.browse(clean)
    except StorageError as exc:
        raise storage_error(exc, name) from None
    return [{"name": e.name, "path": e.path, "type": "folder" if e.is_dir else "file", "size": e.size,
             "uri": f"azureml://datastores/{name}/paths/{e.path}" + ("/" if e.is_dir else "")} for e in entries]


def split_uri(raw: Any, field: str) -> tuple[str, str] | None:
    """(datastore, clean path) of an azureml://datastores/... URI, None for anything else."""
    if not isinstance(raw, str):
        return None
    parsed = parse_uri(raw)
    if parsed is None:
        return None
    try:
        return parsed[0], clean_path(parsed[1], field)
    except StorageError as exc:
        raise InvalidInput(exc.message, field=field) from None


def is_under(path: Path, root: Path) -> bool:
    real, base = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    return real == base or base in real.parents
