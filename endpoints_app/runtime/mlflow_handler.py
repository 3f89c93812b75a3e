"""MLflow models in the studio's model server: no score.py, loaded as a pyfunc model by MLflow itself
(in the model's environment, which the studio builds from the model's own requirements).

Request shapes, as the anchors take them for MLflow models:
- {"input_data": {"columns": [...], "index": [...], "data": [[...], ...]}}   (split; index optional)
- {"input_data": [{"col": value, ...}, ...]}                                (records)
- {"input_data": [[...], ...]}                                              (rows in the signature's order)
- {"dataframe_split": {...}} and {"dataframe_records": [...]}                (MLflow's own serving shapes)
Inputs are checked against the model's signature before the model sees them: a missing column or a
value of the wrong type is a 400 naming the column and the type. The answer is the predictions as a
JSON list (a DataFrame's rows as records)."""

from __future__ import annotations

from typing import Any

from endpoints_app.runtime import batchio
from endpoints_app.runtime.handlers import BadRequest, Handler, ModelInputError, _jsonable

# MLflow's column types -> (what a JSON value must be, the pandas dtype it becomes).
NUMBER_TYPES = {"double": "float64", "float": "float32", "long": "int64", "integer": "int32"}
SHAPES = ("input_data", "dataframe_split", "dataframe_records")


def _fits(kind: str, value: Any) -> bool:
    if value is None:
        return True  # a missing value; the model decides
    if kind in NUMBER_TYPES:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return kind not in ("long", "integer") or float(value).is_integer()
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    return True


def _from_text(kind: str, text: str) -> Any:
    """A CSV cell as the column's type (ValueError when it is not one)."""
    if text == "":
        return None
    if kind in ("double", "float"):
        return float(text)
    if kind in ("long", "integer"):
        return int(float(text)) if float(text).is_integer() else int(text)
    if kind == "boolean":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    return text


class MlflowHandler(Handler):
    format = "mlflow"

    def load(self) -> None:
        import mlflow.pyfunc

        self.model = mlflow.pyfunc.load_model(self.artifact)
        schema = self.model.metadata.get_input_schema()
        # [(name, type, required)] for a column-based signature; None: no signature, or a tensor one.
        self.columns = None
        if schema is not None and not schema.is_tensor_spec() and schema.has_input_names():
            self.columns = [(c.name, getattr(c.type, "name", str(c.type)), bool(getattr(c, "required", True)))
                            for c in schema.inputs]

    # -- online ---------------------------------------------------------------------------------
    def _table(self, payload: Any) -> tuple[list[str] | None, list | None, list]:
        """(columns, index, rows) of any accepted request shape."""
        if not isinstance(payload, dict) or not any(k in payload for k in SHAPES):
            raise BadRequest('Expected {"input_data": {"columns": [...], "data": [[...]]}} (or dataframe_split, '
                             'dataframe_records).')
        data = next(payload[k] for k in SHAPES if k in payload)
        if isinstance(data, dict):
            if "data" not in data:
                raise BadRequest('"input_data" needs "data": a list of rows (with "columns" naming them).')
            columns, index, rows = data.get("columns"), data.get("index"), data["data"]
        elif isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
            columns = list(dict.fromkeys(k for r in data for k in r))
            index, rows = None, [[r.get(c) for c in columns] for r in data]
        else:
            columns, index, rows = None, None, data
        if not isinstance(rows, list) or not rows:
            raise BadRequest('"data" must be a non-empty list of rows.')
        if columns is not None and (not isinstance(columns, list) or not all(isinstance(c, str) for c in columns)):
            raise BadRequest('"columns" must be a list of strings.')
        if index is not None and (not isinstance(index, list) or len(index) != len(rows)):
            raise BadRequest('"index" must be a list with one label per row.')
        if columns is None and self.columns is not None:
            columns = [name for name, _, _ in self.columns]
        for number, row in enumerate(rows):
            if not isinstance(row, list) or (columns is not None and len(row) != len(columns)):
                raise BadRequest(f"Row {number} must be a list of {len(columns) if columns else 'the'} values"
                                 f"{' (' + ', '.join(columns) + ')' if columns else ''}.")
        return columns, index, rows

    def _frame(self, columns: list[str] | None, index: list | None, rows: list, where: str = ""):
        import pandas as pd

        if self.columns is None:
            return pd.DataFrame(rows, columns=columns, index=index)
        given = {name: i for i, name in enumerate(columns or [])}
        for name, kind, required in self.columns:
            if name not in given:
                if required:
                    raise BadRequest(f"{where}Missing column {name!r} ({kind}), which the model's signature needs.")
                continue
            position = given[name]
            for number, row in enumerate(rows):
                if not _fits(kind, row[position]):
                    raise BadRequest(f"{where}Column {name!r} takes {kind} values; row {number} has "
                                     f"{row[position]!r}.")
        frame = pd.DataFrame(rows, columns=columns, index=index)
        kept = [name for name, _, _ in self.columns if name in given]
        frame = frame[kept]
        for name, kind, _ in self.columns:
            if name in given and kind in NUMBER_TYPES and not frame[name].isna().any():
                frame[name] = frame[name].astype(NUMBER_TYPES[kind])
        return frame

    def _predict(self, frame) -> list:
        try:
            result = self.model.predict(frame)
        except Exception as exc:  # noqa: BLE001 - MLflow's and the flavor's own errors are the model's answer
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelInputError(f"{type(exc).__name__}: {first}") from None
        if hasattr(result, "to_dict") and hasattr(result, "columns"):
            return result.to_dict("records")
        result = _jsonable(result)
        return result if isinstance(result, list) else [result]

    def rows(self, payload: Any) -> int:
        return 0

    def score(self, body: bytes) -> Any:
        return self._predict(self._frame(*self._table(self.parse(body))))

    # -- batch: CSV and JSON-lines files, one prediction per row ------------------------------------
    def batch_rows(self, items: list[dict]) -> tuple[list[str], int, str]:
        lines: list[str] = []
        count = 0
        kinds = {name: kind for name, kind, _ in (self.columns or [])}
        for item in items:
            try:
                columns, rows = batchio.read_table(item["path"], item["start"], item["stop"])
            except batchio.InputError as exc:
                raise ModelInputError(str(exc).replace(item["path"], item["file"])) from None
            except FileNotFoundError:
                raise ModelInputError(f"{item['file']}: no such file") from None
            if not rows:
                continue
            if columns is None and self.columns is not None:
                columns = [name for name, _, _ in self.columns]
            if batchio.kind_of(item["path"]) == "csv":
                typed = []
                for number, row in enumerate(rows, start=item["start"]):
                    try:
                        typed.append([_from_text(kinds.get(c, "string"), v) for c, v in zip(columns, row,
                                                                                             strict=False)])
                    except ValueError:
                        bad = next(c for c, v in zip(columns, row, strict=False)
                                   if not _cell_fits(kinds.get(c, "string"), v))
                        raise ModelInputError(f"{item['file']} row {number}: column {bad!r} takes "
                                              f"{kinds[bad]} values.") from None
                rows = typed
            try:
                frame = self._frame(columns, None, rows, where=f"{item['file']}: ")
            except BadRequest as exc:
                raise ModelInputError(str(exc)) from None
            predictions = self._predict(frame)
            lines.append(batchio.prediction_lines(item["file"], item["start"], predictions))
            count += len(predictions)
        return ["file", "row", "prediction"], count, "".join(lines)


def _cell_fits(kind: str, text: str) -> bool:
    try:
        _from_text(kind, text)
        return True
    except ValueError:
        return False
