"""Register a workspace's own model: a scikit-learn joblib/pickle file, an ONNX
file, or a zip with a score.py (init/run) and its files.

The upload is saved under MEDIA_ROOT, checked in a separate short-lived process
(runtime.validate: the web process never unpickles or imports user code), then
recorded as the next version of <workspace>/<name>. Any failure removes what
was saved.
"""

from __future__ import annotations

import re
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from endpoints_app.errors import Conflict, InvalidInput, PayloadTooLarge
from endpoints_app.models import CatalogModel, Workspace
from endpoints_app.runtime.validate import DEFAULT_TIMEOUT_SECONDS, validate_in_subprocess
from endpoints_app.services.audit import Actor, record

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Names that would shadow fixed URLs of the catalog pages.
RESERVED_NAMES = {"register"}
UPLOAD_FORMATS = {"sklearn", "onnx", "custom"}
SKLEARN_SUFFIXES = {".joblib", ".pkl", ".pickle", ".sav"}
MAX_ZIP_MEMBERS = 10_000
SCORING_SCRIPT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


def _check_name(name: str) -> str:
    name = (name or "").strip()
    if not MODEL_NAME.match(name) or name.lower() in RESERVED_NAMES:
        raise InvalidInput(
            "Use 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit"
            + (f" ('{name}' is reserved)." if name.lower() in RESERVED_NAMES else "."),
            field="name",
        )
    return name


def _detect_format(filename: str, head: bytes) -> str:
    suffix = Path(filename).suffix.lower()
    if suffix == ".zip" or head.startswith(b"PK\x03\x04"):
        return "custom"
    if suffix == ".onnx":
        return "onnx"
    if suffix in SKLEARN_SUFFIXES or head[:1] == b"\x80":  # pickle protocol 2+ opcode
        return "sklearn"
    raise InvalidInput(
        f"Cannot tell the format of '{filename}': upload a .joblib/.pkl, .onnx or .zip file, or choose the format.",
        field="format",
    )


def _save_upload(file, target: Path, limit: int) -> int:
    size = 0
    with target.open("wb") as out:
        for chunk in file.chunks():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", field="file")
            out.write(chunk)
    if size == 0:
        raise InvalidInput("The file is empty.", field="file")
    return size


def _extract_zip(archive: Path, target: Path, limit: int, scoring_script: str | None) -> tuple[Path, str]:
    """Extract safely (no absolute paths, no '..', bounded size); return (code dir, scoring script)."""
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        raise InvalidInput("The file is not a valid zip archive.", field="file") from None
    with zf:
        members = zf.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise InvalidInput(f"The zip holds more than {MAX_ZIP_MEMBERS} files.", field="file")
        total = sum(m.file_size for m in members)
        # Unpacked size bounded too, against zip bombs.
        if total > limit * 5:
            raise PayloadTooLarge(f"The zip unpacks to more than {limit * 5 // (1024 * 1024)} MB.", field="file")
        names = []
        for member in members:
            path = PurePosixPath(member.filename)
            if path.is_absolute() or ".." in path.parts or member.filename.startswith(("\\", "/")):
                raise InvalidInput(f"Unsafe path in zip: {member.filename!r}.", field="file")
            if not member.is_dir() and "__MACOSX" not in path.parts:
                names.append(path)
        try:
            zf.extractall(target)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise InvalidInput(f"The zip could not be unpacked: {exc}.", field="file") from None
    script = scoring_script or "score.py"
    if not SCORING_SCRIPT.match(script):
        raise InvalidInput("The scoring script must be a Python file name such as score.py.", field="scoring_script")
    # score.py at the top, or inside the zip's single top folder (how most tools zip a folder).
    if PurePosixPath(script) in names:
        return target, script
    tops = {p.parts[0] for p in names}
    if len(tops) == 1 and PurePosixPath(next(iter(tops)), script) in names:
        return target / next(iter(tops)), script
    raise InvalidInput(f"The zip has no {script} at its top level (it needs init() and run(raw_data)).", field="file")


def _next_version(registry: str, name: str) -> int:
    current = CatalogModel.objects.filter(registry=registry, name=name).aggregate(v=Max("version"))["v"]
    return (current or 0) + 1


