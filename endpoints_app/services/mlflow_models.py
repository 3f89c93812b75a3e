"""MLflow models (`type: mlflow_model`): a folder or zip with its `MLmodel` file, registered with no
scoring script and no environment.

The web process reads only text here (`MLmodel`, `requirements.txt`, `conda.yaml`, `python_env.yaml`,
with yaml.safe_load): it never unpickles the model. From them it takes the signature (the input
columns and their types: the endpoint's swagger and a sample request), and the model's own
requirements, from which the model's environment is made: its pip requirements, `mlflow` replaced by
`mlflow-skinny` of the same version (MLflow's loader without its tracking server), plus pandas. The
model server loads it as a pyfunc model in that environment (runtime/mlflow_handler.py)."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from endpoints_app.errors import InvalidInput
from endpoints_app.runtime.validate import Validation
from endpoints_app.services.models import find_in_zip, unpack_zip

MLMODEL = "MLmodel"
NUMBER_TYPES = {"double", "float", "long", "integer"}
JSON_TYPES = {"double": "number", "float": "number", "long": "integer", "integer": "integer", "string": "string",
              "boolean": "boolean"}
LOADER = ("pandas",)


@dataclass
class MlflowModel:
    folder: Path
    requirements: list[str]
    flavors: list[str]
    mlflow_version: str
    columns: list[dict] = field(default_factory=list)  # [{"name", "type", "required"}] of a column signature


def _read_yaml(path: Path, what: str):
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InvalidInput(f"The MLflow model's {what} cannot be read ({exc}).", field="file") from None


def _requirements(folder: Path, mlflow_version: str) -> list[str]:
    lines: list[str] = []
    if (folder / "requirements.txt").is_file():
        lines = (folder / "requirements.txt").read_text(errors="replace").splitlines()
    elif (folder / "conda.yaml").is_file():
        conda = _read_yaml(folder / "conda.yaml", "conda.yaml") or {}
        for dep in conda.get("dependencies") or []:
            if isinstance(dep, dict) and isinstance(dep.get("pip"), list):
                lines += [str(x) for x in dep["pip"]]
    kept = []
    for line in lines:
        text = line.split("#")[0].strip()
        if not text or text.startswith("-"):  # options (-r, -c, --index-url) are the studio's to choose
            continue
        name = re.split(r"[\s<>=!~;\[@]", text, maxsplit=1)[0].lower().replace("_", "-")
        if name in ("mlflow", "mlflow-skinny"):
            continue
        kept.append(text)
    kept.append(f"mlflow-skinny=={mlflow_version}" if mlflow_version else "mlflow-skinny")
    present = {re.split(r"[\s<>=!~;\[@]", k, maxsplit=1)[0].lower() for k in kept}
    kept += [p for p in LOADER if p not in present]
    return kept


def _python_version(folder: Path) -> None:
    if not (folder / "python_env.yaml").is_file():
        return
    python = str((_read_yaml(folder / "python_env.yaml", "python_env.yaml") or {}).get("python") or "")
    studio = f"{sys.version_info.major}.{sys.version_info.minor}"
    if python and python != studio and not python.startswith(studio + "."):
        raise InvalidInput(f"The MLflow model was saved with Python {python}; the studio provides Python {studio} "
                           "(save it with that version).", field="python_env.yaml")


def _columns(spec: dict) -> list[dict]:
    raw = (spec.get("signature") or {}).get("inputs")
    if not raw:
        return []
    try:
        inputs = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise InvalidInput("The MLmodel's signature.inputs is not JSON.", field="file") from None
    if not isinstance(inputs, list) or not all(isinstance(c, dict) and c.get("name") and c.get("type") != "tensor"
                                               for c in inputs):
        return []  # a tensor signature or unnamed inputs: nothing to check by column
    return [{"name": str(c["name"]), "type": str(c.get("type")), "required": c.get("required", True) is not False}
            for c in inputs]


def unpack(archive: Path, target: Path, limit: int) -> MlflowModel:
    """Extract an MLflow model's zip and read what it says about itself; 400 naming the problem."""
    names = unpack_zip(archive, target, limit)
    folder = find_in_zip(names, target, MLMODEL)
    if folder is None:
        raise InvalidInput("The zip has no MLmodel file at its top (an MLflow model folder, as mlflow's "
                           "save_model writes it).", field="file")
    spec = _read_yaml(folder / MLMODEL, "MLmodel")
    if not isinstance(spec, dict) or not isinstance(spec.get("flavors"), dict):
        raise InvalidInput("The MLmodel file has no flavors.", field="file")
    if "python_function" not in spec["flavors"]:
        raise InvalidInput(f"The MLflow model has no python_function flavor (it has {', '.join(spec['flavors'])}); "
                           "the studio serves pyfunc models.", field="file")
    _python_version(folder)
    version = str(spec.get("mlflow_version") or "")
    if version and not re.match(r"^\d+(\.\d+)*$", version):
        version = ""
    return MlflowModel(folder=folder, requirements=_requirements(folder, version), flavors=sorted(spec["flavors"]),
                       mlflow_version=version, columns=_columns(spec))


def validation(model: MlflowModel) -> Validation:
    """What the catalog shows and the swagger documents: the signature as a schema and a sample request."""
    schema: dict = {}
    sample: dict = {}
    if model.columns:
        names = [c["name"] for c in model.columns]
        cells = {c["name"]: {"type": JSON_TYPES.get(c["type"], "string")} for c in model.columns}
        values = [0.0 if c["type"] in ("double", "float") else 0 if c["type"] in NUMBER_TYPES
                  else False if c["type"] == "boolean" else "" for c in model.columns]
        sample = {"input_data": {"columns": names, "index": [0], "data": [values]}}
        schema = {
            "type": "object",
            "description": "An MLflow model: input_data in split orientation ({columns, index, data}) or as "
                           "records; columns and types follow the model's signature: "
                           + ", ".join(f"{c['name']} ({c['type']})" for c in model.columns) + ".",
            "properties": {"input_data": {"oneOf": [
                {"type": "object", "required": ["data"], "properties": {
                    "columns": {"type": "array", "items": {"type": "string"}, "example": names},
                    "index": {"type": "array"},
                    "data": {"type": "array", "items": {"type": "array", "prefixItems": [
                        cells[n] for n in names], "minItems": len(names), "maxItems": len(names)}}}},
                {"type": "array", "items": {"type": "object", "properties": cells,
                                            "required": [c["name"] for c in model.columns if c["required"]]}},
            ]}},
            "required": ["input_data"],
        }
    return Validation(ok=True, format="mlflow", task="custom", input_schema=schema, sample_request=sample,
                      details={"flavors": model.flavors, "mlflow_version": model.mlflow_version,
                               "signature": model.columns, "requirements": model.requirements})
