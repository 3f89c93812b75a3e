"""Data assets: versioned files in the studio's datastore ($STUDIO_DATA_DIR/datastore), and the
one place where a user's data path becomes a file on disk.

Paths a user gives resolve inside the workspace's part of the datastore only: no absolute path,
no `..`, no URL. Paths in other datastores (azureml://datastores/<name>/paths/<path>, or data assets
that point at one) are listed here and fetched by the worker (endpoints_app/datastores/staging.py).
Uploads are written to a staging folder first and moved into place when complete, so a failed
upload leaves neither files nor a row."""

from __future__ import annotations

import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from endpoints_app.datastores.storage import StorageError
from endpoints_app.errors import InvalidInput, PayloadTooLarge
from endpoints_app.models import BUILTIN_DATASTORE, DataAsset, Workspace, datastore_root
from endpoints_app.models.batch import ASSET_NAME
from endpoints_app.runtime import batchio
from endpoints_app.services import datastores as ds_svc
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.datastores import find_datastore, split_uri
from endpoints_app.services.specs import parse_name

# studio:data/<name>/versions/<n>, optionally followed by /<a file inside a folder asset>.
ASSET_ID = re.compile(r"^(?:studio:|azureml:)?data/(?P<name>[^/]+)/versions/(?P<version>\d+)(?:/(?P<sub>.+))?$")
# <name>:<version> or <name>@latest, the short forms the CLI accepts.
SHORT_ID = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?::(?P<version>\d+)|@latest)$")
MAX_FILES = 10_000
# What a file system takes for one name (ext4, xfs: 255 bytes); a longer one is a 400, not an OSError.
MAX_FILE_NAME_BYTES = 255
INPUT_TYPES = ("uri_folder", "uri_file")


def upload_limit() -> int:
    return int(settings.STUDIO_MAX_UPLOAD_BYTES)


def _safe_relative(raw: str, field: str) -> PurePosixPath:
    """A relative path with no `..`, no absolute start and no URL scheme."""
    text = raw.strip().replace("\\", "/")
    if "://" in text or text.lower().startswith(("http:", "https:", "file:", "ftp:", "s3:", "wasbs:", "abfss:")):
        raise InvalidInput(f"{field} {raw!r} is a URL; add the storage as a datastore and name the path as "
                           "azureml://datastores/<name>/paths/<path>, or upload the files as a data asset.",
                           field=field)
    path = PurePosixPath(text)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", text):
        raise InvalidInput(f"{field} {raw!r} is an absolute path; give a data asset id "
                           "(studio:data/<name>/versions/<n>) or a path inside the datastore.", field=field)
    if ".." in path.parts:
        raise InvalidInput(f"{field} {raw!r} leaves the datastore ('..' is not allowed).", field=field)
    return path


def _inside(root: Path, candidate: Path, raw: str, field: str) -> Path:
    """Resolve symlinks too: the file must really be under `root`."""
    resolved = candidate.resolve()
    if resolved != root.resolve() and root.resolve() not in resolved.parents:
        raise InvalidInput(f"{field} {raw!r} resolves outside the datastore.", field=field)
    return resolved


def _file_name(raw: str) -> str:
    name = PurePosixPath((raw or "").replace("\\", "/")).name
    if name in ("", ".", "..") or name.startswith("."):
        raise InvalidInput(f"File name {raw!r} is not allowed.", field="files")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_FILE_NAME_BYTES:
        raise InvalidInput(f"File name {name[:40]!r}... is longer than {MAX_FILE_NAME_BYTES} bytes (UTF-8).",
                           field="files")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidInput(f"File name {name!r} holds a control character.", field="files")
    return name


def _next_version(workspace: Workspace, name: str) -> int:
    current = DataAsset.objects.filter(workspace=workspace, name=name).aggregate(v=Max("version"))["v"]
    return (current or 0) + 1


