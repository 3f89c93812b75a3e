"""The data plane: a plain ASGI app on the hot path (no Django request machinery).

    POST /inference/<endpoint>/score          relay to a deployment's ready instance
    GET  /inference/<endpoint>/swagger.json   OpenAPI 3 for the endpoint
    POST /inference/<endpoint>/jobs           a batch endpoint's scoring_uri: create a job (gateway/batch.py)

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

from endpoints_app.asgi_io import read_body
from endpoints_app.gateway import limits, metering, mirror, proxy, swagger
from endpoints_app.gateway.common import JSON_TYPE, MAX_PAYLOAD_BYTES, METERING, request_headers, request_id
from endpoints_app.gateway.common import authorized as _authorized
from endpoints_app.gateway.common import error as _error
from endpoints_app.gateway.common import tokens_of as _tokens
from endpoints_app.gateway.model_api import INFERENCE_ROUTES, UNIFIED_ROUTES, ModelInferenceAPI
from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute, RouteTable, current_version, load_route_table

log = logging.getLogger("studio.gateway")

# Checked at start-up with every other setting (portal/settings.py).
POLL_SECONDS = settings.STUDIO_GATEWAY_POLL_SECONDS
# Safety net: reload even without a version change, so staleness is bounded.
MAX_TABLE_AGE_SECONDS = settings.STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS
FLUSH_SECONDS = settings.STUDIO_GATEWAY_FLUSH_SECONDS
# Mirror copies in flight per worker; beyond this a copy is skipped rather than queued.
MAX_MIRROR_INFLIGHT = settings.STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT
MAX_BUFFERED_COMPARISONS = 100_000
SCORE_PATH = "/score"


class GatewayApp(ModelInferenceAPI):
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
        self.limiter: limits.Limiter | None = None
        self._woken: dict[int, float] = {}
        self._background_calls: set = set()
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
            self.limiter = limits.Limiter(settings.REDIS_URL)
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
        if self.limiter is not None:
            await self.limiter.close()
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
            if endpoint is None and sub == "jobs":
                # Batch endpoints are not in the route table; this never runs for a scoring request.
                await self.batch_invoke(name, scope, receive, send)
                return
            if endpoint is None:
                await _error(send, 404, "EndpointNotFound", f"No endpoint named '{name}'.")
                return
            if sub == "score" and endpoint.kind != "serverless":
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
            if sub == "score":
                await _error(send, 404, "RouteNotServed", "Serverless endpoints serve the model inference API "
                             "(POST /chat/completions, /completions, /embeddings, GET /info), not /score.")
                return
        elif path.startswith("/models/"):
            route = path[len("/models/"):]
            if route in UNIFIED_ROUTES:
                await self.unified(route, None, scope, receive, send)
                return
        elif path.startswith("/openai/deployments/"):
            name, _, route = path[len("/openai/deployments/"):].partition("/")
            if route in UNIFIED_ROUTES and name:
                await self.unified(route, name, scope, receive, send)
                return
        await _error(send, 404, "NotFound", "No such route.")

    async def batch_invoke(self, name: str, scope, receive, send) -> None:
        from endpoints_app.gateway import batch

        if scope["method"] != "POST":
            await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
            return
        auth, api_key, _, _, host, _, _ = request_headers(scope)
        credential = ""
        if auth and auth[:7].lower() == b"bearer ":
            credential = auth[7:].decode("latin-1").strip()
        elif api_key:
            credential = api_key.decode("latin-1").strip()
        body = await read_body(receive, MAX_PAYLOAD_BYTES)
        if body is None:
            await _error(send, 413, "PayloadTooLarge", f"Request bodies are limited to {MAX_PAYLOAD_BYTES} bytes.")
            return
        base = f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"
        status, answer = await asyncio.to_thread(batch.invoke, name, credential, body, base)
        data = json.dumps(answer, default=str).encode()
        headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(data)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    async def score(self, endpoint: EndpointRoute, scope, receive, send) -> None:
        started = time.perf_counter()
        auth, api_key, pinned, content_length, _, rid, _ = request_headers(scope)
        # The client's id when it sent a usable one, else ours; it goes upstream and back to the client.
        if rid is None:
            rid = request_id().encode()

        async def fail(status: int, code: str, message: str, headers=(), deployment_name: str | None = None) -> None:
            await _error(send, status, code, message, (*headers, (b"x-request-id", rid)), deployment_name)

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
            await fail(400, "BadRequest", "The request body is JSON nested too deeply.")
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
        # In-flight requests: across every worker through Redis when REDIS_URL is set (one round trip
        # each way), else per gateway worker (then N workers may hold N x the limit between them).
        slot = await self._take_slot(deployment)
        if slot is None:
            done(429, dep_name, bytes_in, 0)
            await fail(
                429, "TooManyRequests",
                f"Deployment '{dep_name}' has {deployment.capacity} requests in flight, its limit "
                f"(2 x max_concurrent_requests_per_instance x {len(deployment.instances)} ready instances).",
                ((b"retry-after", b"1"),), deployment_name=dep_name,
            )
            return

        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, SCORE_PATH, body, rid)
        except proxy.UpstreamTimeout:
            await self._give_slot(deployment, slot)
            done(504, dep_name, bytes_in, 0)
            await fail(504, "RequestTimeout",
                         f"Deployment '{dep_name}' did not answer within "
                         f"{int(deployment.request_timeout_s * 1000)} ms (request_timeout_ms).",
                         deployment_name=dep_name)
            return
        except proxy.NoReadyInstance:
            await self._give_slot(deployment, slot)
            done(503, dep_name, bytes_in, 0)
            await fail(503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         deployment_name=dep_name)
            return
        except proxy.UpstreamUnreachable:
            await self._give_slot(deployment, slot)
            done(502, dep_name, bytes_in, 0)
            await fail(502, "BadGateway", f"No instance of deployment '{dep_name}' could be reached.",
                         deployment_name=dep_name)
            return

        if slot is not True:
            await self._give_slot(deployment, slot)
        done(status, dep_name, bytes_in, len(data), _tokens(data))
        latency_ms = (time.perf_counter() - started) * 1000.0
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode("latin-1")),
                (b"content-length", str(len(data)).encode()),
                (b"azureml-model-deployment", dep_name.encode()),
                (b"x-request-id", rid),
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
                    self._mirror(endpoint, dep_name, status, data, latency_ms, shadow, body, SCORE_PATH, rid))
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
        auth, api_key, pinned, _, host, _, _ = request_headers(scope)
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
