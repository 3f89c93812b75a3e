"""Batch output lines: the fast join of scalar predictions writes exactly what csv.writer writes."""

import csv
import io

import pytest

from endpoints_app.runtime import batchio


def written_by_csv_writer(file: str, start: int, values: list) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([file, start + i, batchio.cell(v)] for i, v in enumerate(values))
    return out.getvalue()


@pytest.mark.parametrize(("file", "start", "values"), [
    ("part-000.csv", 0, [0, 1, 2]),
    ("part-000.csv", 5000, [1.5, float("nan"), 1e-20, -0.0, True, False]),
    ("part-000.csv", 0, ["setosa", "versicolor", ""]),
    ("part-000.csv", 0, [" leading", "trailing "]),
    ("a,b.csv", 0, [1]),
    ('say "hi".csv', 0, [1]),
    ("part-000.csv", 0, ["has,comma", "plain"]),
    ("part-000.csv", 0, ['has "quote"']),
    ("part-000.csv", 0, ["two\nlines", "x"]),
    ("part-000.csv", 0, ["carriage\r", "x"]),
    ("part-000.csv", 0, [[0.1, 0.9], [1.0, 0.0]]),
    ("part-000.csv", 0, [{"label": 1}]),
    ("part-000.csv", 0, [None, 1]),
    ("part-000.csv", 0, []),
])
def test_prediction_lines_match_csv_writer(file, start, values):
    assert batchio.prediction_lines(file, start, values) == written_by_csv_writer(file, start, values)


@pytest.mark.parametrize("text", [
    "a,b\n1,2\n3,4\n",
    "a,b\n1,2\n3,4",  # no final line break
    "a,b\r\n1,2\r\n\r\n3,4\r\n",
    "\n\n a , b \n,,\n 1,2\n , \n\t\n3,4\n\n",
    "\ufeffa,b\n1,2\n",
    "a,b\n",
    "",
    "\n\n",
    'a,b\n"x\ny",2\n3,4\n',  # a quoted cell holding a line break: the csv reader counts
    "a,b\n1,2\r3,4\n",  # a lone CR ends a line too
    "a,b\n\u00e9,2\n\u00a0,\u00a0\n",  # non-ASCII (a no-break space is whitespace to str.strip)
    "a,b\n1,\x1c\n\x1e,\x1f\n",
])
def test_count_rows_agrees_with_the_csv_reader(tmp_path, text):
    path = tmp_path / "rows.csv"
    path.write_bytes(text.encode())
    by_reader = sum(1 for _ in batchio._csv_rows(path))
    assert batchio.count_rows(path) == by_reader
