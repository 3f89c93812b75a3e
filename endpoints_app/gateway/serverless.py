"""What only the model inference API and serverless endpoints add to the relay (gateway/relay.py):
the body checks of /chat/completions, /completions and /embeddings (gateway/validation.py), the
per-minute request and token limits of a serverless endpoint (decided in gateway/limits.py), waking
a stopped serverless pool, and finding the workspace of a keyless call on the unified endpoint."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor

from django.conf import settings

from endpoints_app import oidc
from endpoints_app.gateway import identity, limits, validation
from endpoints_app.gateway.routes import DeploymentRoute, EndpointRoute, RouteTable

log = logging.getLogger("studio.gateway")

# A call on a stopped serverless pool waits this long for an instance before 503 + Retry-After.
COLD_WAIT_S = settings.STUDIO_GATEWAY_COLD_WAIT_SECONDS
WAKE_INTERVAL_S = 5.0
# The controller's task, asked for by name: the data plane imports none of the controller.
WAKE_TASK = "endpoints_app.controller.tasks.wake_serverless_pool"


def checked_payload(route: str, payload, deployment: DeploymentRoute, extra: str | None, model: str | None,
                    default_model: str) -> dict:
    """The request body as it goes upstream; validation.InvalidRequest names what is wrong.
    `model` (the unified endpoint's) replaces the body's model; a body without one gets `default_model`
    or the deployment's model name."""
    if route == "chat/completions":
        checked = validation.check_chat(payload, deployment.context_length, extra)
    elif route == "completions":
        checked = validation.check_completion(payload, deployment.context_length, extra)
    else:
        checked = validation.check_embeddings(payload, deployment.dimensions, extra)
    if model is not None or "model" not in checked:
        # llama.cpp's server names its file path in "model" unless the request names a model.
        checked = {**checked, "model": model or default_model or deployment.model_name}
    return checked


class TokenLimits:
    """A serverless endpoint's requests and tokens per minute for one call: admitted with an estimate,
    settled with the real count when the call ends."""

    __slots__ = ("limiter", "endpoint", "charged", "verdict")

    def __init__(self, limiter: limits.Limiter, endpoint: EndpointRoute) -> None:
        self.limiter = limiter
        self.endpoint = endpoint
        self.charged = 0
        self.verdict: limits.Verdict | None = None

    async def admit(self, payload: dict, route: str) -> limits.Refusal | None:
        endpoint = self.endpoint
        self.charged = limits.estimate_tokens(payload, route)
        self.verdict = await self.limiter.admit(endpoint.id, endpoint.requests_per_minute,
                                                endpoint.tokens_per_minute, self.charged)
        return None if self.verdict.ok else limits.rate_refusal(endpoint, self.verdict)

    @property
    def headers(self) -> tuple:
        return limits.rate_headers(self.verdict) if self.verdict is not None else ()

    async def settle(self, used: int) -> None:
        if self.verdict is not None and self.verdict.ok:
            await self.limiter.settle(self.endpoint.id, self.verdict, self.charged, used)


def _wake(pool_id: int) -> None:
    """Ask the controller to start a stopped pool (a Celery task; blocking, so run in a thread)."""
    from portal.celery import app

    try:
        app.send_task(WAKE_TASK, args=(pool_id,))
    except Exception:  # noqa: BLE001 - the caller answers 503 with Retry-After either way
        log.exception("could not ask the controller to start pool %s", pool_id)


class Pools:
    """Wakes stopped serverless pools, at most every few seconds per pool, off the event loop."""

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self._woken: dict[int, float] = {}
        self._calls: set = set()

    async def wake(self, table: Callable[[], RouteTable], endpoint: EndpointRoute,
                   pool: DeploymentRoute) -> DeploymentRoute:
        """Ask the controller to start the pool and wait a bounded time for a ready instance to show in
        the route table (`table()`, the current one)."""
        now = time.monotonic()
        if now - self._woken.get(pool.id, 0.0) > WAKE_INTERVAL_S:
            self._woken[pool.id] = now
            task = asyncio.get_running_loop().run_in_executor(self.executor, _wake, pool.id)
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)
        deadline = now + COLD_WAIT_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            current = table().endpoints.get(endpoint.name)
            if current is None:
                break
            route = current.deployments.get(pool.name)
            if route is not None and route.instances:
                return route
        return pool


def token_workspace(table: RouteTable, who: oidc.Identity, model: str) -> int | identity.Denial:
    """Keyless calls on the unified endpoint: the one workspace where the identity may invoke and
    that has a serverless endpoint (or model) of that name."""
    seen, invokers = [], []
    for workspace_id, roles in table.identity_roles.items():
        role = identity.role_of(who, roles)
        if role is None or model not in table.serverless.get(workspace_id, {}):
            continue
        seen.append(workspace_id)
        if role in identity.INVOKE_ROLES:
            invokers.append(workspace_id)
    if len(invokers) == 1:
        return invokers[0]
    if len(invokers) > 1:
        names = ", ".join(sorted(table.workspace_names.get(w, "?") for w in invokers))
        return identity.Denial(409, "AmbiguousModel", f"'{model}' is a serverless endpoint in several of your "
                               f"workspaces ({names}); use that workspace's inference key.", who)
    if seen:
        return identity.Denial(403, "RoleTooLow", f"{who.describe()} is Reader where '{model}' is served; "
                               "invoking needs Contributor or Owner.", who)
    return identity.Denial(404, "ModelNotFound", f"None of the workspaces of {who.describe()} has a serverless "
                           f"endpoint named '{model}'.", who)
