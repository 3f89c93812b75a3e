"""A real Ray cluster of several nodes on this one machine, bound to 127.0.0.1: a head (`ray start
--head`) and worker nodes (`ray start --address`), each with `--node-ip-address=127.0.0.1`, a custom
resource naming it (`node:<name>`-like `studio-node-<name>`), its own folder for the studio's node
files (STUDIO_NODE_DIR: artifacts cache, sandboxes, logs), the instance families it offers
(`studio-family-<family>`) and its own ports.

Ports come from STUDIO_TEST_RAY_PORT_MIN..MAX (default 31800-31999, clear of the 20000-29999 the
other test servers use): the head's GCS port first, then per node a block for its raylet, object
manager, agents, workers and the instances' relays (STUDIO_NODE_RELAY_PORTS). Used by tests/cluster
and bench/cluster.py. Every wait is bounded; stop() ends every process this module started."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLOCK = 60  # ports per node


def port_range() -> tuple[int, int]:
    low = int(os.environ.get("STUDIO_TEST_RAY_PORT_MIN", "31800"))
    high = int(os.environ.get("STUDIO_TEST_RAY_PORT_MAX", "31999"))
    return low, high


def _cmdlines():
    """(pid, command line split at NULs) of every process."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                yield int(entry.name), (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue


# Instance families each node offers (`studio-family-<family>`, one per core): every node runs DSv2 (the
# tests' Standard_DS1_v2), the last one also FSv2, so a FSv2 type is pinned to it.
FAMILIES = ("DSv2",)
LAST_NODE_FAMILIES = ("DSv2", "FSv2")


@dataclass
class RayNode:
    name: str
    base: int
    folder: Path
    head: bool = False
    families: tuple[str, ...] = FAMILIES

    @property
    def relay_ports(self) -> str:
        return f"{self.base + 40}-{self.base + 59}"

    def raylet_pids(self) -> list[int]:
        """The raylet of this node (found by its node-manager port on its command line)."""
        return [pid for pid, cmd in _cmdlines()
                if cmd and cmd[0].endswith(b"raylet") and f"--node_manager_port={self.base}".encode() in cmd]


@dataclass
class RayCluster:
    address: str
    nodes: list[RayNode]
    temp_dir: Path
    env: dict[str, str]
    started: list[int] = field(default_factory=list)

    def node(self, name: str) -> RayNode:
        return next(n for n in self.nodes if n.name == name)

    def kill_raylet(self, name: str) -> list[int]:
        """SIGKILL one node's raylet (its workers, the instances' actors, go with it)."""
        pids = self.node(name).raylet_pids()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return pids

    def stop(self) -> None:
        """End every process of this cluster (found by its temp dir on their command line: never `ray stop`,
        which would end other Ray clusters on the machine too); their actors' workers and model servers go
        with their raylets."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self._pids()
            for pid in pids:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while pids and time.monotonic() < deadline:
                time.sleep(0.2)
                pids = self._pids()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def _pids(self) -> list[int]:
        mark = str(self.temp_dir).encode()
        return [pid for pid, cmd in _cmdlines() if any(mark in part for part in cmd)]


def _ray() -> str:
    return str(Path(sys.executable).with_name("ray"))


def start(names: tuple[str, ...] = ("n1", "n2", "n3"), cpus: int = 2, timeout: float = 120) -> RayCluster:
    """Start a head and len(names)-1 worker nodes; wait (bounded) until all are alive."""
    low, high = port_range()
    if low + 10 + BLOCK * len(names) > high + 1:
        raise RuntimeError(f"STUDIO_TEST_RAY_PORT range {low}-{high} is too small for {len(names)} nodes")
    temp = Path(tempfile.mkdtemp(prefix="studio-ray-", dir="/tmp"))
    # Ray's session folders hold Unix socket paths: keep them short.
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    # A node has no studio settings, database or SECRET_KEY (runtime/ray_node.py).
    for name in ("RAY_ADDRESS", "DJANGO_SETTINGS_MODULE", "SECRET_KEY", "DATABASE_URL"):
        env.pop(name, None)
    gcs = low
    nodes = [RayNode(name, low + 10 + BLOCK * i, temp / f"node-{name}", head=(i == 0),
                     families=LAST_NODE_FAMILIES if i == len(names) - 1 else FAMILIES)
             for i, name in enumerate(names)]
    cluster = RayCluster(f"127.0.0.1:{gcs}", nodes, temp, env)
    try:
        for node in nodes:
            node.folder.mkdir(parents=True)
            start_node(cluster, node, cpus, timeout)
        wait_alive(cluster, len(nodes), timeout)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def start_node(cluster: RayCluster, node: RayNode, cpus: int = 2, timeout: float = 120) -> None:
    b = node.base
    low, _ = port_range()
    args = [_ray(), "start", "--node-ip-address=127.0.0.1", f"--num-cpus={cpus}", f"--memory={16 * 1024**3}",
            "--resources=" + json.dumps({f"studio-node-{node.name}": 1,
                                         **{f"studio-family-{f}": cpus for f in node.families}}),
            f"--node-manager-port={b}", f"--object-manager-port={b + 1}",
            f"--metrics-export-port={b + 2}", f"--dashboard-agent-listen-port={b + 3}",
            f"--dashboard-agent-grpc-port={b + 4}", f"--runtime-env-agent-port={b + 5}",
            f"--min-worker-port={b + 10}", f"--max-worker-port={b + 39}",
            "--object-store-memory=80000000", "--disable-usage-stats"]
    if node.head:
        args += ["--head", f"--port={low}", "--include-dashboard=false", f"--temp-dir={cluster.temp_dir}",
                 f"--ray-client-server-port={low + 1}", f"--dashboard-port={low + 2}"]
    else:
        args += [f"--address={cluster.address}"]
    node_env = {**cluster.env, "STUDIO_NODE_DIR": str(node.folder), "STUDIO_NODE_RELAY_PORTS": node.relay_ports,
                "STUDIO_NODE_NAME": node.name}
    out = subprocess.run(args, env=node_env, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"ray start for {node.name} failed: {out.stdout[-2000:]}{out.stderr[-2000:]}")


def restart_node(cluster: RayCluster, name: str, timeout: float = 120) -> None:
    """Start a node again after its raylet was killed (its ports are free again)."""
    node = cluster.node(name)
    start_node(cluster, node, timeout=timeout)
    wait_alive(cluster, len(cluster.nodes), timeout)


def _driver(code: str, *args: str) -> str:
    """The last line a short Ray driver script printed (a child process: this one never joins the cluster)."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"Ray driver script failed: {out.stderr[-2000:]}")
    return lines[-1]


