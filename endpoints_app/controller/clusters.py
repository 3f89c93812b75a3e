"""Computes as the controller sees them: their state and nodes, read from where they run, and the Ray
head the studio starts on its own machine for a Ray compute without an address.

Reading (`view`): `local` is this studio's own nodes (Node rows and their heartbeat, as placement
counts them). A Ray compute is read from its head's GCS by a child process (ray_probe.py) killed at
STUDIO_RAY_PROBE_TIMEOUT_SECONDS: a head that cannot be reached, or a port that answers but is no Ray
head, is state Unreachable with the reason, never an error or a hang. A view is cached for
STUDIO_COMPUTE_VIEW_CACHE_SECONDS and its state recorded on the row (state, state_detail,
state_checked_at).

The studio-managed head (`head_command`, `ManagedHead`): `ray start --head --block` bound to this
machine (--node-ip-address=127.0.0.1; Ray itself binds its GCS and raylet on every interface and
advertises the machine's address) with every port it opens taken from STUDIO_RAY_PORT_MIN upwards and
its files under $STUDIO_DATA_DIR/ray. It runs with Ray's token authentication (RAY_AUTH_MODE=token,
the token generated into $STUDIO_DATA_DIR/ray/auth-token, mode 0600): a client without the token, on
this machine or another, is refused. `ray_auth_env(compute)` is what a Ray client of the studio (the
probe here, the Ray backend's driver, a node that joins) must have in its environment to reach it.
`make run`'s supervisor (portal/supervisor.py) starts it when a Ray compute without an address exists,
and stops it (SIGTERM to `ray start --block`, which stops the processes it started; SIGKILL to its
process group after a bound) with everything else."""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from endpoints_app.controller.placement import RUNNING_STATES, live_nodes, node_loads
from endpoints_app.instance_auth import RAY_QUEUE_PREFIX
from endpoints_app.models import Compute, Instance, Node

# Offsets from STUDIO_RAY_PORT_MIN of the ports a managed head opens; workers take the rest of the block.
HEAD_PORTS = {
    "port": 0, "node-manager-port": 1, "object-manager-port": 2, "dashboard-agent-listen-port": 3,
    "dashboard-agent-grpc-port": 4, "runtime-env-agent-port": 5, "metrics-export-port": 6,
    "ray-client-server-port": 7, "dashboard-port": 8,
}
WORKER_PORT_OFFSET = 10
PORT_BLOCK = 100


@dataclass
class ComputeView:
    """What a compute looks like now: state (Compute.State), why (detail), and its nodes
    [{name, address, alive, resources, free, instances}]."""

    state: str
    detail: str = ""
    nodes: list[dict] = field(default_factory=list)


def managed_head_address() -> str:
    return f"127.0.0.1:{settings.STUDIO_RAY_PORT_MIN}"


def head_address(compute: Compute) -> str:
    """Where a Ray compute's head answers: its address, or the studio-managed head on this machine."""
    return compute.address or managed_head_address()


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def view(compute: Compute, use_cache: bool = True) -> ComputeView:
    """The compute's state and nodes now (at most STUDIO_COMPUTE_VIEW_CACHE_SECONDS old)."""
    if compute.type == Compute.Type.LOCAL:
        return _local_view()
    key = f"compute-view:{compute.pk}:{head_address(compute)}"
    cached = cache.get(key) if use_cache else None
    if cached is not None:
        return ComputeView(**cached)
    seen = _ray_view(compute)
    _add_instances(compute, seen)
    cache.set(key, seen.__dict__, settings.STUDIO_COMPUTE_VIEW_CACHE_SECONDS)
    if (compute.state, compute.state_detail) != (seen.state, seen.detail) or compute.state_checked_at is None:
        Compute.objects.filter(pk=compute.pk).update(state=seen.state, state_detail=seen.detail,
                                                     state_checked_at=timezone.now())
        compute.state, compute.state_detail = seen.state, seen.detail
    return seen


