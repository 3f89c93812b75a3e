"""Batch scoring inside a model server: one mini-batch per `POST /batch` request.

Request: {"items": [{"path": <absolute path>, "file": <name shown in the output>, "start": n,
"stop": n | null}], "output_action": "append_row" | "summary_only"}.
Answer: the mini-batch's output rows as CSV text with a header (`file,row,<outputs>`; empty for
summary_only), with `x-rows-in` and `x-rows-out` headers. The worker writes it to the
mini-batch's part file; this process never writes outputs.

Built-in handlers: tabular models (scikit-learn, ONNX) read CSV and JSON-lines rows and answer a
`prediction` per row; embeddings read text files, one text per line, and answer an `embedding`
(a JSON list) per line. A user's score.py gets the Azure batch contract: `run(mini_batch)` with the
list of the mini-batch's file paths, returning one result per row it scored (a list, an array, a
DataFrame, or a list of dicts, which become columns). In a batch deployment's sandbox it may also
write files to the folder $AZUREML_BI_OUTPUT_PATH (a bounded tmpfs of its own, runtime/sandbox.py):
run() calls then take turns, each starting on an empty folder, and what one call wrote goes back
with its answer (a tar, BatchAnswer.tar) and is emptied, so every file belongs to one mini-batch.
This process is the user's: the worker trusts nothing of that tar (controller/outputs.py)."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
import warnings
from pathlib import Path
from typing import Any

from endpoints_app.runtime import batchio
from endpoints_app.runtime.batchio import cell
from endpoints_app.runtime.handlers import (
    BadRequest,
    CustomHandler,
    EmbeddingsHandler,
    Handler,
    ModelInputError,
    OnnxHandler,
    SklearnHandler,
)


def _items(payload: Any) -> list[dict]:
    if not isinstance(payload, dict) or not isinstance(payload.get("items"), list) or not payload["items"]:
        raise BadRequest('Expected {"items": [{"path", "file", "start", "stop"}, ...]}.')
    items = []
    for item in payload["items"]:
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise BadRequest("Every item needs a path.")
        start = int(item.get("start") or 0)
        stop = item.get("stop")
        items.append({"path": item["path"], "file": str(item.get("file") or item["path"]), "start": start,
                      "stop": int(stop) if stop is not None else None})
    return items


def _sklearn_predict(handler: SklearnHandler, matrix) -> list:
    import sklearn

    with warnings.catch_warnings(), sklearn.config_context(assume_finite=False, skip_parameter_validation=True):
        warnings.simplefilter("ignore", UserWarning)
        return handler.model.predict(matrix).tolist()


def _onnx_predict(handler: OnnxHandler, matrix) -> list:
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

    try:
        values = handler.session.run(None, {handler.inputs[0].name: matrix})
    except (InvalidArgument, Fail) as exc:
        raise ModelInputError(str(exc)) from None
    named = dict(zip(handler.outputs, values, strict=True))
    return (named["label"] if "label" in named else values[0]).tolist()


def _passed_through(columns: list[str] | None, table: list, wanted: list[str], file: str) -> list[list]:
    """The values of the `wanted` input columns, row by row (output_columns)."""
    absent = [c for c in wanted if c not in (columns or [])]
    if absent:
        raise ModelInputError(f"{file}: output_columns names {', '.join(absent)}, which the file does not have")
    at = [columns.index(c) for c in wanted]
    return [[row[i] if isinstance(row, list) and i < len(row) else "" for i in at] for row in table]


def _tabular(handler: Handler, items: list[dict], output_columns: list[str]) -> tuple[list[str], int, str]:
    """(header, rows, CSV lines without the header): predictions are formatted as they come; with
    output_columns, those input columns come first, copied from each row."""
    lines: list[str] = []
    count = 0
    feature_names = getattr(handler, "feature_names", None)
    dtype = getattr(handler, "dtype", float)
    for item in items:
        passed: list[list] = []
        try:
            if getattr(handler, "columns", None) is not None or output_columns:
                columns, table = batchio.read_table(item["path"], item["start"], item["stop"])
                if output_columns:
                    passed = _passed_through(columns, table, output_columns, item["file"])
                if getattr(handler, "columns", None) is not None:
                    # Fitted on a DataFrame: the file's columns by name, text cells as the model takes them.
                    matrix = handler.frame(table, columns) if table else []
                else:
                    matrix = batchio.table_matrix(item["file"], columns, table, feature_names, dtype)
            else:
                matrix = batchio.read_matrix(item["path"], item["start"], item["stop"], feature_names, dtype)
        except batchio.InputError as exc:
            raise ModelInputError(str(exc).replace(item["path"], item["file"])) from None
        except FileNotFoundError:
            raise ModelInputError(f"{item['file']}: no such file") from None
        except ModelInputError as exc:
            raise ModelInputError(f"{item['file']}: {exc}") from None
        if not len(matrix):
            continue
        try:
            if isinstance(handler, SklearnHandler):
                predictions = _sklearn_predict(handler, matrix)
            else:
                predictions = _onnx_predict(handler, matrix)
        except ModelInputError as exc:
            raise ModelInputError(f"{item['file']}: {exc}") from None
        except (ValueError, TypeError, IndexError) as exc:
            raise ModelInputError(f"{item['file']}: {exc}") from None
        if output_columns:
            rows = [[item["file"], item["start"] + i, *map(cell, passed[i]), cell(value)]
                    for i, value in enumerate(predictions)]
            # to_csv() writes the rows as every output is written; the header line (empty here) is dropped.
            lines.append(batchio.to_csv([], rows).removeprefix("\n"))
        else:
            lines.append(batchio.prediction_lines(item["file"], item["start"], predictions))
        count += len(predictions)
    return ["file", "row", *output_columns, "prediction"], count, "".join(lines)


def _embeddings(handler: EmbeddingsHandler, items: list[dict]) -> tuple[list[str], list]:
    rows: list = []
    for item in items:
        try:
            texts = batchio.read_texts(item["path"], item["start"], item["stop"])
        except batchio.InputError as exc:
            raise ModelInputError(str(exc).replace(item["path"], item["file"])) from None
        except FileNotFoundError:
            raise ModelInputError(f"{item['file']}: no such file") from None
        if not texts:
            continue
        vectors, _ = handler.embed(texts)
        file, start = item["file"], item["start"]
        rows.extend([file, start + i, json.dumps([round(float(v), 6) for v in vector])]
                    for i, vector in enumerate(vectors))
    return ["file", "row", "embedding"], rows


def _records(result: Any) -> list:
    if result is None:
        return []
    if hasattr(result, "to_dict") and hasattr(result, "columns"):  # a pandas DataFrame
        return result.to_dict("records")
    tolist = getattr(result, "tolist", None)
    if tolist is not None:
        result = tolist()
    if isinstance(result, (str, bytes, dict)) or not hasattr(result, "__iter__"):
        return [result]
    return list(result)


def _keyword_inputs(run: Any, inputs: Any) -> dict:
    """The job's other inputs (literals, lists of file paths) that `run` names as parameters (or all
    of them when it takes **kwargs)."""
    if not isinstance(inputs, dict) or not inputs:
        return {}
    import inspect

    try:
        params = inspect.signature(run).parameters
    except (TypeError, ValueError):
        return {}
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return dict(inputs)
    return {k: v for k, v in inputs.items() if k in params}


OUTPUT_ENV = "AZUREML_BI_OUTPUT_PATH"
# One run() at a time writes to the output folder, so the files it holds after run() are that call's.
_output_turn = threading.Lock()


def output_folder() -> Path | None:
    path = os.environ.get(OUTPUT_ENV)
    return Path(path) if path and os.path.isdir(path) else None


def _empty(folder: Path) -> None:
    for entry in os.scandir(folder):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            os.unlink(entry.path)


def pack_output(folder: Path, rows_csv: bytes) -> bytes:
    """The tar the worker reads: the rows first, then the folder as it is (links stay links: the worker
    names and refuses them)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(batchio.ROWS_MEMBER)
        info.size = len(rows_csv)
        tar.addfile(info, io.BytesIO(rows_csv))
        for entry in sorted(os.listdir(folder)):
            tar.add(folder / entry, arcname=f"{batchio.OUTPUT_MEMBER}/{entry}")
    return buf.getvalue()


