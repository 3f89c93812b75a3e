"""From the catalog to a prediction in a real browser, with a real worker, model server
and gateway: deploy with the wizard, watch it reach Succeeded, send a test request,
then regenerate a key in Consume and check the gateway honours the change."""

import time

import pytest
import requests

from endpoints_app.models import Endpoint
from tests.live import make_custom_model

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_catalog_to_prediction_and_key_rotation(page, live_server, gateway, workspace, tmp_path, shoot):
    make_custom_model(workspace, tmp_path / "code")
    page.on("dialog", lambda dialog: dialog.accept())  # hx-confirm on Regenerate

    page.goto(f"{live_server.url}/catalog/")
    page.click(".model-card[data-model=doubler]")
    page.wait_for_url("**/catalog/doubler/**")
    page.click("#deploy a[data-kind=online]")
    page.wait_for_url("**/endpoints/new/**")

    # Step 1: the name is checked as you type.
    page.fill("#id_endpoint_name", "doubler-web")
    page.wait_for_selector("#name-check-result.ok")
    shoot(page, "wizard-endpoint")
    page.click("#wizard-next")
    page.wait_for_selector("#id_deployment_name")
    assert page.input_value("#id_deployment_name") == "blue"
    page.check("#it-Standard_DS1_v2")
    page.click("#wizard-next")
    page.wait_for_selector("#id_request_timeout_ms")
    page.click("#wizard-next")
    page.wait_for_selector("#deployment-yaml")
    assert "endpoint_name: doubler-web" in page.inner_text("#deployment-yaml")
    shoot(page, "wizard-review")
    page.click("#wizard-deploy")
    page.wait_for_url("**/endpoints/doubler-web/")

    # The Details tab polls until the deployment is Succeeded and its instance Ready.
    page.wait_for_function(
        "document.querySelector('[data-deployment=blue] [data-testid=deployment-state]')?.textContent === 'Succeeded'",
        timeout=120_000,
    )
    page.wait_for_selector("[data-deployment=blue] [data-testid=instance-state]:text('Ready')")
    shoot(page, "endpoint-details-succeeded")

    page.click("nav.tabs >> text=Test")
    page.wait_for_url("**/endpoints/doubler-web/test/")
    assert '"data"' in page.input_value("#test-body")
    page.click("#test-send")
    page.wait_for_selector("#test-response")
    assert page.inner_text("[data-testid=test-status]") == "200"
    assert page.inner_text("[data-testid=test-deployment]") == "blue"
    assert '"result"' in page.inner_text("#test-response") and "2.0" in page.inner_text("#test-response")
    shoot(page, "endpoint-test")

    page.click("nav.tabs >> text=Logs")
    page.wait_for_url("**/endpoints/doubler-web/logs/")
    assert "score.py init done" in page.inner_text("#log")
    shoot(page, "endpoint-logs")

    page.click("nav.tabs >> text=Consume")
    page.click("#reveal-keys")
    page.wait_for_selector("#primary-key")
    old_key = page.inner_text("#primary-key")
    page.click("[data-testid=regenerate-primary]")
    page.wait_for_selector("#regenerated")
    new_key = page.inner_text("#primary-key")
    assert new_key != old_key
    shoot(page, "endpoint-consume-regenerated")

    url = f"{gateway}/inference/doubler-web/score"
    assert Endpoint.objects.get(name="doubler-web").provisioning_state == "Succeeded"

    def status_with(key: str) -> int:
        headers = {"Authorization": f"Bearer {key}"}
        return requests.post(url, json={"data": [1]}, headers=headers, timeout=10).status_code

    # The gateway reloads its routes within moments of the change.
    deadline = time.monotonic() + 20
    while status_with(old_key) != 401 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert status_with(old_key) == 401
    assert status_with(new_key) == 200
