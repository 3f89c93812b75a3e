"""Environments (`/api/v1/workspaces/<ws>/environments`): parse what the user wrote, create named versions,
resolve references and inline environments, and ask for builds.

An environment is `conda_file` (a mapping, or its YAML text: `dependencies` with `python=3.11` and
a `pip:` list; other conda packages are taken from PyPI by the same name) or `pip_requirements` (a
list of requirement lines), with an optional `python_version`. Its requirements are normalised
(parsed, canonical names, sorted, deduplicated) and hashed with the Python version and the model
server's own pinned packages: that key names the one build (EnvironmentBuild) every equal
environment shares. A container `image` is refused (400 naming `image`): the studio runs no
containers yet."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import dataclass
from typing import Any

import yaml
from django.db import IntegrityError, transaction
from django.db.models import Q

from endpoints_app.errors import Conflict, InvalidInput
from endpoints_app.models import BuildState, Environment, EnvironmentBuild, Workspace
from endpoints_app.models.environments import ENVIRONMENT_NAME
from endpoints_app.runtime.pins import server_requirements
from endpoints_app.services.audit import Actor, record
from endpoints_app.tasks import request_build

STUDIO_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
FIELDS = {"name", "version", "description", "conda_file", "pip_requirements", "python_version"}
# Keys of environment.yml that the studio accepts and ignores.
IGNORED = {"$schema", "tags"}
CONDA_FIELDS = {"name", "channels", "dependencies", "prefix", "variables"}
# Conda packages that are not Python packages the model needs.
CONDA_SKIP = {"pip", "python", "setuptools", "wheel"}
MAX_REQUIREMENTS = 200
# <name>:<version>, <name>@latest, with or without azureml:
REFERENCE = re.compile(
    r"^(?:azureml:)?(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})(?::(?P<version>[A-Za-z0-9_.-]+)|@latest)?$")
KEY_FORMAT = 1
CONDA_PACKAGE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)(?P<version>.*)$")


@dataclass
class ParsedEnvironment:
    conda_file: dict
    pip_requirements: list[str]
    python_version: str
    requirements: list[str]


def _requirement(line: Any, field: str) -> str:
    """One requirement, normalised; refuses options (-e, --index-url, -r) and local paths or URLs."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    if not isinstance(line, str) or not line.strip():
        raise InvalidInput(f"{field} must be a requirement string such as 'xgboost==2.1.4'.", field=field)
    text = line.split(" #")[0].strip()
    if text.startswith("-"):
        raise InvalidInput(f"{field}: options such as {text.split()[0]!r} are not allowed; the studio chooses the "
                           "package index (ask IT for PIP_INDEX_URL).", field=field)
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise InvalidInput(f"{field}: {text!r} is not a requirement ({exc}).", field=field) from None
    if req.url:
        raise InvalidInput(f"{field}: {text!r} points at a URL or a file; name a package from the index.", field=field)
    req.name = canonicalize_name(req.name)
    return str(req)


def _python_version(value: Any, field: str) -> str:
    text = str(value).strip().lstrip("=") if value not in (None, "") else ""
    if not text:
        return STUDIO_PYTHON
    if not re.match(r"^3(\.\d+){1,2}(\.\*)?$", text) or not (
        text.removesuffix(".*") == STUDIO_PYTHON or text.startswith(STUDIO_PYTHON + ".")
    ):
        raise InvalidInput(f"{field}: Python {text} is not available; the studio provides Python {STUDIO_PYTHON}.",
                           field=field)
    return STUDIO_PYTHON


def _conda_version(version: str) -> str:
    """Conda's version syntax as pip's: `=1.26` is any 1.26.x, `==1.26.4` exactly it, `>=1.2` as written."""
    if not version:
        return ""
    if version.startswith("=="):
        return version
    if version.startswith("="):
        version = version[1:]
        return f"=={version}" if "*" in version or version.count(".") >= 2 else f"=={version}.*"
    return version


