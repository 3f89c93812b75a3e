"""One controller, two backends: what the reconcile loop asks of wherever an instance runs.

The reconcile loop (reconcile.py), rollouts, batch jobs and quotas speak only this interface; a
deployment's compute decides the backend:

- `LocalBackend` (the built-in `local` compute, the embedded default): model servers are processes
  of this node's worker (process.py), placed by the studio's own node table and heartbeat
  (placement.py), reached on their Unix socket (runtime/channel.py).
- `RayBackend` (a `ray` compute, ray_backend.py): each instance is a Ray actor that starts the same
  sandboxed server on the node Ray chose and a relay in front of its socket (runtime/ray_node.py).

Every method takes the Instance row; `refresh()` lets a backend correct a row from what really runs
(Ray moved an actor to another node) before the loop looks at it.

Batch jobs (jobs.py) ask a backend three more things: how many cores its compute offers (admission),
to make a mini-batch's input files readable by the instance's server (`batch_inputs`), and a connection
to that server (`batch_connection`)."""

from __future__ import annotations

import http.client
from pathlib import Path
from typing import Protocol

from django.conf import settings

from endpoints_app.controller import placement, process
from endpoints_app.models import Deployment, Instance, Node
from endpoints_app.runtime import channel
from endpoints_app.runtime.launch import LaunchSpec, batch_input_path


class InputsNotStaged(Exception):
    """A mini-batch's inputs could not be made readable by its instance; `unreachable` when the instance
    did not answer at all (its node or actor is gone), which costs the mini-batch none of its retries."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


class Unplaceable(Exception):
    """No node of the compute can take the instance as things are (its instance family is on no node,
    or no node is large enough): it waits, and the message, shown to the user, says why."""


class Backend(Protocol):
    kind: str

    def place(self, deployment: Deployment) -> Node | None:
        """The Node row a new instance is created on (None: nowhere to run it now)."""

    def spec_port(self, instance: Instance) -> int:
        """The port launch_spec names the instance with (it derives the instance's secret)."""

    def reserve_port(self, instance: Instance) -> int:
        """The port recorded at launch."""

    def launch(self, instance: Instance, spec: LaunchSpec, note: str) -> int:
        """Start the instance; returns its pid (0 while a remote start has not reported one). Raises
        Unplaceable when it cannot start anywhere yet."""

    def refresh(self, instance: Instance) -> Instance:
        """The row after correcting it from what runs (a no-op where nothing moves by itself)."""

    def running(self, instance: Instance) -> bool: ...

    def exit_code(self, instance: Instance) -> int | None: ...

    def probe(self, instance: Instance, path: str, timeout: float, headers: dict[str, str]) -> bool: ...

    def signal(self, instance: Instance, sig: int) -> None: ...

    def stop(self, instance: Instance, grace: float) -> None: ...

    def forget(self, instance: Instance) -> None: ...

    def log_path(self, instance: Instance) -> str: ...

    def total_cores(self) -> int:
        """Cores the compute's live nodes offer (0 while it cannot be reached)."""

    def batch_inputs(self, instance: Instance, relative: list[str], timeout: float) -> dict[str, str]:
        """Make these files of the studio's datastore (paths relative to it) readable by the instance's
        server, and only by it; returns the path its server reads each one at (InputsNotStaged)."""

    def batch_connection(self, instance: Instance, timeout: float) -> http.client.HTTPConnection:
        """A connection to the instance's server, for one POST /batch."""


class LocalBackend:
    """This node's processes (today's behaviour, the embedded default)."""

    kind = "local"

    def place(self, deployment: Deployment) -> Node | None:
        return placement.choose_node(deployment.instance_type)

    def spec_port(self, instance: Instance) -> int:
        return instance.port or 0

    def reserve_port(self, instance: Instance) -> int:
        return placement.pick_port(instance.node)

    def launch(self, instance: Instance, spec: LaunchSpec, note: str) -> int:
        return process.start(instance.name, spec.argv, spec.env, spec.cwd, note=note, sandbox=spec.sandbox)

    def refresh(self, instance: Instance) -> Instance:
        return instance

    def running(self, instance: Instance) -> bool:
        return process.is_running(instance.pid, instance.name)

    def exit_code(self, instance: Instance) -> int | None:
        return process.exit_code(instance.pid) if instance.pid else None

    def probe(self, instance: Instance, path: str, timeout: float, headers: dict[str, str]) -> bool:
        return process.probe(instance.node.host, instance.port, path, timeout, headers, name=instance.name)

    def signal(self, instance: Instance, sig: int) -> None:
        if instance.pid:
            process.signal_group(instance.pid, sig)

    def stop(self, instance: Instance, grace: float) -> None:
        if instance.pid:
            process.stop(instance.pid, instance.name, grace=grace)

    def forget(self, instance: Instance) -> None:
        process.forget(instance.name, instance.pid)

    def log_path(self, instance: Instance) -> str:
        return str(process.log_path(instance.name))

    def total_cores(self) -> int:
        return sum(n.cores for n in placement.live_nodes())

    def batch_inputs(self, instance: Instance, relative: list[str], timeout: float) -> dict[str, str]:
        # Its sandbox links its workspace's data at launch (runtime/launch.py): nothing to move.
        return {rel: str(batch_input_path(instance.name, rel)) for rel in relative}

    def batch_connection(self, instance: Instance, timeout: float) -> http.client.HTTPConnection:
        data_dir = Path(settings.DATA_DIR)
        if channel.expected_uid(data_dir, instance.name) is not None:
            return channel.connection(data_dir, instance.name, timeout)  # its own socket, peer checked
        return http.client.HTTPConnection(instance.node.host, instance.port, timeout=timeout)


LOCAL = LocalBackend()


def is_ray(deployment: Deployment) -> bool:
    compute = getattr(deployment, "compute", None)
    return compute is not None and compute.type == "ray"


def for_compute(compute) -> Backend:
    if compute is not None and compute.type == "ray":
        from endpoints_app.controller import ray_backend

        return ray_backend.backend(compute)
    return LOCAL


def for_deployment(deployment: Deployment) -> Backend:
    return for_compute(getattr(deployment, "compute", None))


def for_instance(instance: Instance) -> Backend:
    return for_deployment(instance.deployment)
