"""Read a Ray cluster's nodes from its head (GCS), as a child process that clusters.py runs and kills
at its deadline: Ray's client blocks for tens of seconds on a port that accepts connections but is no
Ray head, so a read never runs in a web or worker process. No Django import.

    python -m endpoints_app.controller.ray_probe HOST:PORT TIMEOUT_SECONDS

prints one JSON object: {"nodes": [{name, node_id, address, alive, is_head, resources, free}]}, or
{"error": "..."} (exit status 1)."""

from __future__ import annotations

import json
import os
import sys

# Bytes: shown as GB; resource names Ray adds on its own that say nothing to IT (`node:<ip>` pins,
# the head marker): left out.
BYTE_RESOURCES = ("memory", "object_store_memory")


def _resources(entries) -> dict[str, float]:
    shown: dict[str, float] = {}
    for key, value in dict(entries).items():
        if key.startswith("node:"):
            continue
        shown[key] = round(value / 1024**3, 2) if key in BYTE_RESOURCES else round(float(value), 3)
    return dict(sorted(shown.items()))


def read(address: str, timeout: float) -> dict:
    os.environ.setdefault("RAY_py_gcs_connect_timeout_s", str(max(1, int(timeout))))
    from ray._raylet import GcsClient
    from ray.core.generated import gcs_pb2

    client = GcsClient(address=address)
    infos = client.get_all_node_info(timeout=timeout)
    usage = client.get_all_resource_usage(timeout=timeout)
    free = {row.node_id: dict(row.resources_available) for row in usage.resource_usage_data.batch}
    alive = gcs_pb2.GcsNodeInfo.GcsNodeState.Value("ALIVE")
    nodes = []
    for info in infos.values():
        is_alive = info.state == alive
        nodes.append({
            "name": info.node_name or info.node_manager_address,
            "node_id": info.node_id.hex(),
            "address": f"{info.node_manager_address}:{info.node_manager_port}",
            "alive": is_alive,
            "is_head": bool(info.is_head_node),
            "resources": _resources(info.resources_total),
            "free": _resources(free.get(info.node_id, {})) if is_alive else {},
        })
    nodes.sort(key=lambda n: (not n["is_head"], not n["alive"], n["name"], n["node_id"]))
    return {"nodes": nodes}


def main(argv: list[str]) -> int:
    address, timeout = argv[1], float(argv[2])
    try:
        print(json.dumps(read(address, timeout)))
    except Exception as exc:  # Ray's errors (RpcError, timeouts) become the compute's state detail
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"[:500]}))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
