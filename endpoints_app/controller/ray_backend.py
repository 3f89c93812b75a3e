"""The Ray backend (controller/backends.py): instances of deployments on a `ray` compute.

Each instance is a named, detached Ray actor (runtime/ray_node.py `InstanceActor`, namespace
`studio`, max_restarts=-1) that asks Ray for the instance type's cores and memory (and, on a cluster
whose nodes offer `studio-family-<family>` resources, one of its family's per core, so a family is
pinned to the machines started with it; a family no node offers waits, saying so), spread across
nodes (scheduling strategy SPREAD). Ray decides the node; the actor reports its node's address, its
relay's port and its server's pid, and the controller records them on the Instance row (its `node`
a Node row per Ray node, queue `ray:<compute>`, no heartbeat: the studio's own placement never
picks it).

Node loss: Ray restarts the actor on another node. The controller learns of the loss from the
actor not answering while its relay refuses connections or Ray marks its node dead, and takes the
instance out of routing at once (state Starting, the gateway reloads); when the restarted actor
reports a new address, the row follows it and the usual readiness probe puts it back.

Artifacts: the actor fetches each file of the model by content hash from the studio
(`/internal/node-artifacts/<signed token>`, views/node_artifacts.py), and the deployment's environment,
if it has one, as the build's venv packed once (runtime/environments.py `packed_venv`), by the same
route. Logs and CPU/memory samples
come back through the actor's `status()` on every pass: appended to the studio's instance log (the
Logs tab) and written as InstanceSample rows (the Monitoring tab).

One Ray cluster per worker process (Ray's driver is per process)."""

from __future__ import annotations

import faulthandler
import fcntl
import hashlib
import logging
import os
import socket
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.core import signing
from django.utils import timezone

from endpoints_app.controller import backends, process
from endpoints_app.instance_auth import ARTIFACT_SALT, RAY_QUEUE_PREFIX, instance_secret
from endpoints_app.models import Deployment, Instance, InstanceSample, InstanceState, Node, RouteVersion
from endpoints_app.runtime import ray_node
from endpoints_app.runtime.launch import BATCH_DATA_UNDER, LaunchSpec

log = logging.getLogger("studio.controller")

NAMESPACE = "studio"
FAMILY_RESOURCE = "studio-family-{}"
# How long a controller pass waits for an actor's answer (one still starting, or restarting elsewhere,
# answers later: the next pass asks again).
ANSWER_SECONDS = 1.0
NODES_TTL = 1.0
CONNECT_CHECK_SECONDS = 2.0
SAMPLE_SECONDS = 5.0
# An actor answers status and probes while it fetches a batch server's inputs (calls run in threads).
ACTOR_THREADS = 4

_lock = threading.RLock()
_connected: str | None = None
_nodes: tuple[float, dict[str, dict]] = (0.0, {})
_samples: dict[str, tuple[float, float]] = {}


def address_of(compute) -> str:
    """The address a driver connects to: the compute's, or the head the studio started for it."""
    if compute.address:
        return compute.address
    from endpoints_app.controller import clusters

    return clusters.head_address(compute)


def auth_env_of(compute) -> dict[str, str]:
    from endpoints_app.controller import clusters

    return clusters.ray_auth_env(compute)


def connect(address: str, auth_env: dict[str, str] | None = None):
    """This process's driver on the cluster at `address` (host:port of the GCS, or ray://host:port);
    `auth_env`: Ray's token variables for a head that asks for them (clusters.ray_auth_env)."""
    global _connected
    # Ray reads its token settings from the environment when it is first imported, not at ray.init: set
    # them before (one cluster per process, so they are this one's). Set after, the studio's own head
    # refused every worker's driver ("Authentication token is missing or incorrect") under `make run`.
    os.environ.update(auth_env or {})
    import ray

    with _lock:
        if _connected == address and ray.is_initialized():
            return ray
        if ray.is_initialized():
            ray.shutdown()
        if not address.startswith("ray://"):
            # ray.init waits long for a head that is not there; a closed port is known at once.
            host, _, port = address.rpartition(":")
            socket.create_connection((host, int(port)), timeout=CONNECT_CHECK_SECONDS).close()
        if not faulthandler.is_enabled():
            # ray.init enables it on sys.stderr, which Celery replaces with an object without a fileno.
            faulthandler.enable(file=sys.__stderr__, all_threads=False)
        options: dict = {"namespace": NAMESPACE, "logging_level": logging.WARNING, "log_to_driver": False}
        if settings.STUDIO_RAY_NODE_IP and not address.startswith("ray://"):
            options["_node_ip_address"] = settings.STUDIO_RAY_NODE_IP
        ray.init(address=address, **options)
        _connected = address
        return ray


