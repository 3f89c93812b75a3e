"""The generic model server, as real processes: health, the catalog's sample
requests, and the errors a client can cause."""

import base64
import os
import struct
import time

import pytest

from endpoints_app.catalog.cards import IRIS_COLUMNS, card
from endpoints_app.runtime import sandbox
from endpoints_app.runtime.launch import launch_spec
from tests.runtime.conftest import catalog_model, make_deployment, start_server

pytestmark = pytest.mark.slow

TABULAR = ["iris-classifier", "diabetes-regressor", "digits-classifier", "breast-cancer-onnx"]


@pytest.mark.parametrize("name", TABULAR + ["all-minilm-l6-v2"])
def test_each_cards_sample_request_gets_a_real_prediction(seeded_server, name):
    server = seeded_server(name)
    assert server.get("/health/live").status_code == 200
    assert server.get("/health/ready").status_code == 200

    response = server.post("/score", json=card(name)["sample_request"])

    assert response.status_code == 200, response.text
    body = response.json()
    expected = {
        "iris-classifier": ["setosa", "virginica"],
        "digits-classifier": [0, 7],
        "breast-cancer-onnx": ["malignant", "benign"],
    }
    if name in expected:
        assert body["predictions"] == expected[name]
        assert len(body["probabilities"]) == 2
        assert all(abs(sum(row) - 1) < 1e-3 for row in body["probabilities"])
    elif name == "diabetes-regressor":
        first, second = body["predictions"]
        # Row 0 of the dataset progressed far more than row 1 (151 vs 75).
        assert 100 < first < 300 and 25 < second < 150 and first > second
    else:
        assert body["dimensions"] == 384
        assert [len(v) for v in body["embeddings"]] == [384, 384]
        assert body["usage"]["prompt_tokens"] > 4


def test_sample_response_in_the_seed_matches_the_server(seeded_server, seeded_artifacts):
    _path, _tags, sample_response = seeded_artifacts["iris-classifier"]
    live = seeded_server("iris-classifier").post("/score", json=card("iris-classifier")["sample_request"]).json()
    assert live == sample_response


def test_columns_are_matched_by_name(seeded_server):
    server = seeded_server("iris-classifier")
    reordered = list(reversed(IRIS_COLUMNS))
    body = {"input_data": {"columns": reordered, "data": [[0.2, 1.4, 3.5, 5.1], [2.3, 5.2, 3.0, 6.7]]}}

    assert server.post("/score", json=body).json()["predictions"] == ["setosa", "virginica"]

    missing = {"input_data": {"columns": IRIS_COLUMNS[:3] + ["stem_length"], "data": [[5.1, 3.5, 1.4, 0.2]]}}
    response = server.post("/score", json=missing)
    assert response.status_code == 422
    assert "petal_width" in response.json()["error"]["message"]


def test_plain_data_rows_are_accepted(seeded_server):
    response = seeded_server("iris-classifier").post("/score", json={"data": [[5.1, 3.5, 1.4, 0.2]]})
    assert response.json()["predictions"] == ["setosa"]


