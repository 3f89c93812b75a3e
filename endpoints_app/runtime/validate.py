"""Check a user's model file in a separate, short-lived process.

Unpickling a joblib file or importing a score.py runs the uploader's code, so the
web process never does it: it calls validate_in_subprocess(), which starts

    python -m endpoints_app.runtime.validate --format FMT --path PATH

in a sandbox (runtime/sandbox.py: bubblewrap, no network, its own uid when the studio is root, a
clean environment without secrets, limits) with a timeout, and reads the result from its stdout.

Who says what. The process started in the sandbox is the CHECKER; the uploader's code runs only in
a GRANDCHILD it forks (`_run_user_code`), which reports its findings over a pipe of its own. Before
the fork the checker keeps its stdout (the only channel the studio reads) on a descriptor the
grandchild closes before any user code runs, points fd 1 at stderr, and makes itself non-dumpable,
so the grandchild (same uid, same sandbox) can neither open /proc/<checker>/fd/* nor ptrace it (the
seccomp filter refuses ptrace too); the studio's end of the pipe is outside the sandbox's PID
namespace. So user code cannot write the result, only findings, and the checker vouches for those
(`vouch`): it keeps the format and scoring script it was asked to check, requires the grandchild to
end with status 0 after a well-formed answer, keeps only known fields of known types and sizes, and
builds the schema and sample request itself from the number of features. What remains is what the
uploaded model could legitimately make its own code answer anyway.

Only the standard library is imported at module level: the web imports this.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import select
import subprocess
import sys
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT_SECONDS = 120
_INHERITED = ("PATH", "LANG", "LC_ALL", "TZ")
# What the checker answers at most (a sample response included), and what it reads of the grandchild.
MAX_ANSWER_BYTES = 1 << 20
PR_SET_DUMPABLE = 4


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
                           data_dir: Path | None = None, python: str | None = None) -> Validation:
    """Run the checks in a sandboxed child process (runtime/sandbox.py); never raises for a bad file,
    returns ok=False with the reason. Every process the check started is gone when this returns.
    `project_dir` is where endpoints_app lives (this project's by default)."""
    from endpoints_app.runtime import sandbox as sb

    if data_dir is None:
        from django.conf import settings

        data_dir = Path(settings.DATA_DIR)
    box = sb.validation_sandbox(Path(data_dir), sb.validation_limits(timeout))
    path = Path(path)
    inner = box.expose(path, "model")
    interpreter = _python(python, box)
    code_dir = inner if path.is_dir() else inner.parent
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "OMP_NUM_THREADS": "1", "PYTHONPATH": str(project_dir or sb.PROJECT_DIR)})
    env["AZUREML_MODEL_DIR"] = str(code_dir)
    env.update(box.env())
    sb.describe(box.limits)
    try:
        sb.prepare(box)
        argv = [interpreter, "-m", "endpoints_app.runtime.validate", "--format", fmt, "--path", str(inner),
                "--scoring-script", scoring_script]
        with tempfile.TemporaryFile() as err:
            proc = sb.popen(box, argv, env, str(code_dir), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=err)
            try:
                answer, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                return Validation(ok=False, message=f"Checking the model took longer than {int(timeout)} seconds.")
            finally:
                sb.kill(box)
                proc.kill()
                proc.wait()
            result = _parse_answer(answer)
            if result is not None and (result.ok or result.message):
                return result
            err.seek(0)
            tail = err.read(1 << 20).decode("utf-8", "replace").strip().splitlines()[-3:]
        reason = " ".join(tail) or f"exit status {proc.returncode}"
        return Validation(ok=False, message=f"The model could not be loaded: {reason}")
    finally:
        sb.remove(box)


def _python(python: str | None, box) -> str:
    """The studio's interpreter, or (`python`: an environment's venv) that venv shown in the sandbox."""
    if python is None:
        return sys.executable
    from endpoints_app.runtime.environments import expose_venv

    return expose_venv(python, box)