def _ray_nodes(ray) -> dict[str, dict]:
    """Ray's node table (node id -> entry), read at most once a second."""
    global _nodes
    stamp, nodes = _nodes
    if time.monotonic() - stamp > NODES_TTL:
        nodes = {n["NodeID"]: n for n in ray.nodes()}
        _nodes = (time.monotonic(), nodes)
    return nodes


def placeholder_node(compute) -> Node:
    """Where an instance row sits until its actor reports the node Ray chose."""
    node, _ = Node.objects.get_or_create(
        name=f"{compute.name}:pending", defaults={"host": "", "cores": 0, "memory_gb": Decimal(0),
                                                  "queue": f"{RAY_QUEUE_PREFIX}{compute.name}"})
    return node


def node_row(compute, node_id: str, host: str, entry: dict | None) -> Node:
    resources = (entry or {}).get("Resources") or {}
    node, _ = Node.objects.update_or_create(
        name=f"{compute.name}:{node_id[:16]}",
        defaults={"host": host, "queue": f"{RAY_QUEUE_PREFIX}{compute.name}",
                  "cores": int(resources.get("CPU", 0)),
                  "memory_gb": Decimal(round(resources.get("memory", 0) / 1024**3, 2))},
    )
    return node


# -- what the node is sent --------------------------------------------------------------------------

_digests: dict[tuple[str, int, int], str] = {}


def file_digest(path: str) -> str:
    st = os.stat(path)
    key = (path, st.st_mtime_ns, st.st_size)
    digest = _digests.get(key)
    if digest is None:
        sha = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                sha.update(chunk)
        digest = _digests[key] = sha.hexdigest()
    return digest


def artifact_token(path: str, digest: str) -> str:
    return signing.dumps({"p": str(path), "h": digest}, salt=ARTIFACT_SALT, compress=True)


def studio_url() -> str:
    from endpoints_app.inference_urls import gateway_base

    return settings.STUDIO_INTERNAL_URL or gateway_base()


def environment_entry(instance: Instance, venv: str, rel: str) -> dict:
    """What a node needs to get the instance's environment (runtime/ray_node.py `environment`): the
    build's venv packed once beside it, its content hash and a token for it; its name for messages."""
    from endpoints_app.runtime import environments as envs

    archive = envs.packed_venv(Path(os.path.realpath(venv)).parent)
    digest = file_digest(str(archive))
    env = envs.environment_of(instance.deployment)
    name = f"{env.name}:{env.version}" if env is not None else Path(venv).parent.name[:12]
    return {"name": name, "rel": rel, "digest": digest, "token": artifact_token(str(archive), digest)}


