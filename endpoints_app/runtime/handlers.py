"""Model handlers of the generic model server: each loads one artifact and turns
a parsed request into a JSON-ready answer.

This module runs inside model-server processes only (never in web, gateway or
worker processes): it unpickles models and imports users' score.py files.

Request conventions (the same as the model cards document):
- tabular (sklearn, onnx): {"input_data": {"columns": [...], "data": [[...], ...]}},
  {"input_data": [[...], ...]}, {"data": [[...], ...]} or records {"input_data": [{"col": value}, ...]};
  a scikit-learn model fitted on a DataFrame (it has feature_names_in_) is scored with a DataFrame
  built from them, so string and category columns reach its ColumnTransformer as they were fitted;
- embeddings: {"input_data": ["text", ...]}, {"inputs": [...]} or {"input": "text" | [...]};
- custom: the raw request body goes to the user's run(raw_data) unchanged.
"""

from __future__ import annotations

import base64
import importlib.util
import inspect
import json
import sys
import warnings
from pathlib import Path
from typing import Any


class BadRequest(Exception):
    """The request is not in a shape the server understands (400)."""


class ModelInputError(Exception):
    """The model rejected the input: wrong shape, wrong types (422)."""


def _tabular_rows(payload: Any) -> tuple[list, list[str] | None]:
    if not isinstance(payload, dict):
        raise BadRequest('Expected a JSON object with "input_data" or "data".')
    if "input_data" in payload:
        data = payload["input_data"]
    elif "data" in payload:
        data = payload["data"]
    else:
        raise BadRequest('Expected "input_data": {"columns": [...], "data": [[...]]} or "data": [[...]].')
    columns = None
    if isinstance(data, dict):
        columns = data.get("columns")
        if "data" not in data:
            raise BadRequest('"input_data" needs a "data" list of rows.')
        data = data["data"]
        if columns is not None and (
            not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)
        ):
            raise BadRequest('"columns" must be a list of strings.')
    if not isinstance(data, list) or not data:
        raise BadRequest('"data" must be a non-empty list of rows.')
    return data, columns


