"""llama-cpp-python's OpenAI-compatible server, as the studio runs it for GGUF models.

    python -m endpoints_app.runtime.llama_server --model m.gguf --model_alias smollm2 --port 8123 --n_ctx 2048

It is llama-cpp-python's own app (`/v1/chat/completions`, `/v1/completions`, `/extras/tokenize`, ...)
with two changes:
- `interrupt_requests` is off: by default a request that arrives while a stream is generating
  ends that stream early with `[DONE]`, which would cut one client short whenever another calls.
- `POST /studio/usage` `{"messages": [...] | "prompt": "...", "completion": "text"}` answers
  `{"prompt_tokens", "completion_tokens"}` counted exactly as the server counts a non-streamed
  request (the model's chat template, then its tokenizer). The server sends no usage in a stream,
  so the gateway asks here once a stream ends. Unlike `/extras/tokenize` it does not wait for the
  model's lock (tokenizing only reads the vocabulary), so a count never queues behind another
  client's generation.
- No `: ping` keep-alive comments in streams (azure-ai-inference's stream reader refuses them).
- A streamed request whose prompt does not fit the context gets 400 `context_length_exceeded`,
  as a non-streamed one does; llama-cpp-python itself would answer 200 and an empty stream."""

from __future__ import annotations

import argparse
import json
import os
import sys

STREAMED_ROUTES = {"/v1/chat/completions": "messages", "/v1/completions": "prompt"}


def _formatter(llama):
    """The chat formatter the server itself uses for this model (see Llama.__init__)."""
    from llama_cpp import llama_chat_format

    fmt = llama.chat_format or ""
    template = llama.metadata.get("tokenizer.chat_template") if fmt == "chat_template.default" else None
    if fmt.startswith("chat_template."):
        template = llama.metadata.get("tokenizer." + fmt) or template
    if template:
        eos_id, bos_id = llama.token_eos(), llama.token_bos()
        return llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=llama._model.token_get_text(eos_id) if eos_id != -1 else "",
            bos_token=llama._model.token_get_text(bos_id) if bos_id != -1 else "",
            stop_token_ids=[eos_id],
        )
    return getattr(llama_chat_format, "format_" + fmt.replace("-", "_").replace(".", "_"), None)


def count_usage(llama, formatter, body: dict) -> dict:
    messages = body.get("messages")
    if isinstance(messages, list):
        if formatter is None:
            raise ValueError(f"no chat formatter for chat format {llama.chat_format!r}")
        result = formatter(messages=messages)
        prompt = llama.tokenize(result.prompt.encode("utf-8"), add_bos=not result.added_special, special=True)
    else:
        text = str(body.get("prompt") or "")
        # As Llama._create_completion: an empty prompt is the BOS token alone.
        prompt = llama.tokenize(text.encode("utf-8"), special=True) if text else [llama.token_bos()]
    completion = str(body.get("completion") or "")
    generated = llama.tokenize(completion.encode("utf-8"), add_bos=False, special=False) if completion else []
    return {"prompt_tokens": len(prompt), "completion_tokens": len(generated)}