def _local_view() -> ComputeView:
    """This studio's own nodes: alive while their worker checks in; resources and free resources as
    placement counts them (the node's cores and memory less its running instances')."""
    live = {n.pk for n in live_nodes()}
    nodes = list(Node.objects.exclude(queue__startswith=RAY_QUEUE_PREFIX))  # Ray's nodes are their compute's
    loads = {load.node.pk: load for load in node_loads(nodes)}
    running = {}
    for node_id, name in Instance.objects.filter(node__in=nodes, state__in=RUNNING_STATES).values_list(
            "node_id", "name"):
        running.setdefault(node_id, []).append(name)
    shown = []
    for node in nodes:
        load = loads[node.pk]
        shown.append({
            "name": node.name, "address": node.host, "alive": node.pk in live,
            "resources": {"CPU": float(node.cores), "memory": float(node.memory_gb)},
            "free": {"CPU": float(load.free_cores), "memory": float(load.free_memory_gb)} if node.pk in live else {},
            "instances": sorted(running.get(node.pk, [])),
        })
    state = Compute.State.READY if live else Compute.State.STARTING
    detail = "" if live else "No worker has checked in yet (the worker registers this machine as it starts)."
    return ComputeView(state, detail, shown)


def _reachable(address: str, timeout: float) -> str:
    """'' when a TCP connection to host:port opens within `timeout`, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return ""
    except (OSError, ValueError) as exc:
        return f"cannot connect to {address}: {exc.strerror or exc}"


def _ray_view(compute: Compute) -> ComputeView:
    address = head_address(compute)
    timeout = settings.STUDIO_RAY_PROBE_TIMEOUT_SECONDS
    where = f"the Ray head at {address}" + ("" if compute.address else " (started by the studio on this machine)")
    if not ray_installed():
        return ComputeView(Compute.State.UNREACHABLE, "Ray is not installed in the studio's environment.")
    refused = _reachable(address, min(timeout, 3.0))
    if refused:
        starting = not compute.address and _managed_head_starting()
        state = Compute.State.STARTING if starting else Compute.State.UNREACHABLE
        return ComputeView(state, f"No answer from {where}: {refused}.")
    started = time.monotonic()
    try:
        done = subprocess.run(
            _with_env(ray_auth_env(compute),
                      [sys.executable, "-m", "endpoints_app.controller.ray_probe", address, str(timeout)]),
            capture_output=True, text=True, timeout=timeout + 2, cwd=settings.BASE_DIR,
        )
    except subprocess.TimeoutExpired:
        return ComputeView(Compute.State.UNREACHABLE,
                           f"{where} accepted a connection but gave no Ray answer within {timeout:g} s.")
    lines = done.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else {}
    except ValueError:
        answer = {}
    if "nodes" not in answer:
        why = answer.get("error") or (done.stderr.strip().splitlines() or ["no answer"])[-1]
        return ComputeView(Compute.State.UNREACHABLE,
                           f"{where} did not answer as a Ray head ({why}) after {time.monotonic() - started:.1f} s.")
    nodes = answer["nodes"]
    if not any(n["alive"] for n in nodes):
        # A head the studio just started registers its own node a moment after its GCS answers.
        state = Compute.State.STARTING if not compute.address else Compute.State.UNREACHABLE
        return ComputeView(state, f"{where} answers but has no live node.", nodes)
    return ComputeView(Compute.State.READY, "", nodes)


def _add_instances(compute: Compute, seen: ComputeView) -> None:
    """Each Ray node's instances: the running instances of this compute's deployments whose Node row
    names the Ray node (`<compute>:<first 16 hex digits of its node id>`, as the Ray backend names them)."""
    rows = (Instance.objects.filter(deployment__compute=compute, state__in=RUNNING_STATES)
            .values_list("name", "node__name", "node__host"))
    for node in seen.nodes:
        row_name = f"{compute.name}:{node.get('node_id', '')[:16]}"
        node["instances"] = sorted(name for name, node_name, _ in rows if node_name == row_name)


# -- the studio-managed head -------------------------------------------------------------------------


def head_dir() -> Path:
    return Path(settings.DATA_DIR) / "ray"


def auth_token_path() -> Path:
    """The managed head's token (64 hex digits), generated on first use; the file is the studio user's only."""
    path = head_dir() / "auth-token"
    if not path.exists():
        head_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".auth-token.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)  # the first writer's token wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
    return path


def ray_auth_env(compute: Compute) -> dict[str, str]:
    """The environment a Ray client needs for this compute's head: Ray's own variables for the studio-managed
    head's token; nothing for a cluster given by address (Ray reads RAY_AUTH_* from the studio's environment
    when IT's own cluster uses token authentication)."""
    if compute.type == Compute.Type.RAY and not compute.address:
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(auth_token_path())}
    return {}


