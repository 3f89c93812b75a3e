"""Reading batch inputs: CSV, JSON lines and text files, whole or by row range.

Plain Python (numpy, imported lazily, for tabular arrays) and no Django: model servers read
mini-batches with it, and the services use it to check and count a job's input before it starts.

Rows: a CSV's rows after its header line; a JSON-lines file's lines (each an object of
column -> value, or a list of values); a text file's lines (one text each, for embeddings).
Blank lines are no rows. Row numbers count from 0 in that order, so `start`/`stop` ranges
and the output's `row` column agree everywhere."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

CSV_SUFFIXES = {".csv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
TEXT_SUFFIXES = {".txt", ".text"}
READ_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | TEXT_SUFFIXES


class InputError(ValueError):
    """A file that cannot be read as the rows it claims to hold (its name is in the message)."""


def kind_of(path: str | Path) -> str | None:
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def csv_header(path: str | Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        for row in csv.reader(fh):
            if row:
                return [c.strip() for c in row]
    return []


def _lines(path: str | Path):
    """Non-blank lines, without their line ends."""
    with open(path, encoding="utf-8-sig") as fh:
        for line in fh:
            line = line.rstrip("\r\n")
            if line.strip():
                yield line


def _csv_rows(path: str | Path):
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        header = None
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = row
                continue
            yield row


# ASCII whitespace as str.strip() sees it (but the line feed), and the delimiter: a line of only these is
# a blank CSV row.
_BLANK_ROW_BYTES = b", \t\r\x0b\x0c\x1c\x1d\x1e\x1f"


def _count_plain_csv_rows(path: str | Path) -> int | None:
    """count_rows() of a CSV whose lines are its rows (ASCII, no quote character, so no cell holds a
    line break; no lone CR; no line over csv's field size limit), counted on its bytes, ~5x faster
    than the csv reader; None for any other file (then the csv reader counts it)."""
    lines = 0
    with open(path, "rb") as fh:
        first = True
        while chunk := fh.readlines(1 << 20):
            if first and chunk[0].startswith(b"\xef\xbb\xbf"):
                chunk[0] = chunk[0][3:]  # the UTF-8 BOM utf-8-sig drops
            first = False
            block = b"".join(chunk)
            if (not block.isascii() or b'"' in block or b"\0" in block
                    or block.count(b"\r") != block.count(b"\r\n") or max(map(len, chunk)) > csv.field_size_limit()):
                return None
            # Without delimiters and whitespace, a blank row is an empty line.
            kept = block.translate(None, _BLANK_ROW_BYTES).split(b"\n")
            lines += len(kept) - kept.count(b"")
    return max(lines - 1, 0)  # the first non-blank line is the header


def count_rows(path: str | Path) -> int:
    """Rows the file holds (see the module's docstring); InputError if it is unreadable."""
    kind = kind_of(path)
    try:
        if kind == "csv":
            plain = _count_plain_csv_rows(path)
            return plain if plain is not None else sum(1 for _ in _csv_rows(path))
        return sum(1 for _ in _lines(path))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{Path(path).name}: not readable as {kind or 'text'} ({exc})") from None


def read_texts(path: str | Path, start: int = 0, stop: int | None = None) -> list[str]:
    try:
        return list(islice(_lines(path), start, stop))
    except UnicodeDecodeError as exc:
        raise InputError(f"{Path(path).name}: not UTF-8 text ({exc})") from None


def read_table(path: str | Path, start: int = 0, stop: int | None = None) -> tuple[list[str] | None, list]:
    """(columns or None, rows as lists of cells) for rows [start, stop) of a CSV or JSON-lines file."""
    name = Path(path).name
    kind = kind_of(path)
    try:
        if kind == "csv":
            return csv_header(path), list(islice(_csv_rows(path), start, stop))
        if kind == "jsonl":
            columns: list[str] | None = None
            rows = []
            for number, line in enumerate(islice(_lines(path), start, stop), start=start):
                try:
                    value = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{name} row {number}: not JSON ({exc})") from None
                if isinstance(value, dict):
                    if columns is None:
                        columns = list(value)
                    try:
                        rows.append([value[c] for c in columns])
                    except KeyError as exc:
                        raise InputError(f"{name} row {number}: no value for column {exc}") from None
                elif isinstance(value, list):
                    rows.append(value)
                else:
                    raise InputError(f"{name} row {number}: expected an object or a list of values")
            return columns, rows
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{name}: not readable as {kind} ({exc})") from None
    raise InputError(f"{name}: tabular input must be a .csv or .jsonl file")


def read_matrix(path: str | Path, start: int, stop: int | None, feature_names: list[str] | None, dtype=float):
    """A numeric 2-D array of rows [start, stop), with columns in the model's feature order when
    both the file and the model name them."""

    columns, rows = read_table(path, start, stop)
    return table_matrix(Path(path).name, columns, rows, feature_names, dtype)


def table_matrix(name: str, columns: list[str] | None, rows: list, feature_names: list[str] | None, dtype=float):
    """read_matrix() of rows already read (read_table())."""
    import numpy as np

    if not rows:
        return np.zeros((0, len(feature_names or columns or [])), dtype=dtype)
    if columns is not None and feature_names is not None and columns != feature_names:
        missing = [f for f in feature_names if f not in columns]
        if missing:
            raise InputError(f"{name}: missing columns {', '.join(missing)} (it has {', '.join(columns)})")
        # The model's columns first, so other columns (an id, text) never have to be numbers.
        at = [columns.index(f) for f in feature_names]
        rows = [[row[i] for i in at] if isinstance(row, list) and len(row) == len(columns) else row for row in rows]
    try:
        matrix = np.asarray(rows, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: rows must hold numbers only, of the same length ({exc})") from None
    if matrix.ndim != 2:
        raise InputError(f"{name}: rows must be lists of feature values")
    return matrix


def to_csv(header: list[str], rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


_SCALARS = {int, float, bool}


def prediction_lines(file: str, start: int, values: list) -> str:
    """CSV lines `file,row,value` (rows numbered from `start`), exactly as csv.writer writes them.

    Scalar predictions (numbers, or text no cell of which needs quoting) are joined directly, about
    3x faster than csv.writer over one list per row; anything else goes through csv.writer."""
    kinds = set(map(type, values))
    plain = not any(c in file for c in ',"\r\n')
    if plain and kinds == {str}:
        joined = "\n".join(values)
        plain = not any(c in joined for c in ',"\r') and joined.count("\n") == len(values) - 1
    elif plain:
        plain = kinds <= _SCALARS
    if plain:
        return "".join([f"{file},{row},{value}\n" for row, value in enumerate(values, start)])
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([file, start + i, cell(v)] for i, v in enumerate(values))
    return out.getvalue()


def cell(value):
    """One output cell: lists and dicts (and arrays) as JSON text, anything else as it is."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    tolist = getattr(value, "tolist", None)
    if tolist is not None:
        value = tolist()
        return json.dumps(value) if isinstance(value, list) else value
    return value


@dataclass
class BatchAnswer:
    """A model server's answer to one mini-batch: its output rows as CSV bytes (with a header;
    empty for summary_only) and how many rows it read and wrote."""

    csv: bytes
    rows_in: int
    rows_out: int
    # A score.py's output folder: a tar holding ROWS_MEMBER (the CSV above) and `output/<path>` for
    # each file run() wrote (runtime/batch.py); the worker reads it (controller/outputs.py). None: no folder.
    tar: bytes | None = None


ROWS_MEMBER = "rows.csv"
OUTPUT_MEMBER = "output"