def _parse_conda(value: Any) -> tuple[dict, list[str], str | None]:
    if isinstance(value, str):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise InvalidInput(f"conda_file is not valid YAML ({exc}).", field="conda_file") from None
    if not isinstance(value, dict):
        raise InvalidInput("conda_file must be a conda environment file (a mapping with dependencies).",
                           field="conda_file")
    unknown = set(value) - CONDA_FIELDS
    if unknown:
        name = sorted(map(str, unknown))[0]
        raise InvalidInput(f"conda_file has no field {name!r}.", field=f"conda_file.{name}")
    deps = value.get("dependencies") or []
    if not isinstance(deps, list):
        raise InvalidInput("conda_file.dependencies must be a list.", field="conda_file.dependencies")
    requirements: list[str] = []
    python = None
    for index, dep in enumerate(deps):
        field = f"conda_file.dependencies[{index}]"
        if isinstance(dep, dict):
            if set(dep) != {"pip"} or not isinstance(dep["pip"], list):
                raise InvalidInput(f"{field} must be a package or a 'pip:' list.", field=field)
            requirements += [_requirement(line, f"{field}.pip[{i}]") for i, line in enumerate(dep["pip"])]
            continue
        if not isinstance(dep, str):
            raise InvalidInput(f"{field} must be a package name such as numpy=1.26.", field=field)
        match = CONDA_PACKAGE.match(dep.strip().split("::")[-1])  # conda-forge::numpy=1.26
        if not match:
            raise InvalidInput(f"{field}: {dep!r} is not a package such as numpy=1.26.", field=field)
        name, version = match["name"], match["version"].strip()
        if name == "python":
            python = _python_version(version, "conda_file.dependencies.python")
            continue
        if name in CONDA_SKIP:
            continue
        spec = _conda_version(version)
        requirements.append(_requirement(f"{name}{spec}", field))
    return value, requirements, python


def parse_environment(spec: Any, prefix: str = "") -> ParsedEnvironment:
    """What a user wrote (environment.yml fields), checked and normalised; InvalidInput names the field."""
    if not isinstance(spec, dict):
        raise InvalidInput(f"{prefix or 'The environment'} must be an object.", field=prefix or None)

    def f(name: str) -> str:
        return f"{prefix}.{name}" if prefix else name

    if "image" in spec:
        raise InvalidInput("image: container images are not supported yet; give a conda_file or pip_requirements "
                           "(the studio builds a virtual environment from them).", field=f("image"))
    unknown = set(spec) - FIELDS - IGNORED
    if unknown:
        name = sorted(map(str, unknown))[0]
        raise InvalidInput(f"Unknown environment field {name!r}.", field=f(name))
    has_conda = spec.get("conda_file") not in (None, "", {})
    has_pip = spec.get("pip_requirements") not in (None, [], "")
    if has_conda == has_pip:
        raise InvalidInput("Give one of conda_file or pip_requirements.", field=f("conda_file"))
    python = None
    conda: dict = {}
    pip: list[str] = []
    if has_conda:
        try:
            conda, requirements, python = _parse_conda(spec["conda_file"])
        except InvalidInput as exc:
            raise InvalidInput(exc.message, field=f(exc.field or "conda_file")) from None
    else:
        raw = spec["pip_requirements"]
        if isinstance(raw, str):
            raw = [line for line in raw.splitlines() if line.strip() and not line.strip().startswith("#")]
        if not isinstance(raw, list):
            raise InvalidInput("pip_requirements must be a list of requirement lines.", field=f("pip_requirements"))
        pip = [str(x) for x in raw]
        requirements = [_requirement(line, f(f"pip_requirements[{i}]")) for i, line in enumerate(raw)]
    if "python_version" in spec:
        python = _python_version(spec["python_version"], f("python_version"))
    if len(requirements) > MAX_REQUIREMENTS:
        raise InvalidInput(f"At most {MAX_REQUIREMENTS} requirements.", field=f("pip_requirements"))
    return ParsedEnvironment(conda_file=conda, pip_requirements=pip, python_version=python or STUDIO_PYTHON,
                             requirements=sorted(set(requirements)))


def build_key(python: str, requirements: list[str]) -> str:
    content = {"format": KEY_FORMAT, "python": python, "requirements": sorted(set(requirements)),
               "server": server_requirements()}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def build_for(python: str, requirements: list[str]) -> EnvironmentBuild:
    """The one build of this content (created NotStarted when new)."""
    key = build_key(python, requirements)
    found = EnvironmentBuild.objects.filter(key=key).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return EnvironmentBuild.objects.create(key=key, python_version=python, requirements=requirements)
    except IntegrityError:
        return EnvironmentBuild.objects.get(key=key)


def _next_version(workspace: Workspace, name: str) -> str:
    numbers = [int(v) for v in Environment.objects.filter(workspace=workspace, name=name)
               .values_list("version", flat=True) if str(v).isdigit()]
    return str(max(numbers, default=0) + 1)


