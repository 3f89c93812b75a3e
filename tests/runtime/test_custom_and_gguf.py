"""A user's score.py in the generic server, and GGUF models in llama.cpp's server."""

import importlib.util
import shutil
import textwrap
from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.catalog.cards import card
from endpoints_app.models import CatalogModel
from endpoints_app.runtime.launch import launch_spec
from tests.runtime.conftest import catalog_model, make_deployment, start_server

pytestmark = pytest.mark.slow

SCORE_PY = '''
import json
import os

calls = {"init": 0}
model = None


def init():
    global model
    calls["init"] += 1
    # Files next to score.py are reachable by relative path, as in the user's folder.
    with open("weights.json") as fh:
        model = json.load(fh)


def run(raw_data):
    data = json.loads(raw_data)
    if "x" not in data:
        raise ValueError("expected a field x")
    if data["x"] == "boom":
        raise RuntimeError("the model broke")
    return {"y": data["x"] * model["slope"], "init_calls": calls["init"], "raw_length": len(raw_data)}
'''


def custom_model(tmp_path, score_py: str, files: dict[str, str] | None = None) -> CatalogModel:
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(textwrap.dedent(score_py))
    for name, text in (files or {}).items():
        (code / name).write_text(text)
    return CatalogModel(registry="team", name="doubler", version=1, format="custom", task="custom",
                        artifact_path=str(code), scoring_script="score.py")


def test_custom_score_py_runs_init_once_and_gets_the_raw_body(tmp_path):
    model = custom_model(tmp_path, SCORE_PY, {"weights.json": '{"slope": 2}'})
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert server.wait_ready(60), server.log()
        first = server.post("/score", data=b'{"x": 21}')
        second = server.post("/score", data=b'{"x": 1}')
        assert first.status_code == 200
        assert first.json() == {"y": 42, "init_calls": 1, "raw_length": 9}
        assert second.json()["init_calls"] == 1

        rejected = server.post("/score", data=b'{"z": 1}')
        assert rejected.status_code == 422
        assert "expected a field x" in rejected.json()["error"]["message"]

        broken = server.post("/score", data=b'{"x": "boom"}')
        assert broken.status_code == 500
        assert "the model broke" in broken.json()["error"]["message"]
    finally:
        server.stop()
    assert "RuntimeError: the model broke" in server.log()


def test_score_py_returning_json_text_is_passed_through(tmp_path):
    model = custom_model(tmp_path, """
        import json
        def init():
            pass
        def run(raw_data):
            return json.dumps({"echo": json.loads(raw_data)})
    """)
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert server.wait_ready(60), server.log()
        assert server.post("/score", json={"a": [1, 2]}).json() == {"echo": {"a": [1, 2]}}
    finally:
        server.stop()


def test_score_py_may_return_numpy_values_but_not_nan(tmp_path):
    model = custom_model(tmp_path, """
        import json
        import numpy as np
        def init():
            pass
        def run(raw_data):
            x = json.loads(raw_data)["x"]
            return {"y": np.array([x, x * 2]), "total": np.float32(3 * x) if x else np.float64("nan")}
    """)
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert server.wait_ready(60), server.log()
        assert server.post("/score", json={"x": 2}).json() == {"y": [2, 4], "total": 6.0}
        nan = server.post("/score", json={"x": 0})
        assert nan.status_code == 422
        assert "NaN" in nan.json()["error"]["message"]
    finally:
        server.stop()


def test_broken_score_py_never_becomes_ready_and_says_why_in_its_log(tmp_path):
    model = custom_model(tmp_path, """
        def init():
            raise RuntimeError("weights.bin is missing")
        def run(raw_data):
            return raw_data
    """)
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert not server.wait_ready(60)
        assert server.proc.wait(10) != 0
    finally:
        server.stop()
    assert "RuntimeError: weights.bin is missing" in server.log()


def test_score_py_without_run_fails_to_start(tmp_path):
    model = custom_model(tmp_path, "def init():\n    pass\n")
    server = start_server(make_deployment(model), tmp_path)
    try:
        assert not server.wait_ready(60)
    finally:
        server.stop()
    assert "must define a function run()" in server.log()


def test_code_configuration_serves_a_catalog_model_through_the_users_score_py(tmp_path, seeded_artifacts):
    # code_configuration.code is a folder in the artifact store (services/specs.py checks whose).
    relative = f"team/iris-code/{tmp_path.name}/src"
    code = Path(settings.MEDIA_ROOT) / relative
    shutil.rmtree(code, ignore_errors=True)
    code.mkdir(parents=True)
    (code / "my_score.py").write_text(textwrap.dedent("""
        import json, os
        import joblib

        def init():
            global model
            model = joblib.load(os.environ["STUDIO_MODEL_PATH"])
            assert os.path.isdir(os.environ["AZUREML_MODEL_DIR"])

        def run(raw_data):
            rows = json.loads(raw_data)["rows"]
            return {"species": model.predict(rows).tolist()}
    """))
    deployment = make_deployment(catalog_model("iris-classifier", seeded_artifacts),
                                 code_configuration={"code": relative, "scoring_script": "my_score.py"})
    server = start_server(deployment, tmp_path)
    try:
        assert server.wait_ready(60), server.log()
        answer = server.post("/score", json={"rows": [[5.1, 3.5, 1.4, 0.2]]})
        assert answer.json() == {"species": ["setosa"]}
    finally:
        server.stop()


needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (scripts/install.sh installs it from the wheel cache)",
)


@needs_llama
def test_smollm2_answers_its_cards_chat_sample(seeded_artifacts, tmp_path):
    deployment = make_deployment(catalog_model("smollm2-135m-instruct", seeded_artifacts))
    spec = launch_spec(deployment, 1)
    assert spec.command[1:3] == ["-m", "endpoints_app.runtime.llama_server"]
    server = start_server(deployment, tmp_path)
    try:
        assert server.wait_ready(120), server.log()[-3000:]
        assert server.get("/v1/models").json()["data"][0]["id"] == "smollm2-135m-instruct"
        # llama.cpp's server takes the instance secret as its API key: nobody else gets an answer.
        assert server.get("/v1/models", headers={}).status_code == 401
        assert server.post("/v1/chat/completions", headers={"Authorization": "Bearer nope"},
                           json=card("smollm2-135m-instruct")["sample_request"]).status_code == 401
        reply = server.post("/v1/chat/completions", json=card("smollm2-135m-instruct")["sample_request"]).json()
        assert "Paris" in reply["choices"][0]["message"]["content"]
        assert reply["usage"]["prompt_tokens"] > 10 and reply["usage"]["completion_tokens"] > 0
    finally:
        server.stop()


@needs_llama
def test_gemma_completes_its_cards_prompt(seeded_artifacts, tmp_path):
    server = start_server(make_deployment(catalog_model("gemma-3-270m", seeded_artifacts)), tmp_path)
    try:
        assert server.wait_ready(120), server.log()[-3000:]
        sample = card("gemma-3-270m")["sample_request"] | {"max_tokens": 8}
        reply = server.post("/v1/completions", json=sample).json()
        assert reply["choices"][0]["text"].strip()
        assert reply["usage"]["completion_tokens"] > 0
    finally:
        server.stop()
