"""Gateway overhead and the MLflow baseline, on one scikit-learn model.

    .venv/bin/python bench/gateway.py                 # wrk, 8 connections, 5 rounds of 5 s runs
    .venv/bin/python bench/gateway.py --duration 5 --connections 16 --gateway-workers 2 --no-mlflow

Starts, in a throwaway data dir: the studio's model server on an iris pipeline
(StandardScaler + LogisticRegression, as the catalog seeds), the gateway
(gunicorn + uvicorn workers, `endpoints_app.gateway.asgi`) with one endpoint
routing to it, and `mlflow models serve` on the same fitted model (MLflow lives
in its own venv, var/bench-venv, created from requirements-bench.txt if missing).
Then, in the same run and at the same concurrency, it measures with wrk (Debian
package `wrk`; without it a built-in aiohttp client is used, which on two cores
becomes the bottleneck itself):

    direct    POST model server /score                 (no gateway)
    gateway   POST gateway /inference/bench/score      (auth, routing, metering)
    unmetered the same through a gateway with STUDIO_GATEWAY_METERING=0 (what metering costs)
    mlflow    POST mlflow /invocations                 (MLflow's own server, direct)

Goals: gateway >= 0.70 x direct throughput, <= 1.5 ms added p50; the studio's
end-to-end (gateway) throughput above MLflow's direct. Runs alternate (direct,
gateway, mlflow) for several rounds and ratios are taken within a round, because
the machine is usually shared; a last pair at one connection shows the gateway's
own latency without queueing. CPU per request of each server comes from /proc. Results are printed and
written to bench/results/gateway-<time>.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BENCH_VENV = Path(os.environ.get("STUDIO_BENCH_VENV", ROOT / "var" / "bench-venv"))
ROW = [5.1, 3.5, 1.4, 0.2]
STUDIO_BODY = json.dumps({"data": [ROW]})
MLFLOW_BODY = json.dumps({"inputs": [ROW]})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ok(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}; see its log")
        try:
            if requests.get(url, timeout=2).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {url}")


def wait_post_ok(url: str, body: str, headers: dict, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args[0]} exited with {proc.returncode}; see its log")
        try:
            response = requests.post(url, data=body, headers=headers, timeout=5)
            if response.ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for a 200 from {url}")


class Services:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# ------------------------------------------------------------------ setup


def train_model(path: Path) -> None:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    joblib.dump(make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, random_state=0)).fit(x, y), path)


def studio_env(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    env.update({"STUDIO_DATA_DIR": str(data_dir), "DEBUG": "0", "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": "portal.settings"})
    return env


def create_endpoint(data_dir: Path, model_port: int) -> tuple[str, str]:
    """Migrate a fresh SQLite database and create endpoint 'bench' -> deployment 'blue' -> the model server.
    Returns the endpoint's primary key and the instance's secret (what the gateway sends the model server)."""
    script = f"""
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from endpoints_app import keys
from endpoints_app.catalog.instance_types import seed_instance_types
from endpoints_app.models import RouteVersion
from endpoints_app.models import *
seed_instance_types()
ws = Workspace.objects.create(name="bench", display_name="Bench")
model = CatalogModel.objects.create(name="iris-bench", task="classification", format="sklearn", license="MIT",
                                    deployment_kinds=["online"])
node = Node.objects.create(name="local", host="127.0.0.1", cores=2, memory_gb=4, queue="node.local")
nonce = keys.new_nonce()
key = keys.derive_key(nonce)
ep = Endpoint.objects.create(workspace=ws, name="bench", traffic={{"blue": 100}}, provisioning_state="Succeeded",
                             primary_key_nonce=nonce)
dep = Deployment.objects.create(endpoint=ep, name="blue", model=model, instance_type=InstanceType.objects.first(),
                                request_settings={{"max_concurrent_requests_per_instance": 64,
                                                   "request_timeout_ms": 10000}},
                                provisioning_state="Succeeded")
