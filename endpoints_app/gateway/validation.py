"""Checks on model inference API bodies before they reach a model server.

A bad request gets 400 with the field named (the contract's error shape), never a 500 and never a
model server's own wording. Unknown parameters are refused as the anchors refuse them, unless the
caller sends `extra-parameters: drop` (removed) or `pass-through` (sent on unchanged)."""

from __future__ import annotations

ROLES = frozenset({"system", "user", "assistant", "tool", "developer"})
MAX_STOP_SEQUENCES = 4

COMMON = frozenset({"model", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "stream_options", "n",
                    "presence_penalty", "frequency_penalty", "user", "logit_bias"})
CHAT_PARAMETERS = COMMON | {"messages", "response_format", "logprobs", "top_logprobs", "max_completion_tokens"}
COMPLETION_PARAMETERS = COMMON | {"prompt", "echo", "logprobs", "suffix"}
EMBEDDING_PARAMETERS = frozenset({"model", "input", "encoding_format", "dimensions", "user", "input_type"})


class InvalidRequest(Exception):
    def __init__(self, field: str, message: str, status: int = 400, code: str = "BadRequest") -> None:
        super().__init__(message)
        self.field, self.message, self.status, self.code = field, message, status, code


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _number(body: dict, name: str, low: float, high: float) -> None:
    if name in body and body[name] is not None:
        value = body[name]
        if not _is_number(value):
            raise InvalidRequest(name, f"'{name}' must be a number.")
        if not low <= value <= high:
            raise InvalidRequest(name, f"'{name}' must be between {low:g} and {high:g}; got {value}.")


def _unknown(body: dict, allowed: frozenset[str], extra: str | None) -> dict:
    unknown = [k for k in body if k not in allowed]
    if not unknown:
        return body
    if extra == "drop":
        return {k: v for k, v in body.items() if k in allowed}
    if extra == "pass-through":
        return body
    raise InvalidRequest(unknown[0], f"Unknown parameter '{unknown[0]}'. Send the header 'extra-parameters: drop' "
                         "to ignore parameters the model does not know.")


def _generation(body: dict, context_length: int) -> None:
    """What chat and completions share: sampling, lengths, streaming."""
    for name in ("max_tokens", "max_completion_tokens"):
        if name in body and body[name] is not None:
            value = body[name]
            if not _is_int(value):
                raise InvalidRequest(name, f"'{name}' must be an integer.")
            if not 1 <= value <= context_length:
                raise InvalidRequest(name, f"'{name}' must be between 1 and the model's context length "
                                     f"({context_length}); got {value}.")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    if "seed" in body and body["seed"] is not None and not _is_int(body["seed"]):
        raise InvalidRequest("seed", "'seed' must be an integer.")
    if "n" in body and body["n"] is not None and body["n"] != 1:
        raise InvalidRequest("n", "'n' must be 1: the model server returns one choice per request.")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            pass
        elif not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise InvalidRequest("stop", "'stop' must be a string or a list of strings.")
        elif len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest("stop", f"'stop' takes at most {MAX_STOP_SEQUENCES} sequences.")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream", "'stream' must be true or false.")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("stream_options", "'stream_options' must be an object.")
        if not isinstance(options.get("include_usage", False), bool):
            raise InvalidRequest("stream_options.include_usage", "'include_usage' must be true or false.")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        raise InvalidRequest("model", "'model' must be a string.")


def check_chat(body, context_length: int, extra: str | None = None) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "The body must be a JSON object with 'messages'.")
    body = _unknown(body, CHAT_PARAMETERS, extra)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("messages", "'messages' is required: a list of {role, content} objects.")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages", "'messages' must be a non-empty list of {role, content} objects.")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise InvalidRequest(f"messages[{i}]", f"messages[{i}] must be an object with 'role' and 'content'.")
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(f"messages[{i}].role",
                                 f"messages[{i}].role must be one of {', '.join(sorted(ROLES))}; got {role!r}.")
        content = message.get("content")
        if isinstance(content, str):
            continue
        if isinstance(content, list) and all(
            isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            for part in content
        ):
            continue
        if content is None and role == "assistant":
            continue
        raise InvalidRequest(f"messages[{i}].content",
                             f"messages[{i}].content must be a string (or a list of text parts).")
    _generation(body, context_length)
    return body


def check_completion(body, context_length: int, extra: str | None = None) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "The body must be a JSON object with 'prompt'.")
    body = _unknown(body, COMPLETION_PARAMETERS, extra)
    prompt = body.get("prompt")
    if prompt is None:
        raise InvalidRequest("prompt", "'prompt' is required: a string.")
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise InvalidRequest("prompt", "'prompt' must be a string (or a list of one string).")
    elif not isinstance(prompt, str):
        raise InvalidRequest("prompt", "'prompt' must be a string.")
    _generation(body, context_length)
    return body


def check_embeddings(body, dimensions: int | None, extra: str | None = None) -> dict:
    if not isinstance(body, dict):
        raise InvalidRequest("body", "The body must be a JSON object with 'input'.")
    body = _unknown(body, EMBEDDING_PARAMETERS, extra)
    value = body.get("input")
    if value is None:
        raise InvalidRequest("input", "'input' is required: a string or a list of strings.")
    if isinstance(value, list):
        if not value:
            raise InvalidRequest("input", "'input' must not be empty.")
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise InvalidRequest(f"input[{i}]", f"input[{i}] must be a string.")
    elif not isinstance(value, str):
        raise InvalidRequest("input", "'input' must be a string or a list of strings.")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise InvalidRequest("encoding_format", "'encoding_format' must be 'float' or 'base64'.")
    wanted = body.get("dimensions")
    if wanted is not None:
        if not _is_int(wanted):
            raise InvalidRequest("dimensions", "'dimensions' must be an integer.")
        if dimensions and wanted != dimensions:
            raise InvalidRequest("dimensions", f"This model gives {dimensions} dimensions only; got {wanted}.")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        raise InvalidRequest("model", "'model' must be a string.")
    return body