@transaction.atomic
def do_create_environment(actor: Actor, workspace: Workspace, spec: dict) -> Environment:
    """A new named version (the next number when `version` is left out), built in the background."""
    if not isinstance(spec, dict):
        raise InvalidInput("The environment must be an object.")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("Environment name is required.", field="name")
    try:
        ENVIRONMENT_NAME(name)
    except Exception:
        raise InvalidInput(f"Environment name {name!r} is not valid: {ENVIRONMENT_NAME.message}",
                           field="name") from None
    if name.startswith("inline-"):
        raise InvalidInput("Names starting with 'inline-' are kept for deployments' inline environments.",
                           field="name")
    parsed = parse_environment(spec)
    version = spec.get("version")
    if version in (None, ""):
        version = _next_version(workspace, name)
    version = str(version)
    if not re.match(r"^[A-Za-z0-9_.-]{1,32}$", version):
        raise InvalidInput("version must be 1-32 letters, digits, '.', '_' or '-'.", field="version")
    if Environment.objects.filter(workspace=workspace, name=name, version=version).exists():
        raise Conflict(f"Environment {name}:{version} exists; versions cannot be changed (create version "
                       f"{_next_version(workspace, name)}).", field="version")
    description = spec.get("description") or ""
    if not isinstance(description, str):
        raise InvalidInput("description must be a string.", field="description")
    build = build_for(parsed.python_version, parsed.requirements)
    env = Environment.objects.create(
        workspace=workspace, name=name, version=version, description=description, conda_file=parsed.conda_file,
        pip_requirements=parsed.pip_requirements, python_version=parsed.python_version, build=build,
        created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
    )
    record(actor, "environment.create", env, workspace, version=version, build=build.key[:12])
    request_build(build)
    return env


def inline_environment(actor: Actor, workspace: Workspace, spec: dict, prefix: str = "environment") -> Environment:
    """A deployment's inline environment: the workspace's row for that content (made once)."""
    parsed = parse_environment(spec, prefix)
    build = build_for(parsed.python_version, parsed.requirements)
    name = f"inline-{build.key[:12]}"
    env = Environment.objects.filter(workspace=workspace, name=name, version="1").first()
    if env is None:
        try:
            with transaction.atomic():
                env = Environment.objects.create(
                    workspace=workspace, name=name, version="1", is_inline=True, conda_file=parsed.conda_file,
                    pip_requirements=parsed.pip_requirements, python_version=parsed.python_version, build=build,
                    description="Given inline in a deployment.",
                    created_by=actor.user if getattr(actor.user, "is_authenticated", False) else None,
                )
                record(actor, "environment.create", env, workspace, version="1", build=build.key[:12], inline=True)
        except IntegrityError:
            env = Environment.objects.get(workspace=workspace, name=name, version="1")
    return env


def find_environment(workspace: Workspace, name: str, version: str | None = None) -> Environment | None:
    rows = Environment.objects.filter(workspace=workspace, name=name).select_related("build")
    if version:
        return rows.filter(version=version).first()
    # The latest: the highest number, else the newest.
    found = list(rows)
    numbered = [e for e in found if e.version.isdigit()]
    if numbered:
        return max(numbered, key=lambda e: int(e.version))
    return max(found, key=lambda e: e.created_at, default=None)


def resolve_environment(actor: Actor, workspace: Workspace, value: Any,
                        field: str = "environment") -> Environment | None:
    """A deployment's `environment`: a reference (`azureml:<name>:<version>`, `<name>@latest`) or an inline
    environment (a mapping). None when left out. Asks for its build (a no-op when built)."""
    if value in (None, "", {}):
        return None
    if isinstance(value, dict):
        env = inline_environment(actor, workspace, value, field)
    elif isinstance(value, str):
        match = REFERENCE.match(value.strip())
        if not match:
            raise InvalidInput(f"{field} must be azureml:<name>:<version>, <name>@latest or an inline environment.",
                               field=field)
        env = find_environment(workspace, match["name"], match["version"])
        if env is None:
            raise InvalidInput(f"No environment {value!r} in workspace '{workspace.name}'.", field=field)
    else:
        raise InvalidInput(f"{field} must be a reference or an inline environment.", field=field)
    request_build(env.build)
    return env


def visible(workspace: Workspace, include_inline: bool = True):
    rows = Environment.objects.filter(workspace=workspace).select_related("build", "created_by")
    return rows if include_inline else rows.filter(Q(is_inline=False))


def read_build_log(build: EnvironmentBuild, limit: int = 1 << 20) -> str:
    try:
        with open(build.log_path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            return fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"No build log yet ({build.state}).\n"


def built_python(env: Environment, field: str = "environment") -> str:
    """The interpreter of `env`'s build for work that cannot wait (an upload check): Conflict while it
    builds, InvalidInput with the installer's words when it failed."""
    build = EnvironmentBuild.objects.get(pk=env.build_id)
    if build.state == BuildState.FAILED:
        raise InvalidInput(f"Environment {env.asset_id} failed to build:\n{build.error}", field=field)
    if build.state != BuildState.SUCCEEDED or not build.python.exists():
        raise Conflict(f"Environment {env.asset_id} is {build.state}; register the model once its build has "
                       "Succeeded (studio environment show shows it).", field=field)
    return str(build.python)
