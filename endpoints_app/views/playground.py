"""The playground's same-origin relay: the browser posts its form with the session (and CSRF
token); this view checks the caller's role, builds the request with the services' parser and
relays it to the gateway with the endpoint's own key, so no key ever reaches the page.

Chat answers stream: the gateway's server-sent events are passed on chunk by chunk. Under
ASGI (how the studio runs) the body is an async iterator, so Django does not buffer it; a
client that goes away cancels it, which closes the upstream connection and so stops the
generation. Under WSGI (the test server) the same chunks go out through a plain iterator."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator

import requests
from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from endpoints_app import jsonbody, keys
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.inference_urls import gateway_base
from endpoints_app.models import Endpoint, Role
from endpoints_app.services import keys as key_svc
from endpoints_app.services import playground
from endpoints_app.views.common import endpoint_for

CONNECT_TIMEOUT_S = 5
# Between two chunks of a stream (a cold serverless pool answers 503 at once, not slowly).
READ_TIMEOUT_S = 120


def _headers(endpoint: Endpoint) -> dict:
    if endpoint.auth_mode == Endpoint.AuthMode.KEY:
        credential = key_svc.get_keys(endpoint)["primary_key"]
    else:
        credential, _ = keys.issue_token(endpoint.id, endpoint.token_generation)
    return {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}


def _error(message: str, status: int, code: str = "BadRequest", field: str | None = None) -> JsonResponse:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return JsonResponse({"error": error}, status=status)


def _upstream_error(response: requests.Response) -> HttpResponse:
    """The gateway's own error (403 unsubscribed, 429 limits, 503 starting...), passed on."""
    body = response.content[:100_000]
    try:
        jsonbody.loads(body)
    except jsonbody.JSONError:
        return _error(body.decode(errors="replace") or response.reason, response.status_code, "UpstreamError")
    relayed = HttpResponse(body, status=response.status_code, content_type="application/json")
    if response.headers.get("Retry-After"):
        relayed["Retry-After"] = response.headers["Retry-After"]
    return relayed


def _hang_up(response: requests.Response) -> None:
    """Close the upstream connection now, even while another thread is blocked reading it
    (shutdown wakes that read; a plain close would wait for the next chunk to arrive)."""
    connection = getattr(response.raw, "_connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    response.close()


def _chunks(response: requests.Response) -> Iterator[bytes]:
    """WSGI: the server closes this generator when the browser goes away (at a yield)."""
    try:
        yield from response.iter_content(chunk_size=None)
    finally:
        response.close()


async def _async_chunks(response: requests.Response) -> AsyncIterator[bytes]:
    """ASGI: Django cancels this when the browser goes away, while a worker thread may be
    blocked reading the next chunk; hanging up the upstream connection stops the generation."""
    chunks = response.iter_content(chunk_size=None)
    done = object()
    pull = sync_to_async(next, thread_sensitive=False)
    try:
        while True:
            chunk = await pull(chunks, done)
            if chunk is done:
                return
            yield chunk
    finally:
        _hang_up(response)


@login_required
@require_POST
def playground_chat(request, name: str):
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    if playground.playground_kind(endpoint) != "chat":
        return _error(f"Endpoint '{endpoint.name}' does not serve a chat model.", 400)
    try:
        body = playground.parse_chat_form(request.POST)
    except StudioError as exc:
        return JsonResponse(exc.as_dict(), status=exc.status)
    try:
        upstream = requests.post(
            f"{gateway_base()}/inference/{endpoint.name}/chat/completions", json=body, headers=_headers(endpoint),
            stream=True, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        )
    except requests.RequestException as exc:
        return _error(f"Could not reach the gateway: {exc.__class__.__name__}.", 502, "GatewayUnreachable")
    if upstream.status_code != 200:
        try:
            return _upstream_error(upstream)
        finally:
            upstream.close()
    stream = _async_chunks(upstream) if isinstance(request, ASGIRequest) else _chunks(upstream)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


@login_required
@require_POST
def playground_embeddings(request, name: str):
    """Embeds two texts and shows the dimensions and their cosine similarity (an htmx partial)."""
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    context = {"endpoint": endpoint, "text_a": request.POST.get("text_a", ""), "text_b": request.POST.get("text_b", "")}
    try:
        if playground.playground_kind(endpoint) != "embeddings":
            raise InvalidInput(f"Endpoint '{endpoint.name}' does not serve an embeddings model.")
        body = playground.parse_embeddings_form(request.POST)
        try:
            upstream = requests.post(f"{gateway_base()}/inference/{endpoint.name}/embeddings", json=body,
                                     headers=_headers(endpoint), timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.RequestException as exc:
            raise InvalidInput(f"Could not reach the gateway: {exc.__class__.__name__}.") from None
        answer = upstream.json() if upstream.headers.get("content-type", "").startswith("application/json") else {}
        if upstream.status_code != 200:
            message = (answer.get("error") or {}).get("message") if isinstance(answer, dict) else None
            raise InvalidInput(f"{upstream.status_code}: {message or upstream.text[:500]}")
        vectors = [item["embedding"] for item in sorted(answer["data"], key=lambda item: item["index"])]
        context["result"] = {
            "dimensions": len(vectors[0]),
            "similarity": playground.cosine_similarity(vectors[0], vectors[1]),
            "prompt_tokens": (answer.get("usage") or {}).get("prompt_tokens"),
        }
    except StudioError as exc:
        context["error"] = exc.message
    return render(request, "playground/embeddings.html#result", context)