def portable_spec(instance: Instance, spec: LaunchSpec) -> dict:
    """The launch spec as a node can use it: paths of the studio's sandbox folder, interpreter and
    project marked for the node to fill in, and every artifact file as (path in the sandbox, content
    hash, token to fetch it)."""
    box = spec.sandbox
    if box is None:
        raise ValueError("an instance on Ray compute runs sandboxed")
    root = str(box.root)
    data_dir = os.path.realpath(settings.DATA_DIR)
    moved: list[tuple[str, str]] = []  # (studio path, its replacement in the sandbox)
    links = list(box.links)
    binds = []
    for bound in box.binds:
        real = os.path.realpath(bound)
        if real.startswith((os.path.realpath(sys.prefix) + "/", str(ray_node.PROJECT_DIR) + "/")):
            binds.append(bound)
            continue
        rel = f"bound/{Path(bound).name}"
        links.append((bound, rel))
        moved.append((bound, f"{root}/{rel}"))

    def mark(value: str) -> str:
        for studio_path, inside in moved:
            value = value.replace(studio_path, inside)
        return (value.replace(root, ray_node.ROOT_MARK).replace(sys.executable, ray_node.PYTHON_MARK)
                .replace(str(settings.BASE_DIR), ray_node.PROJECT_MARK))

    files: list[list[str]] = []
    environments: list[dict] = []
    inputs_dir = None
    for src, rel in list(links):
        if rel.startswith(BATCH_DATA_UNDER + "/"):
            # A batch server's inputs come per mini-batch (RayBackend.batch_inputs), not its workspace's data.
            links.remove((src, rel))
            inputs_dir = BATCH_DATA_UNDER
    for src, rel in links:
        if os.path.realpath(src).startswith(data_dir + "/environments/"):
            environments.append(environment_entry(instance, src, rel))
            continue
        if os.path.isdir(src):
            for folder, _dirs, names in os.walk(src):
                for name in names:
                    path = os.path.join(folder, name)
                    if os.path.isfile(path):
                        digest = file_digest(path)
                        files.append([f"{rel}/{os.path.relpath(path, src)}", digest, artifact_token(path, digest)])
        else:
            digest = file_digest(src)
            files.append([rel, digest, artifact_token(src, digest)])
    limits = {k: getattr(box.limits, k) for k in box.limits.__dataclass_fields__}
    return {
        "name": instance.name,
        "argv": [mark(a) for a in spec.argv],
        "env": {k: mark(v) for k, v in spec.env.items()},
        "cwd": mark(spec.cwd) if spec.cwd else None,
        "limits": limits,
        "links": [rel for _src, rel in links if not any(rel == e["rel"] for e in environments)],
        "environments": environments,
        "binds": [mark(b) for b in binds],
        "output_dir": box.output_dir,
        "inputs_dir": inputs_dir,
        "files": files,
        "studio_url": studio_url(),
        "secret": instance_secret(instance.name, 0),
    }


# -- the backend -------------------------------------------------------------------------------------