def _to_matrix(rows: list, columns: list[str] | None, feature_names: list[str] | None, dtype) -> Any:
    import numpy as np

    if feature_names is not None and all(isinstance(row, dict) for row in rows):
        rows, columns = _records_to_rows(rows, feature_names), feature_names
    if columns is not None and feature_names is not None and columns != feature_names:
        missing = [f for f in feature_names if f not in columns]
        if missing:
            raise ModelInputError(f"Missing columns: {', '.join(missing)}.")
        order = [columns.index(f) for f in feature_names]
        rows = [[row[i] for i in order] if isinstance(row, list) else row for row in rows]
    try:
        matrix = np.asarray(rows, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ModelInputError(f"Rows must be lists of numbers of the same length: {exc}") from None
    if matrix.ndim == 1:
        raise ModelInputError("Each row must be a list of feature values (got a flat list).")
    if matrix.ndim > 2:
        matrix = matrix.reshape(matrix.shape[0], -1)
    return matrix


def _records_to_rows(records: list[dict], names: list[str]) -> list[list]:
    """Records ({"column": value} per row) as lists in the model's column order."""
    missing = [n for n in names if any(n not in record for record in records)]
    if missing:
        raise ModelInputError(f"Missing columns: {', '.join(missing)}.")
    return [[record[n] for n in names] for record in records]


def _encoders(estimator: Any, found: list[tuple[list[str] | None, list[list]]],
              text_columns: list[str]) -> None:
    """Encoders inside the model (OneHotEncoder, OrdinalEncoder...) as (their column names, or None when
    fitted on an array, and their categories), found through pipelines, column transformers and feature
    unions; and columns a transformer reads as text by name (a vectoriser given one column)."""
    categories = getattr(estimator, "categories_", None)
    if categories is not None:
        names = getattr(estimator, "feature_names_in_", None)
        found.append(([str(n) for n in names] if names is not None else None,
                      [[_jsonable(v) for v in values] for values in categories]))
    for attr in ("steps", "transformers_", "transformer_list"):
        for part in getattr(estimator, attr, None) or []:
            if not isinstance(part, tuple) or len(part) < 2 or isinstance(part[1], str):
                continue  # "drop" / "passthrough"
            if attr == "transformers_" and len(part) > 2 and isinstance(part[2], str):
                text_columns.append(part[2])
            _encoders(part[1], found, text_columns)


def frame_columns(model: Any) -> list[dict] | None:
    """[{name, type, categories?}] of a model fitted on a DataFrame, or None for a model fitted on
    arrays. A column an encoder knows is a string column (or a number column when its categories
    are numbers); any other column is a number."""
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        return None
    found: list[tuple[list[str] | None, list[list]]] = []
    text_columns: list[str] = []
    _encoders(model, found, text_columns)
    encoded: dict[str, list] = {name: [] for name in text_columns}
    for encoder_columns, categories in found:
        if encoder_columns is not None and len(encoder_columns) == len(categories):
            encoded.update(zip(encoder_columns, categories, strict=True))
    columns = []
    for name in (str(n) for n in names):
        if name not in encoded:
            columns.append({"name": name, "type": "number"})
            continue
        values = encoded[name]
        numeric = bool(values) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        column: dict[str, Any] = {"name": name, "type": "number" if numeric else "string"}
        if values:
            column["categories"] = values[:50]
        columns.append(column)
    return columns


def unscorable_reason(model: Any) -> str | None:
    """Why the studio could never score this model, or None. Requests are JSON rows: a model fitted on
    a DataFrame gets a DataFrame, one fitted on arrays gets numbers, so an array model whose encoders
    learnt text categories can never be given them."""
    if getattr(model, "feature_names_in_", None) is not None:
        return None
    found: list[tuple[list[str] | None, list[list]]] = []
    _encoders(model, found, [])
    text = [v for _names, categories in found for values in categories for v in values if isinstance(v, str)]
    if text:
        return ("It was fitted on an array holding text (categories such as "
                f"{text[0]!r}); requests reach a model as JSON numbers unless it was fitted on a pandas "
                "DataFrame: fit it on a DataFrame so its columns have names, then register it again.")
    return None


def frame_sample_and_schema(columns: list[dict]) -> tuple[dict, dict]:
    """A sample request (each column's first category, or 0) and the JSON schema naming each
    column and its type, for a model scored with a DataFrame."""
    row = [(c.get("categories") or [0.0 if c["type"] == "number" else ""])[0] for c in columns]
    names = [c["name"] for c in columns]
    described = ", ".join(f"{c['name']} ({c['type']})" for c in columns)
    items = []
    for c in columns:
        item: dict[str, Any] = {"type": c["type"]}
        if c["type"] == "string" and c.get("categories"):
            item["enum"] = c["categories"]
        items.append(item)
    schema = {
        "type": "object",
        "description": f'POST /score with {{"input_data": {{"columns": [...], "data": [[...]]}}}} or records '
                       f'{{"input_data": [{{"column": value, ...}}]}}: rows of {len(columns)} columns: {described}.',
        "properties": {"input_data": {"type": "object", "properties": {
            "columns": {"type": "array", "items": {"type": "string"}, "example": names},
            "data": {"type": "array", "items": {"type": "array", "prefixItems": items,
                                                "minItems": len(columns), "maxItems": len(columns)}}},
            "required": ["data"]}},
        "required": ["input_data"],
        "x-columns": columns,
    }
    return {"input_data": {"columns": names, "data": [row]}}, schema


def _refuse_constant(name: str) -> Any:
    # Python's json accepts NaN and Infinity; JSON does not, and models cannot use them.
    raise ValueError(f"{name} is not a JSON number")


def _jsonable(values: Any) -> Any:
    tolist = getattr(values, "tolist", None)
    return tolist() if tolist is not None else values


class Handler:
    format = ""
    # Fast models answer small batches on the event loop; threads cost more than they save.
    inline_rows = 0

    def __init__(self, artifact: str | None, name: str = ""):
        self.artifact = artifact
        self.name = name

    def load(self) -> None:
        raise NotImplementedError

    def rows(self, payload: Any) -> int:
        return 0

    def score(self, body: bytes) -> Any:
        raise NotImplementedError

    @staticmethod
    def parse(body: bytes) -> Any:
        try:
            return json.loads(body, parse_constant=_refuse_constant)
        except (UnicodeDecodeError, ValueError) as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from None
        except RecursionError:
            raise BadRequest("Request body is JSON nested too deeply.") from None


# Classifiers whose predict() is, by construction, classes_[argmax(predict_proba())]:
# for them one predict_proba() call answers both (sklearn's per-call checks dominate small requests).
_ARGMAX_CLASSIFIERS = {
    "LogisticRegression", "RandomForestClassifier", "ExtraTreesClassifier", "DecisionTreeClassifier",
    "GaussianNB", "HistGradientBoostingClassifier",
}


class SklearnHandler(Handler):
    format = "sklearn"
    inline_rows = 64

    def load(self) -> None:
        import joblib

        self.use(joblib.load(self.artifact))

    def use(self, model) -> None:
        if not callable(getattr(model, "predict", None)):
            raise TypeError(f"{type(model).__name__} has no predict() method")
        self.model = model
        names = getattr(model, "feature_names_in_", None)
        if names is None:
            # Set by the studio's seed: names known without fitting on a DataFrame.
            names = getattr(model, "studio_feature_names", None)
        self.feature_names = [str(n) for n in names] if names is not None else None
        # Fitted on a DataFrame: score with one (its ColumnTransformer selects columns by name).
        self.columns = frame_columns(model)
        classes = getattr(model, "classes_", None)
        self.classes = _jsonable(classes) if classes is not None else None
        self.proba = self.classes is not None and callable(getattr(model, "predict_proba", None))
        final = model.steps[-1][1] if hasattr(model, "steps") else model
        self.argmax = self.proba and type(final).__name__ in _ARGMAX_CLASSIFIERS

    def predict(self, rows: list, columns: list[str] | None) -> dict:
        import sklearn

        if self.columns is not None:
            matrix = self.frame(rows, columns)
        else:
            matrix = _to_matrix(rows, columns, self.feature_names, float)
        try:
            # Inputs are finite (parse() refuses NaN and Infinity), so sklearn's finiteness scan is skipped.
            with warnings.catch_warnings(), sklearn.config_context(assume_finite=True,
                                                                    skip_parameter_validation=True):
                # Rows arrive without feature names by design; sklearn would warn on every call.
                warnings.simplefilter("ignore", UserWarning)
                if not self.proba:
                    return {"predictions": _jsonable(self.model.predict(matrix))}
                proba = self.model.predict_proba(matrix)
                if self.argmax:
                    predictions = [self.classes[i] for i in proba.argmax(axis=1).tolist()]
                else:
                    predictions = _jsonable(self.model.predict(matrix))
        except (ValueError, TypeError, IndexError) as exc:
            raise ModelInputError(str(exc)) from None
        return {
            "predictions": predictions,
            "classes": self.classes,
            "probabilities": [[round(p, 6) for p in row] for row in proba.tolist()],
        }

    def frame(self, rows: list, columns: list[str] | None) -> Any:
        """The DataFrame the model was fitted on: its columns, in its order, number columns as numbers
        (CSV cells arrive as text)."""
        import pandas as pd

        names = [c["name"] for c in self.columns]
        if all(isinstance(row, dict) for row in rows):
            rows, columns = _records_to_rows(rows, names), names
        columns = columns if columns is not None else names
        if not all(isinstance(row, list) and len(row) == len(columns) for row in rows):
            raise ModelInputError(f"Each row must be a list of {len(columns)} values ({', '.join(columns)}), "
                                  "or a record {column: value}.")
        missing = [n for n in names if n not in columns]
        if missing:
            raise ModelInputError(f"Missing columns: {', '.join(missing)}.")
        frame = pd.DataFrame(rows, columns=columns)[names]
        for column in self.columns:
            if column["type"] == "number":
                try:
                    frame[column["name"]] = pd.to_numeric(frame[column["name"]])
                except (TypeError, ValueError) as exc:
                    raise ModelInputError(f"Column {column['name']} takes numbers: {exc}") from None
        return frame

    def score(self, body: bytes) -> Any:
        rows, columns = _tabular_rows(self.parse(body))
        return self.predict(rows, columns)


class OnnxHandler(Handler):
    format = "onnx"
    inline_rows = 64

    def load(self) -> None:
        import numpy as np
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(self.artifact, sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = [o.name for o in self.session.get_outputs()]
        kinds = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                 "tensor(int32)": np.int32}
        self.dtype = kinds.get(self.inputs[0].type, np.float32)
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.feature_names = json.loads(meta["feature_names"]) if "feature_names" in meta else None
        self.classes = json.loads(meta["classes"]) if "classes" in meta else None

    def score(self, body: bytes) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

        rows, columns = _tabular_rows(self.parse(body))
        matrix = _to_matrix(rows, columns, self.feature_names, self.dtype)
        try:
            values = self.session.run(None, {self.inputs[0].name: matrix})
        except (InvalidArgument, Fail) as exc:
            raise ModelInputError(str(exc)) from None
        named = dict(zip(self.outputs, values, strict=True))
        if "label" in named:
            result: dict[str, Any] = {"predictions": _jsonable(named["label"])}
            if "probabilities" in named:
                probs = named["probabilities"]
                if isinstance(probs, list):  # a ZipMap output: one dict per row
                    result["probabilities"] = [[round(float(v), 6) for v in d.values()] for d in probs]
                else:
                    result["probabilities"] = [[round(p, 6) for p in row] for row in probs.tolist()]
                if self.classes is not None:
                    result["classes"] = self.classes
            return result
        if len(values) == 1:
            return {"predictions": _jsonable(values[0])}
        return {"outputs": {k: _jsonable(v) for k, v in named.items()}}


class EmbeddingsHandler(Handler):
    format = "sentence-transformers"

    def load(self) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(self.artifact, device="cpu", local_files_only=True)
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dimensions = int(dimension())

    @staticmethod
    def texts(value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise BadRequest("Input must be a string or a non-empty list of strings.")
        if not all(isinstance(t, str) for t in value):
            raise ModelInputError("Every input must be a string.")
        return value

    def embed(self, texts: list[str]) -> tuple[Any, int]:
        vectors = self.model.encode(texts, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=False)
        tokens = sum(len(ids) for ids in self.model.tokenizer(texts, truncation=True)["input_ids"])
        return vectors, tokens

    def score(self, body: bytes) -> Any:
        payload = self.parse(body)
        if isinstance(payload, list):
            value = payload
        elif isinstance(payload, dict):
            for key in ("input_data", "inputs", "input"):
                if key in payload:
                    value = payload[key]
                    break
            else:
                raise BadRequest('Expected "input_data": ["text", ...] (or "inputs" / "input").')
        else:
            raise BadRequest('Expected "input_data": ["text", ...].')
        vectors, tokens = self.embed(self.texts(value))
        return {"embeddings": vectors.tolist(), "dimensions": self.dimensions, "usage": {"prompt_tokens": tokens}}

    def openai_embeddings(self, body: bytes) -> Any:
        import numpy as np

        payload = self.parse(body)
        if not isinstance(payload, dict) or "input" not in payload:
            raise BadRequest('Expected {"input": "text" | ["text", ...], "model": ...}.')
        encoding = payload.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise BadRequest('"encoding_format" must be "float" or "base64".')
        vectors, tokens = self.embed(self.texts(payload["input"]))
        data = []
        for i, vector in enumerate(vectors):
            if encoding == "base64":
                embedding: Any = base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
            else:
                embedding = vector.tolist()
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        return {
            "object": "list",
            "data": data,
            "model": payload.get("model") or self.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }


class CustomHandler(Handler):
    """A user's score.py: init() once, then run(raw_data) with the request body as text."""

    format = "custom"

    def __init__(self, artifact: str | None, name: str = "", code_dir: str | None = None,
                 scoring_script: str = "score.py"):
        super().__init__(artifact, name)
        self.code_dir = Path(code_dir) if code_dir else None
        self.scoring_script = scoring_script or "score.py"

    def load(self) -> None:
        module = load_scoring_module(self.code_dir, self.scoring_script)
        module.init()
        self.run = module.run

    def score(self, body: bytes) -> Any:
        try:
            raw = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("Request body must be UTF-8 text.") from None
        try:
            result = self.run(raw)
        except (ValueError, TypeError, KeyError) as exc:
            # The model's own complaint about its input.
            raise ModelInputError(f"{type(exc).__name__}: {exc}") from None
        if isinstance(result, (bytes, bytearray)):
            result = result.decode("utf-8")
        if isinstance(result, str):
            # Many score.py files return json.dumps(...): pass such text through as JSON.
            try:
                return json.loads(result)
            except ValueError:
                return result
        return _jsonable(result)


def load_scoring_module(code_dir: Path | None, scoring_script: str):
    """Import a user's scoring script as a module and check it has init() and run()."""
    if code_dir is None:
        raise FileNotFoundError("No code directory given for the scoring script")
    script = (code_dir / scoring_script).resolve()
    if not script.is_file():
        raise FileNotFoundError(f"Scoring script {scoring_script!r} not found in {code_dir}")
    # The script's folder first on sys.path so it can import its helper modules.
    sys.path.insert(0, str(script.parent))
    spec = importlib.util.spec_from_file_location(script.stem, script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[script.stem] = module
    spec.loader.exec_module(module)
    for fn in ("init", "run"):
        if not callable(getattr(module, fn, None)):
            raise AttributeError(f"{scoring_script} must define a function {fn}()")
    params = inspect.signature(module.run).parameters
    if not params:
        raise TypeError(f"{scoring_script}: run() must take the request data as an argument")
    return module


def make_handler(fmt: str, artifact: str | None, name: str = "", code_dir: str | None = None,
                 scoring_script: str = "score.py") -> Handler:
    if fmt == "sklearn":
        return SklearnHandler(artifact, name)
    if fmt == "onnx":
        return OnnxHandler(artifact, name)
    if fmt == "sentence-transformers":
        return EmbeddingsHandler(artifact, name)
    if fmt == "custom":
        return CustomHandler(artifact, name, code_dir=code_dir, scoring_script=scoring_script)
    if fmt == "mlflow":
        from endpoints_app.runtime.mlflow_handler import MlflowHandler

        return MlflowHandler(artifact, name)
    raise ValueError(f"Unknown format {fmt!r}")
