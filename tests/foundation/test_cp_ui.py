"""Serverless in the UI: the Deploy > Serverless API wizard (terms, prices, subscription,
"Continue to deploy"), the Serverless tab, the endpoint's Details / Consume / Test pages, the
unified endpoint on the Overview page, and the playground relay's checks."""

from decimal import Decimal
from urllib.parse import urlencode

import pytest

from endpoints_app.models import CatalogModel, Endpoint, MarketplaceSubscription
from tests.foundation.conftest import needs_llama
from tests.foundation.test_cp_serverless_api import CHAT, create, offer, subscribe

WIZARD = "/serverless/new/"


@pytest.fixture
def chat(workspace):
    return offer(offer_terms="Use it kindly.\nNo warranty.")


def wizard(client, **params):
    return client.get(f"{WIZARD}?{urlencode({'model': CHAT, **params})}")


@needs_llama
def test_the_model_card_offers_the_serverless_wizard(owner_client, chat, tmp_path):
    (tmp_path / "tiny.gguf").write_bytes(b"GGUF")
    CatalogModel.objects.filter(pk=chat.pk).update(artifact_path=str(tmp_path / "tiny.gguf"))
    html = owner_client.get("/catalog/smollm2-135m-instruct/").content.decode()
    link = f'href="{WIZARD}?model=studio%3A%2F%2Fregistries%2Fstudio%2Fmodels%2Fsmollm2-135m-instruct%2Fversions%2F1"'
    assert f'<a class="button primary" {link} data-kind="serverless">Deploy: Serverless API</a>' in html


def test_the_wizard_shows_terms_and_prices_and_needs_the_terms_accepted(owner_client, workspace, chat):
    page = wizard(owner_client)
    html = page.content.decode()
    assert page.status_code == 200
    assert "Use it kindly." in html and "$0.0002<" in html and "$0.0006<" in html
    assert ">1,000</span> requests and <strong>200,000</strong> tokens per minute" in html
    assert 'id="subscribe"' in html and "Continue to deploy" not in html
    refused = owner_client.post(WIZARD, {"model": CHAT, "action": "subscribe"})
    assert refused.status_code == 400 and "Accept the offer" in refused.content.decode()
    assert not MarketplaceSubscription.objects.exists()
    accepted = owner_client.post(WIZARD, {"model": CHAT, "action": "subscribe", "accept_terms": "on"})
    assert accepted.status_code == 302 and "step=deploy" in accepted["Location"]
    assert MarketplaceSubscription.objects.filter(workspace=workspace, name=chat.name).count() == 1
    # Subscribed already: the terms step says so and continues.
    again = wizard(owner_client).content.decode()
    assert 'id="continue-to-deploy"' in again and 'id="subscribe"' not in again


def test_the_wizard_deploys_and_the_endpoint_page_shows_it(owner_client, owner_api, chat):
    subscribe(owner_api)
    step = wizard(owner_client, step="deploy").content.decode()
    assert 'id="deploy-form"' in step
    response = owner_client.post(WIZARD, {"model": CHAT, "action": "deploy", "step": "deploy", "name": "my-chat"})
    assert response.status_code == 302 and response["Location"] == "/endpoints/my-chat/"
    details = owner_client.get("/endpoints/my-chat/").content.decode()
    assert "Healthy" in details and "smollm2-135m-instruct" in details and "Active" in details
    assert "http://testserver/inference/my-chat" in details
    assert ">Logs<" not in details
    assert owner_client.get("/endpoints/my-chat/logs/").status_code == 404
    listed = owner_client.get("/endpoints/?kind=serverless").content.decode()
    assert 'data-endpoint="my-chat"' in listed and "Healthy" in listed
    consume = owner_client.get("/endpoints/my-chat/consume/").content.decode()
    assert 'OpenAI(base_url="http://testserver/inference/my-chat"' in consume
    assert "/chat/completions" in consume and 'model="smollm2-135m-instruct"' in consume
    keys = owner_client.post("/endpoints/my-chat/consume/keys/").content.decode()
    assert 'id="primary-key"' in keys
    test = owner_client.get("/endpoints/my-chat/test/").content.decode()
    assert 'id="chat-playground"' in test and 'id="pg-system"' in test and 'id="pg-temperature"' in test


