"""The clients users point at us, unmodified: the official `openai` package (OpenAI and AzureOpenAI)
and `azure-ai-inference` (ChatCompletionsClient, EmbeddingsClient with AzureKeyCredential), against
a running studio (the web process, which serves the gateway's routes) with real SmolLM2 and MiniLM
servers; an online endpoint first, then serverless endpoints and the unified endpoint."""

from __future__ import annotations

import pytest

from tests.foundation.conftest import CHAT, EMBEDDINGS, needs_llama
from tests.gateway.conftest import BIN, free_port, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_llama]

QUESTION = [{"role": "system", "content": "Answer in one short sentence."},
            {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def start_studio(procs):
    """studio() starts the studio's web process (portal.asgi: Django, and the gateway for /inference/,
    /models/ and /openai/) once the test's endpoints exist, and returns its base URL."""

    def start() -> str:
        port = free_port()
        proc = procs.start([str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan",
                            "on", "--no-access-log", "--loop", "uvloop", "--http", "httptools"], name="web")
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", proc=proc)
        return url

    return start


def _chat_and_stream(client, model: str) -> None:
    answer = client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0)
    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 10 and answer.usage.completion_tokens > 0

    chunks = list(client.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert len([c for c in chunks if c.choices]) > 3 and text.strip()
    assert chunks[-1].usage.prompt_tokens == answer.usage.prompt_tokens
    assert chunks[-1].usage.completion_tokens > 0


def _embeddings(client, model: str) -> None:
    floats = client.embeddings.create(model=model, input=["hello world", "bonjour"])  # base64 on the wire
    assert [len(d.embedding) for d in floats.data] == [384, 384]
    assert floats.usage.prompt_tokens > 4
    plain = client.embeddings.create(model=model, input="hello world", encoding_format="float")
    assert plain.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-5, abs=1e-6)


def test_openai_client_on_online_endpoints(start_studio, foundation_endpoint):
    from openai import OpenAI

    _, chat_key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    _, emb_key = foundation_endpoint("emb", {"blue": (EMBEDDINGS, 100)})
    studio = start_studio()

    _chat_and_stream(OpenAI(base_url=f"{studio}/inference/chat", api_key=chat_key), "anything")
    _embeddings(OpenAI(base_url=f"{studio}/inference/emb", api_key=emb_key), "anything")


def test_azure_ai_inference_on_an_online_endpoint(start_studio, foundation_endpoint):
    from azure.ai.inference import ChatCompletionsClient
    from azure.ai.inference.models import SystemMessage, UserMessage
    from azure.core.credentials import AzureKeyCredential

    _, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    studio = start_studio()
    client = ChatCompletionsClient(endpoint=f"{studio}/inference/chat", credential=AzureKeyCredential(key))

    answer = client.complete(messages=[SystemMessage("Answer in one short sentence."),
                                       UserMessage("What is the capital of France?")], max_tokens=24, temperature=0)
    info = client.get_model_info()

    assert "Paris" in answer.choices[0].message.content
    assert answer.usage.prompt_tokens > 10
    assert info.model_name == CHAT and info.model_type == "chat-completion"


def test_openai_clients_on_serverless_and_unified_endpoints(start_studio, serverless_endpoint):
    from openai import AzureOpenAI, OpenAI

    _, smol_key, inference_key = serverless_endpoint("smol", CHAT)
    _, minilm_key, _ = serverless_endpoint("minilm", EMBEDDINGS)
    studio = start_studio()

    _chat_and_stream(OpenAI(base_url=f"{studio}/inference/smol", api_key=smol_key), "smol")
    _embeddings(OpenAI(base_url=f"{studio}/inference/minilm", api_key=minilm_key), "minilm")
    unified = OpenAI(base_url=f"{studio}/models", api_key=inference_key)
    # client.models.list(): what the key reaches, in the OpenAI list shape.
    assert [m.id for m in unified.models.list()] == ["minilm", "smol"]
    assert [m.id for m in OpenAI(base_url=f"{studio}/inference/smol", api_key=smol_key).models.list()] == ["smol"]
    _chat_and_stream(unified, "SMOL")
    _embeddings(unified, "MiniLM")
    azure = AzureOpenAI(azure_endpoint=studio, api_key=inference_key, api_version="2024-10-21")
    _chat_and_stream(azure, "smol")
    _embeddings(azure, "minilm")


def test_azure_ai_inference_on_serverless_endpoints(start_studio, serverless_endpoint):
    from azure.ai.inference import ChatCompletionsClient, EmbeddingsClient
    from azure.ai.inference.models import UserMessage
    from azure.core.credentials import AzureKeyCredential

    _, smol_key, _ = serverless_endpoint("smol", CHAT)
    _, minilm_key, _ = serverless_endpoint("minilm", EMBEDDINGS)
    studio = start_studio()
    chat = ChatCompletionsClient(endpoint=f"{studio}/inference/smol", credential=AzureKeyCredential(smol_key))
    embed = EmbeddingsClient(endpoint=f"{studio}/inference/minilm", credential=AzureKeyCredential(minilm_key))

    streamed = chat.complete(messages=[UserMessage("Name a colour.")], max_tokens=12, stream=True)
    pieces = [update.choices[0].delta.content or "" for update in streamed if update.choices]
    vectors = embed.embed(input=["hello world", "goodbye"])

    assert len(pieces) > 3 and "".join(pieces).strip()
    assert [len(item.embedding) for item in vectors.data] == [384, 384]
    assert vectors.usage.prompt_tokens > 4
    assert embed.get_model_info().model_name == EMBEDDINGS
