"""The gateway's in-memory route table and its loader.

The hot path reads only these objects. `load_route_table()` builds a whole new
table from the database (called in a worker thread, never on the event loop);
`RouteTable.adopt()` carries each instance's in-flight count and failure mark
over to the new table, so a reload never resets load balancing.

Anything that changes what the gateway routes on (traffic, keys, auth mode,
instances becoming ready or going away) calls `RouteVersion.bump()` after the
change; every gateway worker polls that one row and reloads."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings as django_settings
from django.db import close_old_connections, transaction
from multidict import CIMultiDict
from yarl import URL

from endpoints_app import keys
from endpoints_app.runtime import channel

# Defaults of the cloud ML CLI v2 request_settings, used when a deployment omits them.
DEFAULT_REQUEST_TIMEOUT_MS = 5000
DEFAULT_MAX_CONCURRENT_REQUESTS = 1
# An instance that refused a connection is skipped for this long (unless nothing else is ready).
FAILED_INSTANCE_BACKOFF_S = 3.0
# llama.cpp's server as the studio launches it (runtime/launch.py --n_ctx).
DEFAULT_CONTEXT_LENGTH = 2048

# The model inference API: route under /inference/<endpoint>/ -> path on the model server.
UPSTREAM_PATHS = {
    "score": "/score",
    "chat/completions": "/v1/chat/completions",
    "completions": "/v1/completions",
    "embeddings": "/v1/embeddings",
}


def served_routes(model_format: str, model_task: str) -> tuple[str, ...]:
    """The routes a deployment's model answers: what its server really serves.
    Gemma (a base model) answers chat with nothing, so text-generation models get completions only."""
    if model_format == "gguf":
        if model_task == "chat-completion":
            return ("chat/completions", "completions", "info")
        return ("completions", "info")
    if model_format == "sentence-transformers":
        return ("score", "embeddings", "info")
    return ("score",)


@dataclass(eq=False)
class InstanceRoute:
    name: str
    host: str
    port: int
    # The instance's secret (instance_auth.py): model servers answer only callers that present it.
    secret: str = ""
    # A sandboxed instance of this node is reached on its Unix socket only, and answers there only as
    # the uid it was started with (runtime/channel.py); host:port serve as the Host header then.
    socket: str = ""
    uid: int | None = None
    base_url: str = ""
    score_url: URL | None = None
    headers: CIMultiDict | None = None
    _score_head: bytes = b""
    inflight: int = 0
    failed_until: float = 0.0

    def __post_init__(self) -> None:
        self.base_url = f"http://{self.host}:{self.port}"
        # Parsed once here, not per request on the hot path.
        self.score_url = URL(self.base_url + "/score")
        self.headers = CIMultiDict({"Content-Type": "application/json"})
        if self.secret:
            self.headers["Authorization"] = f"Bearer {self.secret}"

    def url(self, path: str) -> URL:
        return self.score_url if path == "/score" else URL(self.base_url + path)

    def request_head(self, path: str) -> bytes:
        """Request line and fixed headers of a JSON POST to this instance (for http1.Http1Pool)."""
        if path == "/score" and self._score_head:
            return self._score_head
        head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
        if self.secret:
            head += f"Authorization: Bearer {self.secret}\r\n"
        if path == "/score":
            self._score_head = head.encode()
        return head.encode()


@dataclass(eq=False)
class DeploymentRoute:
    name: str
    instances: list[InstanceRoute]
    request_timeout_s: float
    max_concurrent_per_instance: int
    model_name: str = ""
    model_version: int = 0
    model_format: str = ""
    model_task: str = ""
    input_schema: dict = field(default_factory=dict)
    output_schema: dict = field(default_factory=dict)
    sample_request: dict | list | None = None
    sample_response: dict | list | None = None
    routes: tuple[str, ...] = ("score",)
    context_length: int = DEFAULT_CONTEXT_LENGTH
    model_type: str = ""
    model_provider: str = ""
    dimensions: int = 0
    id: int = 0
    _rotor: int = 0

    @property
    def inflight(self) -> int:
        return sum(i.inflight for i in self.instances)

    @property
    def capacity(self) -> int:
        """In-flight requests above this get 429 (twice the per-instance limit times ready instances)."""
        return 2 * self.max_concurrent_per_instance * len(self.instances)

    def pick(self, exclude: InstanceRoute | None = None) -> InstanceRoute | None:
        """The ready instance with the fewest in-flight requests; ties rotate so idle instances share load.
        Instances that recently refused a connection are used only when nothing else is left."""
        instances = self.instances
        count = len(instances)
        if count == 0:
            return None
        if count == 1:
            only = instances[0]
            return None if only is exclude else only
        now = time.monotonic()
        self._rotor = start = (self._rotor + 1) % count
        best: InstanceRoute | None = None
        fallback: InstanceRoute | None = None
        for offset in range(count):
            inst = instances[(start + offset) % count]
            if inst is exclude:
                continue
            if inst.failed_until > now:
                if fallback is None or inst.inflight < fallback.inflight:
                    fallback = inst
                continue
            if best is None or inst.inflight < best.inflight:
                best = inst
        return best or fallback


@dataclass(eq=False)
class EndpointRoute:
    id: int
    name: str
    kind: str
    auth_mode: str
    key_digests: tuple[str, ...]  # each slot's key under SECRET_KEY and each fallback
    deployments: dict[str, DeploymentRoute]
    traffic: dict[str, int]
    mirror_traffic: dict[str, int]
    # Cumulative weights over deployments with traffic > 0, for weighted choice.
    _names: tuple[str, ...] = ()
    _cumulative: tuple[int, ...] = ()
    mirror_deployment: str | None = None
    mirror_fraction: float = 0.0
    token_generation: int = 1
    # Serverless endpoints: their pool is their one deployment; health and per-minute limits.
    workspace_id: int = 0
    model_name: str = ""
    unhealthy_reason: str = ""
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    pool_id: int = 0
    created: int = 0  # Unix time, for GET .../models

    def __post_init__(self) -> None:
        names, cumulative, total = [], [], 0
        for name, percent in sorted(self.traffic.items()):
            if percent and percent > 0:
                total += int(percent)
                names.append(name)
                cumulative.append(total)
        self._names, self._cumulative = tuple(names), tuple(cumulative)
        for name, percent in self.mirror_traffic.items():
            if percent and percent > 0:
                self.mirror_deployment, self.mirror_fraction = name, min(float(percent), 100.0) / 100.0
                break

    def choose(self) -> DeploymentRoute | None:
        """A deployment by traffic weight; if the drawn one has no ready instance, another live one that has."""
        if not self._cumulative:
            return None
        draw = random.random() * self._cumulative[-1]
        chosen = self._names[-1]
        for name, bound in zip(self._names, self._cumulative, strict=True):
            if draw < bound:
                chosen = name
                break
        route = self.deployments.get(chosen)
        if route is not None and route.instances:
            return route
        for name in self._names:
            other = self.deployments.get(name)
            if other is not None and other.instances:
                return other
        return route

    def default_deployment(self) -> DeploymentRoute | None:
        """The deployment with the most traffic (for swagger.json), else any."""
        if self._names:
            best = max(self._names, key=lambda n: self.traffic.get(n, 0))
            if best in self.deployments:
                return self.deployments[best]
        return next(iter(self.deployments.values()), None)


@dataclass
class RouteTable:
    version: int = -1
    endpoints: dict[str, EndpointRoute] = field(default_factory=dict)
    loaded_at: float = 0.0
    # The unified inference endpoint: key digest -> workspace id, and each workspace's serverless
    # endpoints by lower-case name (and by lower-case model name when no endpoint has that name).
    unified_keys: dict[str, int] = field(default_factory=dict)
    serverless: dict[int, dict[str, EndpointRoute]] = field(default_factory=dict)
    # Identity tokens (gateway/identity.py): workspace id -> {identity key (oidc.user_key/app_key): role},
    # and workspace names for the messages that deny a call.
    identity_roles: dict[int, dict[str, str]] = field(default_factory=dict)
    workspace_names: dict[int, str] = field(default_factory=dict)

    def adopt(self, old: RouteTable) -> None:
        """Keep live counters of instances that are still the same process address (a serverless
        pool's instances appear under every endpoint it serves: one object for all of them)."""
        previous: dict[tuple, InstanceRoute] = {}
        for ep in old.endpoints.values():
            for dep in ep.deployments.values():
                for inst in dep.instances:
                    previous[(inst.name, inst.host, inst.port, inst.socket, inst.uid)] = inst
        for ep in self.endpoints.values():
            for dep in ep.deployments.values():
                for index, inst in enumerate(dep.instances):
                    kept = previous.get((inst.name, inst.host, inst.port, inst.socket, inst.uid))
                    if kept is not None:
                        dep.instances[index] = kept


def current_version() -> int:
    from endpoints_app.models import RouteVersion

    row = RouteVersion.objects.filter(pk=1).values_list("version", flat=True).first()
    return int(row) if row is not None else 0


def _int(value, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _timeout_s(settings: dict) -> float:
    try:
        ms = int(settings.get("request_timeout_ms") or DEFAULT_REQUEST_TIMEOUT_MS)
    except (TypeError, ValueError):
        ms = DEFAULT_REQUEST_TIMEOUT_MS
    return max(ms, 1) / 1000.0


def _max_concurrent(settings: dict) -> int:
    try:
        value = int(settings.get("max_concurrent_requests_per_instance") or DEFAULT_MAX_CONCURRENT_REQUESTS)
    except (TypeError, ValueError):
        value = DEFAULT_MAX_CONCURRENT_REQUESTS
    return max(value, 1)


def load_route_table() -> RouteTable:
    """Read everything the gateway routes on, in one consistent snapshot (blocking ORM; run off the loop)."""
    from endpoints_app.instance_auth import instance_secret, secret_port
    from endpoints_app.models import (
        Deployment,
        Endpoint,
        Instance,
        InstanceState,
        ProvisioningState,
        ServerlessRateLimit,
        Workspace,
    )

    close_old_connections()  # a broken or too old connection (database restart) is replaced, not reused
    with transaction.atomic():
        version = current_version()
        endpoints = list(
            Endpoint.objects.exclude(kind=Endpoint.Kind.BATCH)
            .exclude(provisioning_state=ProvisioningState.DELETING)
            .values(
                "id", "name", "kind", "auth_mode", "traffic", "mirror_traffic",
                "primary_key_nonce", "secondary_key_nonce", "token_generation",
                "workspace_id", "pool_id", "model_id", "model__name", "unhealthy_reason",
                "model__rate_limit_requests_per_minute", "model__rate_limit_tokens_per_minute", "created_at",
            )
        )
        ids = [e["id"] for e in endpoints]
        deployments = list(
            Deployment.objects.filter(endpoint_id__in=ids)
            .exclude(provisioning_state=ProvisioningState.DELETING)
            .values(
                "id", "endpoint_id", "name", "request_settings",
                "model__name", "model__version", "model__format", "model__task",
                "model__input_schema", "model__output_schema",
                "model__sample_request", "model__sample_response", "model__tags",
            )
        )
        instances = list(
            Instance.objects.filter(
                deployment_id__in=[d["id"] for d in deployments], state=InstanceState.READY, port__isnull=False
            )
            .order_by("name")
            .values("deployment_id", "name", "port", "node__host", "node__queue")
        )
        overrides = {
            (o["workspace_id"], o["model_id"]): o
            for o in ServerlessRateLimit.objects.values(
                "workspace_id", "model_id", "requests_per_minute", "tokens_per_minute")
        }
        unified = list(
            Workspace.all_objects.values("id", "inference_primary_key_nonce", "inference_secondary_key_nonce")
        )
        identity_roles, workspace_names = _identity_roles()

    by_deployment: dict[int, list[InstanceRoute]] = {}
    data_dir = Path(django_settings.DATA_DIR)
    for inst in instances:
        # An instance the controller started here has a recorded uid: its socket is then the only way in.
        uid = channel.expected_uid(data_dir, inst["name"])
        by_deployment.setdefault(inst["deployment_id"], []).append(
            InstanceRoute(name=inst["name"], host=inst["node__host"] or "127.0.0.1", port=int(inst["port"]),
                          secret=instance_secret(inst["name"], secret_port(inst["port"], inst["node__queue"])), uid=uid,
                          socket=str(channel.socket_path(data_dir, inst["name"])) if uid is not None else "")
        )
    by_endpoint: dict[int, dict[str, DeploymentRoute]] = {}
    by_id: dict[int, DeploymentRoute] = {}
    for dep in deployments:
        settings = dep["request_settings"] or {}
        tags = dep["model__tags"] if isinstance(dep["model__tags"], dict) else {}
        by_endpoint.setdefault(dep["endpoint_id"], {})[dep["name"]] = by_id[dep["id"]] = DeploymentRoute(
            id=dep["id"],
            name=dep["name"],
            instances=by_deployment.get(dep["id"], []),
            request_timeout_s=_timeout_s(settings),
            max_concurrent_per_instance=_max_concurrent(settings),
            model_name=dep["model__name"] or "",
            model_version=dep["model__version"] or 0,
            model_format=dep["model__format"] or "",
            model_task=dep["model__task"] or "",
            input_schema=dep["model__input_schema"] or {},
            output_schema=dep["model__output_schema"] or {},
            sample_request=dep["model__sample_request"] or None,
            sample_response=dep["model__sample_response"] or None,
            routes=served_routes(dep["model__format"] or "", dep["model__task"] or ""),
            context_length=_int(tags.get("context_length"), DEFAULT_CONTEXT_LENGTH),
            model_type=str(tags.get("model_type") or dep["model__task"] or ""),
            model_provider=str(tags.get("model_provider_name") or ""),
            dimensions=_int(tags.get("dimensions"), 0),
        )
    table = RouteTable(version=version, loaded_at=time.monotonic(), identity_roles=identity_roles,
                       workspace_names=workspace_names)
    for ws in unified:
        # Like endpoint keys: each slot's key under SECRET_KEY and every fallback (blank nonces give none).
        for digest in keys.accepted_digests((ws["inference_primary_key_nonce"], ws["inference_secondary_key_nonce"])):
            table.unified_keys[digest] = ws["id"]
    for ep in endpoints:
        digests = keys.accepted_digests((ep["primary_key_nonce"], ep["secondary_key_nonce"]))
        route = EndpointRoute(
            id=ep["id"],
            name=ep["name"],
            kind=ep["kind"],
            auth_mode=ep["auth_mode"],
            key_digests=digests,
            token_generation=ep["token_generation"],
            deployments=by_endpoint.get(ep["id"], {}),
            traffic={k: int(v) for k, v in (ep["traffic"] or {}).items() if isinstance(v, int | float)},
            mirror_traffic={k: int(v) for k, v in (ep["mirror_traffic"] or {}).items() if isinstance(v, int | float)},
            workspace_id=ep["workspace_id"],
            created=int(ep["created_at"].timestamp()) if ep.get("created_at") else 0,
        )
        if ep["kind"] == "serverless":
            _serverless_route(route, ep, by_id.get(ep["pool_id"] or 0), overrides)
            names = table.serverless.setdefault(ep["workspace_id"], {})
            names[ep["name"].lower()] = route
            if route.model_name:
                names.setdefault(route.model_name.lower(), route)
        table.endpoints[ep["name"]] = route
    return table


def _serverless_route(route: EndpointRoute, ep: dict, pool: DeploymentRoute | None, overrides: dict) -> None:
    """A serverless endpoint routes to its model's pool (shared by every workspace, so the same
    DeploymentRoute object, and its in-flight counts, serve all of them)."""
    route.model_name = ep["model__name"] or ""
    route.unhealthy_reason = ep["unhealthy_reason"] or ""
    route.pool_id = ep["pool_id"] or 0
    override = overrides.get((ep["workspace_id"], ep["model_id"])) or {}
    route.requests_per_minute = int(override.get("requests_per_minute") or ep["model__rate_limit_requests_per_minute"]
                                    or 1000)
    route.tokens_per_minute = int(override.get("tokens_per_minute") or ep["model__rate_limit_tokens_per_minute"]
                                  or 200_000)
    if pool is not None:
        route.deployments = {pool.name: pool}
        route.traffic = {pool.name: 100}
        route.__post_init__()


def _identity_roles() -> tuple[dict[int, dict[str, str]], dict[int, str]]:
    """Who may present identity tokens in each workspace: every member linked to an OpenID identity
    (by issuer and subject) and every service principal (by client id), with their role."""
    from endpoints_app.models import Membership, OidcIdentity, ServicePrincipal, Workspace
    from endpoints_app.oidc import app_key, user_key

    keys_of: dict[int, list[str]] = {}
    for row in OidcIdentity.objects.values("user_id", "issuer", "subject"):
        keys_of.setdefault(row["user_id"], []).append(user_key(row["issuer"], row["subject"]))
    for row in ServicePrincipal.objects.values("user_id", "client_id"):
        keys_of.setdefault(row["user_id"], []).append(app_key(row["client_id"]))
    roles: dict[int, dict[str, str]] = {}
    if keys_of:
        for row in Membership.objects.filter(user_id__in=list(keys_of)).values("workspace_id", "user_id", "role"):
            by_key = roles.setdefault(row["workspace_id"], {})
            for key in keys_of[row["user_id"]]:
                by_key[key] = row["role"]
    return roles, dict(Workspace.all_objects.values_list("id", "name"))
