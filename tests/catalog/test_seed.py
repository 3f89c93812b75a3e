"""The shared catalog: seeded on every start, complete model cards, and an honest
runtime status."""

import importlib.util
import sys
from pathlib import Path

import pytest

from endpoints_app.catalog.runtimes import runtime_status
from endpoints_app.catalog.seed import seed_catalog
from endpoints_app.models import CatalogModel

pytestmark = pytest.mark.django_db

EXPECTED = {
    "iris-classifier": ("sklearn", "classification"),
    "diabetes-regressor": ("sklearn", "regression"),
    "digits-classifier": ("sklearn", "image-classification"),
    "breast-cancer-onnx": ("onnx", "classification"),
    "all-minilm-l6-v2": ("sentence-transformers", "embeddings"),
    "smollm2-135m-instruct": ("gguf", "chat-completion"),
    "gemma-3-270m": ("gguf", "text-generation"),
}


@pytest.fixture
def seeded():
    return {m.name: m for m in seed_catalog()}


def test_it_seeds_every_model_with_its_id(seeded):
    assert {name: (m.format, m.task) for name, m in seeded.items()} == EXPECTED
    assert seeded["iris-classifier"].asset_id == "studio://registries/studio/models/iris-classifier/versions/1"
    assert all(m.registry == "studio" and m.workspace is None for m in seeded.values())


def test_seeding_again_changes_nothing(seeded):
    before = {m.name: (m.pk, m.artifact_path, m.sample_response) for m in seeded.values()}
    again = {m.name: (m.pk, m.artifact_path, m.sample_response) for m in seed_catalog()}
    assert again == before
    assert CatalogModel.objects.count() == len(EXPECTED)


def test_every_card_is_complete(seeded):
    for model in seeded.values():
        for field in ("description", "intended_use", "limitations", "license", "input_schema", "output_schema",
                      "sample_request", "deployment_kinds", "summary"):
            assert getattr(model, field), f"{model.name} has no {field}"


def test_foundation_models_carry_token_prices_and_tabular_ones_do_not(seeded):
    foundation = {name for name, m in seeded.items() if m.is_foundation}
    assert foundation == {"all-minilm-l6-v2", "smollm2-135m-instruct", "gemma-3-270m"}
    assert seeded["smollm2-135m-instruct"].price_output_per_1k > 0
    assert "serverless" in seeded["smollm2-135m-instruct"].deployment_kinds
    assert seeded["gemma-3-270m"].tags["inference_route"] == "/v1/completions"
    assert seeded["iris-classifier"].deployment_kinds == ["online", "batch"]


def test_tabular_models_are_trained_with_held_out_metrics(seeded, settings):
    for name in ("iris-classifier", "digits-classifier", "breast-cancer-onnx"):
        assert seeded[name].tags["metrics"]["accuracy"] > 0.9
        assert (Path(settings.MEDIA_ROOT) / seeded[name].artifact_path).is_file()
    assert seeded["diabetes-regressor"].tags["metrics"]["r2"] > 0.2
    assert seeded["iris-classifier"].sample_response["predictions"] == ["setosa", "virginica"]


def test_foundation_files_come_from_the_installed_packages(seeded):
    assert Path(seeded["all-minilm-l6-v2"].artifact_path, "modules.json").is_file()
    assert seeded["smollm2-135m-instruct"].artifact_path.endswith(".gguf")
    assert seeded["gemma-3-270m"].artifact_path.endswith("gemma-3-270m-q4_k_m.gguf")


def test_runtime_status_of_installed_runtimes(seeded):
    for name in ("iris-classifier", "breast-cancer-onnx", "all-minilm-l6-v2"):
        assert runtime_status(seeded[name])[0], runtime_status(seeded[name])
    if importlib.util.find_spec("llama_cpp") is not None:
        assert runtime_status(seeded["smollm2-135m-instruct"]) == (
            True, "Runs on the llama.cpp server (llama-cpp-python).")


def test_a_missing_runtime_is_reported_with_the_reason(seeded, monkeypatch):
    # None in sys.modules is how Python marks a module as not importable.
    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    available, reason = runtime_status(seeded["smollm2-135m-instruct"])
    assert not available
    assert reason.startswith("Runtime not installed: llama-cpp-python")


def test_a_missing_file_is_reported(seeded):
    model = seeded["iris-classifier"]
    model.artifact_path = "studio/iris-classifier/1/gone.joblib"
    available, reason = runtime_status(model)
    assert not available and "Model file missing" in reason
