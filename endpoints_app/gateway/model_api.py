"""The model inference API on the gateway (a mixin of GatewayApp):

    POST /inference/<endpoint>/chat/completions | completions | embeddings, GET .../info
    POST /models/chat/completions | completions | embeddings   (the workspace's unified key; body's model)
    POST /openai/deployments/<name>/chat/completions | embeddings?api-version=...   (Azure OpenAI style)

Online endpoints get the same keys, traffic split, header targeting, in-flight limit, mirroring and
metering as /score. Serverless endpoints route to their model's platform pool; they answer 403 while
their workspace has no subscription, 429 past their per-minute limits, and wake a stopped pool."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import aiohttp

from endpoints_app import keys
from endpoints_app.asgi_io import read_body
from endpoints_app.gateway import inference, limits, proxy, validation
from endpoints_app.gateway.common import (
    JSON_TYPE,
    MAX_PAYLOAD_BYTES,
    METERING,
    authorized,
    error,
    presented_credentials,
    request_headers,
    request_id,
    tokens_of,
)
from endpoints_app.gateway.routes import FAILED_INSTANCE_BACKOFF_S, UPSTREAM_PATHS, DeploymentRoute, EndpointRoute
from portal.env import env_float

log = logging.getLogger("studio.gateway")

INFERENCE_ROUTES = frozenset({"chat/completions", "completions", "embeddings", "info"})
UNIFIED_ROUTES = frozenset({"chat/completions", "completions", "embeddings"})
# A call on a stopped serverless pool waits this long for an instance before 503 + Retry-After.
COLD_WAIT_S = env_float("STUDIO_GATEWAY_COLD_WAIT_SECONDS", 20.0)
WAKE_INTERVAL_S = 5.0
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no"))


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _wake(pool_id: int) -> None:
    """Ask the controller to start a stopped pool (a Celery task; blocking, so run in a thread)."""
    from endpoints_app.controller.tasks import wake_serverless_pool

    try:
        wake_serverless_pool.delay(pool_id)
    except Exception:  # noqa: BLE001 - the caller answers 503 with Retry-After either way
        log.exception("could not ask the controller to start pool %s", pool_id)


class ModelInferenceAPI:
    """Needs from GatewayApp: table, client, usage, limiter, db, _woken, _background_calls, _maybe_mirror."""

    # ---------------------------------------------------------------- model inference API

    async def inference(self, endpoint: EndpointRoute, route: str, scope, receive, send,
                        body: bytes | None = None, model_field: str | None = None) -> None:
        """One model inference API call on an endpoint. `body` is given (already read) and the caller
        already authorized when it comes through the unified endpoint; `model_field` then replaces
        the body's model."""
        started = time.perf_counter()
        auth, api_key, pinned, content_length, _, _, extra = request_headers(scope)
        serverless = endpoint.kind == "serverless"

        def done(status: int, deployment: str, bytes_in: int, bytes_out: int, tokens=(0, 0)) -> None:
            if METERING:
                latency_ms = (time.perf_counter() - started) * 1000.0
                # Serverless usage is metered on the endpoint (deployment ""), priced by its model.
                self.usage.count(endpoint.id, "" if serverless else deployment, status, latency_ms, bytes_in,
                                 bytes_out, *tokens)

        if body is None and not authorized(endpoint, auth, api_key):
            done(401, "", 0, 0)
            await error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                        ((b"www-authenticate", b"Bearer"),))
            return
        if serverless and endpoint.unhealthy_reason:
            done(403, "", 0, 0)
            await error(send, 403, "SubscriptionRequired", endpoint.unhealthy_reason)
            return
        method = scope["method"]
        if route == "info":
            if method != "GET":
                await error(send, 405, "MethodNotAllowed", "Use GET.", ((b"allow", b"GET"),))
                return
            await self._info(endpoint, pinned, send)
            return
        if method != "POST":
            await error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
            return
        if body is None:
            if content_length is not None and content_length.isdigit() and int(content_length) > MAX_PAYLOAD_BYTES:
                done(413, "", 0, 0)
                await error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
                return
            body = await read_body(receive, MAX_PAYLOAD_BYTES)
            if body is None:
                done(413, "", 0, 0)
                await error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
                return
        bytes_in = len(body)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            done(400, "", bytes_in, 0)
            await error(send, 400, "BadRequest", f"The request body is not valid JSON: {exc}")
            return

        deployment = await self._inference_deployment(endpoint, pinned, route, send, bytes_in, done)
        if deployment is None:
            return
        dep_name = deployment.name
        shown = None if serverless else dep_name  # a pool's name is the platform's, not the caller's
        try:
            if route == "chat/completions":
                checked = validation.check_chat(payload, deployment.context_length, extra)
            elif route == "completions":
                checked = validation.check_completion(payload, deployment.context_length, extra)
            else:
                checked = validation.check_embeddings(payload, deployment.dimensions, extra)
        except validation.InvalidRequest as exc:
            done(exc.status, dep_name, bytes_in, 0)
            await error(send, exc.status, exc.code, exc.message, field=exc.field, deployment_name=shown)
            return
        if model_field is not None or "model" not in checked:
            # llama.cpp's server names its file path in "model" unless the request names a model.
            checked = {**checked, "model": model_field or endpoint.model_name or deployment.model_name}
        if checked is not payload:
            body = json.dumps(checked).encode()
        payload = checked

        rate_headers: tuple = ()
        charged = 0
        verdict = None
        if serverless:
            charged = limits.estimate_tokens(payload, route)
            verdict = await self.limiter.admit(endpoint.id, endpoint.requests_per_minute,
                                               endpoint.tokens_per_minute, charged)
            rate_headers = (
                (b"x-ratelimit-remaining-requests", str(verdict.remaining_requests).encode()),
                (b"x-ratelimit-remaining-tokens", str(verdict.remaining_tokens).encode()),
            )
            if not verdict.ok:
                done(429, dep_name, bytes_in, 0)
                limit = (f"{endpoint.requests_per_minute} requests" if verdict.which == "requests"
                         else f"{endpoint.tokens_per_minute} tokens")
                await error(send, 429, "TooManyRequests",
                            f"Endpoint '{endpoint.name}' is limited to {limit} per minute; retry after "
                            f"{verdict.retry_after} s.", ((b"retry-after", str(verdict.retry_after).encode()),
                                                         *rate_headers))
                return
            if not deployment.instances:
                deployment = await self._wake_pool(endpoint, deployment)
        if not deployment.instances:
            done(503, dep_name, bytes_in, 0)
            if verdict is not None:
                await self.limiter.settle(endpoint.id, verdict, charged, 0)
            what = f"The model '{endpoint.model_name}' is starting" if serverless else \
                f"Deployment '{dep_name}' has no ready instance"
            await error(send, 503, "NoReadyInstance", f"{what}; retry shortly.", ((b"retry-after", b"5"),),
                        deployment_name=shown)
            return
        slot = await self._take_slot(deployment)
        if slot is None:
            done(429, dep_name, bytes_in, 0)
            if verdict is not None:
                await self.limiter.settle(endpoint.id, verdict, charged, 0)
            await error(
                send, 429, "TooManyRequests",
                f"{'The model' if serverless else 'Deployment ' + repr(dep_name)} has {deployment.capacity} "
                f"requests in flight, its limit (2 x max_concurrent_requests_per_instance x "
                f"{len(deployment.instances)} ready instances).",
                ((b"retry-after", b"1"),), deployment_name=shown,
            )
            return
        try:
            tokens = await self._relay(endpoint, deployment, route, body, payload, pinned, shown, rate_headers,
                                       receive, send, bytes_in, done, started)
        finally:
            await self._give_slot(deployment, slot)
        if verdict is not None:
            await self.limiter.settle(endpoint.id, verdict, charged, tokens[0] + tokens[1])

    async def _relay(self, endpoint: EndpointRoute, deployment: DeploymentRoute, route: str, body: bytes,
                     payload: dict, pinned: str | None, shown: str | None, rate_headers: tuple, receive, send,
                     bytes_in: int, done, started: float) -> tuple[int, int]:
        """Forward and answer; returns the request's (prompt, completion) tokens."""
        dep_name = deployment.name
        path = UPSTREAM_PATHS[route]
        if route != "embeddings" and payload.get("stream") is True:
            return await self._stream(deployment, route, path, body, payload, receive, send, bytes_in, done,
                                      shown, rate_headers)
        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, path, body)
        except proxy.UpstreamTimeout:
            done(504, dep_name, bytes_in, 0)
            await error(send, 504, "RequestTimeout",
                        f"The model did not answer within {int(deployment.request_timeout_s * 1000)} ms "
                        "(request_timeout_ms).", deployment_name=shown)
            return 0, 0
        except proxy.NoReadyInstance:
            done(503, dep_name, bytes_in, 0)
            await error(send, 503, "NoReadyInstance", "No instance of the model is ready; retry shortly.",
                        ((b"retry-after", b"5"),), deployment_name=shown)
            return 0, 0
        except proxy.UpstreamUnreachable:
            done(502, dep_name, bytes_in, 0)
            await error(send, 502, "BadGateway", "No instance of the model could be reached.",
                        deployment_name=shown)
            return 0, 0
        if status >= 400:
            data, ctype = inference.contract_error(status, data), "application/json"
        tokens = tokens_of(data)
        done(status, dep_name, bytes_in, len(data), tokens)
        latency_ms = (time.perf_counter() - started) * 1000.0
        headers = [(b"content-type", ctype.encode("latin-1")), (b"content-length", str(len(data)).encode()),
                   (b"x-request-id", request_id().encode()), *rate_headers]
        if shown:
            headers.append((b"azureml-model-deployment", shown.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        if not pinned and endpoint.mirror_deployment:
            self._maybe_mirror(endpoint, dep_name, status, data, latency_ms, body, path)
        return tokens

    async def _take_slot(self, deployment: DeploymentRoute) -> str | bool | None:
        """A place among the deployment's requests in flight: across every worker through Redis when
        it is configured, else in this worker. None when the deployment is at its limit."""
        if self.limiter is not None and self.limiter.shared:
            slot = request_id()
            shared = await self.limiter.acquire(deployment.id, deployment.capacity, slot)
            if shared is not None:
                return slot if shared else None
        return None if deployment.inflight >= deployment.capacity else True

    async def _give_slot(self, deployment: DeploymentRoute, slot: str | bool) -> None:
        if isinstance(slot, str):
            await self.limiter.release(deployment.id, slot)

    async def _wake_pool(self, endpoint: EndpointRoute, pool: DeploymentRoute) -> DeploymentRoute:
        """A stopped serverless pool: ask the controller to start it (off the event loop, at most every few
        seconds per pool) and wait a bounded time for a ready instance to show in the route table."""
        now = time.monotonic()
        if now - self._woken.get(pool.id, 0.0) > WAKE_INTERVAL_S:
            self._woken[pool.id] = now
            task = asyncio.get_running_loop().run_in_executor(self.db, _wake, pool.id)
            self._background_calls.add(task)
            task.add_done_callback(self._background_calls.discard)
        deadline = now + COLD_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            current = self.table.endpoints.get(endpoint.name)
            if current is None:
                break
            route = current.deployments.get(pool.name)
            if route is not None and route.instances:
                return route
        return pool

    async def unified(self, route: str, name: str | None, scope, receive, send) -> None:
        """The workspace's unified endpoint: its key names the workspace, the body's `model` (or the
        Azure OpenAI path's deployment name) one of its serverless endpoints, case-insensitively."""
        auth, api_key, _, content_length, _, _, _ = request_headers(scope)
        workspace_id = None
        for credential in presented_credentials(auth, api_key):
            # A lookup by SHA-256 digest: what a caller controls (the key) reveals nothing through timing.
            workspace_id = self.table.unified_keys.get(keys.digest(credential))
            if workspace_id is not None:
                break
        if workspace_id is None:
            await error(send, 401, "Unauthorized", "Missing or invalid inference key.",
                        ((b"www-authenticate", b"Bearer"),))
            return
        if scope["method"] != "POST":
            await error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
            return
        if content_length is not None and content_length.isdigit() and int(content_length) > MAX_PAYLOAD_BYTES:
            await error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
            return
        body = await read_body(receive, MAX_PAYLOAD_BYTES)
        if body is None:
            await error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
            return
        model = name
        if model is None:
            try:
                payload = json.loads(body)
            except ValueError as exc:
                await error(send, 400, "BadRequest", f"The request body is not valid JSON: {exc}")
                return
            model = payload.get("model") if isinstance(payload, dict) else None
            if not isinstance(model, str) or not model.strip():
                await error(send, 400, "BadRequest", "'model' is required: the name of one of the workspace's "
                            "serverless endpoints.", field="model")
                return
        endpoints = self.table.serverless.get(workspace_id, {})
        endpoint = endpoints.get(model.strip().lower())
        if endpoint is None:
            names = sorted({e.name for e in endpoints.values()})
            await error(send, 404, "ModelNotFound",
                        f"The workspace has no serverless endpoint named '{model}'. Available: "
                        f"{', '.join(names) if names else 'none (create a serverless endpoint first)'}.",
                        field="model" if name is None else None)
            return
        await self.inference(endpoint, route, scope, receive, send, body=body, model_field=model)

    async def _inference_deployment(self, endpoint: EndpointRoute, pinned: str | None, route: str, send,
                                    bytes_in: int, done) -> DeploymentRoute | None:
        """The pinned or traffic-chosen deployment, if it serves `route`; else the error is sent.
        A serverless endpoint has one deployment, its pool, and takes no pinning."""
        if pinned and endpoint.kind != "serverless":
            deployment = endpoint.deployments.get(pinned)
            if deployment is None:
                done(404, "", bytes_in, 0)
                await error(send, 404, "DeploymentNotFound",
                            f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
                return None
        else:
            deployment = endpoint.choose()
            if deployment is None:
                done(503, "", bytes_in, 0)
                await error(send, 503, "NoTraffic",
                            f"Endpoint '{endpoint.name}' sends no traffic to any deployment yet.")
                return None
        if route not in deployment.routes:
            done(404, deployment.name, bytes_in, 0)
            served = ", ".join(("GET /" if r == "info" else "POST /") + r for r in deployment.routes)
            who = (f"Model '{deployment.model_name}'" if endpoint.kind == "serverless" else
                   f"Deployment '{deployment.name}' (model {deployment.model_name or 'unknown'})")
            await error(send, 404, "RouteNotServed", f"{who} does not serve /{route}; it serves {served}.",
                        deployment_name=None if endpoint.kind == "serverless" else deployment.name)
            return None
        return deployment

    async def _info(self, endpoint: EndpointRoute, pinned: str | None, send) -> None:
        deployment = await self._inference_deployment(endpoint, pinned, "info", send, 0, lambda *a, **k: None)
        if deployment is None:
            return
        body = json.dumps({"model_name": deployment.model_name, "model_type": deployment.model_type,
                           "model_provider_name": deployment.model_provider}).encode()
        headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]
        if endpoint.kind != "serverless":
            headers.append((b"azureml-model-deployment", deployment.name.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, deployment: DeploymentRoute, route: str, path: str, body: bytes, payload: dict,
                      receive, send, bytes_in: int, done, shown: str | None, rate_headers: tuple) -> tuple[int, int]:
        """Relay server-sent events as they arrive. A client that goes away closes the upstream
        connection, which stops the generation; tokens are counted once the stream ends."""
        dep_name = deployment.name
        inst = deployment.pick()
        if inst is None:
            done(503, dep_name, bytes_in, 0)
            await error(send, 503, "NoReadyInstance", "No instance of the model is ready; retry shortly.",
                        ((b"retry-after", b"5"),), deployment_name=shown)
            return 0, 0
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        reader = inference.StreamReader(route, hold_done=include_usage)
        state = {"status": 0, "bytes_out": 0, "started": False}
        inst.inflight += 1
        relay = asyncio.create_task(self._relay_stream(deployment, inst, path, body, send, reader, state, shown,
                                                       rate_headers))
        gone = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():
                relay.cancel()  # the client left: dropping the upstream connection stops the generation
                await asyncio.gather(relay, return_exceptions=True)
                status = 499
            elif relay.exception() is not None:
                log.warning("stream from %s:%s broke: %s", inst.host, inst.port, relay.exception())
                status = 502
            else:
                status = relay.result()
        finally:
            gone.cancel()
            inst.inflight -= 1
        tokens = (0, 0)
        if state["started"]:
            if reader.usage:
                tokens = (int(reader.usage.get("prompt_tokens") or 0), int(reader.usage.get("completion_tokens") or 0))
            else:
                tokens = await self._count_tokens(inst, route, payload, reader)
            if status != 499:
                tail = reader.rest()
                if include_usage and not reader.usage:
                    tail += reader.usage_event(*tokens)
                if reader.done and reader.hold_done:
                    tail += b"data: [DONE]\n\n"
                try:
                    await send({"type": "http.response.body", "body": tail, "more_body": False})
                except Exception:  # noqa: BLE001 - the client may be gone by now; the count stands
                    pass
        done(status, dep_name, bytes_in, state["bytes_out"], tokens)
        return tokens

    async def _relay_stream(self, deployment: DeploymentRoute, inst, path: str, body: bytes, send,
                            reader: inference.StreamReader, state: dict, shown: str | None,
                            rate_headers: tuple) -> int:
        """Returns the status; sends everything but the stream's last message (see _stream)."""
        dep_name = deployment.name
        session = self._stream_session()
        try:
            async with asyncio.timeout(deployment.request_timeout_s):
                response = await session.post(inst.url(path), data=body, headers=inst.headers)
        except TimeoutError:
            await error(send, 504, "RequestTimeout",
                        f"The model did not answer within {int(deployment.request_timeout_s * 1000)} ms "
                        "(request_timeout_ms).", deployment_name=shown)
            return 504
        except (aiohttp.ClientError, OSError):
            inst.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
            log.warning("cannot reach %s of deployment %s", inst.url(path), dep_name)
            await error(send, 502, "BadGateway", "No instance of the model could be reached.",
                        deployment_name=shown)
            return 502
        named = ((b"azureml-model-deployment", shown.encode()),) if shown else ()
        async with response:
            if response.status != 200 or response.content_type != "text/event-stream":
                data = await response.read()
                if response.status >= 400:
                    data, ctype = inference.contract_error(response.status, data), "application/json"
                else:
                    ctype = response.headers.get("Content-Type", "application/json")
                await send({"type": "http.response.start", "status": response.status,
                            "headers": [(b"content-type", ctype.encode("latin-1")),
                                        (b"content-length", str(len(data)).encode()), *named, *rate_headers]})
                await send({"type": "http.response.body", "body": data})
                state["bytes_out"] = len(data)
                return response.status
            await send({"type": "http.response.start", "status": 200, "headers": [
                *SSE_HEADERS, *named, *rate_headers, (b"x-request-id", request_id().encode()),
            ]})
            state["started"] = True
            async for chunk in response.content.iter_any():
                out = reader.feed(chunk)
                if out:
                    state["bytes_out"] += len(out)
                    await send({"type": "http.response.body", "body": out, "more_body": True})
        return 200

    async def _count_tokens(self, inst, route: str, payload: dict,
                            reader: inference.StreamReader) -> tuple[int, int]:
        """Exact counts from the instance's tokenizer; the number of streamed pieces if it cannot say."""
        try:
            status, data, _ = await asyncio.wait_for(
                self.client.post(inst, "/studio/usage", inference.usage_request(route, payload, reader.text),
                                 request_id().encode()), 10)
            if status == 200:
                counts = json.loads(data)
                return int(counts["prompt_tokens"]), int(counts["completion_tokens"])
        except Exception:  # noqa: BLE001 - metering must not fail the request; fall back below
            log.warning("token count for a stream failed on %s:%s", inst.host, inst.port)
        return 0, reader.chunks

    def _stream_session(self) -> aiohttp.ClientSession:
        if self._streams is None or self._streams.closed:
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
            self._streams = aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=None),
                cookie_jar=aiohttp.DummyCookieJar(), auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._streams
