"""Subscribe, deploy serverless and chat in the playground, in a real browser, with the real
worker (it starts the platform's SmolLM2 pool), the real gateway and a real llama.cpp server:
the answer must appear while it streams."""

import pytest

from endpoints_app.models import Endpoint, Instance, InstanceState, MarketplaceSubscription
from tests.foundation.conftest import CHAT, catalog_row, needs_llama
from tests.live import wait_for
from tests.runtime.conftest import seeded_artifacts  # noqa: F401 - fixture

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@needs_llama
def test_subscribe_deploy_serverless_and_chat_in_the_playground(page, live_server, gateway, workspace,
                                                                seeded_artifacts, shoot):  # noqa: F811
    model = catalog_row(CHAT, seeded_artifacts)
    page.goto(f"{live_server.url}/catalog/{CHAT}/")
    page.click("#deploy a[data-kind=serverless]")
    page.wait_for_url("**/serverless/new/**")
    # The offer: its terms and its prices per 1K input and output tokens.
    assert "Apache License 2.0" in page.inner_text("#offer-terms")
    assert page.inner_text("[data-testid=price-input]") == "$0.0002"
    assert page.inner_text("[data-testid=price-output]") == "$0.0006"
    shoot(page, "serverless-wizard-terms")
    page.click("#subscribe")  # without accepting the terms
    assert "Accept the offer" in page.inner_text("#wizard-error")
    page.check("#accept-terms")
    page.click("#subscribe")
    page.wait_for_selector("#deploy-form")
    assert MarketplaceSubscription.objects.filter(workspace=workspace, name=CHAT).exists()
    # Back on the terms step, the wizard knows the workspace is subscribed.
    page.goto(f"{live_server.url}/catalog/{CHAT}/")
    page.click("#deploy a[data-kind=serverless]")
    page.wait_for_selector("#continue-to-deploy")
    shoot(page, "serverless-wizard-subscribed")
    page.click("#continue-to-deploy")
    page.fill("#endpoint-name", "smol-chat")
    page.click("#deploy")
    page.wait_for_url("**/endpoints/smol-chat/")
    assert page.inner_text("[data-testid=status]") == "Healthy"
    shoot(page, "serverless-details")

    endpoint = Endpoint.objects.get(name="smol-chat")
    assert endpoint.model_id == model.pk
    wait_for(lambda: Instance.objects.filter(deployment=endpoint.pool, state=InstanceState.READY).exists(),
             timeout=180, interval=0.5, what="the SmolLM2 pool")

    page.click("nav.tabs >> text=Test")
    page.wait_for_url("**/endpoints/smol-chat/test/")
    page.fill("#pg-system", "You are a helpful assistant.")
    page.fill("#pg-max-tokens", "120")
    page.fill("#pg-message", "Write a short story about a robot who learns to paint.")
    page.click("#pg-send")
    # Mid-stream: some text is there and the answer is still streaming.
    try:
        page.wait_for_function(
            "(() => { const t = document.querySelector('.msg-assistant .text.streaming');"
            " return t && t.textContent.length > 20; })()",
            timeout=120_000, polling=50,
        )
    except Exception:
        shoot(page, "serverless-playground-failed")
        raise AssertionError(f"no streamed text; status: {page.inner_text('#pg-status')!r}") from None
    partial = page.inner_text(".msg-assistant .text")
    shoot(page, "serverless-playground-streaming")
    page.wait_for_selector(".msg-assistant .text:not(.streaming)", timeout=120_000)
    final = page.inner_text(".msg-assistant .text")
    status = page.inner_text("#pg-status")
    shoot(page, "serverless-playground-done")
    assert final.startswith(partial[:20]) and len(final) > len(partial), (partial, final)
    assert "Done in" in status and "completion tokens" in status, status
