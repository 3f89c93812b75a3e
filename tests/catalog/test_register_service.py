"""Registering a workspace's own model: files are checked in a separate process,
bad files are refused with a 400 naming the problem, big ones with a 413."""

import io
import os
import pickle
import zipfile
from pathlib import Path

import joblib
import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from sklearn.linear_model import LinearRegression, LogisticRegression

from endpoints_app.errors import InvalidInput, PayloadTooLarge
from endpoints_app.models import AuditLog, CatalogModel
from endpoints_app.services.audit import Actor
from endpoints_app.services.models import do_register_model

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "artifacts"
    return settings.MEDIA_ROOT


@pytest.fixture
def actor(owner):
    return Actor(user=owner, via=AuditLog.Via.API)


def joblib_bytes(model) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def classifier() -> LogisticRegression:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3))
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def zip_bytes(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def upload(name: str, content: bytes) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content, content_type="application/octet-stream")


def leftovers(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def test_it_registers_a_joblib_classifier_with_a_working_sample(actor, workspace, media):
    model = do_register_model(actor, workspace, name="churn", file=upload("churn.joblib", joblib_bytes(classifier())),
                              description="Churn model")

    assert model.asset_id == "studio://registries/team/models/churn/versions/1"
    assert (model.workspace, model.format, model.task) == (workspace, "sklearn", "classification")
    assert model.sample_request == {"input_data": {"data": [[0.0, 0.0, 0.0]]}}
    assert model.sample_response["predictions"] in ([0], [1])
    assert (media / model.artifact_path).is_file()
    audit = AuditLog.objects.get(action="model.create")
    assert audit.workspace == workspace and audit.username == "olivia"


def test_versions_count_up_per_name_in_the_workspace(actor, workspace):
    regressor = LinearRegression().fit([[1], [2]], [1, 2])
    first = do_register_model(actor, workspace, name="price", file=upload("m.pkl", pickle.dumps(regressor)))
    second = do_register_model(actor, workspace, name="price", file=upload("m.joblib", joblib_bytes(classifier())))
    other = do_register_model(actor, workspace, name="other", file=upload("m.joblib", joblib_bytes(classifier())))

    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.task == "regression" and second.task == "classification"
    assert first.artifact_path != second.artifact_path


def test_it_registers_an_onnx_file(actor, workspace):
    from skl2onnx import to_onnx

    onx = to_onnx(classifier(), np.zeros((1, 3), dtype=np.float32), options={"zipmap": False})
    model = do_register_model(actor, workspace, name="churn-onnx", file=upload("churn.onnx", onx.SerializeToString()))

    assert (model.format, model.task) == ("onnx", "classification")
    assert len(model.sample_response["predictions"]) == 1


def test_it_registers_a_zip_with_score_py_inside_a_folder(actor, workspace, media):
    files = {
        "my-model/score.py": "import json\n\ndef init():\n    open('table.json').read()\n\n"
                             "def run(raw_data):\n    return json.loads(raw_data)\n",
        "my-model/table.json": "{}",
    }
    model = do_register_model(actor, workspace, name="echo", file=upload("echo.zip", zip_bytes(files)))

    assert (model.format, model.task, model.scoring_script) == ("custom", "custom", "score.py")
    assert (media / model.artifact_path / "score.py").is_file()


def test_it_rejects_a_file_that_is_not_a_pickle(actor, workspace, media):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="bad", file=upload("model.pkl", b"this is not a pickle at all"))
    assert raised.value.field == "file"
    assert "Not a readable joblib or pickle file" in raised.value.message
    assert not CatalogModel.objects.filter(name="bad").exists()
    assert leftovers(media) == []


def test_it_rejects_a_pickle_of_something_that_is_not_a_model(actor, workspace, media):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="bad", file=upload("model.pkl", pickle.dumps({"weights": [1, 2]})))
    assert "builtins.dict, not a model with a predict() method" in raised.value.message
    assert leftovers(media) == []


def test_it_names_a_module_the_pickle_needs(actor, workspace):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="bad", file=upload("model.pkl", b"cno_such_module_xyz\nModel\n."))
    assert "no_such_module_xyz" in raised.value.message


class SideEffect:
    """Unpickling this fails, saying which process (host name, uid) unpickled it."""

    def __reduce__(self):
        return (exec, ("import os, socket; raise RuntimeError(f'UNPICKLED host={socket.gethostname()} "
                       "uid={os.getuid()} pid={os.getpid()}')",))


def test_pickles_are_never_loaded_in_the_calling_process(actor, workspace):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="sneaky", file=upload("m.pkl", pickle.dumps(SideEffect())))
    # It ran, but in the sandbox (its own UTS namespace names it so) and not as root.
    assert "UNPICKLED host=sandbox " in raised.value.message, raised.value.message
    assert f"pid={os.getpid()}" not in raised.value.message
    if os.geteuid() == 0:
        assert " uid=0 " not in raised.value.message


def test_it_rejects_a_zip_without_score_py(actor, workspace, media):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="noscore", file=upload("m.zip", zip_bytes({"model.py": "x = 1"})))
    assert "no score.py" in raised.value.message and raised.value.field == "file"
    assert leftovers(media) == []


def test_it_rejects_a_score_py_whose_init_fails(actor, workspace, media):
    files = {"score.py": "def init():\n    raise FileNotFoundError('weights.bin')\n\ndef run(raw_data):\n    pass\n"}
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="broken", file=upload("m.zip", zip_bytes(files)))
    assert "init() failed: FileNotFoundError: weights.bin" in raised.value.message
    assert leftovers(media) == []


def test_it_rejects_a_zip_that_escapes_its_folder(actor, workspace):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="escape", file=upload("m.zip", zip_bytes({"../evil.py": "x"})))
    assert "Unsafe path" in raised.value.message


def test_it_rejects_a_broken_onnx_file(actor, workspace):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="bad-onnx", file=upload("m.onnx", b"\x08\x07garbage"))
    assert "Not a valid ONNX model" in raised.value.message


def test_a_file_over_the_limit_is_a_413(actor, workspace, settings, media):
    settings.STUDIO_MAX_UPLOAD_BYTES = 1024
    with pytest.raises(PayloadTooLarge) as raised:
        do_register_model(actor, workspace, name="big", file=upload("big.joblib", b"\x80" + b"0" * 4096))
    assert raised.value.status == 413 and raised.value.field == "file"
    assert leftovers(media) == []


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"name": "has space"}, "name"),
    ({"name": "register"}, "name"),
    ({"name": "ok", "format": "gguf"}, "format"),
    ({"name": "ok", "task": "poetry"}, "task"),
])
def test_it_names_the_field_of_bad_arguments(actor, workspace, kwargs, field):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, file=upload("m.joblib", joblib_bytes(classifier())), **kwargs)
    assert raised.value.field == field


def test_unknown_file_type_asks_for_the_format(actor, workspace):
    with pytest.raises(InvalidInput) as raised:
        do_register_model(actor, workspace, name="what", file=upload("model.bin", b"\x00\x01\x02"))
    assert raised.value.field == "format"


def test_a_workspace_named_like_the_shared_registry_cannot_add_versions_to_shared_models(actor, workspace):
    from endpoints_app.errors import Conflict
    from endpoints_app.models import Workspace

    CatalogModel.objects.create(name="iris-classifier", task="classification", format="sklearn", license="MIT")
    studio = Workspace.objects.create(name="studio")
    with pytest.raises(Conflict) as raised:
        do_register_model(actor, studio, name="iris-classifier", file=upload("m.joblib", joblib_bytes(classifier())))
    assert raised.value.field == "name"