class ContextGuard:
    """ASGI middleware: checks a streamed request's prompt length before llama-cpp-python starts
    the event stream (after which an error can only end the stream silently)."""

    def __init__(self, app, llama, formatter, n_ctx: int) -> None:
        self.app, self.llama, self.formatter, self.n_ctx = app, llama, formatter, n_ctx

    async def __call__(self, scope, receive, send) -> None:
        field = STREAMED_ROUTES.get(scope.get("path", "")) if scope["type"] == "http" else None
        if field is None or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        from endpoints_app.asgi_io import read_body

        body = await read_body(receive, 64 * 1024 * 1024) or b""
        prompt_tokens = 0
        try:
            payload = json.loads(body)
            if isinstance(payload, dict) and payload.get("stream") is True:
                prompt_tokens = count_usage(self.llama, self.formatter, payload)["prompt_tokens"]
        except Exception:  # noqa: BLE001 - anything unreadable is left to the server's own checks
            prompt_tokens = 0
        if prompt_tokens >= self.n_ctx:
            error = json.dumps({"error": {
                "message": f"This model's maximum context length is {self.n_ctx} tokens. However, you requested "
                           f"{prompt_tokens} tokens in the {field}.",
                "type": "invalid_request_error", "param": field, "code": "context_length_exceeded",
            }}).encode()
            await send({"type": "http.response.start", "status": 400,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(error)).encode())]})
            await send({"type": "http.response.body", "body": error})
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def build_app(args: argparse.Namespace):
    from fastapi.responses import JSONResponse
    from llama_cpp.server import app as llama_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings
    from starlette.middleware import Middleware
    from starlette_context.middleware import RawContextMiddleware
    from starlette_context.plugins import RequestIdPlugin

    # No ": ping" comment events: azure-ai-inference's stream reader fails on them.
    server_settings = ServerSettings(host=args.host, port=args.port or 8000, interrupt_requests=False,
                                     disable_ping_events=True)
    model_settings = ModelSettings(
        model=args.model, model_alias=args.model_alias, n_ctx=args.n_ctx, n_threads=args.n_threads,
        n_threads_batch=args.n_threads_batch, verbose=False,
    )
    app = llama_app.create_app(server_settings=server_settings, model_settings=[model_settings])
    # The gateway forwards the client's x-request-id (any printable id); llama-cpp-python's request-id
    # plugin answers 400 to one that is not a UUID, so it keeps ids as they come.
    app.user_middleware = [
        Middleware(RawContextMiddleware, plugins=(RequestIdPlugin(validate=False),))
        if m.cls is RawContextMiddleware else m
        for m in app.user_middleware
    ]
    llama = llama_app._llama_proxy(None)
    formatter = _formatter(llama)

    async def usage(request):
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            return JSONResponse(count_usage(llama, formatter, body))
        except Exception as exc:  # noqa: BLE001 - a bad count request is the caller's problem, not a crash
            return JSONResponse({"error": {"code": "BadRequest", "message": str(exc)}}, status_code=400)

    # A plain Starlette route: no FastAPI body model, the function gets the request itself.
    app.router.add_route("/studio/usage", usage, methods=["POST"], include_in_schema=False)
    return ContextGuard(app, llama, formatter, args.n_ctx)


def tune_allocator() -> None:
    """glibc's malloc for a long-lived llama.cpp server: at most two arenas, and blocks of 128 KiB or more
    always mmap'd (a fixed M_MMAP_THRESHOLD also turns off glibc's dynamic threshold).

    Requests run in the server's worker threads, and calls allocate and free large blocks (logits and token
    candidates over the whole vocabulary, request and answer copies). By default the first free of an
    mmap'd block raises the threshold, so later ones come from per-thread arenas whose freed space stays
    resident among smaller live blocks. Measured with bench/llama_memory.py (1,330 calls of the soak's chat,
    one thread): RssAnon 154 MB after 72 calls, then 160-175 MB; with this, 144 MB, then 140-153 MB. RssFile
    (the mmap'd GGUF model) is 121.6 MB from the first call on in both. Set before the model loads, so
    before any thread exists."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return  # not glibc: nothing to tune
    m_mmap_threshold, m_arena_max = -3, -8  # <malloc.h>
    mallopt(m_arena_max, 2)
    mallopt(m_mmap_threshold, 128 * 1024)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="llama.cpp's server for one GGUF model, as the studio runs it")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model_alias", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, help="TCP port (by hand only: the controller gives --uds)")
    parser.add_argument("--uds", help="Unix socket to listen on")
    parser.add_argument("--n_ctx", type=int, default=2048)
    parser.add_argument("--n_threads", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--n_threads_batch", type=int, default=None)
    args = parser.parse_args(argv)
    args.n_threads_batch = args.n_threads_batch or args.n_threads
    tune_allocator()
    app = build_app(args)
    where = " and ".join(filter(None, [args.uds, args.port and f"{args.host}:{args.port}"]))
    print(f"llama.cpp server {args.model_alias or args.model} on {where} (pid {os.getpid()})",
          file=sys.stderr, flush=True)
    from endpoints_app.runtime.listen import serve

    serve(app, args.uds, args.host, args.port, loop="uvloop", http="httptools", access_log=False,
          log_level="warning")


if __name__ == "__main__":
    main()
