"""Ray compute against local compute, in one run: the gateway's throughput and p50 to an instance on a
Ray node (through the node's relay) against a local instance (its Unix socket); create -> Succeeded on
Ray against local; and, on Ray, node loss -> the instance out of routing and -> its replacement ready.

Run: .venv/bin/python bench/cluster.py [--duration 5] [--rounds 3] [--connections 8] [--repeat 2]

Makes a throwaway studio (bench/common.py: SQLite and the filesystem broker), starts a real Ray cluster
of three nodes on this machine (tests/ray_cluster.py; ports from STUDIO_TEST_RAY_PORT_MIN..MAX, default
31800-31999), the studio's web + gateway (`uvicorn portal.asgi`, one process) that the nodes fetch
artifacts from, and a Celery worker with beat (reconcile every STUDIO_RECONCILE_SECONDS, default 5 s as
in production). The model is the seeded iris-classifier (scikit-learn) on Standard_DS1_v2. Load is wrk
(POST /inference/<endpoint>/score); local and Ray runs alternate in each round. Prints a summary and
writes bench/results/cluster-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"
BODY = json.dumps({"data": [[5.1, 3.5, 1.4, 0.2]]})

from bench.common import owner_api, setup_studio, start_process, start_worker, stop_studio, wait  # noqa: E402
from bench.gateway import free_port, run_wrk  # noqa: E402
from tests import ray_cluster  # noqa: E402

BASE = "/api/v1/workspaces/bench/online-endpoints"


def create(api, endpoint: str, compute: str, count: int = 1) -> float:
    """Seconds from the create call to Succeeded (the endpoint made first, not timed)."""
    from endpoints_app.models import CatalogModel, Deployment

    assert api.post(BASE, {"name": endpoint}, format="json").status_code == 201
    model = CatalogModel.objects.get(registry="studio", name="iris-classifier")
    # The default (1 request at a time per instance) would answer most of wrk's connections 429.
    body = {"name": "blue", "model": model.asset_id, "instance_type": "Standard_DS1_v2", "instance_count": count,
            "compute": compute, "request_settings": {"max_concurrent_requests_per_instance": 64}}
    began = time.monotonic()
    answer = api.post(f"{BASE}/{endpoint}/deployments", body, format="json")
    assert answer.status_code == 202, answer.content
    state = wait(lambda: (s := Deployment.objects.filter(endpoint__name=endpoint, name="blue")
                          .values_list("provisioning_state", flat=True).first()) in ("Succeeded", "Failed") and s,
                 timeout=300, what=f"{endpoint} Succeeded")
    elapsed = time.monotonic() - began
    if state != "Succeeded":
        raise RuntimeError(Deployment.objects.get(endpoint__name=endpoint, name="blue").error)
    api.patch(f"{BASE}/{endpoint}", {"traffic": {"blue": 100}}, format="json")
    return elapsed


def delete(api, endpoint: str) -> None:
    from endpoints_app.models import Endpoint

    api.delete(f"{BASE}/{endpoint}")
    wait(lambda: not Endpoint.objects.filter(name=endpoint).exists(), timeout=120, what=f"{endpoint} deleted")


def node_loss(api, cluster, endpoint: str) -> dict:
    """Kill the raylet of the worker node that runs one of the endpoint's 3 instances; time until that
    instance leaves routing and until 3 instances are ready again, none on the lost node."""
    from endpoints_app.models import Instance, InstanceState

    ids = ray_cluster.node_ids(cluster.address)
    victim = "n3"
    victim_row = f"cluster:{ids[victim][:16]}"
    rows = Instance.objects.filter(deployment__endpoint__name=endpoint, state=InstanceState.READY)
    assert rows.filter(node__name=victim_row).exists(), "no instance on n3"
    killed = time.monotonic()
    cluster.kill_raylet(victim)
    wait(lambda: not rows.filter(node__name=victim_row).exists(), timeout=120, interval=0.05, what="unrouted")
    unrouted = time.monotonic() - killed
    wait(lambda: rows.exclude(node__name=victim_row).count() == 3, timeout=180, interval=0.1, what="replaced")
    replaced = time.monotonic() - killed
    ray_cluster.restart_node(cluster, victim)
    return {"out_of_routing_s": round(unrouted, 2), "replacement_ready_s": round(replaced, 2)}


@contextmanager
def cluster_studio(name: str) -> Iterator[tuple]:
    """(cluster, owner API client, web URL): a throwaway studio whose compute `cluster` is a real three-node
    Ray cluster on this machine, with its web process (which nodes fetch from) and a worker with beat;
    every process and actor goes at the end."""
    cluster = ray_cluster.start(("n1", "n2", "n3"))
    web_port = free_port()
    web = f"http://127.0.0.1:{web_port}"
    processes = []
    data_dir = None
    try:
        data_dir = setup_studio(name, STUDIO_NODE_NAME=NODE, STUDIO_RAY_NODE_IP="127.0.0.1",
                                STUDIO_INTERNAL_URL=web, STUDIO_GATEWAY_URL=web)
        from endpoints_app.models.computes import Compute

        Compute.local()
        Compute.objects.create(name="cluster", type="ray", address=cluster.address, state="Ready")
        processes.append(start_process(["uvicorn", "portal.asgi:application", "--port", str(web_port),
                                        "--no-access-log", "--loop", "uvloop", "--http", "httptools"],
                                       data_dir / "web.log"))
        processes.append(start_worker(data_dir, NODE))
        yield cluster, owner_api(), web
    finally:
        try:
            ray_cluster.kill_actors(cluster.address)
        except Exception as exc:  # the cluster goes below anyway
            print(f"killing actors: {exc}")
        if data_dir is not None:
            stop_studio(data_dir, processes)
        cluster.stop()


def write_results(name: str, results: dict) -> None:
    out = ROOT / "bench" / "results" / f"{name}-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    results: dict = {"machine_cores": os.cpu_count(), "args": vars(args)}
    with cluster_studio("cluster") as (cluster, api, web):
        create_times: dict[str, list[float]] = {"local": [], "ray": []}
        for run in range(args.repeat):
            order = ("local", "ray") if run % 2 == 0 else ("ray", "local")
            for kind in order:
                create_times[kind].append(create(api, f"c{run}-{kind}", "cluster" if kind == "ray" else "local"))
                delete(api, f"c{run}-{kind}")
        results["create_to_succeeded_s"] = {
            k: {"median": round(statistics.median(v), 2), "runs": [round(x, 2) for x in v]}
            for k, v in create_times.items()}
        print(f"create -> Succeeded: local {results['create_to_succeeded_s']['local']['median']} s, "
              f"Ray {results['create_to_succeeded_s']['ray']['median']} s (median of {args.repeat})", flush=True)

        create(api, "onlocal", "local")
        create(api, "onray", "cluster")
        keys = {name: api.post(f"{BASE}/{name}/list-keys").json()["primary_key"] for name in ("onlocal", "onray")}
        workdir = Path(tempfile.mkdtemp(prefix="studio-bench-wrk-"))
        runs: dict[str, list[dict]] = {"onlocal": [], "onray": []}
        single: dict[str, list[dict]] = {"onlocal": [], "onray": []}
        for _ in range(args.rounds):
            for name in ("onlocal", "onray"):
                headers = {"Authorization": f"Bearer {keys[name]}"}
                url = f"{web}/inference/{name}/score"
                runs[name].append(run_wrk(url, BODY, headers, args.connections, args.duration, 2, workdir))
                single[name].append(run_wrk(url, BODY, headers, 1, args.duration, 1, workdir))
        summary = {}
        for name in runs:
            summary[name] = {
                "rps": round(statistics.median(r["rps"] for r in runs[name]), 1),
                "p50_ms": round(statistics.median(r["p50_ms"] for r in runs[name]), 2),
                "p50_ms_one_connection": round(statistics.median(r["p50_ms"] for r in single[name]), 2),
                "errors": sum(r["non_2xx"] for r in runs[name] + single[name]),
                "runs": runs[name], "one_connection_runs": single[name],
            }
        summary["ray_over_local_rps"] = round(summary["onray"]["rps"] / summary["onlocal"]["rps"], 3)
        summary["ray_added_p50_ms_one_connection"] = round(
            summary["onray"]["p50_ms_one_connection"] - summary["onlocal"]["p50_ms_one_connection"], 2)
        results["gateway"] = summary
        failed = summary["onlocal"]["errors"] + summary["onray"]["errors"]
        if failed:
            raise RuntimeError(f"{failed} requests under load got no 2xx: the figures would not measure scoring")
        local, on_ray = summary["onlocal"], summary["onray"]
        print(f"gateway, {args.connections} connections: local {local['rps']} req/s p50 {local['p50_ms']} ms; "
              f"Ray {on_ray['rps']} req/s p50 {on_ray['p50_ms']} ms ({summary['ray_over_local_rps']} x); "
              f"one connection p50 local {local['p50_ms_one_connection']} ms, Ray "
              f"{on_ray['p50_ms_one_connection']} ms (+{summary['ray_added_p50_ms_one_connection']} ms)", flush=True)

        answer = api.patch(f"{BASE}/onray/deployments/blue", {"instance_count": 3}, format="json")
        assert answer.status_code in (200, 202), answer.content
        from endpoints_app.models import Deployment

        wait(lambda: Deployment.objects.filter(endpoint__name="onray", name="blue",
                                               provisioning_state="Succeeded").exists(), 180, 0.2, "scaled to 3")
        results["node_loss"] = node_loss(api, cluster, "onray")
        print(f"node loss (raylet SIGKILL): out of routing after {results['node_loss']['out_of_routing_s']} s, "
              f"replacement ready after {results['node_loss']['replacement_ready_s']} s", flush=True)
    write_results("cluster", results)


if __name__ == "__main__":
    main()
