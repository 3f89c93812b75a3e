"""Serverless endpoints and the unified endpoint on the data plane: real MiniLM and SmolLM2 servers as
the platform pools' instances, endpoints made through the REST API, the gateway as its own process."""

from __future__ import annotations

import time

import pytest
import requests

from endpoints_app.models import UsageMinute
from tests.foundation.conftest import CHAT, EMBEDDINGS, WS, needs_llama
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def _metered(endpoint, count: int, timeout: float = 15) -> list[UsageMinute]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(UsageMinute.objects.filter(endpoint=endpoint))
        if sum(r.requests for r in rows) >= count:
            return rows
        time.sleep(0.2)
    return list(UsageMinute.objects.filter(endpoint=endpoint))


def test_a_serverless_endpoint_answers_embeddings_and_info_with_limit_headers(procs, serverless_endpoint):
    endpoint, key, _ = serverless_endpoint("minilm", EMBEDDINGS)
    url, _ = procs.gateway()
    base = f"{url}/inference/minilm"

    answer = requests.post(f"{base}/embeddings?api-version=2024-05-01-preview", headers=auth(key),
                           json={"input": ["hello world"]})
    info = requests.get(f"{base}/info", headers={"api-key": key})
    score = requests.post(f"{base}/score", headers=auth(key), json={"input_data": ["x"]})
    wrong_key = requests.post(f"{base}/embeddings", headers=auth("nope"), json={"input": "x"})

    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] == 4
    assert "azureml-model-deployment" not in answer.headers  # the pool is the platform's
    assert int(answer.headers["x-ratelimit-remaining-requests"]) == 999
    assert int(answer.headers["x-ratelimit-remaining-tokens"]) < 200_000
    assert info.json()["model_name"] == EMBEDDINGS
    assert score.status_code == 404
    assert wrong_key.status_code == 401
    rows = _metered(endpoint, 2)
    assert {r.deployment for r in rows} == {""}  # metered on the endpoint, priced by its model
    assert sum(r.tokens_in for r in rows) == 4


def test_the_unified_endpoint_routes_by_model_case_insensitively(procs, serverless_endpoint):
    _, _, inference_key = serverless_endpoint("minilm", EMBEDDINGS)
    url, _ = procs.gateway()

    by_name = requests.post(f"{url}/models/embeddings", headers=auth(inference_key),
                            json={"model": "MiniLM", "input": "hello world"})
    by_model = requests.post(f"{url}/models/embeddings", headers={"api-key": inference_key},
                             json={"model": EMBEDDINGS.upper(), "input": "hello world"})
    azure = requests.post(f"{url}/openai/deployments/MINILM/embeddings?api-version=2024-10-21",
                          headers={"api-key": inference_key}, json={"input": ["hello world"]})
    unknown = requests.post(f"{url}/models/embeddings", headers=auth(inference_key),
                            json={"model": "gpt-9", "input": "x"})
    no_model = requests.post(f"{url}/models/embeddings", headers=auth(inference_key), json={"input": "x"})
    bad_key = requests.post(f"{url}/models/embeddings", headers=auth("nope"), json={"model": "minilm", "input": "x"})

    assert by_name.status_code == 200, by_name.text
    assert by_name.json()["model"] == "MiniLM"
    assert by_model.status_code == 200
    assert azure.status_code == 200 and azure.json()["usage"]["prompt_tokens"] == 4
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "ModelNotFound" and "minilm" in unknown.json()["error"]["message"]
    assert no_model.status_code == 400 and no_model.json()["error"]["field"] == "model"
    assert bad_key.status_code == 401


def test_an_unsubscribed_endpoint_answers_403_naming_the_subscription_until_subscribed_again(
        procs, serverless_endpoint, owner_api):
    endpoint, key, inference_key = serverless_endpoint("minilm", EMBEDDINGS)
    url, _ = procs.gateway()
    call = {"input": "hello"}
    assert requests.post(f"{url}/inference/minilm/embeddings", headers=auth(key), json=call).status_code == 200

    assert owner_api.delete(f"{WS}/marketplace-subscriptions/{EMBEDDINGS}").status_code in (200, 202, 204)
    time.sleep(1.5)  # the gateway reloads its routes on the version bump
    refused = requests.post(f"{url}/inference/minilm/embeddings", headers=auth(key), json=call)
    unified = requests.post(f"{url}/models/embeddings", headers=auth(inference_key), json={**call, "model": "minilm"})
    owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": endpoint.model.asset_id}, format="json")
    time.sleep(1.5)
    healed = requests.post(f"{url}/inference/minilm/embeddings", headers=auth(key), json=call)

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "SubscriptionRequired"
    assert EMBEDDINGS in refused.json()["error"]["message"] and "subscription" in refused.json()["error"]["message"]
    assert unified.status_code == 403
    assert healed.status_code == 200


def test_a_stopped_pool_answers_503_with_retry_after(procs, serverless_endpoint):
    _, key, _ = serverless_endpoint("minilm", EMBEDDINGS, with_instance=False)
    url, _ = procs.gateway(STUDIO_GATEWAY_COLD_WAIT_SECONDS="1")

    began = time.monotonic()
    answer = requests.post(f"{url}/inference/minilm/embeddings", headers=auth(key), json={"input": "x"})

    assert answer.status_code == 503
    assert answer.headers["retry-after"]
    assert "starting" in answer.json()["error"]["message"]
    assert time.monotonic() - began < 5


@needs_llama
def test_serverless_chat_streams_through_the_unified_endpoint(procs, serverless_endpoint):
    endpoint, _, inference_key = serverless_endpoint("smol", CHAT)
    url, _ = procs.gateway()

    with requests.post(f"{url}/models/chat/completions", headers=auth(inference_key), stream=True, json={
        "model": "Smol", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 12,
        "stream": True, "stream_options": {"include_usage": True},
    }) as answer:
        lines = [line for line in answer.iter_lines() if line.startswith(b"data: ")]

    assert answer.status_code == 200
    assert lines[-1] == b"data: [DONE]"
    assert b'"usage"' in lines[-2]
    rows = _metered(endpoint, 1)
    assert sum(r.tokens_in for r in rows) > 5 and sum(r.tokens_out for r in rows) > 0


def test_models_lists_what_the_key_reaches_in_the_openai_shape(procs, serverless_endpoint):
    _, minilm_key, inference_key = serverless_endpoint("minilm", EMBEDDINGS)
    url, _ = procs.gateway()

    unified = requests.get(f"{url}/models/models", headers=auth(inference_key))
    one = requests.get(f"{url}/inference/minilm/models", headers={"api-key": minilm_key})
    wrong = requests.get(f"{url}/inference/minilm/models", headers=auth(inference_key))

    assert unified.status_code == 200, unified.text
    body = unified.json()
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["minilm"]
    assert body["data"][0]["object"] == "model" and body["data"][0]["created"] > 1_700_000_000
    assert [m["id"] for m in one.json()["data"]] == ["minilm"]
    assert wrong.status_code == 401
    assert requests.get(f"{url}/models/models", headers=auth("nope")).status_code == 401
