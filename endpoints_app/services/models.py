"""Register a workspace's own model: a scikit-learn joblib/pickle file, an ONNX
file, or a zip with a score.py (init/run) and its files.

The upload is saved under MEDIA_ROOT, checked in a separate short-lived process
(runtime.validate: the web process never unpickles or imports user code), then
recorded as the next version of <workspace>/<name>. Any failure removes what
was saved.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from endpoints_app.errors import Conflict, InvalidInput, PayloadTooLarge
from endpoints_app.models import CatalogModel, Deployment, Workspace
from endpoints_app.runtime.validate import DEFAULT_TIMEOUT_SECONDS, validate_in_subprocess
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.environments import built_python, inline_environment, resolve_environment
from endpoints_app.tasks import request_build

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Names that would shadow fixed URLs of the catalog pages.
RESERVED_NAMES = {"register"}
UPLOAD_FORMATS = {"sklearn", "onnx", "custom", "mlflow"}
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
    names = unpack_zip(archive, target, limit)
    script = scoring_script or "score.py"
    if not SCORING_SCRIPT.match(script):
        raise InvalidInput("The scoring script must be a Python file name such as score.py.", field="scoring_script")
    found = find_in_zip(names, target, script)
    if found is not None:
        return found, script
    raise InvalidInput(f"The zip has no {script} at its top level (it needs init() and run(raw_data)).", field="file")


def find_in_zip(names: list[PurePosixPath], target: Path, wanted: str) -> Path | None:
    """The folder holding `wanted`: the zip's top, or its single top folder (how most tools zip a folder)."""
    if PurePosixPath(wanted) in names:
        return target
    tops = {p.parts[0] for p in names}
    if len(tops) == 1 and PurePosixPath(next(iter(tops)), wanted) in names:
        return target / next(iter(tops))
    return None


def unpack_zip(archive: Path, target: Path, limit: int) -> list[PurePosixPath]:
    """Extract safely (no absolute paths, no '..', bounded size); the files it held."""
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
    return names


def _next_version(registry: str, name: str) -> int:
    # Deleted versions count too: a version number never names two different models.
    current = CatalogModel.all_objects.filter(registry=registry, name=name).aggregate(v=Max("version"))["v"]
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
    sample_request: Any = None,
    environment: str | dict | None = None,
    type: str | None = None,
) -> CatalogModel:
    """Save, check (in a subprocess) and record a new version of the workspace's model `name`.
    MLflow models (`type` mlflow_model) are read, not loaded: their environment builds in the background."""
    name = _check_name(name)
    if type not in (None, "", "custom_model", "mlflow_model"):
        raise InvalidInput("type must be custom_model or mlflow_model.", field="type")
    if type == "mlflow_model":
        format = "mlflow"
    if format is not None and format not in UPLOAD_FORMATS:
        raise InvalidInput("format must be one of sklearn, onnx, custom, mlflow (or left out to detect).",
                           field="format")
    if task is not None and task not in CatalogModel.Task.values:
        raise InvalidInput(f"task must be one of {', '.join(CatalogModel.Task.values)}.", field="task")
    if file is None:
        raise InvalidInput("Upload a model file.", field="file")
    own_sample = parse_sample_request(sample_request)
    limit = int(settings.STUDIO_MAX_UPLOAD_BYTES)
    if file.size is not None and file.size > limit:
        raise PayloadTooLarge(f"The file is larger than {limit // (1024 * 1024)} MB.", field="file")

    # A model that names an environment is checked, and later served, in it (it must be built by now).
    env = resolve_environment(actor, workspace, environment) if environment not in (None, "", {}) else None
    python = built_python(env) if env is not None and format != "mlflow" else None

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
                       "onnx": "model.onnx", "custom": "upload.zip", "mlflow": "upload.zip"}[fmt]
        upload_path = staging / stored_name
        _save_upload(file, upload_path, limit)
        mlflow_model = None
        if fmt == "custom":
            code_dir, script = _extract_zip(upload_path, staging / "code", limit, scoring_script)
            upload_path.unlink()
            check_path = code_dir
        elif fmt == "mlflow":
            from endpoints_app.services import mlflow_models

            mlflow_model = mlflow_models.unpack(upload_path, staging / "model", limit)
            upload_path.unlink()
            script, check_path = "", mlflow_model.folder
        else:
            script = ""
            check_path = upload_path

        timeout = DEFAULT_TIMEOUT_SECONDS
        if mlflow_model is not None:
            result = mlflow_models.validation(mlflow_model)
        else:
            result = validate_in_subprocess(fmt, check_path, scoring_script=script or "score.py", timeout=timeout,
                                            project_dir=Path(settings.BASE_DIR), python=python)
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
                    if mlflow_model is not None and env is None:
                        # Its own requirements plus MLflow's loader: built once, shared with equal models.
                        env = inline_environment(actor, workspace, {"pip_requirements": mlflow_model.requirements},
                                                 "requirements.txt")
                        request_build(env.build)
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
                        sample_request=own_sample if own_sample is not None else result.sample_request,
                        sample_response=({} if own_sample is not None else
                                         result.sample_response if result.sample_response is not None else {}),
                        deployment_kinds=["online", "batch"],
                        artifact_path=str(artifact),
                        scoring_script=script,
                        environment=env,
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