def do_create_data_asset(actor: Actor, workspace: Workspace, *, name: str, files: list,
                         description: str = "") -> DataAsset:
    """Store uploaded files as the next version of `name` (a uri_folder asset)."""
    name = parse_name(name, ASSET_NAME, "name", "Data asset")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    if not files:
        raise InvalidInput("Upload at least one file (multipart field 'files').", field="files")
    if len(files) > MAX_FILES:
        raise InvalidInput(f"A data asset holds at most {MAX_FILES} files; got {len(files)}.", field="files")
    limit = upload_limit()
    declared = sum(int(getattr(f, "size", 0) or 0) for f in files)
    if declared > limit:
        raise PayloadTooLarge(f"The files add up to more than {limit // (1024 * 1024)} MB.", field="files")
    names = [_file_name(getattr(f, "name", "") or "") for f in files]
    seen: set[str] = set()
    for file_name in names:
        if file_name in seen:
            raise InvalidInput(f"Two files are named {file_name!r}; names in a data asset are unique.", field="files")
        seen.add(file_name)

    root = datastore_root()
    staging = root / ".staging" / uuid.uuid4().hex
    staging.mkdir(parents=True)
    total = 0
    try:
        for upload, file_name in zip(files, names, strict=True):
            with (staging / file_name).open("wb") as out:
                for chunk in upload.chunks():
                    total += len(chunk)
                    if total > limit:
                        raise PayloadTooLarge(
                            f"The files add up to more than {limit // (1024 * 1024)} MB.", field="files"
                        )
                    out.write(chunk)
        for attempt in range(3):
            try:
                with transaction.atomic():
                    version = _next_version(workspace, name)
                    relative = f"{workspace.name}/{name}/{version}"
                    asset = DataAsset.objects.create(
                        workspace=workspace, name=name, version=version, kind=DataAsset.Kind.URI_FOLDER,
                        path=relative, file_count=len(names), size_bytes=total, description=description or "",
                        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
                    )
                    target = root / relative
                    if target.exists():  # a leftover of a crashed upload of the same version
                        shutil.rmtree(target)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    staging.rename(target)
                    record(actor, "data.create", asset, workspace, asset_id=asset.asset_id, files=len(names),
                           size_bytes=total)
                    return asset
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def do_create_data_asset_reference(actor: Actor, workspace: Workspace, *, name: str, kind: Any, path: Any,
                                   description: Any = "") -> DataAsset:
    """A data asset version that points at a datastore path (azureml://datastores/<ds>/paths/<path>),
    uri_file or uri_folder, checked to exist; nothing is copied."""
    name = parse_name(name, ASSET_NAME, "name", "Data asset")
    if description is not None and not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    kind = kind or "uri_folder"
    if kind not in INPUT_TYPES:
        raise InvalidInput(f"type must be uri_folder or uri_file, not {kind!r}.", field="type")
    in_store = split_uri(path, "path")
    if in_store is None:
        raise InvalidInput("path must be azureml://datastores/<datastore>/paths/<path> (or upload files).",
                           field="path")
    store_name, store_path = in_store
    resolved = resolve_input(workspace, {"type": kind, "path": path}, field="data")
    datastore = None if store_name == BUILTIN_DATASTORE else find_datastore(workspace, store_name)
    if resolved.remote is not None:
        files = len(resolved.remote.entries)
        size = sum(e[2] for e in resolved.remote.entries)
    else:
        files = len(resolved.files)
        size = sum(p.stat().st_size for p, _ in resolved.files)
    for attempt in range(3):
        try:
            with transaction.atomic():
                version = _next_version(workspace, name)
                asset = DataAsset.objects.create(
                    workspace=workspace, name=name, version=version, kind=kind,
                    path="" if datastore else resolved.relative_path, datastore=datastore,
                    datastore_path=store_path if datastore else "", file_count=files, size_bytes=size,
                    description=description or "",
                    created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
                )
                record(actor, "data.create", asset, workspace, asset_id=asset.asset_id, uri=asset.uri, files=files)
                return asset
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def find_data_asset(workspace: Workspace, name: str, version: int | None = None) -> DataAsset | None:
    rows = DataAsset.objects.filter(workspace=workspace, name=name)
    if version is not None:
        return rows.filter(version=version).first()
    return rows.order_by("-version").first()


@dataclass
class RemoteInput:
    """An input that lives in a datastore the sandbox cannot reach: the worker fetches its files
    (each (path in the datastore, name shown in outputs, bytes)) before the job is split."""

    datastore: str
    path: str
    entries: list[tuple[str, str, int]]


@dataclass
class ResolvedInput:
    """A job's input: the asset it came from (if any), the folder or file (relative to the
    datastore root) and its files, each as (absolute path, name shown in outputs); `remote` when its
    files are in another datastore (then `files` is empty until the worker has fetched them)."""

    asset: DataAsset | None
    kind: str
    relative_path: str
    files: list[tuple[Path, str]]
    remote: RemoteInput | None = None


def _resolve_remote(workspace: Workspace, kind: str, datastore_name: str, path: str, asset: DataAsset | None,
                    raw: str, field: str) -> ResolvedInput:
    """List the files of a datastore path (checking the datastore answers); nothing is read yet."""
    path_field = f"{field}.path"
    try:
        _, store = ds_svc.open_store(workspace, datastore_name, path_field)
        found, entries = store.resolve(path)
    except StorageError as exc:
        if exc.field == "path":
            raise InvalidInput(f"{path_field} {raw!r}: {exc.message}", field=path_field) from None
        raise InvalidInput(ds_svc.storage_error(exc, datastore_name).message, field=path_field) from None
    if kind == "uri_file" and found != "uri_file":
        raise InvalidInput(f"{path_field} {raw!r} is a folder; use type uri_folder, or name one file.",
                           field=f"{field}.type")
    if kind == "uri_folder" and found == "uri_file":
        raise InvalidInput(f"{path_field} {raw!r} is one file; use type uri_file.", field=f"{field}.type")
    prefix = f"{path}/" if path and found == "uri_folder" else ""
    named = [(e.path, e.path[len(prefix):] if found == "uri_folder" else PurePosixPath(e.path).name, e.size)
             for e in entries]
    return ResolvedInput(asset=asset, kind=kind, relative_path=f"azureml://datastores/{datastore_name}/paths/{path}",
                         files=[], remote=RemoteInput(datastore=datastore_name, path=path, entries=named))


