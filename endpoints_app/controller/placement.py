"""Quota, capacity and placement: which node runs an instance, and whether a
workspace may ask for more cores at all.

Quota is per workspace and instance family (QuotaLimit rows; a default from
STUDIO_DEFAULT_CORE_QUOTA otherwise). Capacity is what live nodes offer minus
what deployments already reserve. Both are admission checks made by the
services before they write; placement itself (in the controller) prefers the
node with the most free cores and never refuses a surge instance."""

from __future__ import annotations

import random
import socket
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from endpoints_app.errors import QuotaExceeded
from endpoints_app.models import (
    Compute,
    Deployment,
    Instance,
    InstanceState,
    InstanceType,
    Node,
    QuotaLimit,
    Workspace,
)

# A node whose worker has not checked in for this long gets no new instances.
NODE_TIMEOUT = timedelta(seconds=90)
# Instances that hold resources on their node.
RUNNING_STATES = (InstanceState.STARTING, InstanceState.READY, InstanceState.UNHEALTHY, InstanceState.STOPPING)
# Endpoint kinds whose deployments run long-lived instances through this controller.
PROVISIONED_KINDS = ("online", "serverless")


def cores(n: int) -> str:
    return f"{n} core" if n == 1 else f"{n} cores"


def reserved_instances(deployment: Deployment) -> int:
    """Instances a deployment may hold: autoscaled ones reserve their maximum."""
    scale = deployment.scale_settings or {}
    if scale.get("type") == "target_utilization":
        return max(int(scale.get("max_instances") or 0), deployment.instance_count)
    return deployment.instance_count


def quota_limit(workspace: Workspace, family: str) -> int:
    row = QuotaLimit.objects.filter(workspace=workspace, family=family).first()
    return row.max_cores if row else settings.STUDIO_DEFAULT_CORE_QUOTA


def cores_in_use(workspace: Workspace, family: str, exclude: Deployment | None = None) -> int:
    deployments = (
        Deployment.objects.filter(endpoint__workspace=workspace, instance_type__family=family)
        .exclude(provisioning_state="Deleting")
        .select_related("instance_type")
    )
    if exclude is not None and exclude.pk:
        deployments = deployments.exclude(pk=exclude.pk)
    return sum(d.instance_type.cores * reserved_instances(d) for d in deployments)


def check_quota(
    workspace: Workspace, instance_type: InstanceType, instances: int, exclude: Deployment | None = None
) -> None:
    """Refuse (409 QuotaExceeded) when `instances` of `instance_type` would pass the workspace's quota."""
    limit = quota_limit(workspace, instance_type.family)
    used = cores_in_use(workspace, instance_type.family, exclude)
    asked = instance_type.cores * instances
    if used + asked > limit:
        raise QuotaExceeded(
            f"Quota exceeded for {instance_type.family} cores in workspace '{workspace.name}': "
            f"the quota is {cores(limit)}, {used} in use, and this asks for {asked} "
            f"({instances} x {instance_type.name} with {cores(instance_type.cores)}).",
            field="instance_count",
        )


def live_nodes() -> list[Node]:
    return list(Node.objects.filter(last_heartbeat__gte=timezone.now() - NODE_TIMEOUT))


@dataclass
class NodeLoad:
    node: Node
    cores: int
    memory_gb: Decimal

    @property
    def free_cores(self) -> int:
        return self.node.cores - self.cores

    @property
    def free_memory_gb(self) -> Decimal:
        return self.node.memory_gb - self.memory_gb


def node_loads(nodes: list[Node]) -> list[NodeLoad]:
    loads = {n.pk: NodeLoad(n, 0, Decimal(0)) for n in nodes}
    rows = Instance.objects.filter(node__in=nodes, state__in=RUNNING_STATES).values_list(
        "node_id", "deployment__instance_type__cores", "deployment__instance_type__memory_gb"
    )
    for node_id, cores, memory in rows:
        loads[node_id].cores += cores
        loads[node_id].memory_gb += memory
    return list(loads.values())


@dataclass
class Capacity:
    """What the live nodes offer and what deployments reserve of it (their instance counts, running or
    not), as the capacity check counts them: shown where quota is shown."""

    nodes: list[Node]
    total_cores: int
    total_memory_gb: Decimal
    used_cores: int
    used_memory_gb: Decimal

    @property
    def free_cores(self) -> int:
        return max(0, self.total_cores - self.used_cores)

    @property
    def free_memory_gb(self) -> Decimal:
        return max(Decimal(0), self.total_memory_gb - self.used_memory_gb)