def _custom(handler: CustomHandler, items: list[dict], inputs: Any = None) -> tuple[list[str], list]:
    paths = [item["path"] for item in items]
    try:
        result = handler.run(paths, **_keyword_inputs(handler.run, inputs))
    except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
        raise ModelInputError(f"{type(exc).__name__}: {exc}") from None
    records = _records(result)
    # One result per file: name the file; otherwise results are numbered in the mini-batch.
    files = [item["file"] for item in items] if len(records) == len(items) else None
    keys: list[str] = []
    if records and all(isinstance(r, dict) for r in records):
        for record in records:
            keys.extend(k for k in record if k not in keys)
        rows = [[files[i] if files else "", i, *(cell(r.get(k)) for k in keys)] for i, r in enumerate(records)]
        return ["file", "row", *map(str, keys)], rows
    return ["file", "row", "prediction"], [[files[i] if files else "", i, cell(r)] for i, r in enumerate(records)]


def score_mini_batch(handler: Handler, body: bytes) -> batchio.BatchAnswer:
    payload = handler.parse(body)
    items = _items(payload)
    action = payload.get("output_action") or "append_row"
    if action not in ("append_row", "summary_only"):
        raise BadRequest("output_action must be append_row or summary_only.")
    output_columns = payload.get("output_columns") or []
    if not isinstance(output_columns, list) or not all(isinstance(c, str) for c in output_columns):
        raise BadRequest("output_columns must be a list of column names.")
    batch_rows = getattr(handler, "batch_rows", None)  # MLflow models read their own columns' types
    if batch_rows is not None and output_columns:
        raise BadRequest("output_columns is not supported for MLflow models yet.")
    if isinstance(handler, (SklearnHandler, OnnxHandler)) or batch_rows is not None:
        header, count, lines = batch_rows(items) if batch_rows else _tabular(handler, items, output_columns)
        text = batchio.to_csv(header, []) + lines if action == "append_row" else ""
    else:
        if isinstance(handler, EmbeddingsHandler):
            header, rows = _embeddings(handler, items)
        elif isinstance(handler, CustomHandler):
            folder = output_folder()
            if folder is not None:
                return _custom_with_folder(handler, folder, items, payload.get("inputs"), action)
            header, rows = _custom(handler, items, payload.get("inputs"))
        else:
            raise BadRequest(f"Batch scoring is not supported for format {handler.format!r}.")
        count = len(rows)
        text = batchio.to_csv(header, rows) if action == "append_row" else ""
    return batchio.BatchAnswer(csv=text.encode(), rows_in=count, rows_out=count if action == "append_row" else 0)


def _custom_with_folder(handler: CustomHandler, folder: Path, items: list[dict], inputs: Any,
                        action: str) -> batchio.BatchAnswer:
    with _output_turn:
        _empty(folder)  # what a killed or failed call left is no one's output
        try:
            header, rows = _custom(handler, items, inputs)
            text = (batchio.to_csv(header, rows) if action == "append_row" else "").encode()
            tar = pack_output(folder, text)
        finally:
            _empty(folder)
    count = len(rows)
    return batchio.BatchAnswer(csv=text, rows_in=count, rows_out=count if action == "append_row" else 0, tar=tar)