def _parse_answer(raw: bytes) -> Validation | None:
    """The checker's answer (its whole stdout), or None."""
    if not raw or len(raw) > MAX_ANSWER_BYTES:
        return None
    try:
        data = json.loads(raw)
        return Validation(**data) if isinstance(data, dict) else None
    except (ValueError, TypeError):
        return None


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

    from endpoints_app.runtime.handlers import SklearnHandler, frame_sample_and_schema, unscorable_reason

    task = "classification" if is_classifier(model) else "regression" if is_regressor(model) else "custom"
    n_features = getattr(model, "n_features_in_", None)
    names = getattr(model, "feature_names_in_", None)
    columns = [str(n) for n in names] if names is not None else None
    if (reason := unscorable_reason(model)) is not None:
        return Validation(ok=False, message=f"The studio cannot score this model. {reason}")
    handler = SklearnHandler(str(path))
    handler.use(model)
    if handler.columns is not None:
        # Fitted on a DataFrame: the sample and schema name each column and its type, and a model its
        # own sample cannot score is refused now rather than at its first call.
        sample, schema = frame_sample_and_schema(handler.columns)
        try:
            response = handler.predict(sample["input_data"]["data"], columns)
        except Exception as exc:  # noqa: BLE001 - the model's own complaint is the reason to give
            return Validation(ok=False, message=f"The studio cannot score this model with a DataFrame of its "
                                                f"columns ({', '.join(columns or [])}): {_last_line(exc)}")
        return Validation(ok=True, format="sklearn", task=task, input_schema=schema, sample_request=sample,
                          sample_response=response,
                          details={"class": f"{type(model).__module__}.{type(model).__qualname__}",
                                   "n_features": n_features, "columns": handler.columns})
    sample, schema = _tabular_sample(int(n_features) if n_features else None, columns)
    response = None
    if sample:
        try:
            response = handler.predict(sample["input_data"]["data"], columns)
        except Exception:  # noqa: BLE001
            # Some models only take other values (ranges): no sample, but not a bad file.
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


def _text(value: Any, limit: int = 2000) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 100_000 else None


def _frame_columns(value: Any) -> list[dict] | None:
    """A DataFrame model's columns as the checker found them ({name, type, categories?}), each field
    checked and bounded, or None."""
    if not isinstance(value, list) or not 0 < len(value) <= 1000:
        return None
    columns = []
    for c in value:
        if not isinstance(c, dict) or not _text(c.get("name"), 200) or c.get("type") not in ("string", "number"):
            return None
        column: dict[str, Any] = {"name": _text(c.get("name"), 200), "type": c["type"]}
        categories = c.get("categories")
        if isinstance(categories, list) and categories:
            column["categories"] = [_text(v, 200) for v in categories[:100] if isinstance(v, str)]
        columns.append(column)
    return columns


