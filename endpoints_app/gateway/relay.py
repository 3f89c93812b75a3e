"""The relay: one pipeline for every call the gateway forwards to a model, `/score` and the model
inference API alike:

    POST /inference/<endpoint>/score
    POST /inference/<endpoint>/chat/completions | completions | embeddings, GET .../info
    POST /models/chat/completions | completions | embeddings   (the workspace's unified key; body's model)
    POST /openai/deployments/<name>/chat/completions | embeddings?api-version=...   (Azure OpenAI style)

authorize -> read the body -> choose the deployment -> (model inference API: check the body;
serverless: per-minute limits, wake a stopped pool) -> take an in-flight slot -> forward or stream
-> give the slot back -> meter -> mirror. Every 429 is decided in gateway/limits.py; what only the
model inference API and serverless endpoints add is in gateway/serverless.py.

Online endpoints get the same keys, traffic split, header targeting, in-flight limit, mirroring and
metering on every route. Serverless endpoints route to their model's platform pool; they answer 403
while their workspace has no subscription, 429 past their per-minute limits, and wake a stopped pool."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from django.conf import settings

from endpoints_app import jsonbody, keys, oidc
from endpoints_app.asgi_io import read_body
from endpoints_app.gateway import identity, inference, limits, metering, mirror, proxy, serverless, validation
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
from endpoints_app.gateway.routes import (
    FAILED_INSTANCE_BACKOFF_S,
    UPSTREAM_PATHS,
    DeploymentRoute,
    EndpointRoute,
    RouteTable,
)

log = logging.getLogger("studio.gateway")

INFERENCE_ROUTES = frozenset({"chat/completions", "completions", "embeddings", "info"})
UNIFIED_ROUTES = frozenset({"chat/completions", "completions", "embeddings"})
# Mirror copies in flight per worker; beyond this a copy is skipped rather than queued.
MAX_MIRROR_INFLIGHT = settings.STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT
MAX_BUFFERED_COMPARISONS = 100_000
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no"))
RETRY_SOON = ((b"retry-after", b"5"),)


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def upstream_failure(failure: type[Exception], deployment: DeploymentRoute, score: bool
                     ) -> tuple[int, str, str, tuple]:
    """(status, code, message, headers) when no answer came from the model: /score names the deployment,
    the model inference API the model."""
    name = deployment.name
    if failure is proxy.UpstreamTimeout:
        who = f"Deployment '{name}'" if score else "The model"
        return 504, "RequestTimeout", (f"{who} did not answer within {int(deployment.request_timeout_s * 1000)} ms "
                                       "(request_timeout_ms)."), ()
    if failure is proxy.NoReadyInstance:
        if score:
            return 503, "NoReadyInstance", f"Deployment '{name}' has no ready instance.", ()
        return 503, "NoReadyInstance", "No instance of the model is ready; retry shortly.", RETRY_SOON
    if failure is proxy.UpstreamClosed:
        who = f"deployment '{name}'" if score else "the model"
        return 502, "BadGateway", (f"The model server of {who} closed the connection while handling the request; "
                                   "it was not sent again, since the model may have acted on it."), ()
    who = f"deployment '{name}'" if score else "the model"
    return 502, "BadGateway", f"No instance of {who} could be reached.", ()


class Relay:
    """The pipeline and the state it keeps between calls (GatewayApp adds routing and the lifecycle:
    it loads `table`, starts `client` and `limiter`, and flushes `usage`, `denials` and `comparisons`)."""

    def __init__(self) -> None:
        self.table = RouteTable()
        journal = metering.journal_dir(settings.DATA_DIR) if settings.STUDIO_GATEWAY_USAGE_JOURNAL else None
        self.usage = metering.UsageCounters(journal)
        self.comparisons: list[mirror.Comparison] = []
        self.denials: list[identity.DeniedCall] = []
        self.client: proxy.AiohttpClient | proxy.Http1Client | None = None
        # In-process counts until start() connects the shared one (REDIS_URL).
        self.limiter = limits.Limiter()
        # One thread, one database connection: route reloads and flushes take turns.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")
        self.pools = serverless.Pools(self.db)
        self._mirror_tasks: set[asyncio.Task] = set()
        # Streams are relayed with aiohttp (the http1 client reads whole responses).
        self._streams: proxy.Sessions | None = None

    # ---------------------------------------------------------------- auth

    async def refused(self, endpoint: EndpointRoute, auth: bytes | None, api_key: bytes | None, send,
                      headers=()) -> int:
        """The auth step of every call on an endpoint: a key or aml_token (common.authorized), or for
        aad_token endpoints an identity token whose identity may invoke in the endpoint's workspace.
        0 when the call may go on; else the 401 or 403 naming the reason is sent and its status returned."""
        if endpoint.auth_mode != "aad_token":
            if authorized(endpoint, auth, api_key):
                return 0
            await error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                        ((b"www-authenticate", b"Bearer"), *headers))
            return 401
        table = self.table
        denial = await identity.authorize(auth, table.identity_roles.get(endpoint.workspace_id, {}),
                                          table.workspace_names.get(endpoint.workspace_id, ""))
        if denial is None:
            return 0
        await self.deny(denial, send, endpoint.name, headers, endpoint.workspace_id)
        return denial.status

    async def deny(self, denial: identity.Denial, send, target: str, headers=(), workspace_id: int | None = None
                   ) -> None:
        if denial.status == 401:
            challenge = f'Bearer error="invalid_token", error_description="{denial.code}"'.encode()
            headers = ((b"www-authenticate", challenge), *headers)
        if denial.identity is not None and len(self.denials) < identity.MAX_BUFFERED_DENIALS:
            # Audited off the hot path, with the next flush.
            self.denials.append(identity.DeniedCall(workspace_id, target, denial))
        await error(send, denial.status, denial.code, denial.message, headers)

    # ---------------------------------------------------------------- the pipeline

    async def relay(self, endpoint: EndpointRoute, route: str, scope, receive, send,
                    body: bytes | None = None, model_field: str | None = None) -> None:
        """One call on an endpoint: `route` is "score" or a model inference API route. `body` is given
        (already read) and the caller already authorized when it comes through the unified endpoint;
        `model_field` then replaces the body's model."""
        started = time.perf_counter()
        auth, api_key, pinned, content_length, _, rid, extra = request_headers(scope)
        score = route == "score"
        serverless_call = endpoint.kind == "serverless"
        if score:
            # The client's id when it sent a usable one, else ours; it goes upstream and back to the client.
            if rid is None:
                rid = request_id().encode()
            tagged: tuple = ((b"x-request-id", rid),)
        else:
            rid, tagged = None, ()

        def done(status: int, deployment: str, bytes_in: int, bytes_out: int, tokens=(0, 0)) -> None:
            if METERING:
                latency_ms = (time.perf_counter() - started) * 1000.0
                # Serverless usage is metered on the endpoint (deployment ""), priced by its model.
                self.usage.count(endpoint.id, "" if serverless_call else deployment, status, latency_ms, bytes_in,
                                 bytes_out, *tokens)

        async def fail(status: int, code: str, message: str, headers=(), deployment_name: str | None = None,
                       field: str | None = None) -> None:
            await error(send, status, code, message, (*headers, *tagged), deployment_name, field)

        if body is None and (status := await self.refused(endpoint, auth, api_key, send, tagged)):
            done(status, "", 0, 0)
            return
        if serverless_call and endpoint.unhealthy_reason:
            done(403, "", 0, 0)
            await fail(403, "SubscriptionRequired", endpoint.unhealthy_reason)
            return
        if not score:
            if route == "info":
                if scope["method"] != "GET":
                    await fail(405, "MethodNotAllowed", "Use GET.", ((b"allow", b"GET"),))
                    return
                await self._info(endpoint, pinned, send)
                return
            if scope["method"] != "POST":
                await fail(405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
                return
        if body is None:
            if content_length is not None and content_length.isdigit() and int(content_length) > MAX_PAYLOAD_BYTES:
                done(413, "", 0, 0)
                await fail(413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
                return
            body = await read_body(receive, MAX_PAYLOAD_BYTES)
            if body is None:
                done(413, "", 0, 0)
                await fail(413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
                return
        bytes_in = len(body)
        try:
            payload = jsonbody.loads(body)
        except jsonbody.JSONError as exc:
            done(400, "", bytes_in, 0)
            await fail(400, "BadRequest", str(exc))
            return

        deployment = await self._choose(endpoint, pinned, route, bytes_in, done, fail)
        if deployment is None:
            return
        dep_name = deployment.name
        shown = None if serverless_call else dep_name  # a pool's name is the platform's, not the caller's
        quota = None
        if not score:
            try:
                checked = serverless.checked_payload(route, payload, deployment, extra, model_field,
                                                     endpoint.model_name)
            except validation.InvalidRequest as exc:
                done(exc.status, dep_name, bytes_in, 0)
                await fail(exc.status, exc.code, exc.message, field=exc.field, deployment_name=shown)
                return
            if checked is not payload:
                body = json.dumps(checked).encode()
            payload = checked
            if serverless_call:
                quota = serverless.TokenLimits(self.limiter, endpoint)
                if (refusal := await quota.admit(payload, route)) is not None:
                    done(429, dep_name, bytes_in, 0)
                    await fail(refusal.status, refusal.code, refusal.message, refusal.headers)
                    return
                if not deployment.instances:
                    deployment = await self.pools.wake(lambda: self.table, endpoint, deployment)
        if not deployment.instances:
            done(503, dep_name, bytes_in, 0)
            if quota is not None:
                await quota.settle(0)
            if score:
                await fail(503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                           deployment_name=dep_name)
            else:
                what = f"The model '{endpoint.model_name}' is starting" if serverless_call else \
                    f"Deployment '{dep_name}' has no ready instance"
                await fail(503, "NoReadyInstance", f"{what}; retry shortly.", RETRY_SOON, deployment_name=shown)
            return
        # In-flight requests: across every worker through Redis when REDIS_URL is set (one round trip
        # each way), else per gateway worker (then N workers may hold N x the limit between them).
        slot = await self.limiter.take_slot(deployment)
        if slot is None:
            done(429, dep_name, bytes_in, 0)
            if quota is not None:
                await quota.settle(0)
            refusal = limits.slots_refusal(deployment, "The model" if serverless_call else f"Deployment '{dep_name}'")
            await fail(refusal.status, refusal.code, refusal.message, refusal.headers, deployment_name=shown)
            return
        rate_headers = quota.headers if quota is not None else ()
        try:
            if not score and route != "embeddings" and payload.get("stream") is True:
                tokens = await self._stream(deployment, route, UPSTREAM_PATHS[route], body, payload, receive, send,
                                            bytes_in, done, shown, rate_headers)
            else:
                tokens = await self._forward(endpoint, deployment, UPSTREAM_PATHS[route], body, pinned, shown, rid,
                                             rate_headers, send, bytes_in, done, started, score)
        finally:
            if slot is not True:  # True: a place counted in this worker, nothing to give back
                await self.limiter.give_slot(deployment, slot)
        if quota is not None:
            await quota.settle(tokens[0] + tokens[1])

    async def _choose(self, endpoint: EndpointRoute, pinned: str | None, route: str, bytes_in: int, done, fail
                      ) -> DeploymentRoute | None:
        """The pinned or traffic-chosen deployment, if it serves `route`; else the error is sent.
        A serverless endpoint has one deployment, its pool, and takes no pinning."""
        if pinned and endpoint.kind != "serverless":
            deployment = endpoint.deployments.get(pinned)
            if deployment is None:
                done(404, "", bytes_in, 0)
                await fail(404, "DeploymentNotFound", f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
                return None
        else:
            deployment = endpoint.choose()
            if deployment is None:
                done(503, "", bytes_in, 0)
                await fail(503, "NoTraffic", f"Endpoint '{endpoint.name}' sends no traffic to any deployment yet.")
                return None
        if route != "score" and route not in deployment.routes:
            done(404, deployment.name, bytes_in, 0)
            served = ", ".join(("GET /" if r == "info" else "POST /") + r for r in deployment.routes)
            who = (f"Model '{deployment.model_name}'" if endpoint.kind == "serverless" else
                   f"Deployment '{deployment.name}' (model {deployment.model_name or 'unknown'})")
            await fail(404, "RouteNotServed", f"{who} does not serve /{route}; it serves {served}.",
                       deployment_name=None if endpoint.kind == "serverless" else deployment.name)
            return None
        return deployment

    async def _forward(self, endpoint: EndpointRoute, deployment: DeploymentRoute, path: str, body: bytes,
                       pinned: str | None, shown: str | None, rid: bytes | None, rate_headers: tuple, send,
                       bytes_in: int, done, started: float, score: bool) -> tuple[int, int]:
        """Forward and answer; returns the request's (prompt, completion) tokens. `rid` (/score's request
        id) goes upstream and back; the model inference API answers with an id of its own."""
        dep_name = deployment.name
        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, path, body, rid or b"-")
        except (proxy.UpstreamTimeout, proxy.NoReadyInstance, proxy.UpstreamUnreachable, proxy.UpstreamClosed) as exc:
            status, code, message, headers = upstream_failure(type(exc), deployment, score)
            done(status, dep_name, bytes_in, 0)
            if rid is not None:
                headers = (*headers, (b"x-request-id", rid))
            await error(send, status, code, message, headers, deployment_name=shown)
            return 0, 0
        if not score and status >= 400:
            data, ctype = inference.contract_error(status, data), "application/json"
        tokens = tokens_of(data)
        done(status, dep_name, bytes_in, len(data), tokens)
        latency_ms = (time.perf_counter() - started) * 1000.0
        headers = [(b"content-type", ctype.encode("latin-1")), (b"content-length", str(len(data)).encode()),
                   (b"x-request-id", rid or request_id().encode()), *rate_headers]
        if shown:
            headers.append((b"azureml-model-deployment", shown.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})
        if not pinned and endpoint.mirror_deployment:
            self._maybe_mirror(endpoint, dep_name, status, data, latency_ms, body, path, rid or b"-")
        return tokens

    # ---------------------------------------------------------------- mirror

    def _maybe_mirror(self, endpoint: EndpointRoute, dep_name: str, status: int, data: bytes, latency_ms: float,
                      body: bytes, path: str, rid: bytes) -> None:
        if (
            endpoint.mirror_deployment != dep_name
            and random.random() < endpoint.mirror_fraction
            and len(self._mirror_tasks) < MAX_MIRROR_INFLIGHT
        ):
            shadow = endpoint.deployments.get(endpoint.mirror_deployment)
            if shadow is not None and shadow.instances:
                task = asyncio.create_task(self._mirror(endpoint, dep_name, status, data, latency_ms, shadow, body,
                                                        path, rid))
                self._mirror_tasks.add(task)
                task.add_done_callback(self._mirror_tasks.discard)

    async def _mirror(
        self, endpoint: EndpointRoute, live_name: str, live_status: int, live_body: bytes, live_latency_ms: float,
        shadow: DeploymentRoute, body: bytes, path: str, request_id: bytes = b"-",
    ) -> None:
        """Send the copy, compare, and keep the comparison; nothing here reaches the client."""
        started = time.perf_counter()
        try:
            status, data, _ctype, _inst = await proxy.forward(self.client, shadow, path, body, request_id)
        except proxy.UpstreamTimeout:
            status, data = 504, b""
        except (proxy.NoReadyInstance, proxy.UpstreamUnreachable, proxy.UpstreamClosed):
            status, data = 502, b""
        except Exception:
            log.exception("mirror copy failed")
            status, data = 502, b""
        shadow_latency_ms = (time.perf_counter() - started) * 1000.0
        if METERING:
            # Metered to the mirror deployment like live traffic: its traffic share, latency,
            # errors and the autoscaler's load all see the copies it serves.
            self.usage.count(endpoint.id, shadow.name, status, shadow_latency_ms, len(body), len(data))
        if len(self.comparisons) < MAX_BUFFERED_COMPARISONS:
            self.comparisons.append(mirror.Comparison(
                endpoint_id=endpoint.id,
                live_deployment=live_name,
                shadow_deployment=shadow.name,
                time=dt.datetime.now(dt.UTC),
                live_status=live_status,
                shadow_status=status,
                live_latency_ms=live_latency_ms,
                shadow_latency_ms=shadow_latency_ms,
                agreed=mirror.outputs_agree(live_status, live_body, status, data),
            ))

    # ---------------------------------------------------------------- streams

    async def _stream(self, deployment: DeploymentRoute, route: str, path: str, body: bytes, payload: dict,
                      receive, send, bytes_in: int, done, shown: str | None, rate_headers: tuple) -> tuple[int, int]:
        """Relay server-sent events as they arrive. A client that goes away closes the upstream
        connection, which stops the generation; tokens are counted once the stream ends."""
        dep_name = deployment.name
        inst = deployment.pick()
        if inst is None:
            status, code, message, headers = upstream_failure(proxy.NoReadyInstance, deployment, False)
            done(status, dep_name, bytes_in, 0)
            await error(send, status, code, message, headers, deployment_name=shown)
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
        session = self._stream_session(inst)
        try:
            async with asyncio.timeout(deployment.request_timeout_s):
                response = await session.post(inst.url(path), data=body, headers=inst.headers)
        except TimeoutError:
            status, code, message, headers = upstream_failure(proxy.UpstreamTimeout, deployment, False)
            await error(send, status, code, message, headers, deployment_name=shown)
            return status
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError, proxy.PeerRefused):
            inst.failed_until = time.monotonic() + FAILED_INSTANCE_BACKOFF_S
            log.warning("cannot reach %s of deployment %s", inst.url(path), dep_name)
            status, code, message, headers = upstream_failure(proxy.UpstreamUnreachable, deployment, False)
            await error(send, status, code, message, headers, deployment_name=shown)
            return status
        except (aiohttp.ClientError, OSError):
            # Written, then the connection failed before the response began: not sent again (proxy.forward).
            log.warning("%s of deployment %s closed the connection", inst.url(path), dep_name)
            status, code, message, headers = upstream_failure(proxy.UpstreamClosed, deployment, False)
            await error(send, status, code, message, headers, deployment_name=shown)
            return status
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
                counts = jsonbody.loads(data)
                return int(counts["prompt_tokens"]), int(counts["completion_tokens"])
        except Exception:  # noqa: BLE001 - metering must not fail the request; fall back below
            log.warning("token count for a stream failed on %s:%s", inst.host, inst.port)
        return 0, reader.chunks

    def _stream_session(self, inst) -> aiohttp.ClientSession:
        if self._streams is None:
            self._streams = proxy.Sessions()
        return self._streams.get(inst)

    # ---------------------------------------------------------------- around the pipeline

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
        who = None
        if workspace_id is None:
            if not oidc.looks_like_jwt(oidc.bearer(auth)):
                await error(send, 401, "Unauthorized", "Missing or invalid inference key.",
                            ((b"www-authenticate", b"Bearer"),))
                return
            # Keyless: an identity token; the workspace follows from the model asked for (below).
            who = await identity.identify(auth)
            if isinstance(who, identity.Denial):
                await self.deny(who, send, "/models")
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
                payload = jsonbody.loads(body)
            except jsonbody.JSONError as exc:
                await error(send, 400, "BadRequest", str(exc))
                return
            model = payload.get("model") if isinstance(payload, dict) else None
            if not isinstance(model, str) or not model.strip():
                await error(send, 400, "BadRequest", "'model' is required: the name of one of the workspace's "
                            "serverless endpoints.", field="model")
                return
        if who is not None:
            found = serverless.token_workspace(self.table, who, model.strip().lower())
            if isinstance(found, identity.Denial):
                await self.deny(found, send, "/models")
                return
            workspace_id = found
        endpoints = self.table.serverless.get(workspace_id, {})
        endpoint = endpoints.get(model.strip().lower())
        if endpoint is None:
            names = sorted({e.name for e in endpoints.values()})
            await error(send, 404, "ModelNotFound",
                        f"The workspace has no serverless endpoint named '{model}'. Available: "
                        f"{', '.join(names) if names else 'none (create a serverless endpoint first)'}.",
                        field="model" if name is None else None)
            return
        await self.relay(endpoint, route, scope, receive, send, body=body, model_field=model)

    async def list_models(self, endpoint: EndpointRoute | None, scope, send) -> None:
        """GET .../models in the OpenAI list shape: what the key reaches. On an endpoint, the endpoint
        (its name is the `model` to send); on the unified endpoint, the workspace's serverless endpoints."""
        auth, api_key, _, _, _, _, _ = request_headers(scope)
        if endpoint is not None:
            reached = [endpoint] if authorized(endpoint, auth, api_key) else None
        else:
            workspace_id = next((w for c in presented_credentials(auth, api_key)
                                 if (w := self.table.unified_keys.get(keys.digest(c))) is not None), None)
            reached = None if workspace_id is None else sorted(
                {e.name: e for e in self.table.serverless.get(workspace_id, {}).values()}.values(),
                key=lambda e: e.name)
        if reached is None:
            await error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                        ((b"www-authenticate", b"Bearer"),))
            return
        if scope["method"] != "GET":
            await error(send, 405, "MethodNotAllowed", "Use GET.", ((b"allow", b"GET"),))
            return
        data = []
        for e in reached:
            served = next(iter(e.deployments.values()), None)
            data.append({"id": e.name, "object": "model", "created": e.created,
                         "owned_by": (served.model_provider if served else "") or "studio",
                         "root": e.model_name or (served.model_name if served else "") or e.name})
        body = json.dumps({"object": "list", "data": data}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _info(self, endpoint: EndpointRoute, pinned: str | None, send) -> None:
        deployment = await self._choose(endpoint, pinned, "info", 0, lambda *a, **k: None,
                                        functools.partial(error, send))
        if deployment is None:
            return
        body = json.dumps({"model_name": deployment.model_name, "model_type": deployment.model_type,
                           "model_provider_name": deployment.model_provider}).encode()
        headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]
        if endpoint.kind != "serverless":
            headers.append((b"azureml-model-deployment", deployment.name.encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
