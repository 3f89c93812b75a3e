"""What the gateway's request handlers share: limits from the environment, request ids, auth by
endpoint key or token, error responses in the contract's shape, token counts from a response."""

from __future__ import annotations

import itertools
import json
import os
from typing import NamedTuple

from django.conf import settings

from endpoints_app import jsonbody, keys
from endpoints_app.gateway.routes import EndpointRoute

# Checked at start-up with every other setting (portal/settings.py).
MAX_PAYLOAD_BYTES = settings.STUDIO_GATEWAY_MAX_PAYLOAD_BYTES
# Off only to measure what metering costs (bench/gateway.py); usage and cost go unrecorded.
METERING = settings.STUDIO_GATEWAY_METERING
JSON_TYPE = b"application/json"
# Request ids: a random per-process prefix and a counter (no entropy syscall per request).
_REQUEST_PREFIX = os.urandom(6).hex()
_request_numbers = itertools.count(1)
MAX_REQUEST_ID_BYTES = 128


def request_id() -> str:
    return f"{_REQUEST_PREFIX}-{next(_request_numbers)}"


def client_request_id(value: bytes) -> bytes | None:
    """The client's x-request-id when it is short printable ASCII (it goes upstream and back), else None."""
    if 0 < len(value) <= MAX_REQUEST_ID_BYTES and value.isascii() and value.decode("ascii").isprintable():
        return value
    return None


class RequestHeaders(NamedTuple):
    """The headers the gateway acts on, read in one pass over the request's headers."""

    auth: bytes | None = None
    api_key: bytes | None = None
    pinned: str | None = None  # azureml-model-deployment
    content_length: bytes | None = None
    host: bytes = b"localhost"
    request_id: bytes | None = None  # the client's x-request-id when usable (client_request_id)
    extra_parameters: str | None = None


def request_headers(scope) -> RequestHeaders:
    auth = api_key = pinned = content_length = rid = extra = None
    host = b"localhost"
    for header, value in scope["headers"]:
        if header == b"authorization":
            auth = value
        elif header == b"api-key":
            api_key = value
        elif header == b"azureml-model-deployment":
            pinned = value.decode("latin-1").strip()
        elif header == b"content-length":
            content_length = value
        elif header == b"host":
            host = value
        elif header == b"x-request-id":
            rid = client_request_id(value)
        elif header == b"extra-parameters":
            extra = value.decode("latin-1").strip().lower()
    return RequestHeaders(auth, api_key, pinned, content_length, host, rid, extra)


def presented_credentials(auth: bytes | None, api_key: bytes | None) -> list[str]:
    """What the caller presented in either header; clients such as azure-ai-inference send both."""
    presented: list[str] = []
    if api_key:
        presented.append(api_key.decode("latin-1").strip())
    if auth and auth[:7].lower() == b"bearer ":
        presented.append(auth[7:].decode("latin-1").strip())
    return [c for c in presented if c]


def authorized(endpoint: EndpointRoute, auth: bytes | None, api_key: bytes | None) -> bool:
    """A key (primary or secondary, by digest, constant time) or, for aml_token endpoints, an unexpired token.
    Either header may carry it; clients such as azure-ai-inference send both. aad_token endpoints take
    identity tokens only (gateway/identity.py), never a key."""
    if endpoint.auth_mode == "aad_token":
        return False
    for credential in presented_credentials(auth, api_key):
        if endpoint.auth_mode == "aml_token":
            if keys.verify_token(credential, endpoint.id, endpoint.token_generation):
                return True
        elif keys.matches(credential, endpoint.key_digests):
            return True
    return False


def tokens_of(data: bytes) -> tuple[int, int]:
    """Token counts from an OpenAI-shaped response's usage (chat, embeddings); (0, 0) otherwise."""
    if b'"usage"' not in data:
        return 0, 0
    try:
        usage = jsonbody.loads(data).get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


async def error(send, status: int, code: str, message: str, headers=(), deployment_name: str | None = None,
                 field: str | None = None) -> None:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    body = json.dumps({"error": error}).encode()
    response_headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()), *headers]
    if deployment_name:
        response_headers.append((b"azureml-model-deployment", deployment_name.encode()))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})
