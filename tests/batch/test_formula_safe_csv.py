"""CSV the studio writes never carries a spreadsheet formula: batch outputs whose file names or model
outputs begin with = + - @ (OWASP's CSV injection), and the rule itself (csvsafe)."""

from __future__ import annotations

import csv
import io

import pytest

from endpoints_app import csvsafe
from endpoints_app.controller.jobs import safe_output
from tests.batch.conftest import WS, iris_csv
from tests.batch.test_jobs_live import download, invoke, wait_job
from tests.live import make_custom_model

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# File names a Contributor can upload, each a formula once a spreadsheet opens predictions.csv.
HOSTILE_FILES = ['=HYPERLINK("evil.example","open").csv', "+cmd.csv", "-2+3.csv", "@SUM(1+1).csv"]

# A score.py whose outputs are formulas too, next to numbers that must stay numbers.
FORMULA_SCORE = '''
import os

def init():
    pass

def run(mini_batch):
    return [{"source": os.path.basename(path), "verdict": "=1+1", "note": "a;=2+2", "score": -1.5}
            for path in mini_batch]
'''


def cells(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def assert_no_formula(text: str) -> None:
    for row in cells(text):
        for value in row:
            if value.startswith(FORMULA_START):
                assert csvsafe.NUMBER.fullmatch(value), f"formula cell {value!r} in {row}"
            # Some locales split on ';': whatever follows one is a cell start too, so it stays quoted.
            assert ";" not in value or f'"{value}"' in text.replace('""', '"'), value


@pytest.mark.parametrize(("value", "written"), [
    ("=HYPERLINK(\"x\",\"y\")", "\"'=HYPERLINK(\"\"x\"\",\"\"y\"\")\""),
    ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
    ("-2+3", "'-2+3"), ("@SUM(1)", "'@SUM(1)"), ("\tx", "\"'\tx\""), ("\rx", "\"'\rx\""),
    ("-1.5", "-1.5"), ("+3e-2", "+3e-2"), (-7, "-7"), (0.25, "0.25"), ("setosa", "setosa"),
    ("a;=1+1", '"a;=1+1"'), ("", ""), (None, ""),
])
def test_a_cell_that_would_be_a_formula_is_escaped_and_numbers_stay_numbers(value, written):
    assert csvsafe.cell(value) == written


def test_sanitize_keeps_safe_output_byte_for_byte_and_escapes_the_rest():
    plain = "file,row,prediction\npart-001.csv,0,setosa\n"
    assert csvsafe.sanitize(plain) is plain
    negative = "file,row,prediction\npart-001.csv,0,-0.5\n\"a,b.csv\",1,+2\n"
    assert csvsafe.sanitize(negative) == negative
    hostile = 'file,row,prediction\n"=HYPERLINK(""a"",""b"")",0,@x\n+cmd.csv,1,"x,=1"\n'
    safe = csvsafe.sanitize(hostile)
    assert_no_formula(safe)
    assert cells(safe)[1] == ['\'=HYPERLINK("a","b")', "0", "'@x"]
    assert safe_output(hostile.encode()) == safe.encode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_predictions_csv_carries_no_formula_from_file_names_or_model_outputs(live_worker, owner_api, workspace,
                                                                            batch_endpoint, make_asset, tmp_path):
    batch_endpoint(mini_batch_size=2)
    files = {name: iris_csv(3, seed=i) for i, name in enumerate(HOSTILE_FILES)}
    make_asset("hostile", files)
    model = make_custom_model(workspace, tmp_path / "code", name="formulas", source=FORMULA_SCORE)
    assert owner_api.post(f"{WS}/batch-endpoints/scorer/deployments",
                          {"name": "green", "model": f"{model.name}:1"}, format="json").status_code == 201

    catalog = wait_job(owner_api, "scorer", invoke(owner_api, "scorer", "studio:data/hostile/versions/1")["name"])
    custom = wait_job(owner_api, "scorer", invoke(owner_api, "scorer", "studio:data/hostile/versions/1",
                                                   deployment_name="green")["name"])

    assert catalog["status"] == custom["status"] == "Completed", (catalog, custom)
    for job in (catalog, custom):
        response = owner_api.get(f"{WS}/batch-endpoints/scorer/jobs/{job['name']}/outputs/predictions.csv")
        assert_no_formula(b"".join(response.streaming_content).decode())
    rows = download(owner_api, catalog)
    assert {r["file"] for r in rows} == {"'" + name for name in HOSTILE_FILES}
    assert len(rows) == 12 and {r["prediction"] for r in rows} <= {"setosa", "versicolor", "virginica"}
    outputs = download(owner_api, custom)
    assert {r["source"] for r in outputs} == {"'" + name for name in HOSTILE_FILES}
    assert {(r["verdict"], r["note"], r["score"]) for r in outputs} == {("'=1+1", "a;=2+2", "-1.5")}
