"""Check a user's model file in a separate, short-lived process.

Unpickling a joblib file or importing a score.py runs the uploader's code, so the
web process never does it: it calls validate_in_subprocess(), which starts

    python -m endpoints_app.runtime.validate --format FMT --path PATH --result OUT.json

in a sandbox (runtime/sandbox.py: its own uid when the studio is root, a clean environment
without secrets, limits) with a timeout. The child loads the model
the way the model server would, and writes what it learnt (task, number of
features, a sample request) or the problem it found to OUT.json.

Only the standard library is imported at module level: the web imports this.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import stat
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 120
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LD_LIBRARY_PATH")


@dataclass
class Validation:
    ok: bool
    message: str = ""
    format: str = ""
    task: str = ""
    input_schema: dict = field(default_factory=dict)
    sample_request: dict = field(default_factory=dict)
    sample_response: Any = None
    details: dict = field(default_factory=dict)


def validate_in_subprocess(fmt: str, path: Path, *, scoring_script: str = "score.py",
                           timeout: float = DEFAULT_TIMEOUT_SECONDS, project_dir: Path | None = None,
                           data_dir: Path | None = None) -> Validation:
    """Run the checks in a sandboxed child process (runtime/sandbox.py); never raises for a bad file,
    returns ok=False with the reason. Every process the check started is gone when this returns."""
    from endpoints_app.runtime import sandbox as sb

    if data_dir is None:
        from django.conf import settings

        data_dir = Path(settings.DATA_DIR)
    box = sb.validation_sandbox(Path(data_dir), sb.validation_limits(timeout))
    path = Path(path)
    inner = box.expose(path, "model")
    code_dir = inner if path.is_dir() else inner.parent
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1"})
    if project_dir is not None:
        env["PYTHONPATH"] = str(project_dir)
    env["AZUREML_MODEL_DIR"] = str(code_dir)
    env.update(box.env())
    sb.describe(box.limits)
    try:
        sb.prepare(box)
        result_file = box.home / "result.json"
        argv = box.wrap([sys.executable, "-m", "endpoints_app.runtime.validate", "--format", fmt, "--path",
                         str(inner), "--scoring-script", scoring_script, "--result", str(result_file)], str(code_dir))
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(argv, env=env, cwd=str(code_dir), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err, **box.popen_kwargs())
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return Validation(ok=False, message=f"Checking the model took longer than {int(timeout)} seconds.")
            finally:
                _kill_all(proc, box)
            data = _read_result(result_file)
            if data is not None:
                try:
                    return Validation(**data)
                except TypeError:
                    pass
            err.seek(0)
            tail = err.read(1 << 20).decode("utf-8", "replace").strip().splitlines()[-3:]
        reason = " ".join(tail) or f"exit status {proc.returncode}"
        return Validation(ok=False, message=f"The model could not be loaded: {reason}")
    finally:
        sb.remove(box)


def _kill_all(proc: subprocess.Popen, box) -> None:
    """The child's whole session, then (as root) every process of its uid: a fork that called
    setsid() or daemonised during the check does not outlive it."""
    from endpoints_app.runtime import sandbox as sb

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    sb.kill_uid(box.uid)
    proc.wait()


def _read_result(path: Path) -> dict | None:
    """The child's answer: a regular file it wrote (never a link it planted to a studio file)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            return None
        raw = fh.read(4 << 20)
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


# -- Child side ---------------------------------------------------------------------------------
def _last_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}".rstrip(": ")


def _tabular_sample(n_features: int | None, columns: list[str] | None) -> tuple[dict, dict]:
    if not n_features:
        return {}, {}
    data: dict[str, Any] = {"data": [[0.0] * n_features]}
    if columns:
        data = {"columns": columns, **data}
    schema = {
        "type": "object",
        "description": f'POST /score with {{"input_data": {{"columns": [...], "data": [[...]]}}}}: '
                       f"rows of {n_features} numbers.",
        "properties": {"input_data": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}},
            "data": {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                                "minItems": n_features, "maxItems": n_features}}}}},
        "required": ["input_data"],
    }
    return {"input_data": data}, schema