def _with_env(env: dict[str, str], command: list[str]) -> list[str]:
    """`command` run with `env` added to the inherited environment (env(1); the token itself never appears
    on a command line, only its file's path)."""
    return ["env", *(f"{k}={v}" for k, v in env.items()), *command] if env else command


def head_command() -> list[str]:
    """`ray start --head --block` on this machine, every port from STUDIO_RAY_PORT_MIN's block, with token
    authentication."""
    base = settings.STUDIO_RAY_PORT_MIN
    ray = Path(sys.executable).with_name("ray")
    command = [str(ray) if ray.exists() else "ray", "start", "--head", "--block", "--node-ip-address=127.0.0.1",
               "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={_temp_dir()}",
               f"--min-worker-port={base + WORKER_PORT_OFFSET}", f"--max-worker-port={base + PORT_BLOCK - 1}"]
    command += [f"--{name}={base + offset}" for name, offset in HEAD_PORTS.items()]
    if settings.STUDIO_RAY_HEAD_CPUS is not None:
        command.append(f"--num-cpus={settings.STUDIO_RAY_HEAD_CPUS}")
    return _with_env({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(auth_token_path())}, command)


def _temp_dir() -> Path:
    """Ray's session files (sockets among them: their paths must stay short) for the managed head."""
    folder = head_dir() / "tmp"
    if len(str(folder)) > 40:  # a Unix socket path is at most 107 bytes; Ray adds about 60
        folder = Path("/tmp") / f"studio-ray-{settings.STUDIO_RAY_PORT_MIN}"
    return folder


def wants_managed_head() -> bool:
    """True when a Ray compute without an address exists (the studio must run its head)."""
    return Compute.objects.filter(type=Compute.Type.RAY, address="").exists()


def _managed_head_starting() -> bool:
    """The supervisor's head process is alive but its GCS does not answer yet."""
    pid_file = head_dir() / "head.pid"
    try:
        os.kill(int(pid_file.read_text()), 0)
        return True
    except (OSError, ValueError):
        return False


class ManagedHead:
    """The Ray head the studio runs on its own machine: started and stopped by its owner (the
    supervisor), its output in $STUDIO_DATA_DIR/logs/ray-head.log, its pid in $STUDIO_DATA_DIR/ray/head.pid."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> subprocess.Popen:
        head_dir().mkdir(parents=True, exist_ok=True)
        _temp_dir().mkdir(parents=True, exist_ok=True)
        logs = Path(settings.DATA_DIR) / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / "ray-head.log", "ab") as log:
            self.process = subprocess.Popen(head_command(), stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, cwd=head_dir())
        (head_dir() / "head.pid").write_text(str(self.process.pid))
        return self.process

    def wait_ready(self, timeout: float) -> bool:
        """True once the head's GCS accepts connections (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return False
            if not _reachable(managed_head_address(), 1.0):
                return True
            time.sleep(0.5)
        return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM `ray start --block` (it stops what it started), then SIGKILL its process group."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            try:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # what is left of its session (it leads it)
        except (ProcessLookupError, PermissionError):
            pass
        process.wait(timeout=5)
        (head_dir() / "head.pid").unlink(missing_ok=True)
