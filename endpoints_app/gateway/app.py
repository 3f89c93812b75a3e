"""The data plane: a plain ASGI app on the hot path (no Django request machinery).

    POST /inference/<endpoint>/score          relay to a deployment's ready instance
    GET  /inference/<endpoint>/swagger.json   OpenAPI 3 for the endpoint
    POST /inference/<endpoint>/jobs           a batch endpoint's scoring_uri: create a job (gateway/batch.py)

The hot path never touches the database. A background task polls the route
version (one row) every half second and reloads the whole route table in a
worker thread when it changes, or every few seconds anyway; usage counters and
mirror comparisons are flushed in the background and once more at shutdown."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import logging
import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

from django.db import close_old_connections

from endpoints_app import keys
from endpoints_app.asgi_io import read_body
from endpoints_app.gateway import metering, mirror, proxy, swagger
from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute, RouteTable, current_version, load_route_table
from portal.env import env_bool, env_float, env_int

log = logging.getLogger("studio.gateway")

MAX_PAYLOAD_BYTES = env_int("STUDIO_GATEWAY_MAX_PAYLOAD_BYTES", 4 * 1024 * 1024, minimum=1)
POLL_SECONDS = env_float("STUDIO_GATEWAY_POLL_SECONDS", 0.5)
# Safety net: reload even without a version change, so staleness is bounded.
MAX_TABLE_AGE_SECONDS = env_float("STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS", 10.0)
FLUSH_SECONDS = env_float("STUDIO_GATEWAY_FLUSH_SECONDS", 2.0)
# Mirror copies in flight per worker; beyond this a copy is skipped rather than queued.
MAX_MIRROR_INFLIGHT = env_int("STUDIO_GATEWAY_MAX_MIRROR_INFLIGHT", 64, minimum=1)
MAX_BUFFERED_COMPARISONS = 100_000
# Off only to measure what metering costs (bench/gateway.py); usage and cost go unrecorded.
METERING = env_bool("STUDIO_GATEWAY_METERING", True)

JSON_TYPE = b"application/json"
# Request ids: a random per-process prefix and a counter (no entropy syscall per request).
_REQUEST_PREFIX = os.urandom(6).hex()
_request_numbers = itertools.count(1)
SCORE_PATH = "/score"


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
        self._started = False
        await self._in_db_thread(_close_db_connection)

    async def _reload(self) -> None:
        table = await self._in_db_thread(load_route_table)
        table.adopt(self.table)
        if table.version != self.table.version:
            log.info("route table version %s: %d endpoints", table.version, len(table.endpoints))
        self.table = table

    async def _poll_routes(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            try:
                stale = time.monotonic() - self.table.loaded_at > MAX_TABLE_AGE_SECONDS
                if stale or await self._in_db_thread(_polled_version) != self.table.version:
                    await self._reload()
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
            if sub == "score":
                if scope["method"] != "POST":
                    await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
                    return
                await self.score(endpoint, scope, receive, send)
                return
            if sub == "swagger.json":
                await self.swagger(endpoint, scope, send)
                return
        await _error(send, 404, "NotFound", "No such route.")

    async def batch_invoke(self, name: str, scope, receive, send) -> None:
        from endpoints_app.gateway import batch

        if scope["method"] != "POST":
            await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
            return
        auth, api_key, _, _, host = _request_headers(scope)
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
        auth, api_key, pinned, content_length, _ = _request_headers(scope)

        def done(status: int, deployment: str, bytes_in: int, bytes_out: int, tokens=(0, 0)) -> None:
            if METERING:
                latency_ms = (time.perf_counter() - started) * 1000.0
                self.usage.count(endpoint.id, deployment, status, latency_ms, bytes_in, bytes_out, *tokens)

        if not _authorized(endpoint, auth, api_key):
            done(401, "", 0, 0)
            await _error(send, 401, "Unauthorized", "Missing or invalid key or token.",
                         ((b"www-authenticate", b"Bearer"),))
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
            json.loads(body)
        except ValueError as exc:
            done(400, "", bytes_in, 0)
            await _error(send, 400, "BadRequest", f"The request body is not valid JSON: {exc}")
            return

        if pinned:
            deployment = endpoint.deployments.get(pinned)
            if deployment is None:
                done(404, "", bytes_in, 0)
                await _error(send, 404, "DeploymentNotFound",
                             f"Endpoint '{endpoint.name}' has no deployment named '{pinned}'.")
                return
        else:
            deployment = endpoint.choose()
            if deployment is None:
                done(503, "", bytes_in, 0)
                await _error(send, 503, "NoTraffic",
                             f"Endpoint '{endpoint.name}' sends no traffic to any deployment yet.")
                return
        dep_name = deployment.name
        if not deployment.instances:
            done(503, dep_name, bytes_in, 0)
            await _error(send, 503, "NoReadyInstance", f"Deployment '{dep_name}' has no ready instance.",
                         deployment_name=dep_name)
            return
        # In-flight requests are counted per gateway worker (no shared state on the hot path), so with
        # N workers a deployment may hold up to N x this limit; each worker still sheds its own excess.
        if deployment.inflight >= deployment.capacity:
            done(429, dep_name, bytes_in, 0)
            await _error(
                send, 429, "TooManyRequests",
                f"Deployment '{dep_name}' has {deployment.capacity} requests in flight, its limit "
                f"(2 x max_concurrent_requests_per_instance x {len(deployment.instances)} ready instances).",
                ((b"retry-after", b"1"),), deployment_name=dep_name,
            )
            return

        try:
            status, data, ctype, _instance = await proxy.forward(self.client, deployment, SCORE_PATH, body)
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
                         deployment_name=dep_name)
            return
        except proxy.UpstreamUnreachable:
            done(502, dep_name, bytes_in, 0)
            await _error(send, 502, "BadGateway", f"No instance of deployment '{dep_name}' could be reached.",
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
                (b"x-request-id", f"{_REQUEST_PREFIX}-{next(_request_numbers)}".encode()),
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
                task = asyncio.create_task(self._mirror(endpoint, dep_name, status, data, latency_ms, shadow, body))
                self._mirror_tasks.add(task)
                task.add_done_callback(self._mirror_tasks.discard)

    async def _mirror(
        self, endpoint: EndpointRoute, live_name: str, live_status: int, live_body: bytes, live_latency_ms: float,
        shadow: DeploymentRoute, body: bytes,
    ) -> None:
        """Send the copy, compare, and keep the comparison; nothing here reaches the client."""
        started = time.perf_counter()
        try:
            status, data, _ctype, _inst = await proxy.forward(self.client, shadow, SCORE_PATH, body)
        except proxy.UpstreamTimeout:
            status, data = 504, b""
        except (proxy.NoReadyInstance, proxy.UpstreamUnreachable):
            status, data = 502, b""
        except Exception:
            log.exception("mirror copy failed")
            status, data = 502, b""
        shadow_latency_ms = (time.perf_counter() - started) * 1000.0
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

    async def swagger(self, endpoint: EndpointRoute, scope, send) -> None:
        auth, api_key, pinned, _, host = _request_headers(scope)
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


def _request_headers(scope) -> tuple[bytes | None, bytes | None, str | None, bytes | None, bytes]:
    """The headers the gateway acts on: (authorization, api-key, pinned deployment, content-length, host)."""
    auth = api_key = pinned = content_length = None
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
    return auth, api_key, pinned, content_length, host


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
            if keys.verify_token(credential, endpoint.name):
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


async def _error(send, status: int, code: str, message: str, headers=(), deployment_name: str | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    response_headers = [(b"content-type", JSON_TYPE), (b"content-length", str(len(body)).encode()), *headers]
    if deployment_name:
        response_headers.append((b"azureml-model-deployment", deployment_name.encode()))
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": body})


def _polled_version() -> int:
    close_old_connections()  # a broken or too old connection (database restart) is replaced, not reused
    return current_version()


def _close_db_connection() -> None:
    from django.db import connection

    connection.close()