def _check_sklearn(path: Path) -> Validation:
    import pickle

    import joblib

    try:
        model = joblib.load(path)
    except ModuleNotFoundError as exc:
        return Validation(ok=False, message=f"The pickle needs the module {exc.name!r}, which is not installed.")
    except (pickle.UnpicklingError, EOFError, ValueError, KeyError, IndexError, TypeError, AttributeError,
            ImportError, OSError) as exc:
        return Validation(ok=False, message=f"Not a readable joblib or pickle file ({_last_line(exc)}).")
    if not callable(getattr(model, "predict", None)):
        return Validation(ok=False, message=(
            f"The file holds a {type(model).__module__}.{type(model).__qualname__}, "
            "not a model with a predict() method."))
    from sklearn.base import is_classifier, is_regressor

    task = "classification" if is_classifier(model) else "regression" if is_regressor(model) else "custom"
    n_features = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    columns = [str(n) for n in names] if names is not None else None
    sample, schema = _tabular_sample(int(n_features) if n_features else None, columns)
    response = None
    if sample:
        from endpoints_app.runtime.handlers import SklearnHandler

        handler = SklearnHandler(str(path))
        handler.use(model)
        try:
            response = handler.predict(sample["input_data"]["data"], columns)
        except Exception:  # noqa: BLE001
            # Some models only take other values (categories, ranges): no sample, but not a bad file.
            sample, response = {}, None
    return Validation(ok=True, format="sklearn", task=task, input_schema=schema, sample_request=sample,
                      sample_response=response,
                      details={"class": f"{type(model).__module__}.{type(model).__qualname__}",
                               "n_features": n_features})


def _check_onnx(path: Path) -> Validation:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types for bad files
        return Validation(ok=False, message=f"Not a valid ONNX model ({_last_line(exc)}).")
    inputs = session.get_inputs()
    outputs = [o.name for o in session.get_outputs()]
    task = "classification" if "label" in outputs else "custom"
    shape = inputs[0].shape if inputs else []
    n_features = shape[1] if len(shape) == 2 and isinstance(shape[1], int) else None
    sample, schema = ({}, {})
    if len(inputs) == 1 and inputs[0].type in ("tensor(float)", "tensor(double)"):
        sample, schema = _tabular_sample(n_features, None)
    response = None
    if sample:
        from endpoints_app.runtime.handlers import OnnxHandler

        handler = OnnxHandler(str(path))
        handler.load()
        try:
            response = handler.score(json.dumps(sample).encode())
        except Exception:  # noqa: BLE001 - as for scikit-learn: no sample rather than a refusal
            sample, response = {}, None
    return Validation(ok=True, format="onnx", task=task, input_schema=schema, sample_request=sample,
                      sample_response=response,
                      details={"inputs": [{"name": i.name, "type": i.type, "shape": [str(d) for d in i.shape]}
                                          for i in inputs], "outputs": outputs})


def _check_custom(code_dir: Path, scoring_script: str) -> Validation:
    from endpoints_app.runtime.handlers import load_scoring_module

    try:
        module = load_scoring_module(code_dir, scoring_script)
    except FileNotFoundError as exc:
        return Validation(ok=False, message=str(exc))
    except Exception as exc:  # noqa: BLE001 - any error importing the user's code is the user's to fix
        return Validation(ok=False, message=f"Importing {scoring_script} failed: {_last_line(exc)}")
    try:
        module.init()
    except Exception as exc:  # noqa: BLE001
        return Validation(ok=False, message=f"{scoring_script}: init() failed: {_last_line(exc)}")
    return Validation(ok=True, format="custom", task="custom", details={"scoring_script": scoring_script})


def check(fmt: str, path: Path, scoring_script: str = "score.py") -> Validation:
    if fmt == "sklearn":
        return _check_sklearn(path)
    if fmt == "onnx":
        return _check_onnx(path)
    if fmt == "custom":
        return _check_custom(path, scoring_script)
    return Validation(ok=False, message=f"Cannot check format {fmt!r}.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check a model file (runs user code: separate process only)")
    parser.add_argument("--format", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--scoring-script", default="score.py")
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    try:
        result = check(args.format, Path(args.path), args.scoring_script)
    except Exception as exc:  # noqa: BLE001 - report, don't crash without a word
        traceback.print_exc()
        result = Validation(ok=False, message=f"The model could not be loaded: {_last_line(exc)}")
    try:
        payload = json.dumps(result.__dict__)
    except (TypeError, ValueError):
        result.sample_response = None
        payload = json.dumps(result.__dict__)
    Path(args.result).write_text(payload)


if __name__ == "__main__":
    main()
