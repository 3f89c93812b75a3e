"""Keyless calls to the model inference API with identity tokens from the real OpenID provider, from
the clients users already have, unmodified: `AzureOpenAI(azure_ad_token_provider=...)`, `OpenAI` on
/models with a token, and `ChatCompletionsClient(credential=<token credential>)`; an online
foundation endpoint in aad_token mode too."""

from __future__ import annotations

import time

import pytest

from endpoints_app.models import Endpoint, OidcIdentity, RouteVersion
from endpoints_app.services.audit import SYSTEM
from endpoints_app.services.identity import do_grant_service_principal
from tests.foundation.conftest import CHAT, EMBEDDINGS, needs_llama
from tests.gateway.conftest import BIN, child_env, free_port, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_llama]

QUESTION = [{"role": "user", "content": "What is the capital of France? One word."}]


class ProviderCredential:
    """An azure-core TokenCredential: the service principal's token from the provider."""

    def __init__(self, provider) -> None:
        self.provider = provider

    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken(self.provider.client_token("ci-pipeline"), int(time.time()) + 600)


@pytest.fixture
def studio_with_provider(procs, identity_provider):
    def start() -> str:
        port = free_port()
        proc = procs.start([str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan",
                            "on", "--no-access-log"], env=child_env(**identity_provider.env()), name="web")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", proc=proc)
        return url

    return start


def test_model_inference_api_takes_identity_tokens_from_unmodified_clients(
        studio_with_provider, serverless_endpoint, foundation_endpoint, identity_provider, workspace, owner):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import UserMessage
    from openai import AzureOpenAI, OpenAI, PermissionDeniedError

    serverless_endpoint("smol", CHAT)
    # (Each model's session server backs one deployment: the online endpoint takes MiniLM.)
    online, _ = foundation_endpoint("emb-by-identity", {"blue": (EMBEDDINGS, 100)})
    Endpoint.objects.filter(pk=online.pk).update(auth_mode="aad_token")
    OidcIdentity.objects.create(user=owner, issuer=identity_provider.issuer, subject="alice")
    do_grant_service_principal(SYSTEM, workspace, "ci-pipeline", "Contributor")
    RouteVersion.bump()
    studio = studio_with_provider()
    person = identity_provider.user_tokens("alice")["access_token"]

    azure = AzureOpenAI(azure_endpoint=studio, api_version="2024-10-21",
                        azure_ad_token_provider=lambda: identity_provider.client_token("ci-pipeline"))
    chat = azure.chat.completions.create(model="smol", messages=QUESTION, max_tokens=8, temperature=0)
    assert "Paris" in chat.choices[0].message.content

    unified = OpenAI(base_url=f"{studio}/models", api_key=person)
    assert unified.chat.completions.create(model="SMOL", messages=QUESTION, max_tokens=8).choices
    online_client = OpenAI(base_url=f"{studio}/inference/emb-by-identity", api_key=person)
    assert len(online_client.embeddings.create(model="x", input="hello").data[0].embedding) == 384

    client = ChatCompletionsClient(endpoint=f"{studio}/models", credential=ProviderCredential(identity_provider),
                                   credential_scopes=["api://studio/.default"])
    # azure-core sends bearer tokens over https only unless told; the test studio speaks plain http.
    answer = client.complete(messages=[UserMessage("What is the capital of France? One word.")], model="smol",
                             max_tokens=8, temperature=0, enforce_https=False)
    assert "Paris" in answer.choices[0].message.content

    # A service principal that nobody granted: a 404 naming the model it asked for in its workspaces.
    stranger = OpenAI(base_url=f"{studio}/models", api_key=identity_provider.client_token("other-robot"))
    with pytest.raises(Exception) as refused:
        stranger.chat.completions.create(model="smol", messages=QUESTION, max_tokens=8)
    assert "smol" in str(refused.value)
    with pytest.raises(PermissionDeniedError):
        OpenAI(base_url=f"{studio}/inference/emb-by-identity",
               api_key=identity_provider.client_token("other-robot")).embeddings.create(model="x", input="hi")
