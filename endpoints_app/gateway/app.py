"""The data plane: a plain ASGI app on the hot path (no Django request machinery).

    POST /inference/<endpoint>/score          relay to a deployment's ready instance
    GET  /inference/<endpoint>/swagger.json   OpenAPI 3 for the endpoint

The hot path never touches the database. A background task polls the route
version (one row) every half second and reloads the whole route table in a
worker thread when it changes, or every few seconds anyway, and reports the
version it loaded (a GatewayWorker row per worker, after each reload and every
second) so the control plane can wait until every live worker routes on a
change; usage counters and mirror comparisons are flushed in the background and
once more at shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import random
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import aiohttp
from django.conf import settings
from django.db import close_old_connections

from endpoints_app import keys
from endpoints_app.asgi_io import read_body
from endpoints_app.gateway import inference, metering, mirror, proxy, swagger, validation
from endpoints_app.gateway.routes import (
    UPSTREAM_PATHS,
    DeploymentRoute,
    EndpointRoute,
    RouteTable,
    current_version,
    load_route_table,
)

log = logging.getLogger("studio.gateway")

# Checked at start-up with every other setting (portal/settings.py).
MAX_PAYLOAD_BYTES = settings.STUDIO_GATEWAY_MAX_PAYLOAD_BYTES
POLL_SECONDS = settings.STUDIO_GATEWAY_POLL_SECONDS
# Safety net: reload even without a version change, so staleness is bounded.
MAX_TABLE_AGE_SECONDS = settings.STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS
FLUSH_SECONDS = settings.STUDIO_GATEWAY_FLUSH_SECONDS
# Mirror copies in flight per worker; beyond this a copy is skipped rather than queued.
MAX_MIRROR_INFLIGHT = settings.STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT
MAX_BUFFERED_COMPARISONS = 100_000
# Off only to measure what metering costs (bench/gateway.py); usage and cost go unrecorded.
METERING = settings.STUDIO_GATEWAY_METERING

JSON_TYPE = b"application/json"
# Request ids: a random per-process prefix and a counter (no entropy syscall per request).
_REQUEST_PREFIX = os.urandom(6).hex().encode()
MAX_REQUEST_ID_BYTES = 128
_request_numbers = itertools.count(1)
SCORE_PATH = "/score"
INFERENCE_ROUTES = frozenset({"chat/completions", "completions", "embeddings", "info"})
SSE_HEADERS = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no"))


class GatewayApp:
    def __init__(self) -> None:
        self.table = RouteTable()
        self.usage = metering.UsageCounters()
        self.comparisons: list[mirror.Comparison] = []
        self.client: proxy.AiohttpClient | proxy.Http1Client | None = None
        # One thread, one database connection: route reloads and flushes take turns.
        self.db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._background: list[asyncio.Task] = []
        self._mirror_tasks: set[asyncio.Task] = set()
        # Streams are relayed with aiohttp (the http1 client reads whole responses).
        self._streams: aiohttp.ClientSession | None = None
        # Names this worker's heartbeat row (several workers per host, several hosts).
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._beat_at = 0.0

    # ---------------------------------------------------------------- lifecycle

    async def _in_db_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.db, fn, *args)

    async def start(self) -> None:
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            self.client = proxy.new_client()
            try:
                await self._reload()
                await self._heartbeat(force=True)
                await self._in_db_thread(_prune_workers)
            except Exception:
                log.exception("initial route load failed; retrying in the background")
            self._background = [
                asyncio.create_task(self._poll_routes(), name="gateway-routes"),
                asyncio.create_task(self._flush_loop(), name="gateway-flush"),
            ]
            self._started = True

    async def stop(self) -> None:
        if not self._started:
            return
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._mirror_tasks:
            # Give copies in flight a moment so their comparisons are kept.
            await asyncio.wait(list(self._mirror_tasks), timeout=5)
        await self.flush()
        if self.client is not None:
            await self.client.close()
        if self._streams is not None:
            await self._streams.close()
        self._started = False
        try:
            await self._in_db_thread(_forget_worker, self.worker_id)
        except Exception:
            log.exception("could not remove this worker's heartbeat row")
        await self._in_db_thread(_close_db_connection)

    async def _reload(self) -> None:
        table = await self._in_db_thread(load_route_table)
        table.adopt(self.table)
        if table.version != self.table.version:
            log.info("route table version %s: %d endpoints", table.version, len(table.endpoints))
        self.table = table

    async def _heartbeat(self, force: bool = False) -> None:
        from endpoints_app.models import GatewayWorker

        now = time.monotonic()
        if force or now - self._beat_at >= GatewayWorker.HEARTBEAT_SECONDS:
            self._beat_at = now
            await self._in_db_thread(_beat, self.worker_id, self.table.version)

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                stale = time.monotonic() - self.table.loaded_at > MAX_TABLE_AGE_SECONDS
                reload = stale or await self._in_db_thread(_polled_version) != self.table.version
                if reload:
                    await self._reload()
                # At once after a reload: writers waiting for this version are released.
                await self._heartbeat(force=reload)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("route reload failed; keeping the previous table")

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("flush failed")

    async def flush(self) -> None:
        """Write usage deltas and mirror comparisons; what fails is kept for the next flush."""
        deltas = self.usage.take()
        if deltas:
            failed = await self._in_db_thread(metering.write_deltas, deltas)
            if failed:
                self.usage.give_back(failed)
        comparisons, self.comparisons = self.comparisons, []
        if comparisons:
            try:
                await self._in_db_thread(mirror.write_comparisons, comparisons)
            except Exception:
                log.exception("writing mirror comparisons failed; will retry")
                self.comparisons = (comparisons + self.comparisons)[-MAX_BUFFERED_COMPARISONS:]

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.stop()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- requests

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._started:
            await self.start()
        path: str = scope["path"]
        if path.startswith("/inference/"):
            name, _, sub = path[len("/inference/"):].partition("/")
            endpoint = self.table.endpoints.get(name)
            if endpoint is None:
                await _error(send, 404, "EndpointNotFound", f"No endpoint named '{name}'.")
                return
            if sub == "score":
                if scope["method"] != "POST":
                    await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
                    return
                await self.score(endpoint, scope, receive, send)
                return
            if sub == "swagger.json":
                await self.swagger(endpoint, scope, send)
                return
            if sub in INFERENCE_ROUTES:
                await self.inference(endpoint, sub, scope, receive, send)
                return
        await _error(send, 404, "NotFound", "No such route.")

    async def score(self, endpoint: EndpointRoute, scope, receive, send) -> None:
        started = time.perf_counter()
        auth, api_key, pinned, content_length, _, request_id = _request_headers(scope)
        # The client's id when it sent a usable one, else ours; it goes upstream and back to the client.
        if request_id is None:
            request_id = b"%s-%d" % (_REQUEST_PREFIX, next(_request_numbers))

        async def fail(status: int, code: str, message: str, headers=(), deployment_name: str | None = None) -> None:
            await _error(send, status, code, message, (*headers, (b"x-request-id", request_id)), deployment_name)

        def done(status: int, deployment: str, bytes_in: int, bytes_out: int, tokens=(0, 0)) -> None:
            if METERING:
                latency_ms = (time.perf_counter() - started) * 1000.0
                self.usage.count(endpoint.id, deployment, status, latency_ms, bytes_in, bytes_out, *tokens)

        if not _authorized(endpoint, auth, api_key):
            done(401, "", 0, 0)
            await fail(401, "Unauthorized", "Missing or invalid key or token.",
                         ((b"www-authenticate", b"Bearer"),))
            return
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
            json.loads(body)
        except ValueError as exc:
            done(400, "", bytes_in, 0)
            await fail(400, "BadRequest", f"The request body is not valid JSON: {exc}")
            return
        except RecursionError:
            done(400, "", bytes_in, 0)
            await _error(send, 400, "BadRequest", "The request body is JSON nested too deeply.")
            return

        if pinned:
            deployment = endpoint.deployments.get(pinned)
            if deployment is None:
                done(404, "", bytes_in, 0)
                await fail(404, "DeploymentNotFound",
                             f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
                return
        else:
            deployment = endpoint.choose()
            if deployment is None:
                done(503, "", bytes_in, 0)
                await fail(503, "NoTraffic",
                             f"Endpoint '{endpoint.name}' sends no traffic to any deployment yet.")
                return
        dep_name = deployment.name
        if not deployment.instances:
            done(503, dep_name, bytes_in, 0)
            await fail(503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         deployment_name=dep_name)
            return
        # In-flight requests are counted per gateway worker (no shared state on the hot path), so with
        # N workers a deployment may hold up to N x this limit; each worker still sheds its own excess.
        if deployment.inflight >= deployment.capacity:
            done(429, dep_name, bytes_in, 0)
            await fail(
                429, "TooManyRequests",
                f"Deployment '{dep_name}' has {deployment.capacity} requests in flight, its limit "
                f"(2 x max_concurrent_requests_per_instance x {len(deployment.instances)} ready instances).",
                ((b"retry-after", b"1"),), deployment_name=dep_name,
            )
            return

        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, SCORE_PATH, body, request_id)
        except proxy.UpstreamTimeout:
            done(504, dep_name, bytes_in, 0)
            await fail(504, "RequestTimeout",
                         f"Deployment '{dep_name}' did not answer within "
                         f"{int(deployment.request_timeout_s * 1000)} ms (request_timeout_ms).",
                         deployment_name=dep_name)
            return
        except proxy.NoReadyInstance:
            done(503, dep_name, bytes_in, 0)
            await fail(503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         deployment_name=dep_name)
            return
        except proxy.UpstreamUnreachable:
            done(502, dep_name, bytes_in, 0)
            await fail(502, "BadGateway", f"No instance of deployment '{dep_name}' could be reached.",
                         deployment_name=dep_name)
            return

        done(status, dep_name, bytes_in, len(data), _tokens(data))
        latency_ms = (time.perf_counter() - started) * 1000.0
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode("latin-1")),
                (b"content-length", str(len(data)).encode()),
                (b"azureml-model-deployment", dep_name.encode()),
                (b"x-request-id", request_id),
            ],
        })
        await send({"type": "http.response.body", "body": data})

        if (
            endpoint.mirror_deployment
            and not pinned
            and endpoint.mirror_deployment != dep_name
            and random.random() < endpoint.mirror_fraction
            and len(self._mirror_tasks) < MAX_MIRROR_INFLIGHT
        ):
            shadow = endpoint.deployments.get(endpoint.mirror_deployment)
            if shadow is not None and shadow.instances:
                task = asyncio.create_task(
                    self._mirror(endpoint, dep_name, status, data, latency_ms, shadow, body, SCORE_PATH, request_id))
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
        except (proxy.NoReadyInstance, proxy.UpstreamUnreachable):
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

    # ---------------------------------------------------------------- model inference API

    async def inference(self, endpoint: EndpointRoute, route: str, scope, receive, send,
                        model_field: str | None = None) -> None:
        """chat/completions, completions, embeddings (POST) and info (GET) on an endpoint: the same
        keys, traffic split, header targeting, in-flight limit, mirroring and metering as /score."""
        started = time.perf_counter()
        auth, api_key, pinned, content_length, extra = _inference_headers(scope)

        def done(status: int, deployment: str, bytes_in: int, bytes_out: int, tokens=(0, 0)) -> None:
            if METERING:
                latency_ms = (time.perf_counter() - started) * 1000.0
                self.usage.count(endpoint.id, deployment, status, latency_ms, bytes_in, bytes_out, *tokens)

        if not _authorized(endpoint, auth, api_key):
            done(401, "", 0, 0)
            await _error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                         ((b"www-authenticate", b"Bearer"),))
            return
        method = scope["method"]
        if route == "info":
            if method != "GET":
                await _error(send, 405, "MethodNotAllowed", "Use GET.", ((b"allow", b"GET"),))
                return
            await self._info(endpoint, pinned, send)
            return
        if method != "POST":
            await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
            return
        if content_length is not None and content_length.isdigit() and int(content_length) > MAX_PAYLOAD_BYTES:
            done(413, "", 0, 0)
            await _error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
            return
        body = await read_body(receive, MAX_PAYLOAD_BYTES)
        if body is None:
            done(413, "", 0, 0)
            await _error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
            return
        bytes_in = len(body)
        try:
            payload = json.loads(body)
        except ValueError as exc:
            done(400, "", bytes_in, 0)
            await _error(send, 400, "BadRequest", f"The request body is not valid JSON: {exc}")
            return

        deployment = await self._inference_deployment(endpoint, pinned, route, send, bytes_in, done)
        if deployment is None:
            return
        dep_name = deployment.name
        try:
            if route == "chat/completions":
                checked = validation.check_chat(payload, deployment.context_length, extra)
            elif route == "completions":
                checked = validation.check_completion(payload, deployment.context_length, extra)
            else:
                checked = validation.check_embeddings(payload, deployment.dimensions, extra)
        except validation.InvalidRequest as exc:
            done(exc.status, dep_name, bytes_in, 0)
            await _error(send, exc.status, exc.code, exc.message, field=exc.field, deployment_name=dep_name)
            return
        if checked is not payload or model_field is not None:
            if model_field is not None:
                checked = {**checked, "model": model_field}
            body = json.dumps(checked).encode()
        payload = checked
        if not deployment.instances:
            done(503, dep_name, bytes_in, 0)
            await _error(send, 503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         ((b"retry-after", b"5"),), deployment_name=dep_name)
            return
        if deployment.inflight >= deployment.capacity:
            done(429, dep_name, bytes_in, 0)
            await _error(
                send, 429, "TooManyRequests",
                f"Deployment '{dep_name}' has {deployment.capacity} requests in flight, its limit "
                f"(2 x max_concurrent_requests_per_instance x {len(deployment.instances)} ready instances).",
                ((b"retry-after", b"1"),), deployment_name=dep_name,
            )
            return

        path = UPSTREAM_PATHS[route]
        if route != "embeddings" and payload.get("stream") is True:
            await self._stream(deployment, route, path, body, payload, receive, send, bytes_in, done)
            return
        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, path, body)
        except proxy.UpstreamTimeout:
            done(504, dep_name, bytes_in, 0)
            await _error(send, 504, "RequestTimeout",
                         f"Deployment '{dep_name}' did not answer within "
                         f"{int(deployment.request_timeout_s * 1000)} ms (request_timeout_ms).",
                         deployment_name=dep_name)
            return
        except proxy.NoReadyInstance:
            done(503, dep_name, bytes_in, 0)
            await _error(send, 503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         ((b"retry-after", b"5"),), deployment_name=dep_name)
            return
        except proxy.UpstreamUnreachable:
            done(502, dep_name, bytes_in, 0)
            await _error(send, 502, "BadGateway", f"No instance of deployment '{dep_name}' could be reached.",
                         deployment_name=dep_name)
            return
        if status >= 400:
            data, ctype = inference.contract_error(status, data), "application/json"
        done(status, dep_name, bytes_in, len(data), _tokens(data))
        latency_ms = (time.perf_counter() - started) * 1000.0
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode("latin-1")),
                (b"content-length", str(len(data)).encode()),
                (b"azureml-model-deployment", dep_name.encode()),
                (b"x-request-id", f"{_REQUEST_PREFIX}-{next(_request_numbers)}".encode()),
            ],
        })
        await send({"type": "http.response.body", "body": data})
        if not pinned:
            self._maybe_mirror(endpoint, dep_name, status, data, latency_ms, body, path)

    async def _inference_deployment(self, endpoint: EndpointRoute, pinned: str | None, route: str, send,
                                    bytes_in: int, done) -> DeploymentRoute | None:
        """The pinned or traffic-chosen deployment, if it serves `route`; else the error is sent."""
        if pinned:
            deployment = endpoint.deployments.get(pinned)
            if deployment is None:
                done(404, "", bytes_in, 0)
                await _error(send, 404, "DeploymentNotFound",
                             f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
                return None
        else:
            deployment = endpoint.choose()
            if deployment is None:
                done(503, "", bytes_in, 0)
                await _error(send, 503, "NoTraffic",
                             f"Endpoint '{endpoint.name}' sends no traffic to any deployment yet.")
                return None
        if route not in deployment.routes:
            done(404, deployment.name, bytes_in, 0)
            served = ", ".join(("GET /" if r == "info" else "POST /") + r for r in deployment.routes)
            await _error(send, 404, "RouteNotServed",
                         f"Deployment '{deployment.name}' (model {deployment.model_name or 'unknown'}) does not "
                         f"serve /{route}; it serves {served}.", deployment_name=deployment.name)
            return None
        return deployment

    async def _info(self, endpoint: EndpointRoute, pinned: str | None, send) -> None:
        deployment = await self._inference_deployment(endpoint, pinned, "info", send, 0, lambda *a, **k: None)
        if deployment is None:
            return
        body = json.dumps({"model_name": deployment.model_name, "model_type": deployment.model_type,
                           "model_provider_name": deployment.model_provider}).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()),
                                (b"azureml-model-deployment", deployment.name.encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, deployment: DeploymentRoute, route: str, path: str, body: bytes, payload: dict,
                      receive, send, bytes_in: int, done) -> None:
        """Relay server-sent events as they arrive. A client that goes away closes the upstream
        connection, which stops the generation; tokens are counted once the stream ends."""
        dep_name = deployment.name
        inst = deployment.pick()
        if inst is None:
            done(503, dep_name, bytes_in, 0)
            await _error(send, 503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         ((b"retry-after", b"5"),), deployment_name=dep_name)
            return
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        reader = inference.StreamReader(route, hold_done=include_usage)
        state = {"status": 0, "bytes_out": 0, "started": False}
        inst.inflight += 1
        relay = asyncio.create_task(self._relay_stream(deployment, inst, path, body, send, reader, state))
        gone = asyncio.create_task(_until_disconnect(receive))
        try:
            await asyncio.wait((relay, gone), return_when=asyncio.FIRST_COMPLETED)
            if not relay.done():
                relay.cancel()  # the client left: dropping the upstream connection stops the generation
                await asyncio.gather(relay, return_exceptions=True)
                status = 499
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
            if status == 200:
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

    async def _relay_stream(self, deployment: DeploymentRoute, inst, path: str, body: bytes, send,
                            reader: inference.StreamReader, state: dict) -> int:
        """Returns the status; sends everything but the stream's last message (see _stream)."""
        dep_name = deployment.name
        session = self._stream_session()
        try:
            async with asyncio.timeout(deployment.request_timeout_s):
                response = await session.post(inst.url(path), data=body, headers=inst.headers)
        except TimeoutError:
            await _error(send, 504, "RequestTimeout",
                         f"Deployment '{dep_name}' did not answer within "
                         f"{int(deployment.request_timeout_s * 1000)} ms (request_timeout_ms).",
                         deployment_name=dep_name)
            return 504
        except (aiohttp.ClientError, OSError):
            await _error(send, 502, "BadGateway", f"No instance of deployment '{dep_name}' could be reached.",
                         deployment_name=dep_name)
            return 502
        async with response:
            if response.status != 200 or response.content_type != "text/event-stream":
                data = await response.read()
                if response.status >= 400:
                    data, ctype = inference.contract_error(response.status, data), "application/json"
                else:
                    ctype = response.headers.get("Content-Type", "application/json")
                await send({"type": "http.response.start", "status": response.status,
                            "headers": [(b"content-type", ctype.encode("latin-1")),
                                        (b"content-length", str(len(data)).encode()),
                                        (b"azureml-model-deployment", dep_name.encode())]})
                await send({"type": "http.response.body", "body": data})
                state["bytes_out"] = len(data)
                return response.status
            await send({"type": "http.response.start", "status": 200, "headers": [
                *SSE_HEADERS,
                (b"azureml-model-deployment", dep_name.encode()),
                (b"x-request-id", f"{_REQUEST_PREFIX}-{next(_request_numbers)}".encode()),
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
                self.client.post(inst, "/studio/usage", inference.usage_request(route, payload, reader.text)), 10)
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

    def _maybe_mirror(self, endpoint: EndpointRoute, dep_name: str, status: int, data: bytes, latency_ms: float,
                      body: bytes, path: str) -> None:
        if (
            endpoint.mirror_deployment
            and endpoint.mirror_deployment != dep_name
            and random.random() < endpoint.mirror_fraction
            and len(self._mirror_tasks) < MAX_MIRROR_INFLIGHT
        ):
            shadow = endpoint.deployments.get(endpoint.mirror_deployment)
            if shadow is not None and shadow.instances:
                task = asyncio.create_task(self._mirror(endpoint, dep_name, status, data, latency_ms, shadow, body,
                                                        path))
                self._mirror_tasks.add(task)
                task.add_done_callback(self._mirror_tasks.discard)

    async def swagger(self, endpoint: EndpointRoute, scope, send) -> None:
        auth, api_key, pinned, _, host, _ = _request_headers(scope)
        if not _authorized(endpoint, auth, api_key):
            await _error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                         ((b"www-authenticate", b"Bearer"),))
            return
        deployment = endpoint.deployments.get(pinned) if pinned else endpoint.default_deployment()
        if pinned and deployment is None:
            await _error(send, 404, "DeploymentNotFound",
                         f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
            return
        server = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}/inference/{endpoint.name}"
        body = json.dumps(swagger.build_swagger(endpoint, deployment, server)).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _request_headers(scope) -> tuple[bytes | None, bytes | None, str | None, bytes | None, bytes, bytes | None]:
    """The headers the gateway acts on: (authorization, api-key, pinned deployment, content-length, host,
    the client's x-request-id when it is short printable ASCII)."""
    auth = api_key = pinned = content_length = request_id = None
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
        elif header == b"x-request-id" and 0 < len(value) <= MAX_REQUEST_ID_BYTES and _printable(value):
            request_id = value
    return auth, api_key, pinned, content_length, host, request_id


def _printable(value: bytes) -> bool:
    return value.isascii() and value.decode("ascii").isprintable()


def _inference_headers(scope) -> tuple[bytes | None, bytes | None, str | None, bytes | None, str | None]:
    """(authorization, api-key, pinned deployment, content-length, extra-parameters)."""
    auth = api_key = pinned = content_length = extra = None
    for header, value in scope["headers"]:
        if header == b"authorization":
            auth = value
        elif header == b"api-key":
            api_key = value
        elif header == b"azureml-model-deployment":
            pinned = value.decode("latin-1").strip()
        elif header == b"content-length":
            content_length = value
        elif header == b"extra-parameters":
            extra = value.decode("latin-1").strip().lower()
    return auth, api_key, pinned, content_length, extra


async def _until_disconnect(receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _authorized(endpoint: EndpointRoute, auth: bytes | None, api_key: bytes | None) -> bool:
    """A key (primary or secondary, by digest, constant time) or, for aml_token endpoints, an unexpired token.
    Either header may carry it; clients such as azure-ai-inference send both."""
    presented: list[str] = []
    if api_key:
        presented.append(api_key.decode("latin-1").strip())
    if auth and auth[:7].lower() == b"bearer ":
        presented.append(auth[7:].decode("latin-1").strip())
    for credential in presented:
        if not credential:
            continue
        if endpoint.auth_mode == "aml_token":
            if keys.verify_token(credential, endpoint.id, endpoint.token_generation):
                return True
        elif keys.matches(credential, endpoint.key_digests):
            return True
    return False




def _tokens(data: bytes) -> tuple[int, int]:
    """Token counts from an OpenAI-shaped response's usage (chat, embeddings); (0, 0) otherwise."""
    if b'"usage"' not in data:
        return 0, 0
    try:
        usage = json.loads(data).get("usage") or {}
        return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    except (ValueError, AttributeError, TypeError):
        return 0, 0


async def _error(send, status: int, code: str, message: str, headers=(), deployment_name: str | None = None,
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


def _polled_version() -> int:
    close_old_connections()  # a broken or too old connection (database restart) is replaced, not reused
    return current_version()


def _beat(worker: str, version: int) -> None:
    from endpoints_app.models import GatewayWorker

    GatewayWorker.beat(worker, version)


def _prune_workers() -> None:
    """Rows of workers gone for a day (killed without a shutdown) go."""
    import datetime

    from django.utils import timezone

    from endpoints_app.models import GatewayWorker

    GatewayWorker.objects.filter(seen_at__lt=timezone.now() - datetime.timedelta(days=1)).delete()


def _forget_worker(worker: str) -> None:
    from endpoints_app.models import GatewayWorker

    GatewayWorker.objects.filter(worker=worker).delete()


def _close_db_connection() -> None:
    from django.db import connection

    connection.close()
