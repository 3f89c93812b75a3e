"""The data plane: a plain ASGI app on the hot path (no Django request machinery).

    POST /inference/<endpoint>/score          relay to a deployment's ready instance (gateway/relay.py)
    POST /inference/<endpoint>/chat/completions ... and /models/..., /openai/deployments/...   (the same relay)
    GET  /inference/<endpoint>/swagger.json   OpenAPI 3 for the endpoint

A batch endpoint's scoring_uri (POST /inference/<endpoint>/jobs) is a control-plane write that
Django answers (portal/dispatch.py sends it there); this app imports no services and no views.

The hot path never touches the database. A background task polls the route
version (one row) every half second and reloads the whole route table in a
worker thread when it changes, or every few seconds anyway, and reports the
version it loaded (a GatewayWorker row per worker, after each reload and every
second) so the control plane can wait until every live worker routes on a
change; usage counters and mirror comparisons are flushed in the background and
once more at shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time

from django.conf import settings
from django.db import close_old_connections

from endpoints_app.gateway import identity, limits, metering, mirror, proxy, swagger
from endpoints_app.gateway.common import JSON_TYPE, request_headers
from endpoints_app.gateway.common import error as _error
from endpoints_app.gateway.relay import INFERENCE_ROUTES, MAX_BUFFERED_COMPARISONS, UNIFIED_ROUTES, Relay
from endpoints_app.gateway.routes import EndpointRoute, current_version, load_route_table

log = logging.getLogger("studio.gateway")

# Checked at start-up with every other setting (portal/settings.py).
POLL_SECONDS = settings.STUDIO_GATEWAY_POLL_SECONDS
# Safety net: reload even without a version change, so staleness is bounded.
MAX_TABLE_AGE_SECONDS = settings.STUDIO_GATEWAY_MAX_TABLE_AGE_SECONDS
FLUSH_SECONDS = settings.STUDIO_GATEWAY_FLUSH_SECONDS


class GatewayApp(Relay):
    """Routing and the lifecycle around the relay (gateway/relay.py)."""

    def __init__(self) -> None:
        super().__init__()
        self._unwritten: list[metering.Segment] = []  # flushed segments the database refused, oldest first
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._background: list[asyncio.Task] = []
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
        if (segment := self.usage.take_segment()) is not None:
            self._unwritten.append(segment)
        # Oldest first; one that fails stays (with its journal file) for the next flush.
        while self._unwritten and await self._in_db_thread(metering.write_segment, self._unwritten[0]):
            self._unwritten.pop(0)
        # Journals of workers that were killed (their lock is free): counted here, exactly once.
        if self.usage.journal_dir is not None:
            await self._in_db_thread(metering.drain, self.usage.journal_dir, self.usage.token)
        denials, self.denials = self.denials, []
        if denials:
            try:
                await self._in_db_thread(identity.write_denials, denials)
            except Exception:
                log.exception("auditing %d denied calls failed; they are dropped", len(denials))
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
            if sub == "score" and endpoint.kind != "serverless":
                if scope["method"] != "POST":
                    await _error(send, 405, "MethodNotAllowed", "Use POST.", ((b"allow", b"POST"),))
                    return
                await self.relay(endpoint, "score", scope, receive, send)
                return
            if sub == "swagger.json":
                await self.swagger(endpoint, scope, send)
                return
            if sub in INFERENCE_ROUTES:
                await self.relay(endpoint, sub, scope, receive, send)
                return
            if sub == "models":
                await self.list_models(endpoint, scope, send)
                return
            if sub == "score":
                await _error(send, 404, "RouteNotServed", "Serverless endpoints serve the model inference API "
                             "(POST /chat/completions, /completions, /embeddings, GET /info), not /score.")
                return
        elif path.startswith("/models/") or path == "/models":
            route = path[len("/models/"):]
            if route in UNIFIED_ROUTES:
                await self.unified(route, None, scope, receive, send)
                return
            if route in ("models", ""):
                # client.models.list() with base_url .../models asks GET /models/models.
                await self.list_models(None, scope, send)
                return
        elif path.startswith("/openai/deployments/"):
            name, _, route = path[len("/openai/deployments/"):].partition("/")
            if route in UNIFIED_ROUTES and name:
                await self.unified(route, name, scope, receive, send)
                return
        await _error(send, 404, "NotFound", "No such route.")

    async def swagger(self, endpoint: EndpointRoute, scope, send) -> None:
        auth, api_key, pinned, _, host, _, _ = request_headers(scope)
        if await self.refused(endpoint, auth, api_key, send):
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