def test_the_wizard_refuses_a_second_endpoint_on_the_model(owner_client, owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    html = wizard(owner_client, step="deploy").content.decode()
    assert 'id="deploy-form"' not in html and 'href="/endpoints/chat/"' in html
    response = owner_client.post(WIZARD, {"model": CHAT, "action": "deploy", "name": "other"})
    assert response.status_code == 409 and "one serverless endpoint per model" in response.content.decode()


def test_an_unsubscribed_endpoint_shows_unhealthy_with_the_reason(owner_client, owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    owner_api.delete("/api/v1/workspaces/team/marketplace-subscriptions/smollm2-135m-instruct")
    html = owner_client.get("/endpoints/chat/").content.decode()
    assert 'id="unhealthy-reason"' in html and "no marketplace subscription" in html
    assert "Subscribe again" in html


def test_readers_see_but_cannot_subscribe_deploy_or_use_keys(client, reader, owner_api, chat):
    client.force_login(reader)
    subscribe(owner_api)
    create(owner_api)
    assert client.post(WIZARD, {"model": CHAT, "action": "subscribe", "accept_terms": "on"}).status_code == 403
    assert client.get("/endpoints/chat/").status_code == 200
    assert client.post("/endpoints/chat/consume/keys/").status_code == 403
    assert client.post("/endpoints/chat/delete/").status_code == 403
    assert client.post("/endpoints/chat/playground/chat/", {"message": "hi"}).status_code == 403
    assert client.post("/inference-keys/").status_code == 403
    assert "Seeing the keys needs the Contributor role" in client.get("/").content.decode()


def test_outsiders_get_404(client, outsider, owner_api, chat):
    client.force_login(outsider)
    subscribe(owner_api)
    create(owner_api)
    assert client.get("/endpoints/chat/").status_code == 404
    assert client.post("/endpoints/chat/playground/chat/", {"message": "hi"}).status_code == 404


def test_deleting_from_the_page_goes_back_to_the_serverless_tab(owner_client, owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    response = owner_client.post("/endpoints/chat/delete/")
    assert response.status_code == 302 and response["Location"] == "/endpoints/?kind=serverless"
    assert not Endpoint.objects.filter(name="chat").exists()


def test_the_overview_shows_the_unified_endpoint_and_its_keys(owner_client, owner_api, workspace, chat):
    subscribe(owner_api)
    create(owner_api)
    html = owner_client.get("/").content.decode()
    assert 'id="unified-url">http://testserver/models<' in html
    assert "<code>chat</code>" in html and 'id="show-inference-keys"' in html
    shown = owner_client.post("/inference-keys/", HTTP_HX_REQUEST="true").content.decode()
    api_keys = owner_api.post("/api/v1/workspaces/team/list-inference-keys").json()
    assert f'id="inference-primary-key">{api_keys["primary_key"]}<' in shown
    regenerated = owner_client.post("/inference-keys/", {"key_type": "secondary"}, HTTP_HX_REQUEST="true")
    assert api_keys["secondary_key"] not in regenerated.content.decode()


def test_the_playground_checks_its_form_with_the_field_named(owner_client, owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    url = "/endpoints/chat/playground/chat/"
    for data, field in [
        ({}, "message"),
        ({"message": "hi", "temperature": "3"}, "temperature"),
        ({"message": "hi", "max_tokens": "0"}, "max_tokens"),
        ({"message": "hi", "max_tokens": "many"}, "max_tokens"),
        ({"message": "hi", "history": "[{\"role\": \"system\", \"content\": 1}]"}, "history"),
        ({"message": "hi", "system": "x" * 5000}, "system"),
    ]:
        response = owner_client.post(url, data)
        assert response.status_code == 400, data
        assert response.json()["error"]["field"] == field, data


def test_an_embeddings_endpoint_gets_the_similarity_playground(owner_client, owner_api, workspace):
    CatalogModel.objects.create(
        name="all-minilm-l6-v2", task="embeddings", format="sentence-transformers", license="Apache-2.0",
        deployment_kinds=["online", "serverless"], price_input_per_1k=Decimal("0.00002"),
        price_output_per_1k=Decimal("0"),
    )
    model_id = "studio://registries/studio/models/all-minilm-l6-v2"
    subscribe(owner_api, model_id)
    create(owner_api, "embed", model_id)
    html = owner_client.get("/endpoints/embed/test/").content.decode()
    assert 'id="embeddings-playground"' in html and 'id="chat-playground"' not in html
    empty = owner_client.post("/endpoints/embed/playground/embeddings/", {"text_a": "x"}).content.decode()
    assert "Type two texts to compare." in empty
    consume = owner_client.get("/endpoints/embed/consume/").content.decode()
    assert "client.embeddings.create(" in consume and "/embeddings" in consume


def test_the_monitoring_tab_charts_a_serverless_endpoints_tokens_and_cost(owner_client, owner_api, chat):
    from django.utils import timezone

    from endpoints_app.models import UsageMinute

    subscribe(owner_api)
    create(owner_api)
    minute = timezone.now().replace(second=0, microsecond=0)
    UsageMinute.objects.create(endpoint=Endpoint.objects.get(name="chat"), deployment="", minute=minute, requests=3,
                               status_2xx=3, tokens_in=300_000, tokens_out=900_000, latency_ms_sum=30,
                               status_codes={"200": 3})
    html = owner_client.get("/endpoints/chat/monitoring/").content.decode()
    # 300 x 0.0002 + 900 x 0.0006 = 0.60
    assert 'data-stat="requests">3<' in html and "$0.60" in html
    assert ">Logs<" not in html
