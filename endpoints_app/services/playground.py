"""The Test tab's playground: which playground an endpoint gets, and the parsers that turn
its form into a model inference request (the gateway checks the request again).

The browser never holds a key: the playground posts its form with the session and CSRF
token to the studio, which checks the caller's role and relays the request to the gateway
with the endpoint's own key (views/playground.py)."""

from __future__ import annotations

import math
from typing import Any

from endpoints_app import jsonbody
from endpoints_app.errors import InvalidInput
from endpoints_app.models import CatalogModel, Endpoint

MAX_SYSTEM_CHARS = 4000
MAX_MESSAGE_CHARS = 8000
MAX_HISTORY = 40
MAX_TOKENS = (1, 2048)
TEMPERATURE = (0.0, 2.0)


def playground_model(endpoint: Endpoint) -> CatalogModel | None:
    """The model the playground talks to: a serverless endpoint's own; an online endpoint's
    deployment with the most traffic."""
    if endpoint.kind == Endpoint.Kind.SERVERLESS:
        return endpoint.model
    deployments = sorted(endpoint.deployments.select_related("model"),
                         key=lambda d: (-int(endpoint.traffic.get(d.name, 0)), d.name))
    return deployments[0].model if deployments else None


def playground_kind(endpoint: Endpoint) -> str | None:
    """"chat", "embeddings" or None (no playground: the JSON test form only)."""
    model = playground_model(endpoint)
    if model is None:
        return None
    if model.task == CatalogModel.Task.CHAT_COMPLETION:
        return "chat"
    if model.task == CatalogModel.Task.EMBEDDINGS and model.is_foundation:
        return "embeddings"
    return None


def _number(raw: Any, field: str, low: float, high: float, integer: bool = False) -> float | int:
    try:
        value = int(raw) if integer else float(raw)
    except (TypeError, ValueError):
        kind = "a whole number" if integer else "a number"
        raise InvalidInput(f"{field} must be {kind} from {low:g} to {high:g}.", field=field) from None
    if not (low <= value <= high) or (not integer and not math.isfinite(value)):
        raise InvalidInput(f"{field} must be from {low:g} to {high:g}.", field=field)
    return value


def parse_chat_form(data) -> dict:
    """A chat completions body (streamed, with usage) from the playground's form:
    system, history (JSON list of earlier user/assistant turns), message, temperature, max_tokens."""
    system = (data.get("system") or "").strip()
    if len(system) > MAX_SYSTEM_CHARS:
        raise InvalidInput(f"The system message is longer than {MAX_SYSTEM_CHARS} characters.", field="system")
    message = (data.get("message") or "").strip()
    if not message:
        raise InvalidInput("Type a message first.", field="message")
    if len(message) > MAX_MESSAGE_CHARS:
        raise InvalidInput(f"The message is longer than {MAX_MESSAGE_CHARS} characters.", field="message")
    try:
        history = jsonbody.loads(data.get("history") or "[]")
    except jsonbody.JSONError:
        raise InvalidInput("history must be a JSON list of messages.", field="history") from None
    if not isinstance(history, list) or len(history) > MAX_HISTORY:
        raise InvalidInput(f"history must be a list of at most {MAX_HISTORY} messages.", field="history")
    messages = [{"role": "system", "content": system}] if system else []
    for turn in history:
        if (not isinstance(turn, dict) or turn.get("role") not in ("user", "assistant")
                or not isinstance(turn.get("content"), str) or len(turn["content"]) > MAX_MESSAGE_CHARS):
            raise InvalidInput("Each history message needs a role (user or assistant) and text content.",
                               field="history")
        messages.append({"role": turn["role"], "content": turn["content"]})
    messages.append({"role": "user", "content": message})
    return {
        "messages": messages,
        "temperature": _number(data.get("temperature", 0.7), "temperature", *TEMPERATURE),
        "max_tokens": _number(data.get("max_tokens", 256), "max_tokens", *MAX_TOKENS, integer=True),
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def parse_embeddings_form(data) -> dict:
    """An embeddings body for two texts (the playground compares them)."""
    texts = []
    for field in ("text_a", "text_b"):
        text = (data.get(field) or "").strip()
        if not text:
            raise InvalidInput("Type two texts to compare.", field=field)
        if len(text) > MAX_MESSAGE_CHARS:
            raise InvalidInput(f"A text is longer than {MAX_MESSAGE_CHARS} characters.", field=field)
        texts.append(text)
    return {"input": texts, "encoding_format": "float"}


def cosine_similarity(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