def resolve_input(workspace: Workspace, value: Any, field: str = "inputs.input_data") -> ResolvedInput:
    """Parse `{"type": "uri_folder" | "uri_file", "path": <data asset id or datastore path>}`."""
    if not isinstance(value, dict):
        raise InvalidInput(f"{field} must be an object with type and path.", field=field)
    kind = value.get("type") or "uri_folder"
    if kind not in INPUT_TYPES:
        raise InvalidInput(f"{field}.type must be uri_folder or uri_file, not {kind!r}.", field=f"{field}.type")
    raw = value.get("path")
    path_field = f"{field}.path"
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{path_field} is required: a data asset id (studio:data/<name>/versions/<n>).",
                           field=path_field)
    raw = raw.strip()
    root = datastore_root()
    asset: DataAsset | None = None

    in_store = split_uri(raw, path_field)
    if in_store is not None and in_store[0] != BUILTIN_DATASTORE:
        return _resolve_remote(workspace, kind, in_store[0], in_store[1], None, raw, field)
    if in_store is not None:
        raw = in_store[1] or "."
    match = ASSET_ID.match(raw)
    short = None if match else SHORT_ID.match(raw)
    if match or short:
        m = match or short
        version = int(m["version"]) if m["version"] else None
        asset = find_data_asset(workspace, m["name"], version)
        if asset is None:
            shown = f"{m['name']} version {version}" if version else m["name"]
            raise InvalidInput(f"No data asset {shown} in workspace '{workspace.name}'.", field=path_field)
        if asset.datastore_id:
            sub = _safe_relative(match["sub"], path_field).as_posix() if match and match["sub"] else ""
            path = "/".join(p for p in (asset.datastore_path, sub) if p)
            return _resolve_remote(workspace, kind, asset.datastore.name, path, asset, raw, field)
        target = asset.absolute_path
        if match and match["sub"]:
            sub = _safe_relative(match["sub"], path_field)
            target = target / sub
    else:
        relative = _safe_relative(raw.removeprefix("datastore:"), path_field)
        # A plain path is relative to the workspace's own part of the datastore.
        target = root / workspace.name / relative
    base = root / workspace.name
    target = _inside(base, target, raw, path_field)
    if not target.exists():
        raise InvalidInput(f"{path_field} {raw!r}: no such file or folder in the datastore.", field=path_field)
    if kind == "uri_file":
        if not target.is_file():
            raise InvalidInput(f"{path_field} {raw!r} is a folder; use type uri_folder, or name one file.",
                               field=f"{field}.type")
        files = [(target, target.name)]
    else:
        if target.is_file():
            raise InvalidInput(f"{path_field} {raw!r} is one file; use type uri_file.", field=f"{field}.type")
        files = [
            (p, p.relative_to(target).as_posix())
            for p in sorted(target.rglob("*"), key=lambda p: p.relative_to(target).as_posix())
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(target).parts)
        ]
        if not files:
            raise InvalidInput(f"{path_field} {raw!r} is an empty folder: there is nothing to score.",
                               field=path_field)
    return ResolvedInput(asset=asset, kind=kind, relative_path=target.relative_to(root.resolve()).as_posix(),
                         files=files)


def preview(asset: DataAsset, rows: int = 10, file: str | None = None) -> dict:
    """The first rows of one of the asset's files (its first CSV, JSON-lines or text file unless
    named): {"file", "columns", "rows", "kind"}; rows are lists of cells as text."""
    files = asset.files()
    if file is not None:
        chosen = [p for p in files if p.name == file or p.as_posix().endswith("/" + file)]
        if not chosen:
            raise InvalidInput(f"Data asset {asset.asset_id} has no file {file!r}.", field="file")
        path = chosen[0]
    else:
        readable = [p for p in files if batchio.kind_of(p)]
        if not readable:
            return {"file": files[0].name if files else None, "kind": None, "columns": [], "rows": []}
        path = readable[0]
    kind = batchio.kind_of(path)
    try:
        if kind == "text":
            texts = batchio.read_texts(path, 0, rows)
            return {"file": path.name, "kind": kind, "columns": ["text"], "rows": [[t] for t in texts]}
        if kind in ("csv", "jsonl"):
            columns, table = batchio.read_table(path, 0, rows)
            width = max([len(columns or [])] + [len(r) for r in table]) if table or columns else 0
            return {"file": path.name, "kind": kind,
                    "columns": columns or [f"column_{i}" for i in range(width)],
                    "rows": [[str(c) for c in r] for r in table]}
    except batchio.InputError as exc:
        return {"file": path.name, "kind": kind, "columns": [], "rows": [], "error": str(exc)}
    return {"file": path.name, "kind": None, "columns": [], "rows": []}