Instance.objects.create(deployment=dep, name="bench-blue-0", node=node, port={model_port}, state="Ready")
RouteVersion.bump()
from endpoints_app.instance_auth import instance_secret
print(key, instance_secret("bench-blue-0", {model_port}))
"""
    out = subprocess.run([sys.executable, "-c", script], env=studio_env(data_dir), cwd=ROOT, check=True,
                         capture_output=True, text=True)
    key, secret = out.stdout.strip().splitlines()[-1].split()
    return key, secret


def ensure_mlflow_venv() -> Path:
    mlflow = BENCH_VENV / "bin" / "mlflow"
    if not mlflow.exists():
        print(f"installing mlflow into {BENCH_VENV} (requirements-bench.txt)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", "-r", str(ROOT / "requirements-bench.txt")],
                       check=True)
    return BENCH_VENV


def save_mlflow_model(venv: Path, joblib_path: Path, target: Path) -> None:
    script = (
        "import joblib, sys, mlflow.sklearn\n"
        "mlflow.sklearn.save_model(joblib.load(sys.argv[1]), sys.argv[2], serialization_format='cloudpickle')\n"
    )
    subprocess.run([str(venv / "bin" / "python"), "-c", script, str(joblib_path), str(target)], check=True,
                   env={**os.environ, "MLFLOW_TRACKING_URI": f"file://{target.parent / 'mlruns'}"},
                   capture_output=True)


# ------------------------------------------------------------------ load


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, body: str, headers: dict, connections: int, duration: int, threads: int, workdir: Path) -> dict:
    lua = workdir / "post.lua"
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body)}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    lua.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-s", str(lua), url], check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {int(p): _ms(v) for p, v in re.findall(r"^\s+(\d+)%\s+([\d.]+\w+)\s*$", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50_ms": pct[50], "p99_ms": pct[99], "requests": total,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else ""}


def run_aiohttp(url: str, body: str, headers: dict, connections: int, duration: int) -> dict:
    """Closed-loop fallback when wrk is not installed (the Python client then limits what it can measure)."""
    import aiohttp

    async def main() -> dict:
        latencies: list[float] = []
        non_2xx = 0
        data = body.encode()
        hdrs = {"Content-Type": "application/json", **headers}
        connector = aiohttp.TCPConnector(limit=connections)
        async with aiohttp.ClientSession(connector=connector) as session:
            stop = time.perf_counter() + duration

            async def worker():
                nonlocal non_2xx
                while time.perf_counter() < stop:
                    began = time.perf_counter()
                    async with session.post(url, data=data, headers=hdrs) as r:
                        await r.read()
                        if r.status >= 300:
                            non_2xx += 1
                    latencies.append((time.perf_counter() - began) * 1000)

            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(connections)))
            elapsed = time.perf_counter() - began
        latencies.sort()
        return {"rps": len(latencies) / elapsed, "p50_ms": latencies[len(latencies) // 2],
                "p99_ms": latencies[int(len(latencies) * 0.99)], "requests": len(latencies), "non_2xx": non_2xx,
                "socket_errors": ""}

    return asyncio.run(main())


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of these processes and their children (gunicorn workers), from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    seen = set()
    todo = list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            todo += [int(c) for c in children]
        except (OSError, IndexError, ValueError):
            continue
    return total


def measure(name: str, url: str, body: str, headers: dict, args, workdir: Path, watch: dict | None = None) -> dict:
    if shutil.which("wrk") and not args.python_client:
        run = lambda d: run_wrk(url, body, headers, args.connections, d, args.wrk_threads, workdir)  # noqa: E731
    else:
        run = lambda d: run_aiohttp(url, body, headers, args.connections, d)  # noqa: E731
    run(args.warmup)
    before = {k: cpu_seconds(v) for k, v in (watch or {}).items()}
    result = run(args.duration)
    for k, v in (watch or {}).items():
        result[f"cpu_ms_per_request_{k}"] = (cpu_seconds(v) - before[k]) * 1000 / max(result["requests"], 1)
    print(f"  {name:<8} {result['rps']:>9.0f} req/s   p50 {result['p50_ms']:6.2f} ms   p99 {result['p99_ms']:6.2f} ms"
          f"   ({result['requests']} requests, non-2xx {result['non_2xx']}"
          f"{', socket errors ' + result['socket_errors'] if result['socket_errors'] else ''})"
          + "".join(f"  cpu/req {k} {v:.3f} ms" for k, v in result.items() if k.startswith("cpu_ms"))
          .replace("cpu_ms_per_request_", ""), flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each run")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternate direct/gateway/mlflow this many times; medians (the machine is shared)")
    parser.add_argument("--gateway-workers", type=int, default=1)
    parser.add_argument("--model-threads", type=int, default=1, help="scoring threads in the studio model server")
    parser.add_argument("--mlflow-workers", type=int, default=1)
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--client", choices=["http1", "aiohttp"], default="http1",
                        help="the gateway's upstream client (STUDIO_GATEWAY_CLIENT)")
    parser.add_argument("--python-client", action="store_true", help="use the aiohttp client even if wrk exists")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--compare-metering", action=argparse.BooleanOptionalAction, default=True,
                        help="also run a gateway with STUDIO_GATEWAY_METERING=0 to price metering")
    parser.add_argument("--unloaded-seconds", type=int, default=5,
                        help="also measure direct and gateway at one connection for this long (0: skip)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    services = Services(workdir)
    results: dict = {"config": vars(args), "client": "wrk" if shutil.which("wrk") and not args.python_client
                     else "aiohttp", "cpus": os.cpu_count()}
    try:
        artifact = workdir / "model.joblib"
        train_model(artifact)
        env = studio_env(data_dir)

        model_port = free_port()
        key, instance_secret = create_endpoint(data_dir, model_port)
        # The model server takes its instance secret as the controller gives it; direct calls present it too.
        model = services.start("model-server", [sys.executable, "-m", "endpoints_app.runtime.server", "--format",
                                                "sklearn", "--artifact", str(artifact), "--port", str(model_port),
                                                "--threads", str(args.model_threads)],
                               {**env, "STUDIO_INSTANCE_SECRET": instance_secret})
        wait_ok(f"http://127.0.0.1:{model_port}/health/ready", model)
        direct_auth = {"Authorization": f"Bearer {instance_secret}"}

        gateway_port = free_port()
        gateway = services.start("gateway", [str(BIN / "gunicorn"), "endpoints_app.gateway.asgi:application",
                                             "-k", "uvicorn_worker.UvicornWorker", "-w", str(args.gateway_workers),
                                             "-b", f"127.0.0.1:{gateway_port}"],
                                 {**env, "STUDIO_GATEWAY_CLIENT": args.client})
        unmetered_url = None
        if args.compare_metering:
            unmetered_port = free_port()
            unmetered = services.start(
                "gateway-unmetered",
                [str(BIN / "gunicorn"), "endpoints_app.gateway.asgi:application", "-k", "uvicorn_worker.UvicornWorker",
                 "-w", str(args.gateway_workers), "-b", f"127.0.0.1:{unmetered_port}"],
                {**env, "STUDIO_GATEWAY_CLIENT": args.client, "STUDIO_GATEWAY_METERING": "0"},
            )
            unmetered_url = f"http://127.0.0.1:{unmetered_port}/inference/bench/score"
        auth = {"Authorization": f"Bearer {key}"}
        direct_url = f"http://127.0.0.1:{model_port}/score"
        gateway_url = f"http://127.0.0.1:{gateway_port}/inference/bench/score"
        wait_post_ok(gateway_url, STUDIO_BODY, {"Content-Type": "application/json", **auth}, gateway)
        if unmetered_url:
            wait_post_ok(unmetered_url, STUDIO_BODY, {"Content-Type": "application/json", **auth}, unmetered)

        mlflow_url = None
        if not args.no_mlflow:
            venv = ensure_mlflow_venv()
            mlflow_model = workdir / "mlflow-model"
            save_mlflow_model(venv, artifact, mlflow_model)
            mlflow_port = free_port()
            mlflow_env = {**os.environ, "MLFLOW_TRACKING_URI": f"file://{workdir / 'mlruns'}",
                          "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"}
            mlflow_proc = services.start("mlflow", [str(venv / "bin" / "mlflow"), "models", "serve", "-m",
                                                    str(mlflow_model), "-h", "127.0.0.1", "-p", str(mlflow_port),
                                                    "--env-manager", "local", "-w", str(args.mlflow_workers)],
                                         mlflow_env)
            mlflow_url = f"http://127.0.0.1:{mlflow_port}/invocations"
            wait_post_ok(mlflow_url, MLFLOW_BODY, {"Content-Type": "application/json"}, mlflow_proc, timeout=180)

        print(f"client {results['client']}, {args.connections} connections, {args.duration} s runs, "
              f"{args.rounds} round(s), gateway workers {args.gateway_workers} ({args.client} upstream client), "
              f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        runs: dict[str, list[dict]] = {"direct": [], "gateway": [], "unmetered": [], "mlflow": []}
        results["load_average_before"] = os.getloadavg()
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}", flush=True)
            watch = {"model": [model.pid], "gateway": [gateway.pid]}
            runs["direct"].append(measure("direct", direct_url, STUDIO_BODY, direct_auth, args, workdir, watch))
            runs["gateway"].append(measure("gateway", gateway_url, STUDIO_BODY, auth, args, workdir, watch))
            if unmetered_url:
                runs["unmetered"].append(measure("unmetered", unmetered_url, STUDIO_BODY, auth, args, workdir,
                                                 {"gateway": [unmetered.pid]}))
            if mlflow_url:
                runs["mlflow"].append(measure("mlflow", mlflow_url, MLFLOW_BODY, {}, args, workdir,
                                              {"mlflow": [mlflow_proc.pid]}))

        summary = {name: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50_ms", "p99_ms")}
                   for name, rs in runs.items() if rs}
        # Each round's pair ran back to back under the same machine load: compare within rounds.
        ratios = [g["rps"] / d["rps"] for d, g in zip(runs["direct"], runs["gateway"], strict=True)]
        added = [g["p50_ms"] - d["p50_ms"] for d, g in zip(runs["direct"], runs["gateway"], strict=True)]
        ratio, added_p50 = statistics.median(ratios), statistics.median(added)
        print("\nmedians:")
        for name, s in summary.items():
            print(f"  {name:<8} {s['rps']:>9.0f} req/s   p50 {s['p50_ms']:6.2f} ms   p99 {s['p99_ms']:6.2f} ms")
        print(f"gateway / direct throughput: {ratio:.2f}x (goal >= 0.70; rounds "
              f"{', '.join(f'{r:.2f}' for r in ratios)})")
        print(f"added p50 at {args.connections} connections: {added_p50:.2f} ms (goal <= 1.5; rounds "
              f"{', '.join(f'{a:.2f}' for a in added)})")
        verdict = {"throughput_ratio": ratio, "added_p50_ms": added_p50, "round_ratios": ratios,
                   "round_added_p50_ms": added, "ratio_goal_met": ratio >= 0.70, "p50_goal_met": added_p50 <= 1.5}
        if runs["unmetered"]:
            costs = [1 - g["rps"] / u["rps"] for g, u in zip(runs["gateway"], runs["unmetered"], strict=True)]
            metering_cost = statistics.median(costs)
            print(f"metering costs {metering_cost * 100:.1f}% of gateway throughput (goal <= 3%; rounds "
                  f"{', '.join(f'{c * 100:.1f}%' for c in costs)})")
            verdict.update({"metering_throughput_cost": metering_cost, "metering_goal_met": metering_cost <= 0.03})
        if args.unloaded_seconds:
            # One connection: no queueing, so the difference is the gateway's own latency.
            one = argparse.Namespace(**{**vars(args), "connections": 1, "duration": args.unloaded_seconds})
            print("one connection (no queueing):", flush=True)
            d1 = measure("direct", direct_url, STUDIO_BODY, direct_auth, one, workdir)
            g1 = measure("gateway", gateway_url, STUDIO_BODY, auth, one, workdir)
            verdict["unloaded_added_p50_ms"] = g1["p50_ms"] - d1["p50_ms"]
            runs["unloaded"] = [d1, g1]
            print(f"added p50 at 1 connection: {verdict['unloaded_added_p50_ms']:.2f} ms")
        if "mlflow" in summary:
            vs = summary["gateway"]["rps"] / summary["mlflow"]["rps"]
            print(f"studio end-to-end / mlflow direct throughput: {vs:.2f}x (goal > 1.0)")
            verdict.update({"studio_vs_mlflow": vs, "mlflow_goal_met": vs > 1.0})
        results.update({"runs": runs, "summary": summary, "verdict": verdict})
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"gateway-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps(results, indent=2))
        print(f"written {out.relative_to(ROOT)}")
        return 0
    finally:
        services.stop_all()
        if os.environ.get("STUDIO_BENCH_KEEP"):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