@pytest.mark.parametrize("name", ["iris-classifier", "breast-cancer-onnx", "all-minilm-l6-v2"])
def test_malformed_json_is_a_400(seeded_server, name):
    broken = b'{"input_data": [[1, 2'
    response = seeded_server(name).post("/score", data=broken, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadRequest"
    assert "not valid JSON" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", ["iris-classifier", "breast-cancer-onnx"])
def test_body_without_input_is_a_400(seeded_server, name):
    response = seeded_server(name).post("/score", json={"rows": [[1, 2, 3, 4]]})
    assert response.status_code == 400
    assert "input_data" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", ["iris-classifier", "breast-cancer-onnx"])
def test_wrong_number_of_features_is_a_422_with_the_models_message(seeded_server, name):
    response = seeded_server(name).post("/score", json={"data": [[1.0, 2.0, 3.0]]})
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "ModelInputError"
    assert "3" in error["message"]


def test_values_that_are_not_numbers_are_a_422(seeded_server):
    response = seeded_server("diabetes-regressor").post("/score", json={"data": [["old", 1, 2, 3, 4, 5, 6, 7, 8, 9]]})
    assert response.status_code == 422
    assert "old" in response.json()["error"]["message"]


def test_unknown_route_is_a_404(seeded_server):
    assert seeded_server("iris-classifier").get("/nope").status_code == 404


def test_openai_embeddings_in_float_and_base64(seeded_server):
    server = seeded_server("all-minilm-l6-v2")
    as_float = server.post("/v1/embeddings", json={"input": ["hello world", "bonjour"], "model": "minilm"}).json()
    as_b64 = server.post("/v1/embeddings", json={"input": "hello world", "model": "minilm",
                                                 "encoding_format": "base64"}).json()

    assert as_float["object"] == "list" and as_float["model"] == "minilm"
    assert [d["index"] for d in as_float["data"]] == [0, 1]
    vector = as_float["data"][0]["embedding"]
    assert len(vector) == 384
    decoded = struct.unpack("<384f", base64.b64decode(as_b64["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(vector, decoded, strict=True)) < 1e-5
    assert as_float["usage"]["prompt_tokens"] == as_float["usage"]["total_tokens"] > as_b64["usage"]["prompt_tokens"]


def test_embeddings_reject_input_that_is_not_text(seeded_server):
    server = seeded_server("all-minilm-l6-v2")
    assert server.post("/score", json={"input_data": ["ok", 3]}).status_code == 422
    assert server.post("/v1/embeddings", json={"input": "x", "encoding_format": "hex"}).status_code == 400
    assert server.post("/v1/embeddings", json={"model": "m"}).status_code == 400


def test_embeddings_server_is_live_before_it_is_ready(seeded_artifacts, log_dir):
    server = start_server(make_deployment(catalog_model("all-minilm-l6-v2", seeded_artifacts)), log_dir)
    try:
        statuses = set()
        for _ in range(300):
            try:
                if server.get("/health/live", timeout=2).status_code == 200:
                    statuses.add(server.get("/health/ready").status_code)
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.1)
        # Loading torch and the model takes seconds; the port answers before that.
        assert statuses == {503}
        assert server.post("/score", json={"input_data": ["x"]}).status_code in (200, 503)
        assert server.wait_ready(120)
        assert server.get("/health/ready").status_code == 200
    finally:
        server.stop()


def test_launch_spec_gives_a_clean_offline_environment(seeded_artifacts, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", "do-not-leak")
    monkeypatch.setenv("DATABASE_URL", "postgres://user:pw@db/studio")
    deployment = make_deployment(catalog_model("iris-classifier", seeded_artifacts),
                                 environment_variables={"MY_SETTING": "42", "HF_HUB_OFFLINE": "0"})

    spec = launch_spec(deployment, 8123)

    assert "SECRET_KEY" not in spec.env and "DATABASE_URL" not in spec.env
    assert spec.env["MY_SETTING"] == "42"
    assert spec.env["HF_HUB_OFFLINE"] == "1" and spec.env["TRANSFORMERS_OFFLINE"] == "1"
    assert spec.command[1:5] == ["-m", "endpoints_app.runtime.server", "--format", "sklearn"]
    assert spec.command[spec.command.index("--uds") + 1] == spec.sandbox.socket_inside  # no TCP port
    assert (spec.ready_path, spec.live_path) == ("/health/ready", "/health/live")
    # The model file is seen through the sandbox's own folder, made when the process starts.
    sandbox.prepare(spec.sandbox)
    try:
        assert os.path.isfile(spec.env["STUDIO_MODEL_PATH"])
        assert spec.env["HOME"] == str(spec.sandbox.home)
    finally:
        sandbox.remove(spec.sandbox)


def test_a_stored_deployment_never_brings_a_refused_variable_to_its_server(seeded_artifacts):
    # Saved before the services refused such names (services/specs.py), as a database restore could bring.
    deployment = make_deployment(catalog_model("iris-classifier", seeded_artifacts),
                                 environment_variables={"PYTHONPATH": ".", "ld_preload": "x.so", "MY_SETTING": "1"})

    spec = launch_spec(deployment, 8123)

    assert spec.env.get("PYTHONPATH") != "." and "ld_preload" not in spec.env
    assert spec.env["MY_SETTING"] == "1"