def capacity(exclude: list[Deployment] | None = None) -> Capacity:
    """The local compute's: what its live nodes offer and what its deployments reserve (a Ray compute's
    deployments hold cores of its own cluster, which Ray counts)."""
    nodes = live_nodes()
    reserved = Deployment.objects.exclude(provisioning_state="Deleting").filter(
        endpoint__kind__in=PROVISIONED_KINDS, compute__type=Compute.Type.LOCAL
    )
    excluded = [d.pk for d in exclude or [] if d is not None and d.pk]
    if excluded:
        reserved = reserved.exclude(pk__in=excluded)
    used_cores = 0
    used_memory = Decimal(0)
    for d in reserved.select_related("instance_type"):
        used_cores += d.instance_type.cores * d.instance_count
        used_memory += d.instance_type.memory_gb * d.instance_count
    return Capacity(nodes, sum(n.cores for n in nodes), sum((n.memory_gb for n in nodes), Decimal(0)),
                    used_cores, used_memory)


def check_capacity(instance_type: InstanceType, instances: int, exclude: Deployment | None = None) -> None:
    """Refuse when the live nodes cannot hold `instances` more of `instance_type` on top of
    what every deployment already reserves (its instance count, running or not)."""
    check_capacity_for([(instance_type, instances)], [exclude] if exclude is not None else [])


def check_capacity_for(asks: list[tuple[InstanceType, int]], exclude: list[Deployment]) -> None:
    """check_capacity() for several asks at once (a plan of changes), `exclude` being the deployments
    they replace."""
    asks = [(t, n) for t, n in asks if n > 0]
    if not asks:
        return
    room = capacity(exclude)
    if not room.nodes:
        raise QuotaExceeded(
            "No node is online to run instances: start a worker (make run starts one on this machine).",
            field="instance_count",
        )
    biggest = max(room.nodes, key=lambda n: n.cores)
    largest_memory = max(n.memory_gb for n in room.nodes)
    for instance_type, _ in asks:
        if instance_type.cores > biggest.cores or instance_type.memory_gb > largest_memory:
            raise QuotaExceeded(
                f"No node can hold one {instance_type.name} instance ({cores(instance_type.cores)}, "
                f"{instance_type.memory_gb} GB): the largest node has {cores(biggest.cores)} and "
                f"{biggest.memory_gb} GB.",
                field="instance_type",
            )
    asked_cores = sum(t.cores * n for t, n in asks)
    asked_memory = sum((t.memory_gb * n for t, n in asks), Decimal(0))
    if room.used_cores + asked_cores > room.total_cores or room.used_memory_gb + asked_memory > room.total_memory_gb:
        what = " + ".join(f"{n} x {t.name}" for t, n in asks)
        raise QuotaExceeded(
            f"Not enough capacity on the nodes: {what} asks for {cores(asked_cores)} "
            f"and {asked_memory} GB; the nodes have {cores(room.total_cores)} and {room.total_memory_gb} GB, "
            f"of which deployments use {cores(room.used_cores)} and {room.used_memory_gb} GB.",
            field="instance_count",
        )


def choose_node(instance_type: InstanceType) -> Node | None:
    """The live node with the most free cores that fits; if none fits, the least loaded
    (a surge may overcommit briefly; admission already checked capacity)."""
    loads = node_loads(live_nodes())
    if not loads:
        return None
    fitting = [
        load for load in loads
        if load.free_cores >= instance_type.cores and load.free_memory_gb >= instance_type.memory_gb
    ]
    pool = fitting or loads
    return max(pool, key=lambda load: (load.free_cores, load.free_memory_gb, load.node.name)).node


def pick_port(node: Node) -> int:
    """A port in STUDIO_INSTANCE_PORTS that no instance on the node holds and that binds now."""
    low, high = settings.STUDIO_INSTANCE_PORTS
    taken = set(
        Instance.objects.filter(node=node, port__isnull=False)
        .filter(Q(state__in=RUNNING_STATES))
        .values_list("port", flat=True)
    )
    candidates = list(range(low, high + 1))
    random.shuffle(candidates)
    for port in candidates:
        if port in taken:
            continue
        if _bindable(node.host, port):
            return port
    raise RuntimeError(f"No free port in {low}-{high} on node {node.name}")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def register_node() -> Node:
    """Create or refresh this machine's Node (name, host, capacity, queue, heartbeat)."""
    name = settings.STUDIO_NODE_NAME
    node, _ = Node.objects.update_or_create(
        name=name,
        defaults={
            "host": settings.STUDIO_NODE_HOST,
            "cores": settings.STUDIO_NODE_CORES,
            "memory_gb": Decimal(settings.STUDIO_NODE_MEMORY_GB),
            "queue": f"node.{name}",
            "last_heartbeat": timezone.now(),
        },
    )
    return node