def do_register_model(
    actor: Actor,
    workspace: Workspace,
    *,
    name: str,
    file,
    format: str | None = None,
    task: str | None = None,
    description: str = "",
    scoring_script: str | None = None,
    license: str = "",
    tags: dict | None = None,
) -> CatalogModel:
    """Save, check (in a subprocess) and record a new version of the workspace's model `name`."""
    name = _check_name(name)
    if format is not None and format not in UPLOAD_FORMATS:
        raise InvalidInput("format must be one of sklearn, onnx, custom (or left out to detect).", field="format")
    if task is not None and task not in CatalogModel.Task.values:
        raise InvalidInput(f"task must be one of {', '.join(CatalogModel.Task.values)}.", field="task")
    if file is None:
        raise InvalidInput("Upload a model file.", field="file")
    limit = int(settings.STUDIO_MAX_UPLOAD_BYTES)
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", field="file")

    filename = Path(file.name or "model").name
    file.seek(0)
    head = file.read(8)
    file.seek(0)
    fmt = format or _detect_format(filename, head)

    registry = workspace.name
    if CatalogModel.objects.filter(registry=registry, name=name, workspace__isnull=True).exists():
        # Only possible for a workspace named like the shared registry: never add versions to a shared model.
        raise Conflict(f"'{name}' is a shared catalog model; choose another name.", field="name")
    uploads = Path(settings.MEDIA_ROOT) / "uploads"
    staging = uploads / uuid.uuid4().hex
    staging.mkdir(parents=True)
    final: Path | None = None
    try:
        suffix = Path(filename).suffix.lower()
        stored_name = {"sklearn": "model" + (suffix if suffix in SKLEARN_SUFFIXES else ".joblib"),
                       "onnx": "model.onnx", "custom": "upload.zip"}[fmt]
        upload_path = staging / stored_name
        _save_upload(file, upload_path, limit)
        if fmt == "custom":
            code_dir, script = _extract_zip(upload_path, staging / "code", limit, scoring_script)
            upload_path.unlink()
            check_path = code_dir
        else:
            script = ""
            check_path = upload_path

        timeout = getattr(settings, "STUDIO_VALIDATE_TIMEOUT_SECONDS", DEFAULT_TIMEOUT_SECONDS)
        result = validate_in_subprocess(fmt, check_path, scoring_script=script or "score.py", timeout=timeout,
                                        project_dir=Path(settings.BASE_DIR))
        if not result.ok:
            raise InvalidInput(f"'{filename}' is not a valid {fmt} model. {result.message}", field="file")

        inner = check_path.relative_to(staging)  # e.g. model.joblib, code, code/my-model
        # A unique folder per attempt: a concurrent upload of the same version never touches ours.
        for _attempt in range(3):
            version = _next_version(registry, name)
            final = Path(settings.MEDIA_ROOT) / registry / name / f"{version}-{staging.name[:8]}"
            final.parent.mkdir(parents=True, exist_ok=True)
            staging.rename(final)
            artifact = final.relative_to(settings.MEDIA_ROOT) / inner
            try:
                with transaction.atomic():
                    model = CatalogModel.objects.create(
                        registry=registry,
                        workspace=workspace,
                        name=name,
                        version=version,
                        display_name=name,
                        task=task or result.task or "custom",
                        format=fmt,
                        license=license or "Unspecified",
                        publisher=workspace.display_name or workspace.name,
                        summary=(description or "").strip()[:300],
                        description=description or "",
                        input_schema=result.input_schema,
                        sample_request=result.sample_request,
                        sample_response=result.sample_response if result.sample_response is not None else {},
                        deployment_kinds=["online", "batch"],
                        artifact_path=str(artifact),
                        scoring_script=script,
                        tags={**(tags or {}), "uploaded_file": filename, "validation": result.details},
                        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
                    )
                    record(actor, "model.create", model, workspace, version=version, format=fmt,
                           asset_id=model.asset_id)
                return model
            except IntegrityError:
                # Someone registered the same version meanwhile: take the next one.
                final.rename(staging)
                final = None
                continue
        raise InvalidInput("Could not pick a version number; try again.", field="name")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if final is not None:
            shutil.rmtree(final, ignore_errors=True)
        raise
