"""Small things that read unfinished, looked at in a browser at 1400 and 1024 px: the measured
accuracy on a card, a registered model's publisher and description, the login that keeps the
username, the Test tab's cards aligned, URIs that wrap after a slash, banners as wide as cards."""

import pytest

from endpoints_app.models import CatalogModel, Deployment, Endpoint, InstanceType
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
WIDTHS = (1400, 1024)


def test_a_wrong_password_keeps_the_username(browser, live_server, owner, shoot):
    for javascript in (True, False):
        context = browser.new_context(java_script_enabled=javascript)
        page = context.new_page()
        page.goto(f"{live_server.url}/login/")
        page.fill("#id_username", owner.username)
        page.fill("#id_password", "wrong-password")
        page.click("button[type=submit]")
        page.wait_for_selector("p.error")
        assert page.input_value("#id_username") == owner.username
        assert page.input_value("#id_password") == ""
        if javascript:
            shoot(page, "login-wrong-password")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/")
        context.close()


def test_the_catalog_shows_measured_accuracy_and_who_registered_a_model(page, live_server, workspace, owner, shoot):
    CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        publisher="Studio", summary="Names the iris species.", deployment_kinds=["online", "batch"],
        tags={"metrics": {"accuracy": 0.9737, "test_rows": 38}},
    )
    text = "Predicts churn from the last 90 days of account activity."
    CatalogModel.objects.create(
        registry=workspace.name, workspace=workspace, name="churn", version=1, task="classification",
        format="sklearn", license="MIT", publisher=workspace.name.title(), summary=text, description=text,
        deployment_kinds=["online"], created_by=owner,
    )
    page.goto(f"{live_server.url}/catalog/")
    assert page.inner_text("[data-model=iris-classifier] [data-testid=measured]") == "Accuracy 97.4%"
    churn_by = page.inner_text("[data-model=churn] [data-testid=publisher]")
    assert churn_by.startswith(f"workspace {workspace.name} · {owner.username}")
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"catalog-{width}")
    page.click("[data-model=iris-classifier]")
    assert "Accuracy\n97.4%" in page.inner_text("#measured")
    assert page.locator("text=Names the iris species.").count() == 1  # a summary alone shows once
    assert "/<wbr>" in page.locator(".props dd code").first.inner_html()  # the asset id wraps after a slash
    shoot(page, "catalog-iris-card")
    page.goto(f"{live_server.url}/catalog/churn/?registry={workspace.name}")
    assert page.inner_text("[data-testid=publisher]").startswith(
        f"Registered in workspace {workspace.name} by {owner.username}")
    assert page.locator(f"text={text}").count() == 1  # once, not as summary and again as description
    shoot(page, "catalog-registered-model")


@pytest.fixture
def endpoint(workspace):
    model = CatalogModel.objects.create(
        name="scikit-learn-iris-classifier", version=1, task="classification", format="sklearn", license="MIT",
        deployment_kinds=["online"], sample_request={"data": [[1, 2, 3, 4]]},
    )
    endpoint = Endpoint.objects.create(workspace=workspace, name="iris-demo-with-a-long-name", kind="online",
                                       traffic={"blue": 100}, provisioning_state="Succeeded")
    Deployment.objects.create(endpoint=endpoint, name="blue", model=model, provisioning_state="Succeeded",
                              instance_type=InstanceType.objects.get(name="Standard_DS1_v2"))
    return endpoint


def test_endpoint_pages_align_wrap_at_slashes_and_say_1_core(page, live_server, endpoint, shoot):
    base = f"{live_server.url}/endpoints/{endpoint.name}"
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{base}/test/")
        left, right = page.locator(".test-layout > .card").all()
        assert left.bounding_box()["y"] == right.bounding_box()["y"]
        shoot(page, f"test-tab-{width}")
        page.goto(f"{base}/")
        assert "(1 core," in page.inner_text("[data-deployment=blue]")
        uri = page.locator(".props-grid code").first
        assert "/<wbr>" in uri.inner_html()
        # Every line break of the URI falls after a slash or a hyphen, never inside a word.
        lines = uri.evaluate("""el => {
            const range = document.createRange(); const text = el.textContent; const tops = []; let line = "";
            const out = []; let node = el.firstChild, offset = 0, top = null;
            const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
            while ((node = walker.nextNode())) {
              for (let i = 0; i < node.length; i++) {
                range.setStart(node, i); range.setEnd(node, i + 1);
                const y = range.getBoundingClientRect().top;
                if (top !== null && Math.abs(y - top) > 2) { out.push(line); line = ""; }
                top = y; line += node.data[i];
              }
            }
            out.push(line); return out; }""")
        for line in lines[:-1]:
            assert line.endswith(("/", "-")), lines
        shoot(page, f"details-{width}")


def test_error_banners_are_as_wide_as_the_form_below(page, live_server, workspace, shoot):
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/catalog/register/")
        page.fill("#id_name", "broken")
        page.set_input_files("#id_file", files=[{"name": "model.pkl", "mimeType": "application/octet-stream",
                                                 "buffer": b"this is not a pickle"}])
        page.click("form.form-card button[type=submit]")
        page.wait_for_selector("#register-error")
        banner = page.locator("#register-error").bounding_box()
        card = page.locator("form.form-card").bounding_box()
        assert banner["width"] == pytest.approx(card["width"], abs=1)
        shoot(page, f"register-error-{width}")
