"""The model inference API's pieces that are not plain relaying: reading a server-sent event
stream as it passes (to count its tokens and hold back `[DONE]` until the usage chunk is out),
the usage chunk itself, and model servers' errors in the contract's shape.

llama-cpp-python's server sends no `usage` in a stream, so the gateway keeps the streamed text
and, once the stream ends, asks the same instance (runtime/llama_server.py's `/studio/usage`,
which tokenizes with the model's own tokenizer and chat template) for exact counts."""

from __future__ import annotations

import json
import time

from endpoints_app import jsonbody

DONE_LINE = b"data: [DONE]"

# llama-cpp-python (OpenAI) error codes -> the contract's codes.
UPSTREAM_CODES = {
    "context_length_exceeded": "ContextLengthExceeded",
    "invalid_request_error": "BadRequest",
}


class StreamReader:
    """Fed the upstream's bytes chunk by chunk; returns what to send on at once.

    Complete lines go out as they arrive (a partial line waits for its end, so a `[DONE]` split
    across chunks is still seen). With hold_done, the `data: [DONE]` line is kept back so the
    studio's usage chunk can go before it."""

    __slots__ = ("route", "hold_done", "_partial", "parts", "chunks", "done", "usage", "id", "model", "created")

    def __init__(self, route: str, hold_done: bool) -> None:
        self.route = route
        self.hold_done = hold_done
        self._partial = b""
        self.parts: list[str] = []
        self.chunks = 0
        self.done = False
        self.usage: dict | None = None
        self.id = ""
        self.model = ""
        self.created = 0

    def feed(self, data: bytes) -> bytes:
        if self._partial:
            data = self._partial + data
        end = data.rfind(b"\n")
        if end < 0:
            self._partial = data
            return b""
        complete, self._partial = data[: end + 1], data[end + 1:]
        held = False
        for line in complete.split(b"\n"):
            if not line.startswith(b"data: "):
                continue
            if line.rstrip() == DONE_LINE:
                self.done = True
                held = self.hold_done
                continue
            self._read_event(line[6:])
        if held:
            complete = complete.replace(DONE_LINE + b"\n\n", b"").replace(DONE_LINE + b"\r\n\r\n", b"")
            complete = complete.replace(DONE_LINE + b"\n", b"")
        return complete

    def _read_event(self, raw: bytes) -> None:
        try:
            event = jsonbody.loads(raw)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        if not self.id:
            self.id = str(event.get("id") or "")
            self.model = str(event.get("model") or "")
            self.created = int(event.get("created") or 0)
        if isinstance(event.get("usage"), dict):
            self.usage = event["usage"]
        for choice in event.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            if self.route == "chat/completions":
                delta = choice.get("delta") or {}
                text = delta.get("content") if isinstance(delta, dict) else None
            else:
                text = choice.get("text")
            if isinstance(text, str) and text:
                self.parts.append(text)
                self.chunks += 1

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def rest(self) -> bytes:
        """Whatever partial line is left at the end of the stream."""
        rest, self._partial = self._partial, b""
        return rest

    def usage_event(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        """The final chunk OpenAI sends for stream_options.include_usage: no choices, the usage."""
        event = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.route == "chat/completions" else "text_completion",
            "created": self.created or int(time.time()),
            "model": self.model,
            "choices": [],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        return b"data: " + json.dumps(event).encode() + b"\n\n"


def usage_request(route: str, payload: dict, completion_text: str) -> bytes:
    """The body of a /studio/usage call for a finished stream."""
    body: dict = {"completion": completion_text}
    if route == "chat/completions":
        body["messages"] = payload.get("messages") or []
    else:
        prompt = payload.get("prompt")
        body["prompt"] = prompt[0] if isinstance(prompt, list) and prompt else (prompt or "")
    return json.dumps(body).encode()


def contract_error(status: int, data: bytes) -> bytes:
    """A model server's error body in the contract's shape {"error": {"code", "message", "field"?}}."""
    try:
        parsed = jsonbody.loads(data)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    error: dict = {"code": "ModelError" if status >= 500 else "BadRequest",
                   "message": data.decode("utf-8", "replace")[:500] or f"The model server answered {status}."}
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        upstream = parsed["error"]
        if "type" not in upstream and "code" in upstream:
            return data  # the studio's own server: already in shape
        error["message"] = str(upstream.get("message") or error["message"])
        code = upstream.get("code") or upstream.get("type")
        if isinstance(code, str):
            error["code"] = UPSTREAM_CODES.get(code, error["code"])
        if upstream.get("param"):
            error["field"] = str(upstream["param"])
    elif isinstance(parsed, dict) and isinstance(parsed.get("detail"), list) and parsed["detail"]:
        # FastAPI's validation errors: [{"loc": ["body", "messages", 0], "msg": ...}, ...]
        first = parsed["detail"][0] if isinstance(parsed["detail"][0], dict) else {}
        loc = [str(p) for p in (first.get("loc") or []) if p != "body"]
        error["message"] = str(first.get("msg") or error["message"])
        if loc:
            error["field"] = ".".join(loc)
    return json.dumps({"error": error}).encode()
