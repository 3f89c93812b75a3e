"""OpenAPI 3.1 description of one endpoint, derived from its model's input and output schema
(3.1 because model schemas are plain JSON Schema, which 3.0 only partly accepts).

Only the routes the endpoint's models really serve are documented: /score for the models the
studio's own server scores, the model inference API (chat/completions, completions, embeddings,
info) for foundation models (routes.served_routes)."""

from __future__ import annotations

from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute

ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
        }
    },
}

ERROR_RESPONSES = {
    "400": "Malformed JSON.",
    "401": "Missing or invalid key or token.",
    "404": "No such endpoint or deployment.",
    "413": "Payload too large.",
    "422": "The model rejected the input; the message is the model's.",
    "429": "Too many requests in flight; retry after the Retry-After header's seconds.",
    "502": "The model server failed.",
    "503": "No ready instance.",
    "504": "The model did not answer within request_timeout_ms.",
}


MESSAGES = {
    "type": "array", "minItems": 1,
    "items": {"type": "object", "required": ["role", "content"], "properties": {
        "role": {"type": "string", "enum": ["system", "user", "assistant", "tool", "developer"]},
        "content": {"type": "string"}}},
}
GENERATION = {
    "max_tokens": {"type": "integer", "minimum": 1, "description": "At most the model's context length."},
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "minimum": 0, "maximum": 1},
    "stop": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": 4}]},
    "seed": {"type": "integer"},
    "stream": {"type": "boolean", "description": "Server-sent events, ending with data: [DONE]."},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "model": {"type": "string"},
}
USAGE = {"type": "object", "properties": {"prompt_tokens": {"type": "integer"},
                                          "completion_tokens": {"type": "integer"},
                                          "total_tokens": {"type": "integer"}}}
INFERENCE_OPERATIONS = {
    "chat/completions": ("Chat completion (OpenAI / model inference API shape).", {
        "type": "object", "required": ["messages"], "properties": {"messages": MESSAGES, **GENERATION}},
        {"type": "object", "properties": {"choices": {"type": "array"}, "usage": USAGE}}),
    "completions": ("Text completion (OpenAI / model inference API shape).", {
        "type": "object", "required": ["prompt"], "properties": {"prompt": {"type": "string"}, **GENERATION}},
        {"type": "object", "properties": {"choices": {"type": "array"}, "usage": USAGE}}),
    "embeddings": ("Embeddings (OpenAI / model inference API shape).", {
        "type": "object", "required": ["input"], "properties": {
            "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]},
            "encoding_format": {"type": "string", "enum": ["float", "base64"]},
            "model": {"type": "string"}}},
        {"type": "object", "properties": {"data": {"type": "array"}, "usage": USAGE}}),
}
INFO_SCHEMA = {"type": "object", "properties": {"model_name": {"type": "string"}, "model_type": {"type": "string"},
                                                "model_provider_name": {"type": "string"}}}


def _served(endpoint: EndpointRoute, deployment: DeploymentRoute | None) -> list[str]:
    """Routes of the documented deployment, then any other route another deployment serves."""
    routes = list(deployment.routes) if deployment is not None else ["score"]
    for other in endpoint.deployments.values():
        routes += [r for r in other.routes if r not in routes]
    return routes


def build_swagger(endpoint: EndpointRoute, deployment: DeploymentRoute | None, server_url: str) -> dict:
    input_schema = (deployment.input_schema if deployment else None) or {"type": "object"}
    output_schema = (deployment.output_schema if deployment else None) or {}
    request_content: dict = {"schema": input_schema}
    if deployment and deployment.sample_request is not None:
        request_content["example"] = deployment.sample_request
    ok_content: dict = {"schema": output_schema}
    if deployment and deployment.sample_response is not None:
        ok_content["example"] = deployment.sample_response
    description = f"Scoring endpoint {endpoint.name}."
    if deployment is not None:
        description += f" Schema of deployment {deployment.name}"
        if deployment.model_name:
            description += f" (model {deployment.model_name}:{deployment.model_version}, {deployment.model_task})"
        description += "."
    responses: dict = {
        "200": {
            "description": "The model's output. Header azureml-model-deployment names the deployment that answered.",
            "headers": {"azureml-model-deployment": {"schema": {"type": "string"}}},
            "content": {"application/json": ok_content},
        }
    }
    for status, text in ERROR_RESPONSES.items():
        responses[status] = {
            "description": text,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    responses["429"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    security = [{"Bearer": []}] if endpoint.auth_mode != "key" else [{"Bearer": []}, {"ApiKey": []}]
    target = {
        "name": "azureml-model-deployment",
        "in": "header",
        "required": False,
        "description": "Send the request to this deployment, whatever the traffic split.",
        "schema": {"type": "string", **({"enum": sorted(endpoint.deployments)} if endpoint.deployments else {})},
    }
    # A serverless endpoint's one deployment is the platform's pool: nothing to target.
    targets = [] if endpoint.kind == "serverless" else [target]
    paths: dict = {}
    for route in _served(endpoint, deployment):
        if route == "score":
            paths["/score"] = {"post": {
                "operationId": "score",
                "summary": "Score input with the endpoint's model.",
                "parameters": targets,
                "requestBody": {"required": True, "content": {"application/json": request_content}},
                "responses": responses,
            }}
        elif route == "info":
            paths["/info"] = {"get": {
                "operationId": "info",
                "summary": "The model behind the endpoint.",
                "parameters": targets,
                "responses": {"200": {"description": "Model name, type and provider.",
                                      "content": {"application/json": {"schema": INFO_SCHEMA}}}},
            }}
        else:
            summary, request_schema, response_schema = INFERENCE_OPERATIONS[route]
            content: dict = {"schema": request_schema}
            if deployment is not None and isinstance(deployment.sample_request, dict) and (
                ("messages" in deployment.sample_request and route == "chat/completions")
                or ("prompt" in deployment.sample_request and route == "completions")
            ):
                content["example"] = deployment.sample_request
            route_responses = {**responses, "200": {
                "description": "The model's answer, with usage; text/event-stream when stream is true.",
                "headers": {"azureml-model-deployment": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": response_schema},
                            "text/event-stream": {"schema": {"type": "string"}}},
            }}
            paths["/" + route] = {"post": {
                "operationId": route.replace("/", "_"),
                "summary": summary,
                "parameters": [*targets, {"name": "api-version", "in": "query", "required": False,
                                        "description": "Accepted and ignored.", "schema": {"type": "string"}}],
                "requestBody": {"required": True, "content": {"application/json": content}},
                "responses": route_responses,
            }}
    return {
        "openapi": "3.1.0",
        "info": {"title": endpoint.name, "version": str(deployment.model_version if deployment else 1),
                 "description": description},
        "servers": [{"url": server_url}],
        "security": security,
        "paths": paths,
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer",
                           "description": "An endpoint key, or a token for aml_token endpoints."},
                "ApiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
        },
    }
