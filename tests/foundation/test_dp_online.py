"""Foundation models on online endpoints: the model inference API through the gateway, with real
MiniLM, SmolLM2 and Gemma servers, keys, traffic split, header targeting and metering."""

from __future__ import annotations

import base64
import json
import struct
import time

import pytest
import requests

from endpoints_app.models import UsageMinute
from tests.foundation.conftest import CHAT, COMPLETION, EMBEDDINGS, needs_llama
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _usage(endpoint) -> dict:
    rows = UsageMinute.objects.filter(endpoint=endpoint)
    return {
        "requests": sum(r.requests for r in rows),
        "tokens_in": sum(r.tokens_in for r in rows),
        "tokens_out": sum(r.tokens_out for r in rows),
    }


def _wait_usage(endpoint, requests_count: int, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        usage = _usage(endpoint)
        if usage["requests"] >= requests_count:
            return usage
        time.sleep(0.2)
    return _usage(endpoint)


def test_it_relays_embeddings_in_float_and_base64_with_usage(procs, foundation_endpoint):
    endpoint, key = foundation_endpoint("emb", {"blue": (EMBEDDINGS, 100)})
    url, _ = procs.gateway()
    base = f"{url}/inference/emb"

    floats = requests.post(f"{base}/embeddings?api-version=2024-05-01-preview", headers=auth(key),
                           json={"input": ["hello world", "a second text"]})
    packed = requests.post(f"{base}/embeddings", headers={"api-key": key},
                           json={"input": "hello world", "encoding_format": "base64"})

    assert floats.status_code == 200, floats.text
    assert floats.headers["azureml-model-deployment"] == "blue"
    body = floats.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert len(body["data"][0]["embedding"]) == 384
    # MiniLM's word pieces: [CLS] hello world [SEP] and [CLS] a second text [SEP].
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    assert packed.status_code == 200, packed.text
    decoded = struct.unpack("<384f", base64.b64decode(packed.json()["data"][0]["embedding"]))
    assert decoded == pytest.approx(body["data"][0]["embedding"], rel=1e-5, abs=1e-6)
    assert packed.json()["usage"]["prompt_tokens"] == 4

    usage = _wait_usage(endpoint, 2)
    assert usage["tokens_in"] == 9 + 4


def test_it_answers_info_and_404s_routes_the_model_does_not_serve(procs, foundation_endpoint):
    _, key = foundation_endpoint("emb", {"blue": (EMBEDDINGS, 100)})
    url, _ = procs.gateway()
    base = f"{url}/inference/emb"

    info = requests.get(f"{base}/info?api-version=2024-05-01-preview", headers=auth(key))
    chat = requests.post(f"{base}/chat/completions", headers=auth(key),
                         json={"messages": [{"role": "user", "content": "hi"}]})
    anonymous = requests.get(f"{base}/info")

    assert info.status_code == 200
    assert info.json() == {"model_name": EMBEDDINGS, "model_type": "embeddings",
                           "model_provider_name": "sentence-transformers"}
    assert chat.status_code == 404
    error = chat.json()["error"]
    assert error["code"] == "RouteNotServed"
    assert "POST /embeddings" in error["message"] and "GET /info" in error["message"]
    assert anonymous.status_code == 401


@pytest.mark.parametrize(("body", "field"), [
    ({}, "input"),
    ({"input": []}, "input"),
    ({"input": ["ok", 3]}, "input[1]"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "dimensions": 12}, "dimensions"),
    ({"input": "x", "temperature": 1}, "temperature"),
])
def test_it_refuses_bad_embedding_requests_naming_the_field(procs, foundation_endpoint, body, field):
    _, key = foundation_endpoint("emb", {"blue": (EMBEDDINGS, 100)})
    url, _ = procs.gateway()

    answer = requests.post(f"{url}/inference/emb/embeddings", headers=auth(key), json=body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field


@needs_llama
def test_it_relays_chat_and_meters_its_tokens(procs, foundation_endpoint):
    endpoint, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    url, _ = procs.gateway()
    request = {"messages": [{"role": "system", "content": "Answer in one sentence."},
                            {"role": "user", "content": "What is the capital of France?"}],
               "max_tokens": 24, "temperature": 0, "seed": 1}

    answer = requests.post(f"{url}/inference/chat/chat/completions?api-version=2024-05-01-preview",
                           headers=auth(key), json=request)

    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "Paris" in body["choices"][0]["message"]["content"]
    assert answer.headers["azureml-model-deployment"] == "blue"
    usage = _wait_usage(endpoint, 1)
    assert usage["tokens_in"] == body["usage"]["prompt_tokens"] > 10
    assert usage["tokens_out"] == body["usage"]["completion_tokens"] > 0


def _events(response) -> list:
    events = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            data = line[6:]
            events.append(data.decode() if data == b"[DONE]" else json.loads(data))
    return events


@needs_llama
def test_a_stream_arrives_in_chunks_ends_with_done_and_counts_tokens_exactly(procs, foundation_endpoint):
    endpoint, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    url, _ = procs.gateway()
    request = {"messages": [{"role": "user", "content": "Name three colours."}], "max_tokens": 20,
               "temperature": 0, "seed": 7}
    whole = requests.post(f"{url}/inference/chat/chat/completions", headers=auth(key), json=request).json()

    with requests.post(f"{url}/inference/chat/chat/completions", headers=auth(key), stream=True,
                       json={**request, "stream": True, "stream_options": {"include_usage": True}}) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        events = _events(streamed)

    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    # Both stopped at max_tokens: the same prompt and the same number of generated tokens.
    assert whole["choices"][0]["finish_reason"] == "length" == events[-3]["choices"][0]["finish_reason"]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == whole["usage"]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2] if e["choices"])
    assert text.strip()
    assert len([e for e in events[:-2] if e["choices"]]) > 3  # token by token, not one buffered blob
    usage = _wait_usage(endpoint, 2)
    assert usage["tokens_in"] == 2 * whole["usage"]["prompt_tokens"]
    assert usage["tokens_out"] == 2 * whole["usage"]["completion_tokens"]


@needs_llama
def test_gemma_serves_completions_only(procs, foundation_endpoint):
    _, key = foundation_endpoint("gem", {"blue": (COMPLETION, 100)})
    url, _ = procs.gateway()

    done = requests.post(f"{url}/inference/gem/completions", headers=auth(key),
                         json={"prompt": "The three primary colours are", "max_tokens": 8})
    chat = requests.post(f"{url}/inference/gem/chat/completions", headers=auth(key),
                         json={"messages": [{"role": "user", "content": "hi"}]})

    assert done.status_code == 200, done.text
    assert done.json()["choices"][0]["text"]
    assert done.json()["usage"]["completion_tokens"] > 0
    assert chat.status_code == 404
    assert "POST /completions" in chat.json()["error"]["message"]