def vouch(fmt: str, scoring_script: str, raw: bytes, status: int) -> Validation:
    """The checker's answer from the grandchild's findings (see the module's docstring)."""
    if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not raw:
        how = (f"exit status {os.WEXITSTATUS(status)}" if os.WIFEXITED(status)
               else f"signal {os.WTERMSIG(status)}")
        return Validation(ok=False, message="" if raw else f"The model's code ended ({how}) before the check finished.")
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        return Validation(ok=False, message="The check's findings were unreadable.")
    if found.get("ok") is not True:
        return Validation(ok=False, message=_text(found.get("message")) or "The model could not be loaded.")
    details = found.get("details") if isinstance(found.get("details"), dict) else {}
    if fmt == "custom":
        return Validation(ok=True, format="custom", task="custom", details={"scoring_script": scoring_script})
    task = found.get("task") if found.get("task") in ("classification", "regression", "custom") else "custom"
    # The sample request is rebuilt here from its shape only: rows of n numbers, named columns or not.
    request = found.get("sample_request")
    inputs = request.get("input_data") if isinstance(request, dict) else None
    rows = inputs.get("data") if isinstance(inputs, dict) else None
    n_features = _count(len(rows[0])) if isinstance(rows, list) and rows and isinstance(rows[0], list) else None
    columns = inputs.get("columns") if isinstance(inputs, dict) else None
    if not (isinstance(columns, list) and len(columns) == n_features and all(isinstance(c, str) for c in columns)):
        columns = None
    sample, schema = _tabular_sample(n_features, [c[:200] for c in columns] if columns else None)
    frame_columns = _frame_columns(details.get("columns")) if fmt == "sklearn" else None
    if frame_columns:
        # Fitted on a DataFrame: its columns' names, types and categories, rebuilt as typed facts.
        from endpoints_app.runtime.handlers import frame_sample_and_schema

        sample, schema = frame_sample_and_schema(frame_columns)
    response = found.get("sample_response") if sample else None
    if len(json.dumps(response)) > MAX_ANSWER_BYTES // 2:
        response = None
    if fmt == "sklearn":
        kept = {"class": _text(details.get("class"), 300), "n_features": _count(details.get("n_features"))}
        if frame_columns:
            kept["columns"] = frame_columns
    else:
        declared = details.get("inputs") if isinstance(details.get("inputs"), list) else []
        outputs = details.get("outputs") if isinstance(details.get("outputs"), list) else []
        kept = {"inputs": [{"name": _text(i.get("name"), 200), "type": _text(i.get("type"), 100),
                            "shape": [_text(d, 50) for d in i.get("shape", [])][:16]}
                           for i in declared[:64] if isinstance(i, dict) and isinstance(i.get("shape", []), list)],
                "outputs": [_text(o, 200) for o in outputs[:64]]}
    return Validation(ok=True, format=fmt, task=task, input_schema=schema, sample_request=sample,
                      sample_response=response, details=kept)


def _run_user_code(fmt: str, path: Path, scoring_script: str, findings: int) -> None:
    """The grandchild: runs the checks (the uploader's code) and writes its findings to `findings`."""
    try:
        result = check(fmt, path, scoring_script)
    except Exception as exc:  # noqa: BLE001 - report, don't crash without a word
        traceback.print_exc()
        result = Validation(ok=False, message=f"The model could not be loaded: {_last_line(exc)}")
    try:
        payload = json.dumps(result.__dict__)
    except (TypeError, ValueError):
        result.sample_response = None
        payload = json.dumps(result.__dict__)
    with os.fdopen(findings, "wb") as fh:
        fh.write(payload.encode())
    os._exit(0)


def _findings(read_end: int, pid: int) -> tuple[bytes, int]:
    """What the grandchild wrote until it ended, and its wait status. Not "until end of file": processes
    it forked may hold the pipe open for ever."""
    os.set_blocking(read_end, False)
    data = bytearray()
    ended, status = 0, 0
    while not ended:
        select.select([read_end], [], [], 0.1)
        ended, status = os.waitpid(pid, os.WNOHANG)
        while len(data) <= MAX_ANSWER_BYTES:  # what is there now (all of it, once it ended)
            try:
                chunk = os.read(read_end, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_ANSWER_BYTES:
            return b"", status if ended else os.waitpid(pid, 0)[1]
    os.close(read_end)
    return bytes(data), status


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Check a model file (runs user code: sandboxed only)")
    parser.add_argument("--format", required=True)
    parser.add_argument("--path", required=True)
    parser.add_argument("--scoring-script", default="score.py")
    args = parser.parse_args(argv)
    answer = os.fdopen(os.dup(1), "wb")  # the studio's channel: this process's alone from here on
    os.dup2(2, 1)
    ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        answer.close()
        os.close(read_end)
        _run_user_code(args.format, Path(args.path), args.scoring_script, write_end)
    os.close(write_end)
    raw, status = _findings(read_end, pid)
    result = vouch(args.format, args.scoring_script, raw, status)
    answer.write(json.dumps(result.__dict__).encode())
    answer.close()


if __name__ == "__main__":
    main()
