"""swagger.json documents the routes the endpoint's models really serve."""

import json

from drf_spectacular.validation import validate_schema

from endpoints_app.catalog.cards import card
from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute, served_routes
from endpoints_app.gateway.swagger import build_swagger


def _deployment(name: str, model: str) -> DeploymentRoute:
    fields = card(model)
    return DeploymentRoute(
        name=name, instances=[], request_timeout_s=5, max_concurrent_per_instance=1, model_name=model,
        model_task=fields["task"], input_schema=fields["input_schema"], output_schema=fields["output_schema"],
        sample_request=fields["sample_request"], routes=served_routes(fields["format"], fields["task"]),
    )


def _endpoint(*deployments: DeploymentRoute) -> EndpointRoute:
    return EndpointRoute(id=1, name="llm", kind="online", auth_mode="key", key_digests=(),
                         deployments={d.name: d for d in deployments}, traffic={deployments[0].name: 100},
                         mirror_traffic={})


def test_it_documents_chat_completions_and_info_for_a_chat_model_and_no_score():
    chat = _deployment("blue", "smollm2-135m-instruct")

    spec = build_swagger(_endpoint(chat), chat, "http://studio/inference/llm")

    validate_schema(spec)
    assert set(spec["paths"]) == {"/chat/completions", "/completions", "/info"}
    operation = spec["paths"]["/chat/completions"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["example"] == card("smollm2-135m-instruct")[
        "sample_request"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]


def test_it_documents_what_each_deployment_serves():
    gemma, minilm = _deployment("gemma", "gemma-3-270m"), _deployment("minilm", "all-minilm-l6-v2")

    spec = build_swagger(_endpoint(gemma, minilm), gemma, "http://studio/inference/llm")

    validate_schema(spec)
    assert set(spec["paths"]) == {"/completions", "/info", "/score", "/embeddings"}
    assert "chat/completions" not in served_routes("gguf", "text-generation")


def test_a_serverless_endpoint_does_not_show_its_pool():
    pool = _deployment("smollm2-135m-instruct-v1", "smollm2-135m-instruct")
    endpoint = EndpointRoute(id=2, name="chat", kind="serverless", auth_mode="key", key_digests=(),
                             deployments={pool.name: pool}, traffic={pool.name: 100}, mirror_traffic={})

    spec = build_swagger(endpoint, pool, "http://studio/inference/chat")

    validate_schema(spec)
    assert pool.name not in json.dumps(spec["paths"])
