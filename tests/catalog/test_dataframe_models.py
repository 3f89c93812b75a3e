"""A scikit-learn Pipeline fitted on a pandas DataFrame (a ColumnTransformer over a string column)
is scored with a DataFrame of its columns, from columns+data or records; its schema names its
columns and types; a model the studio can never score is refused at registration, saying why."""

import io
import json

import joblib
import numpy as np
import pandas as pd
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from sklearn.compose import ColumnTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from endpoints_app.errors import InvalidInput
from endpoints_app.models import AuditLog
from endpoints_app.runtime import batch
from endpoints_app.runtime.handlers import SklearnHandler
from endpoints_app.services.audit import Actor
from endpoints_app.services.models import do_register_model

COLUMNS = ["region", "age", "income", "visits", "tenure", "plan"]


def training_frame() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    n = 60
    frame = pd.DataFrame({
        "region": rng.choice(["east", "west", "north"], n),
        "age": rng.integers(18, 80, n),
        "income": rng.normal(50_000, 10_000, n),
        "visits": rng.integers(0, 20, n),
        "tenure": rng.normal(3, 1, n),
        "plan": rng.choice(["basic", "pro"], n),
    })
    return frame, (frame["region"] == "east").to_numpy().astype(int)


def pipeline() -> Pipeline:
    frame, y = training_frame()
    pre = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["region", "plan"]),
                             ("num", StandardScaler(), ["age", "income", "visits", "tenure"])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(frame, y)


def array_pipeline() -> Pipeline:
    frame, y = training_frame()
    pre = ColumnTransformer([("cat", OneHotEncoder(), [0]), ("num", "passthrough", [1, 2])])
    return Pipeline([("pre", pre), ("clf", LogisticRegression(max_iter=500))]).fit(
        frame[["region", "age", "income"]].to_numpy(dtype=object), y)


def joblib_file(model, name: str) -> SimpleUploadedFile:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return SimpleUploadedFile(name, buffer.getvalue(), content_type="application/octet-stream")


def handler_for(model) -> SklearnHandler:
    handler = SklearnHandler(None)
    handler.use(model)
    return handler


def test_it_scores_columns_and_data_with_a_dataframe():
    handler = handler_for(pipeline())
    body = {"input_data": {"columns": COLUMNS, "data": [["east", 40, 52000.0, 3, 2.5, "pro"],
                                                        ["west", 30, 41000.0, 1, 1.0, "basic"]]}}
    answer = handler.score(json.dumps(body).encode())
    assert answer["predictions"] == [1, 0]
    assert len(answer["probabilities"]) == 2


def test_it_scores_records_and_columns_in_any_order():
    handler = handler_for(pipeline())
    records = [{"plan": "pro", "tenure": 2.5, "visits": 3, "income": 52000.0, "age": 40, "region": "east"}]
    assert handler.score(json.dumps({"input_data": records}).encode())["predictions"] == [1]
    shuffled = {"input_data": {"columns": COLUMNS[::-1], "data": [["pro", 2.5, 3, 52000.0, 40, "east"]]}}
    assert handler.score(json.dumps(shuffled).encode())["predictions"] == [1]


def test_a_missing_column_or_text_in_a_number_column_is_a_422_naming_it():
    from endpoints_app.runtime.handlers import ModelInputError

    handler = handler_for(pipeline())
    with pytest.raises(ModelInputError, match="Missing columns: plan"):
        handler.score(json.dumps({"input_data": [{c: 1 for c in COLUMNS if c != "plan"}]}).encode())
    row = {"input_data": {"columns": COLUMNS, "data": [["east", "old", 1.0, 1, 1.0, "pro"]]}}
    with pytest.raises(ModelInputError, match="Column age takes numbers"):
        handler.score(json.dumps(row).encode())


def test_batch_reads_a_csv_for_a_dataframe_model(tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("customer_id," + ",".join(COLUMNS) + "\n7,east,40,52000,3,2.5,pro\n8,west,30,41000,1,1.0,basic\n")
    handler = handler_for(pipeline())
    answer = batch.score_mini_batch(handler, json.dumps({"items": [{"path": str(path), "file": "rows.csv"}]}).encode())
    assert answer.csv.decode().splitlines() == ["file,row,prediction", "rows.csv,0,1", "rows.csv,1,0"]


@pytest.mark.django_db
def test_registration_names_columns_and_types_and_its_sample_scores(owner, workspace, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "artifacts"
    actor = Actor(user=owner, via=AuditLog.Via.API)
    model = do_register_model(actor, workspace, name="churn-frame", file=joblib_file(pipeline(), "churn.joblib"))

    assert model.sample_request["input_data"]["columns"] == COLUMNS
    row = model.sample_request["input_data"]["data"][0]
    assert row[0] in ("east", "north", "west") and row[5] in ("basic", "pro")
    assert model.sample_response["predictions"] in ([0], [1])
    types = {c["name"]: c["type"] for c in model.input_schema["x-columns"]}
    assert types == {"region": "string", "age": "number", "income": "number", "visits": "number",
                     "tenure": "number", "plan": "string"}
    assert "region (string)" in model.input_schema["description"]


@pytest.mark.django_db
def test_a_model_the_studio_cannot_score_is_refused_at_registration_saying_why(owner, workspace, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "artifacts"
    actor = Actor(user=owner, via=AuditLog.Via.API)
    with pytest.raises(InvalidInput) as refused:
        do_register_model(actor, workspace, name="churn-array", file=joblib_file(array_pipeline(), "churn.joblib"))
    assert refused.value.field == "file"
    assert "cannot score" in str(refused.value) and "DataFrame" in str(refused.value)
