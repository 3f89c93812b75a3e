"""ASGI plumbing shared by the gateway and the model server (both plain ASGI apps)."""

import asyncio
import json
from html import escape


async def read_body(receive, limit: int) -> bytes | None:
    """The request body, or None once it passes `limit` bytes."""
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body if len(body) <= limit else None
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


class BodyLimit:
    """ASGI middleware: a request body over its path's limit is a 413 before the app buffers any of it.

    A Content-Length over the limit is answered at once, without reading the body; a body sent without
    one (chunked) is counted as it streams, and the moment it passes the limit the client gets the 413
    and the app a disconnect (Django then drops the request, the gateway stops reading). A body that
    stalls for `read_timeout` seconds between chunks gets a 408 the same way."""

    def __init__(self, app, limit_for, read_timeout: float = 30.0, describe=None) -> None:
        self.app = app
        self.limit_for = limit_for
        self.read_timeout = read_timeout
        # describe(path, limit): the 413's message (default: the limit in bytes).
        self.describe = describe or (lambda path, limit: f"Request bodies here are limited to {limit} bytes.")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        if limit is None:  # an app that enforces its own limits as it reads (the gateway)
            await self.app(scope, receive, send)
            return
        refusal = self.describe(scope["path"], limit)
        # A browser's form post (not the API) gets a page it can show, not JSON.
        html = not scope["path"].startswith("/api/") and any(
            name == b"accept" and b"text/html" in value for name, value in scope["headers"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await _too_large(send, refusal, html)
                    return
                break
        state = {"seen": 0, "answered": False, "done": False}

        async def guarded_receive():
            if state["answered"]:
                return {"type": "http.disconnect"}
            if state["done"]:
                return await receive()  # the body is in: now only a disconnect can come (Django listens for it)
            try:
                async with asyncio.timeout(self.read_timeout):
                    message = await receive()
            except TimeoutError:
                state["answered"] = True
                await _error_response(send, 408, "RequestTimeout",
                                      f"The request body stalled for over {self.read_timeout:g} seconds.")
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["answered"] = True
                    await _too_large(send, refusal, html)
                    return {"type": "http.disconnect"}
                if not message.get("more_body"):
                    state["done"] = True
            return message

        async def guarded_send(message):
            if not state["answered"]:
                await send(message)

        await self.app(scope, guarded_receive, guarded_send)


async def _too_large(send, message: str, html: bool = False) -> None:
    await _error_response(send, 413, "PayloadTooLarge", message, html)


async def _error_response(send, status: int, code: str, message: str, html: bool = False) -> None:
    if html:
        body = (f"<!doctype html><meta charset=\"utf-8\"><title>{status} {code}</title>"
                f"<h1>{status} {code}</h1><p>{escape(message)}</p><p>Go back and try again.</p>").encode()
        content_type = b"text/html; charset=utf-8"
    else:
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        content_type = b"application/json"
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", content_type), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