MAX_SAMPLE_BYTES = 256 * 1024


def parse_sample_request(value: Any) -> dict | list | None:
    """A sample request given with a model (JSON text or already parsed): what its Test tab opens with."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) > MAX_SAMPLE_BYTES:
            raise InvalidInput(f"sample_request is larger than {MAX_SAMPLE_BYTES // 1024} KB.", field="sample_request")
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"sample_request is not valid JSON: {exc}.", field="sample_request") from None
    if not isinstance(value, (dict, list)) or not value:
        raise InvalidInput("sample_request must be a JSON object (the body a Test sends).", field="sample_request")
    return value


def _own_model(workspace: Workspace, model: CatalogModel) -> CatalogModel:
    if model.workspace_id != workspace.pk:
        raise Conflict(f"'{model.name}' is a shared catalog model; only a workspace's own models change here.",
                       field="name")
    return model


@transaction.atomic
def do_update_model(actor: Actor, workspace: Workspace, model: CatalogModel, *, sample_request: Any = None,
                    description: str | None = None) -> CatalogModel:
    """Attach a sample request (and/or a description) to a workspace's own model version."""
    model = _own_model(workspace, CatalogModel.objects.select_for_update().get(pk=model.pk))
    changed = []
    sample = parse_sample_request(sample_request)
    if sample is not None and sample != model.sample_request:
        model.sample_request, model.sample_response = sample, {}
        changed += ["sample_request", "sample_response"]
    if description is not None and description != model.description:
        model.description, model.summary = description, description.strip()[:300]
        changed += ["description", "summary"]
    if changed:
        model.save(update_fields=changed)
        record(actor, "model.update", model, workspace, changed=[c for c in changed if c != "summary"])
    return model


def delete_refusal(model: CatalogModel) -> str | None:
    """Why a model version may not be deleted now (the rule the UI, API and CLI share), or None."""
    users = list(Deployment.objects.filter(model=model).select_related("endpoint")
                 .values_list("endpoint__name", "name")[:5])
    if users:
        names = ", ".join(f"{e}/{d}" for e, d in users)
        return (f"Model {model.name} version {model.version} is deployed ({names}); delete those deployments "
                "first.")
    return None


@transaction.atomic
def do_delete_model(actor: Actor, workspace: Workspace, model: CatalogModel) -> None:
    """Delete a workspace's own model version, refused while a deployment uses it. The row stays hidden
    (deleted deployments' history names it); its files go."""
    model = _own_model(workspace, CatalogModel.objects.select_for_update().get(pk=model.pk))
    refusal = delete_refusal(model)
    if refusal:
        raise Conflict(refusal, field="name")
    model.deleted_at = timezone.now()
    model.save(update_fields=["deleted_at"])
    record(actor, "model.delete", model, workspace, version=model.version, asset_id=model.asset_id)
    folder = _version_folder(model)
    if folder is not None:
        transaction.on_commit(lambda: shutil.rmtree(folder, ignore_errors=True))


def _version_folder(model: CatalogModel) -> Path | None:
    """The version's own folder under MEDIA_ROOT (<registry>/<name>/<version>-<id>), or None."""
    if not model.artifact_path:
        return None
    media = Path(settings.MEDIA_ROOT).resolve()
    parts = Path(model.artifact_path).parts
    if len(parts) < 3 or Path(model.artifact_path).is_absolute():
        return None
    folder = (media / parts[0] / parts[1] / parts[2]).resolve()
    if folder.parent.parent.parent != media or not parts[2].startswith(f"{model.version}-"):
        return None
    return folder
