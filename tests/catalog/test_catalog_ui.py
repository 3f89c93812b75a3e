"""The catalog pages through the Django client, with and without HX-Request."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from endpoints_app.models import CatalogModel, Workspace


def make_model(name: str, version: int = 1, workspace: Workspace | None = None, **fields) -> CatalogModel:
    defaults = {
        "task": "classification",
        "format": "sklearn",
        "license": "MIT",
        "deployment_kinds": ["online", "batch"],
        "summary": f"{name} summary",
        "sample_request": {"input_data": {"columns": ["a", "b"], "data": [[1, 2]]}},
    }
    defaults.update(fields)
    return CatalogModel.objects.create(
        registry=workspace.name if workspace else "studio", workspace=workspace, name=name, version=version, **defaults
    )


@pytest.fixture
def catalog(workspace):
    make_model("iris-classifier", display_name="Iris classifier")
    make_model("iris-classifier", version=2, display_name="Iris classifier")
    make_model("diabetes-regressor", task="regression", license="BSD-3-Clause")
    make_model("iris-onnx", format="onnx")
    make_model("minilm-embeddings", task="embeddings", format="sentence-transformers",
               deployment_kinds=["online", "serverless"], price_input_per_1k="0.0001", price_output_per_1k="0")
    make_model("secret-model", workspace=Workspace.objects.create(name="other"))
    make_model("team-model", workspace=workspace, format="custom", task="custom", deployment_kinds=["online"])


def card_names(response) -> list[str]:
    html = response.content.decode()
    return sorted(part.split('"', 1)[0] for part in html.split('data-model="')[1:])


def test_catalog_needs_login(client, catalog):
    response = client.get("/catalog/")
    assert response.status_code == 302
    assert response.url.startswith("/login/")


def test_catalog_shows_a_card_per_model_with_the_full_page(owner_client, catalog):
    response = owner_client.get("/catalog/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<nav class=\"sidenav\"" in html
    assert 'id="catalog-filters"' in html
    assert card_names(response) == [
        "diabetes-regressor", "iris-classifier", "iris-onnx", "minilm-embeddings", "team-model"
    ]
    assert "secret-model" not in html
    assert "workspace team · v1" in html  # a workspace's own model names the workspace, not a publisher


def test_filter_without_js_is_a_plain_get_with_the_form_kept(owner_client, catalog):
    response = owner_client.get("/catalog/", {"task": "regression"})
    assert card_names(response) == ["diabetes-regressor"]
    html = response.content.decode()
    assert '<option value="regression" selected>' in html
    assert "Task: regression" in html  # a chip that removes the filter


def test_htmx_filter_returns_only_the_results(owner_client, catalog):
    response = owner_client.get("/catalog/", {"search": "iris"}, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="results"')
    assert "sidenav" not in html
    assert "catalog-filters" not in html
    assert card_names(response) == ["iris-classifier", "iris-onnx"]


def test_deployment_kind_and_licence_filters(owner_client, catalog):
    assert card_names(owner_client.get("/catalog/", {"deployment_kind": "serverless"})) == ["minilm-embeddings"]
    assert card_names(owner_client.get("/catalog/", {"license": "BSD-3-Clause"})) == ["diabetes-regressor"]


def test_bad_filter_value_shows_the_error_and_ignores_it(owner_client, catalog):
    response = owner_client.get("/catalog/", {"task": "astrology", "format": "onnx"})
    assert response.status_code == 200
    assert "task:" in response.content.decode()
    assert card_names(response) == ["iris-onnx"]


def test_no_match_says_so(owner_client, catalog):
    response = owner_client.get("/catalog/", {"search": "zzz"})
    assert "No models match" in response.content.decode()


def test_pagination_links_work_with_and_without_htmx(owner_client, workspace):
    for index in range(30):
        make_model(f"bulk-{index:02d}")
    first = owner_client.get("/catalog/")
    assert len(card_names(first)) == 24
    assert "Page 1 of 2" in first.content.decode()
    second = owner_client.get("/catalog/", {"page": 2}, HTTP_HX_REQUEST="true")
    assert card_names(second) == [f"bulk-{index:02d}" for index in range(24, 30)]


def _queries(client, url, **extra) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url, **extra).status_code == 200
    return len(queries)


def test_catalog_query_count_is_constant_as_rows_grow(owner_client, catalog, workspace):
    few_full = _queries(owner_client, "/catalog/")
    few_partial = _queries(owner_client, "/catalog/?task=classification", HTTP_HX_REQUEST="true")
    for index in range(40):
        make_model(f"bulk-{index:02d}", license=f"licence-{index % 7}")
        make_model(f"bulk-{index:02d}", version=2)
        make_model(f"own-{index:02d}", workspace=workspace)
    assert _queries(owner_client, "/catalog/") == few_full
    assert _queries(owner_client, "/catalog/?task=classification", HTTP_HX_REQUEST="true") == few_partial


def test_model_page_shows_card_sample_versions_and_deploy_buttons(owner_client, catalog):
    response = owner_client.get("/catalog/iris-classifier/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "Iris classifier" in html
    assert "studio://registries/studio/models/iris-classifier/versions/2" in html.replace("<wbr>", "")
    # Pretty-printed sample request (PostgreSQL's jsonb may reorder keys, so no key order here).
    assert '{\n  &quot;input_data&quot;: {\n    &quot;' in html
    assert html.count('<tr') >= 3  # header + two versions
    assert 'data-kind="online"' in html and 'data-kind="batch"' in html
    assert 'data-kind="serverless"' not in html


def test_model_page_shows_an_older_version(owner_client, catalog):
    response = owner_client.get("/catalog/iris-classifier/", {"version": 1})
    page = response.content.decode().replace("<wbr>", "")  # ids may wrap after a slash
    assert "studio://registries/studio/models/iris-classifier/versions/1" in page


def test_model_page_of_own_model_and_foundation_pricing(owner_client, catalog):
    assert "Registered in workspace team" in owner_client.get("/catalog/team-model/").content.decode()
    html = owner_client.get("/catalog/minilm-embeddings/").content.decode()
    assert "per 1K input tokens" in html


def test_model_page_of_another_workspaces_model_is_404(owner_client, catalog):
    assert owner_client.get("/catalog/secret-model/").status_code == 404
    assert owner_client.get("/catalog/nope/").status_code == 404


def test_model_page_says_when_the_runtime_is_missing(owner_client, catalog):
    # No artifact on disk for these rows: the page says why it cannot be served.
    html = owner_client.get("/catalog/iris-classifier/").content.decode()
    assert 'id="runtime-status"' in html
    assert "Model file not found" in html


def test_reader_sees_register_form_disabled(client, reader, catalog):
    client.force_login(reader)
    html = client.get("/catalog/register/").content.decode()
    assert 'id="register-denied"' in html
    assert "<fieldset disabled>" in html


def test_reader_cannot_post_a_model(client, reader, catalog):
    client.force_login(reader)
    response = client.post("/catalog/register/", {"name": "mine"})
    assert response.status_code == 403


def test_contributor_sees_register_form_enabled(client, contributor, catalog):
    client.force_login(contributor)
    html = client.get("/catalog/register/").content.decode()
    assert 'id="register-denied"' not in html
    assert "<fieldset >" in html


def test_register_without_a_file_shows_the_problem(client, contributor, catalog):
    client.force_login(contributor)
    response = client.post("/catalog/register/", {"name": "mine"})
    assert response.status_code == 400
    assert "Choose a model file" in response.content.decode()


def test_contributor_registers_a_model_through_the_form(client, contributor, catalog):
    import io

    import joblib
    from django.core.files.uploadedfile import SimpleUploadedFile
    from sklearn.datasets import load_diabetes
    from sklearn.linear_model import Ridge

    x, y = load_diabetes(return_X_y=True)
    buffer = io.BytesIO()
    joblib.dump(Ridge().fit(x, y), buffer)
    client.force_login(contributor)
    response = client.post("/catalog/register/", {
        "name": "my-ridge", "file": SimpleUploadedFile("ridge.joblib", buffer.getvalue()), "task": "regression",
        "description": "Our own ridge regression.",
    }, follow=True)
    assert response.redirect_chain[-1][0] == "/catalog/my-ridge/?version=1"
    html = response.content.decode()
    assert "Registered my-ridge version 1." in html
    assert "studio://registries/team/models/my-ridge/versions/1" in html.replace("<wbr>", "")
    assert "Our own ridge regression." in html


def test_register_a_bad_file_through_the_form_names_the_problem(client, contributor, catalog):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(contributor)
    response = client.post("/catalog/register/", {
        "name": "junk", "file": SimpleUploadedFile("junk.onnx", b"not onnx"),
    })
    assert response.status_code == 400
    html = response.content.decode()
    assert "junk.onnx" in html
    assert 'value="junk"' in html  # the form keeps what was typed


def test_htmx_history_restore_gets_the_whole_page(owner_client, catalog):
    response = owner_client.get("/catalog/", {"task": "regression"}, HTTP_HX_REQUEST="true",
                                HTTP_HX_HISTORY_RESTORE_REQUEST="true")
    assert '<nav class="sidenav"' in response.content.decode()