def kill_actors(address: str, namespace: str = "studio") -> int:
    """Kill every live actor of the studio's namespace (what a test left behind)."""
    code = ("import ray,sys; ray.init(address=sys.argv[1], namespace=sys.argv[2], logging_level='ERROR',"
            " log_to_driver=False, _node_ip_address='127.0.0.1')\n"
            "from ray._private import state\n"
            "n=0\n"
            "for a in state.actors().values():\n"
            "    if a.get('State') != 'DEAD' and a.get('Name') and a.get('RayNamespace', sys.argv[2]) == sys.argv[2]:\n"
            "        try:\n"
            "            ray.kill(ray.get_actor(a['Name'], namespace=sys.argv[2]), no_restart=True); n+=1\n"
            "        except ValueError: pass\n"
            "print(n)")
    return json.loads(_driver(code, address, namespace))


def live_actors(address: str, namespace: str = "studio") -> set[str]:
    """Names of the namespace's actors that Ray has not marked dead."""
    code = ("import ray,sys,json; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False,"
            " _node_ip_address='127.0.0.1')\n"
            "from ray._private import state\n"
            "print(json.dumps(sorted(a['Name'] for a in state.actors().values() if a.get('State') != 'DEAD'"
            " and a.get('Name') and a.get('RayNamespace', sys.argv[2]) == sys.argv[2])))")
    return set(json.loads(_driver(code, address, namespace)))


def node_ids(address: str) -> dict[str, str]:
    """Node name (its `studio-node-<name>` resource) -> Ray node id, for the live nodes."""
    code = ("import ray,sys,json; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False,"
            " _node_ip_address='127.0.0.1');"
            "print(json.dumps({k[len('studio-node-'):]: n['NodeID'] for n in ray.nodes() if n['Alive']"
            " for k in n['Resources'] if k.startswith('studio-node-')}))")
    return json.loads(_driver(code, address))


def alive_nodes(address: str) -> int:
    code = ("import ray,sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False,"
            " _node_ip_address='127.0.0.1');"
            "print(sum(1 for n in ray.nodes() if n['Alive']))")
    try:
        return int(_driver(code, address))
    except (RuntimeError, ValueError):
        return 0


def wait_alive(cluster: RayCluster, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive_nodes(cluster.address) >= count:
            return
        time.sleep(1)
    raise TimeoutError(f"the Ray cluster did not have {count} live nodes within {timeout}s")