class RayBackend:
    kind = "ray"

    def __init__(self, compute) -> None:
        self.compute = compute

    @property
    def ray(self):
        return connect(address_of(self.compute), auth_env_of(self.compute))

    def place(self, deployment: Deployment) -> Node | None:
        return placeholder_node(self.compute)

    def spec_port(self, instance: Instance) -> int:
        return 0

    def reserve_port(self, instance: Instance) -> int:
        return 0

    def _actor(self, name: str):
        ray = self.ray
        try:
            return ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            return None

    def options(self, instance: Instance) -> dict:
        """The actor's Ray options; Unplaceable when no live node could ever take it (Ray would leave it
        pending without a word). A cluster whose nodes offer no `studio-family-*` resource runs every
        family anywhere; once nodes offer families, an instance runs only on a node of its own."""
        itype = instance.deployment.instance_type
        nodes = [n.get("Resources") or {} for n in _ray_nodes(self.ray).values() if n.get("Alive")]
        family = FAMILY_RESOURCE.format(itype.family)
        offered = sorted({k for n in nodes for k in n if k.startswith(FAMILY_RESOURCE.format(""))})
        asks = {"CPU": float(itype.cores), "memory": int(Decimal(itype.memory_gb) * 1024**3)}
        resources = {}
        if offered:
            if family not in offered:
                names = ", ".join(f[len(FAMILY_RESOURCE.format("")):] for f in offered)
                raise backends.Unplaceable(
                    f"No node of compute '{self.compute.name}' has instance family {itype.family} (its nodes "
                    f"have {names}); the instance waits for a node started with "
                    f"--resources='{{\"{family}\": <cores>}}'.")
            resources[family] = asks[family] = float(itype.cores)
        if not any(all(n.get(k, 0) >= v for k, v in asks.items()) for n in nodes):
            raise backends.Unplaceable(
                f"No node of compute '{self.compute.name}' is large enough for one {itype.name} instance "
                f"({itype.cores} cores, {itype.memory_gb} GB); the instance waits for one that is.")
        return {"name": instance.name, "namespace": NAMESPACE, "lifetime": "detached", "max_restarts": -1,
                "max_task_retries": 0, "max_concurrency": ACTOR_THREADS, "num_cpus": asks["CPU"],
                "memory": asks["memory"], "resources": resources,
                "scheduling_strategy": "SPREAD"}

    def launch(self, instance: Instance, spec: LaunchSpec, note: str) -> int:
        ray = self.ray
        options = self.options(instance)
        old = self._actor(instance.name)
        if old is not None:
            ray.kill(old, no_restart=True)
        portable = portable_spec(instance, spec)
        process.note(instance.name, f"starting instance {instance.name} {note} as a Ray actor on compute "
                                    f"{self.compute.name}")
        ray.remote(ray_node.InstanceActor).options(**options).remote(portable)
        _offset_file(instance.name).unlink(missing_ok=True)
        return 0  # the pid, node and port are recorded when the actor reports them (refresh)

    def _ask(self, actor, method: str, *args, timeout: float = ANSWER_SECONDS):
        """(answer, None), or (None, "pending") while it starts or restarts, or (None, error) when dead."""
        ray = self.ray
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError

        try:
            return ray.get(getattr(actor, method).remote(*args), timeout=timeout), None
        except (GetTimeoutError, ActorUnavailableError):
            return None, "pending"
        except RayActorError as exc:
            return None, str(exc).strip() or "the actor died"

    def refresh(self, instance: Instance) -> Instance:
        """Follow the actor: a new address (Ray restarted it on another node) or a lost node takes the
        row out of routing until the readiness probe passes again."""
        if instance.pid is None or instance.state not in (InstanceState.STARTING, InstanceState.READY,
                                                           InstanceState.UNHEALTHY):
            return instance
        actor = self._actor(instance.name)
        if actor is None:
            return instance
        info, problem = self._ask(actor, "status", *_read_offset(instance.name))
        if info is None:
            if problem == "pending" and instance.state != InstanceState.STARTING and self._lost(instance):
                self._unroute(instance, "its Ray node is lost; waiting for Ray to start it on another node")
            return instance
        self._collect(instance, info)
        moved = (info["pid"], info["port"], info["host"]) != (instance.pid, instance.port, instance.node.host) \
            or not instance.node.name.endswith(info["node_id"][:16])
        if not moved:
            return instance
        node = node_row(self.compute, info["node_id"], info["host"], _ray_nodes(self.ray).get(info["node_id"]))
        was = instance.state
        updated = Instance.objects.filter(pk=instance.pk, pid=instance.pid, state=was).update(
            pid=info["pid"], port=info["port"], node=node, state=InstanceState.STARTING,
            launched_at=timezone.now(), probe_failures=0, last_probe_at=None)
        if updated:
            if instance.pid:
                process.note(instance.name, f"Ray started the instance again on node {info['host']} "
                                            f"({info['node_id'][:12]})")
            if was == InstanceState.READY:
                RouteVersion.bump(acknowledge=False)
        return Instance.objects.select_related(
            "deployment", "deployment__model", "deployment__instance_type", "deployment__endpoint",
            "deployment__compute", "node").get(pk=instance.pk)

    def _lost(self, instance: Instance) -> bool:
        """Known lost: its relay refuses connections, or Ray marked its node dead."""
        node_id = instance.node.name.rpartition(":")[2]
        entry = next((n for k, n in _ray_nodes(self.ray).items() if k.startswith(node_id)), None)
        if entry is not None and not entry.get("Alive"):
            return True
        if not instance.port or not instance.node.host:
            return False
        try:
            socket.create_connection((instance.node.host, instance.port), timeout=0.5).close()
        except ConnectionRefusedError:
            return True
        except OSError:
            return False
        return False

    def _unroute(self, instance: Instance, why: str) -> None:
        was = instance.state
        if Instance.objects.filter(pk=instance.pk, state=was, pid=instance.pid).update(
                state=InstanceState.STARTING, launched_at=timezone.now(), probe_failures=0):
            process.note(instance.name, why)
            log.warning("%s: %s", instance.name, why)
            instance.state = InstanceState.STARTING
            if was == InstanceState.READY:
                RouteVersion.bump(acknowledge=False)

    def _collect(self, instance: Instance, info: dict) -> None:
        """The log since last time into the studio's instance log; a CPU/memory sample now and then."""
        _append_log(instance.name, info)
        now = time.monotonic()
        if info.get("cpu_seconds") is None:
            return
        last = _samples.get(instance.name)
        if last is None:
            _samples[instance.name] = (now, info["cpu_seconds"])
            return
        if now - last[0] >= SAMPLE_SECONDS:
            cpu = max(0.0, 100 * (info["cpu_seconds"] - last[1]) / (now - last[0]))
            _samples[instance.name] = (now, info["cpu_seconds"])
            InstanceSample.objects.create(instance=instance, time=timezone.now(), cpu_percent=round(cpu, 2),
                                          memory_mb=info.get("rss_mb") or 0.0)

    def running(self, instance: Instance) -> bool:
        actor = self._actor(instance.name)
        if actor is None:
            return False
        info, problem = self._ask(actor, "status", *_read_offset(instance.name))
        if info is not None and not info.get("failure"):
            return info["exit_code"] is None
        if problem == "pending":
            return True  # starting, or restarting on another node: the readiness deadline bounds it
        process.note(instance.name, "the instance's Ray actor ended:")
        # A plain line, as the server's own output: the failure's cause (process.last_attempt) quotes it.
        with open(process.log_path(instance.name), "a") as log:
            log.write((info["failure"] if info else _actor_error(problem)).rstrip() + "\n")
        return False

    def exit_code(self, instance: Instance) -> int | None:
        actor = self._actor(instance.name)
        if actor is None:
            return None
        info, _ = self._ask(actor, "status", 0, -1, 0)
        return info["exit_code"] if info else None

    def probe(self, instance: Instance, path: str, timeout: float, headers: dict[str, str]) -> bool:
        if not instance.pid:
            return False  # its actor has not reported yet
        actor = self._actor(instance.name)
        if actor is None:
            return False
        ok, _ = self._ask(actor, "probe", path, timeout, headers, timeout=timeout + 1)
        return bool(ok)

    def signal(self, instance: Instance, sig: int) -> None:
        actor = self._actor(instance.name)
        if actor is not None:
            self._ask(actor, "signal", int(sig))

    def stop(self, instance: Instance, grace: float) -> None:
        actor = self._actor(instance.name)
        if actor is None:
            return
        self._ask(actor, "stop", grace, timeout=grace + 10)
        self.ray.kill(actor, no_restart=True)
        _samples.pop(instance.name, None)

    def forget(self, instance: Instance) -> None:
        self.stop(instance, 0)
        _offset_file(instance.name).unlink(missing_ok=True)

    def log_path(self, instance: Instance) -> str:
        return str(process.log_path(instance.name))

    def total_cores(self) -> int:
        try:
            nodes = _ray_nodes(self.ray)
        except Exception as exc:  # an unreachable cluster offers nothing until it answers
            log.warning("Ray compute %s is unreachable: %s", self.compute.name, exc)
            return 0
        return int(sum((n.get("Resources") or {}).get("CPU", 0) for n in nodes.values() if n.get("Alive")))

    def batch_inputs(self, instance: Instance, relative: list[str], timeout: float) -> dict[str, str]:
        """A mini-batch's input files reach the node as artifacts do: the actor fetches each one its node
        lacks by content hash over the signed internal route (cached there) and links it into its own
        sandbox's datastore folder, which no other sandbox sees (InstanceActor.stage_inputs)."""
        from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

        from endpoints_app.controller.backends import InputsNotStaged
        from endpoints_app.models import datastore_root

        files = []
        for rel in relative:
            path = str(datastore_root() / rel)
            try:
                digest = file_digest(path)
            except OSError as exc:
                raise InputsNotStaged(f"{rel}: {exc.strerror or exc}") from None
            files.append([rel, digest, artifact_token(path, digest)])
        try:
            actor = self._actor(instance.name)
        except Exception as exc:  # noqa: BLE001 - the cluster itself does not answer
            raise InputsNotStaged(f"Ray compute {self.compute.name} is unreachable: {exc}", unreachable=True) from None
        if actor is None:
            raise InputsNotStaged(f"the Ray actor of {instance.name} is gone", unreachable=True)
        try:
            return self.ray.get(actor.stage_inputs.remote(files), timeout=timeout)
        except GetTimeoutError:
            # Slow to fetch (counted, as a slow answer is), unless the actor itself stopped answering.
            _, problem = self._ask(actor, "status", 0, -1, 0)
            raise InputsNotStaged(f"its inputs did not reach its Ray node within {timeout:g} s",
                                  unreachable=problem is not None) from None
        except (ActorUnavailableError, RayActorError) as exc:
            raise InputsNotStaged(f"its Ray actor does not answer: {str(exc).strip()[-300:]}",
                                  unreachable=True) from None
        except RayTaskError as exc:
            cause = exc.cause if isinstance(getattr(exc, "cause", None), Exception) else exc
            raise InputsNotStaged(f"its inputs could not be staged on its Ray node: {cause}") from None

    def batch_connection(self, instance: Instance, timeout: float):
        import http.client

        # Through the instance's relay (the caller presents its secret, as the gateway does).
        return http.client.HTTPConnection(instance.node.host, instance.port, timeout=timeout)


