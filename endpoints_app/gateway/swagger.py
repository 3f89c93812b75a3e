"""OpenAPI 3.1 description of one endpoint, derived from its model's input and output schema
(3.1 because model schemas are plain JSON Schema, which 3.0 only partly accepts)."""

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
    return {
        "openapi": "3.1.0",
        "info": {"title": endpoint.name, "version": str(deployment.model_version if deployment else 1),
                 "description": description},
        "servers": [{"url": server_url}],
        "security": security,
        "paths": {
            "/score": {
                "post": {
                    "operationId": "score",
                    "summary": "Score input with the endpoint's model.",
                    "parameters": [
                        {
                            "name": "azureml-model-deployment",
                            "in": "header",
                            "required": False,
                            "description": "Send the request to this deployment, whatever the traffic split.",
                            "schema": {"type": "string", **({"enum": sorted(endpoint.deployments)}
                                                            if endpoint.deployments else {})},
                        }
                    ],
                    "requestBody": {"required": True, "content": {"application/json": request_content}},
                    "responses": responses,
                }
            }
        },
        "components": {
            "schemas": {"Error": ERROR_SCHEMA},
            "securitySchemes": {
                "Bearer": {"type": "http", "scheme": "bearer",
                           "description": "An endpoint key, or a token for aml_token endpoints."},
                "ApiKey": {"type": "apiKey", "in": "header", "name": "api-key"},
            },
        },
    }
