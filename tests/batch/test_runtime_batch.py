"""POST /batch on real model servers: the built-in handlers score CSV and JSON-lines rows (tabular
models) and text lines (embeddings) by row range, and a user's score.py gets run(mini_batch) with
file paths; bad rows answer 422 naming the file."""

import csv
import json
import os

import pytest

from endpoints_app.models import CatalogModel
from tests.batch.conftest import iris_csv
from tests.runtime.conftest import make_deployment, start_server

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("readable_files")]


@pytest.fixture
def readable_files():
    """Files the tests write are readable by the sandbox's uid (the studio itself keeps its own private)."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def inputs_dir(server, tmp_path):
    """Where the server's sandboxed process can read files (as a job's are linked into its sandbox): a folder
    in its own sandbox folder, which it sees read-only; tmp_path when it runs unsandboxed."""
    if server.box is None:
        return tmp_path
    folder = server.box.root / "batch-inputs"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o755)
    return folder


def batch(server, items, action="append_row"):
    response = server.post("/batch", json={"items": items, "output_action": action})
    if response.status_code == 200:
        assert response.headers["content-type"].startswith("text/csv")
    return response


def answer_of(response) -> dict:
    assert response.status_code == 200, response.text
    return {"rows_in": int(response.headers["x-rows-in"]), "rows_out": int(response.headers["x-rows-out"]),
            "csv": response.text}


def rows_of(answer: dict) -> list[dict]:
    return list(csv.DictReader(answer["csv"].splitlines()))


def test_it_scores_csv_row_ranges_with_the_iris_model(seeded_server, tmp_path):
    server = seeded_server("iris-classifier")
    tmp_path = inputs_dir(server, tmp_path)
    path = tmp_path / "a.csv"
    path.write_bytes(iris_csv(30))
    # Columns in another order are matched by name.
    reordered = tmp_path / "b.jsonl"
    reordered.write_text("\n".join(json.dumps({"petal_width": 0.2, "petal_length": 1.4, "sepal_width": 3.5,
                                               "sepal_length": 5.1}) for _ in range(3)) + "\n")
    response = batch(server, [{"path": str(path), "file": "a.csv", "start": 10, "stop": 20},
                              {"path": str(reordered), "file": "b.jsonl", "start": 0, "stop": None}])
    answer = answer_of(response)
    rows = rows_of(answer)
    assert answer["rows_in"] == answer["rows_out"] == 13
    assert [(r["file"], int(r["row"])) for r in rows] == [("a.csv", i) for i in range(10, 20)] + [
        ("b.jsonl", i) for i in range(3)]
    assert {r["prediction"] for r in rows[-3:]} == {"setosa"}
    summary = answer_of(batch(server, [{"path": str(path), "file": "a.csv"}], action="summary_only"))
    assert summary == {"rows_in": 30, "rows_out": 0, "csv": ""}


def test_it_answers_422_naming_the_file_for_bad_rows(seeded_server, tmp_path):
    server = seeded_server("iris-classifier")
    tmp_path = inputs_dir(server, tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("sepal_length,sepal_width,petal_length,petal_width\n1,2,3,4\n1,two,3,4\n")
    response = batch(server, [{"path": str(bad), "file": "bad.csv"}])
    assert response.status_code == 422 and "bad.csv" in response.json()["error"]["message"]
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b,c,d\n1,2,3,4\n")
    response = batch(server, [{"path": str(wrong), "file": "wrong.csv"}])
    assert response.status_code == 422 and "missing columns sepal_length" in response.json()["error"]["message"]


def test_it_scores_with_the_onnx_model(seeded_server, tmp_path):
    from endpoints_app.catalog.cards import card

    server = seeded_server("breast-cancer-onnx")
    tmp_path = inputs_dir(server, tmp_path)
    sample = card("breast-cancer-onnx")["sample_request"]["input_data"]
    path = tmp_path / "rows.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(sample["columns"])
        writer.writerows(sample["data"])
    answer = answer_of(batch(server, [{"path": str(path), "file": "rows.csv"}]))
    assert answer["rows_out"] == len(sample["data"])
    assert all(r["prediction"] for r in rows_of(answer))


def test_it_embeds_text_lines_with_minilm(seeded_server, tmp_path):
    server = seeded_server("all-minilm-l6-v2")
    tmp_path = inputs_dir(server, tmp_path)
    path = tmp_path / "texts.txt"
    path.write_text("a cat sat on the mat\n\nthe dog barked\nfinancial markets fell\n")
    answer = answer_of(batch(server, [{"path": str(path), "file": "texts.txt", "start": 1, "stop": 3}]))
    rows = rows_of(answer)
    assert [int(r["row"]) for r in rows] == [1, 2]
    assert all(len(json.loads(r["embedding"])) == 384 for r in rows)


SCORE = '''
import os

def init():
    pass

def run(mini_batch):
    return [{"name": os.path.basename(p), "lines": len(open(p).read().splitlines())} for p in mini_batch]
'''


def test_it_gives_a_score_py_the_mini_batch_file_paths(tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(SCORE)
    model = CatalogModel(name="counter", version=1, format="custom", task="custom", license="MIT",
                         artifact_path=str(code), scoring_script="score.py")
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert server.wait_ready(60), server.log()
        files = []
        inputs = inputs_dir(server, tmp_path)
        for name, lines in (("x.txt", 2), ("y.txt", 5)):
            (inputs / name).write_text("line\n" * lines)
            files.append({"path": str(inputs / name), "file": name})
        rows = rows_of(answer_of(batch(server, files)))
        assert [(r["file"], r["name"], r["lines"]) for r in rows] == [("x.txt", "x.txt", "2"), ("y.txt", "y.txt", "5")]
    finally:
        server.stop()


def test_it_copies_named_input_columns_into_each_output_row(seeded_server, tmp_path):
    server = seeded_server("iris-classifier")
    tmp_path = inputs_dir(server, tmp_path)
    path = tmp_path / "ids.csv"
    path.write_text("customer_id,sepal_length,sepal_width,petal_length,petal_width\n"
                    "c-1,5.1,3.5,1.4,0.2\n\"c,2\",6.7,3.0,5.2,2.3\n")
    response = server.post("/batch", json={"items": [{"path": str(path), "file": "ids.csv", "start": 0, "stop": None}],
                                           "output_columns": ["customer_id"]})
    rows = rows_of(answer_of(response))
    assert list(rows[0]) == ["file", "row", "customer_id", "prediction"]
    assert [(r["customer_id"], r["prediction"]) for r in rows] == [("c-1", "setosa"), ("c,2", "virginica")]
    lacking = server.post("/batch", json={"items": [{"path": str(path), "file": "ids.csv"}],
                                          "output_columns": ["order_id"]})
    assert lacking.status_code == 422 and "order_id" in lacking.text