def _actor_error(problem: str) -> str:
    """Ray's words for an actor's end, as a user reads them: for an error its start raised (an artifact or
    environment the node could not get), that error's own line without Ray's traceback."""
    if "error raised in its creation task" not in problem:
        return problem[-1500:]
    last = problem.strip().splitlines()[-1]
    kind, sep, message = last.partition(": ")
    return f"it could not start: {kind.rpartition('.')[2]}{sep}{message}"[:1500]


def _offset_file(name: str) -> Path:
    return process.log_dir() / f"{name}.ray-offset"


def _append_log(name: str, info: dict) -> None:
    """Append the piece of the node's log that the studio's copy lacks (two passes may bring the same)."""
    data: bytes = info.get("log") or b""
    start = info["log_offset"] - len(data)
    with open(process.log_path(name), "ab") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        offset, pid = _read_offset(name)
        skip = max(0, offset - start) if pid == info["pid"] else 0
        if data[skip:]:
            fh.write(data[skip:])
        _offset_file(name).write_text(f"{info['pid']} {max(info['log_offset'], offset if pid == info['pid'] else 0)}")


def _read_offset(name: str) -> tuple[int, int]:
    """(offset, pid): how much of which server process's log the studio already has."""
    try:
        pid, offset = _offset_file(name).read_text().split()
        return int(offset), int(pid)
    except (OSError, ValueError):
        return 0, -1


_backends: dict[int, RayBackend] = {}


def backend(compute) -> RayBackend:
    found = _backends.get(compute.pk)
    if found is None or found.compute.address != compute.address:
        found = _backends[compute.pk] = RayBackend(compute)
    return found


def rows_by_compute(deployment_id: int | None = None, starting_only: bool = False):
    """(backend, instance rows) for every Ray compute with live instance rows."""
    rows = Instance.objects.filter(deployment__compute__type="ray").exclude(
        state__in=(InstanceState.STOPPED, InstanceState.FAILED), pid__isnull=True
    ).select_related("deployment", "deployment__model", "deployment__instance_type", "deployment__endpoint",
                     "deployment__compute", "node")
    if deployment_id is not None:
        rows = rows.filter(deployment_id=deployment_id)
    if starting_only:
        rows = rows.filter(state=InstanceState.STARTING)
    grouped: dict[int, list[Instance]] = {}
    for row in rows:
        grouped.setdefault(row.deployment.compute_id, []).append(row)
    for rows_of in grouped.values():
        yield backend(rows_of[0].deployment.compute), rows_of
