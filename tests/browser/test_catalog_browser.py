"""The catalog in a real browser: log in, filter (htmx, and with JavaScript off),
open a model's card."""

import pytest

from endpoints_app.models import CatalogModel

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def catalog(workspace):
    rows = [
        ("iris-classifier", "Iris classifier", "classification", "sklearn", "BSD-3-Clause", ["online", "batch"]),
        ("iris-onnx", "Iris classifier (ONNX)", "classification", "onnx", "BSD-3-Clause", ["online", "batch"]),
        ("diabetes-regressor", "Diabetes progression", "regression", "sklearn", "BSD-3-Clause", ["online", "batch"]),
        ("minilm-embeddings", "all-MiniLM-L6-v2", "embeddings", "sentence-transformers", "Apache-2.0",
         ["online", "serverless"]),
        ("smollm2-chat", "SmolLM2 135M Instruct", "chat-completion", "gguf", "Apache-2.0", ["serverless"]),
    ]
    for name, display, task, fmt, licence, kinds in rows:
        CatalogModel.objects.create(
            name=name, display_name=display, task=task, format=fmt, license=licence, deployment_kinds=kinds,
            summary=f"{display}: a small real model.", description=f"{display} model card.",
            sample_request={"input_data": {"columns": ["a", "b"], "data": [[1.5, 2.5]]}},
        )


def card_names(page) -> list[str]:
    return sorted(page.locator(".model-card").evaluate_all("cards => cards.map(c => c.dataset.model)"))


def test_filter_catalog_in_place_and_open_a_model(page, live_server, catalog, shoot):
    page.goto(f"{live_server.url}/catalog/")
    assert len(card_names(page)) == 5
    shoot(page, "catalog-grid")

    # Typing searches in place: the results swap, the page does not reload.
    page.evaluate("window.__same_page = true")
    page.fill("#id_search", "iris")
    page.wait_for_function("document.querySelectorAll('.model-card').length === 2")
    assert card_names(page) == ["iris-classifier", "iris-onnx"]
    assert page.evaluate("window.__same_page") is True
    assert "search=iris" in page.url  # hx-push-url keeps the URL shareable

    page.select_option("select[name=format]", "onnx")
    page.wait_for_function("document.querySelectorAll('.model-card').length === 1")
    assert card_names(page) == ["iris-onnx"]
    assert "format=onnx" in page.url
    shoot(page, "catalog-filtered-htmx")

    page.click(".model-card[data-model=iris-onnx]")
    page.wait_for_url("**/catalog/iris-onnx/")
    assert page.locator("h1").inner_text() == "Iris classifier (ONNX)"
    assert '"input_data"' in page.locator("#sample-request").inner_text()
    assert page.locator("#versions tbody tr").count() == 1
    assert page.locator("#deploy [data-kind=online]").count() == 1
    shoot(page, "model-page")


def test_filter_works_with_javascript_off(page_without_js, live_server, catalog, shoot):
    page = page_without_js
    page.goto(f"{live_server.url}/catalog/")
    page.select_option("select[name=deployment_kind]", "serverless")
    page.click("button.apply")
    page.wait_for_url("**/catalog/?*deployment_kind=serverless*")
    assert card_names(page) == ["minilm-embeddings", "smollm2-chat"]
    # The chip that removes the filter is a plain link.
    page.click("a.chip")
    page.wait_for_load_state()
    assert len(card_names(page)) == 5
    page.select_option("select[name=task]", "regression")
    page.click("button.apply")
    page.wait_for_url("**task=regression**")
    assert card_names(page) == ["diabetes-regressor"]
    shoot(page, "catalog-filtered-no-js")


def test_deploy_wizard_steps_work_with_javascript_off(page_without_js, live_server, catalog, shoot):
    from tests.live import register_test_node

    register_test_node()  # the deployment step checks capacity: a live node must have room
    page = page_without_js
    page.goto(f"{live_server.url}/endpoints/")
    page.click("a.button.primary >> text=Create")
    page.wait_for_url("**/endpoints/new/")
    page.select_option("#id_model", "studio://registries/studio/models/iris-classifier/versions/1")
    page.fill("#id_endpoint_name", "iris-nojs")
    page.click("#wizard-next")
    page.wait_for_selector("#id_deployment_name")
    page.fill("#id_instance_count", "2")
    page.click("#wizard-next")
    page.wait_for_selector("#id_request_timeout_ms")
    page.click("#wizard-next")
    page.wait_for_selector("#deployment-yaml")
    review = page.inner_text("#deployment-yaml")
    assert "endpoint_name: iris-nojs" in review and "instance_count: 2" in review
    shoot(page, "wizard-review-no-js")
    page.click("button[value=back]")
    page.wait_for_selector("#id_request_timeout_ms")
