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
DataFrame, or a list of dicts, which become columns)."""

from __future__ import annotations

import json
import warnings
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


def _tabular(handler: Handler, items: list[dict]) -> tuple[list[str], int, str]:
    """(header, rows, CSV lines without the header): predictions are formatted as they come."""
    lines: list[str] = []
    count = 0
    feature_names = getattr(handler, "feature_names", None)
    dtype = getattr(handler, "dtype", float)
    for item in items:
        try:
            matrix = batchio.read_matrix(item["path"], item["start"], item["stop"], feature_names, dtype)
        except batchio.InputError as exc:
            raise ModelInputError(str(exc).replace(item["path"], item["file"])) from None
        except FileNotFoundError:
            raise ModelInputError(f"{item['file']}: no such file") from None
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
        lines.append(batchio.prediction_lines(item["file"], item["start"], predictions))
        count += len(predictions)
    return ["file", "row", "prediction"], count, "".join(lines)


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


def _custom(handler: CustomHandler, items: list[dict]) -> tuple[list[str], list]:
    paths = [item["path"] for item in items]
    try:
        result = handler.run(paths)
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
    if isinstance(handler, (SklearnHandler, OnnxHandler)):
        header, count, lines = _tabular(handler, items)
        text = batchio.to_csv(header, []) + lines if action == "append_row" else ""
    else:
        if isinstance(handler, EmbeddingsHandler):
            header, rows = _embeddings(handler, items)
        elif isinstance(handler, CustomHandler):
            header, rows = _custom(handler, items)
        else:
            raise BadRequest(f"Batch scoring is not supported for format {handler.format!r}.")
        count = len(rows)
        text = batchio.to_csv(header, rows) if action == "append_row" else ""
    return batchio.BatchAnswer(csv=text.encode(), rows_in=count, rows_out=count if action == "append_row" else 0)
