"""Gateway overhead and the MLflow baseline, on one scikit-learn model.

    .venv/bin/python bench/gateway.py                 # wrk, 8 connections, 5 rounds of 5 s runs
    .venv/bin/python bench/gateway.py --duration 5 --connections 16 --gateway-workers 2 --no-mlflow
    .venv/bin/python bench/gateway.py --compare-tree /tmp/before   # this tree's gateway against another's

Starts, in a throwaway data dir: the studio's model server on an iris pipeline
(StandardScaler + LogisticRegression, as the catalog seeds; outside a sandbox, listening on the
instance's Unix socket, which the gateway uses as for any instance, and on a TCP port for the
direct runs), the gateway
(gunicorn + uvicorn workers, `endpoints_app.gateway.asgi`) with one endpoint
routing to it, and `mlflow models serve` on the same fitted model (MLflow lives
in its own venv, var/bench-venv, created from requirements-bench.txt if missing).
Then, in the same run and at the same concurrency, it measures with wrk (Debian
package `wrk`; without it a built-in aiohttp client is used, which on two cores
becomes the bottleneck itself):

    direct    POST model server /score                 (no gateway)
    gateway   POST gateway /inference/bench/score      (auth, routing, metering)
    unmetered the same through a gateway with STUDIO_GATEWAY_METERING=0 (what metering costs)
    unjournaled the same through a gateway with STUDIO_GATEWAY_USAGE_JOURNAL=0 (what the usage journal,
              which keeps counts of a killed worker, costs)
    mlflow    POST mlflow /invocations                 (MLflow's own server, direct)
    aad       POST gateway /inference/bench-aad/score  (an aad_token endpoint: a service principal's token
              from the tests' OpenID provider, validated once and kept; its own model server, `direct2`)
    before    with --compare-tree DIR: the same endpoint through the gateway of another checkout of the studio
              (e.g. `git worktree add DIR <commit>`, its own .venv), on the same database and model server,
              measured right after `gateway` in every round (a change's before and after in one run)

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

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 - lives as long as the process
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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


def instance_box(data_dir: Path, name: str) -> Path:
    """The sandbox folder the controller would leave for instance `name`: its run folder (where the server
    listens) and the uid it answers as."""
    box = data_dir / "sandbox" / name
    (box / "run").mkdir(parents=True)
    (box / "uid").write_text(str(os.getuid()))
    return box


def create_endpoint(data_dir: Path, model_port: int, aad_port: int = 0, issuer: str = "") -> tuple[str, str, str]:
    """Migrate a fresh SQLite database and create endpoint 'bench' -> deployment 'blue' -> the model server.
    With `aad_port`, also endpoint 'bench-aad' (auth_mode aad_token) -> a second model server on that port,
    which service principal 'ci-pipeline' of `issuer` may invoke. Returns the endpoint's primary key and
    the instances' secrets (what the gateway sends the model servers)."""
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
aad_secret = "-"
if {aad_port}:
    from endpoints_app.services.audit import SYSTEM
    from endpoints_app.services.identity import do_grant_service_principal
    aad = Endpoint.objects.create(workspace=ws, name="bench-aad", auth_mode="aad_token", traffic={{"blue": 100}},
                                  provisioning_state="Succeeded")
    aad_dep = Deployment.objects.create(endpoint=aad, name="blue", model=model,
                                        instance_type=InstanceType.objects.first(),
                                        request_settings={{"max_concurrent_requests_per_instance": 64,
                                                           "request_timeout_ms": 10000}},
                                        provisioning_state="Succeeded")
    Instance.objects.create(deployment=aad_dep, name="bench-aad-blue-0", node=node, port={aad_port}, state="Ready")
    do_grant_service_principal(SYSTEM, ws, "ci-pipeline", "Contributor")
    RouteVersion.bump()
    aad_secret = instance_secret("bench-aad-blue-0", {aad_port})
print(key, instance_secret("bench-blue-0", {model_port}), aad_secret)
"""
    env = {**studio_env(data_dir), **({"STUDIO_OIDC_ISSUER": issuer, "STUDIO_OIDC_CLIENT_ID": "studio-portal"}
                                      if issuer else {})}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    key, secret, aad_secret = out.stdout.strip().splitlines()[-1].split()
    return key, secret, aad_secret


def measure_auth_step(data_dir: Path, env: dict[str, str], key: str, token: str, calls: int = 200_000) -> dict:
    """The auth step alone, in one process on the gateway's own route table, free of the network and of
    the machine's other load: a key check (common.authorized) against an identity token already
    validated (gateway/identity.authorize, as the aad_token endpoint runs it). Microseconds per call."""
    script = f"""
import asyncio, json, time
import django
django.setup()
from endpoints_app.gateway import identity
from endpoints_app.gateway.common import authorized
from endpoints_app.gateway.routes import load_route_table
table = load_route_table()
keyed, aad = table.endpoints["bench"], table.endpoints["bench-aad"]
key_header, token_header = b"Bearer {key}", b"Bearer {token}"
roles, workspace = table.identity_roles[aad.workspace_id], table.workspace_names[aad.workspace_id]
assert authorized(keyed, key_header, None)
assert asyncio.run(identity.authorize(token_header, roles, workspace)) is None  # validated once, then kept

async def tokens(n):
    for _ in range(n):
        await identity.authorize(token_header, roles, workspace)

async def keys(n):
    for _ in range(n):
        authorized(keyed, key_header, None)

best = {{}}
for _ in range(5):
    for name, fn in (("key", keys), ("aad_token", tokens)):
        started = time.perf_counter()
        asyncio.run(fn({calls}))
        best[name] = min(best.get(name, 1e9), (time.perf_counter() - started) / {calls} * 1e6)
print(json.dumps(best))
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_journal_step(data_dir: Path, env: dict[str, str], calls: int = 200_000) -> dict:
    """What counting one call costs, in one process, without and with the usage journal (one os.write per
    call, endpoints_app/gateway/metering.py). Microseconds per call, best of 5."""
    script = f"""
import json, time
import django
django.setup()
from pathlib import Path
from endpoints_app.gateway import metering
best = {{}}
for _ in range(5):
    for name, folder in (("memory_only", None), ("journaled", Path({str(data_dir / "journal-bench")!r}))):
        counters = metering.UsageCounters(folder)
        started = time.perf_counter()
        for _ in range({calls}):
            counters.count(7, "blue", 200, 3.2, 120, 340)
        best[name] = min(best.get(name, 1e9), (time.perf_counter() - started) / {calls} * 1e6)
        segment = counters.take_segment()
        if segment.fd >= 0:
            segment.path.unlink()
print(json.dumps(best))
"""
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


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
    parser.add_argument("--identity", action=argparse.BooleanOptionalAction, default=True,
                        help="also measure an aad_token endpoint (identity tokens from the tests' OpenID provider, "
                             "oidc-provider from npm: `make install-test`) against the key endpoint")
    parser.add_argument("--unloaded-seconds", type=int, default=5,
                        help="also measure direct and gateway at one connection for this long (0: skip)")
    parser.add_argument("--compare-tree", type=Path, default=None, metavar="DIR",
                        help="also run the gateway of the studio checked out in DIR (with DIR/.venv), alternating "
                             "with this tree's in every round")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="studio-bench-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    services = Services(workdir)
    results: dict = {"config": vars(args), "client": "wrk" if shutil.which("wrk") and not args.python_client
                     else "aiohttp", "cpus": os.cpu_count()}
    provider = None
    try:
        artifact = workdir / "model.joblib"
        train_model(artifact)
        env = studio_env(data_dir)

        model_port = free_port()
        aad_port = 0
        if args.identity:
            sys.path.insert(0, str(ROOT))
            from tests.identity_provider import IdentityProvider

            provider = IdentityProvider(workdir)
            provider.start()
            aad_port = free_port()
            env = {**env, **provider.env()}
        key, instance_secret, aad_secret = create_endpoint(data_dir, model_port, aad_port,
                                                           provider.issuer if provider else "")
        # As the controller leaves a sandboxed instance: its socket in its sandbox's run folder and the
        # uid it answers as, which the gateway checks (runtime/channel.py). The gateway reaches it there;
        # "direct" calls use its TCP port (wrk speaks TCP only).
        box = instance_box(data_dir, "bench-blue-0")
        # The model server takes its instance secret as the controller gives it; direct calls present it too.
        model = services.start("model-server", [sys.executable, "-m", "endpoints_app.runtime.server", "--format",
                                                "sklearn", "--artifact", str(artifact), "--port", str(model_port),
                                                "--uds", str(box / "run" / "server.sock"),
                                                "--threads", str(args.model_threads)],
                               {**env, "STUDIO_INSTANCE_SECRET": instance_secret})
        wait_ok(f"http://127.0.0.1:{model_port}/health/ready", model)
        direct_auth = {"Authorization": f"Bearer {instance_secret}"}
        if provider is not None:
            # The aad_token endpoint's own model server, the same model and threads: each gateway figure is
            # compared with a direct call to its own server, so the two servers' difference cancels out.
            model_aad = services.start("model-server-aad", [sys.executable, "-m", "endpoints_app.runtime.server",
                                                            "--format", "sklearn", "--artifact", str(artifact),
                                                            "--port", str(aad_port), "--uds",
                                                            str(instance_box(data_dir, "bench-aad-blue-0") / "run" /
                                                                "server.sock"),
                                                            "--threads", str(args.model_threads)],
                                       {**env, "STUDIO_INSTANCE_SECRET": aad_secret})
            wait_ok(f"http://127.0.0.1:{aad_port}/health/ready", model_aad)

        def start_gateway(name: str, tree: Path = ROOT, **extra: str) -> tuple[subprocess.Popen, str]:
            port = free_port()
            gunicorn = BIN / "gunicorn" if tree == ROOT else tree / ".venv" / "bin" / "gunicorn"
            proc = services.start(name, [str(gunicorn), "endpoints_app.gateway.asgi:application",
                                         "-k", "uvicorn_worker.UvicornWorker", "-w", str(args.gateway_workers),
                                         "-b", f"127.0.0.1:{port}"],
                                  {**env, "PYTHONPATH": str(tree), "STUDIO_GATEWAY_CLIENT": args.client, **extra},
                                  cwd=tree)
            return proc, f"http://127.0.0.1:{port}/inference/bench/score"

        gateway, gateway_url = start_gateway("gateway")
        before_url = None
        if args.compare_tree:
            # Another checkout's gateway on the same database (a schema it can read) and model server.
            before, before_url = start_gateway("gateway-before", args.compare_tree.resolve())
            wait_post_ok(before_url, STUDIO_BODY,
                         {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}, before)
        unmetered_url = None
        if args.compare_metering:
            unmetered, unmetered_url = start_gateway("gateway-unmetered", STUDIO_GATEWAY_METERING="0")
            unjournaled, unjournaled_url = start_gateway("gateway-unjournaled", STUDIO_GATEWAY_USAGE_JOURNAL="0")
        auth = {"Authorization": f"Bearer {key}"}
        direct_url = f"http://127.0.0.1:{model_port}/score"
        wait_post_ok(gateway_url, STUDIO_BODY, {"Content-Type": "application/json", **auth}, gateway)
        if unmetered_url:
            wait_post_ok(unmetered_url, STUDIO_BODY, {"Content-Type": "application/json", **auth}, unmetered)
            wait_post_ok(unjournaled_url, STUDIO_BODY, {"Content-Type": "application/json", **auth}, unjournaled)

        aad_url = token_auth = None
        if provider is not None:
            aad_url = gateway_url.replace("/inference/bench/", "/inference/bench-aad/")
            # A service principal's token (10 minutes): the gateway validates it once, then keeps it.
            token_auth = {"Authorization": f"Bearer {provider.client_token('ci-pipeline')}"}
            wait_post_ok(aad_url, STUDIO_BODY, {"Content-Type": "application/json", **token_auth}, gateway)
            aad_direct_url = f"http://127.0.0.1:{aad_port}/score"
            aad_direct_auth = {"Authorization": f"Bearer {aad_secret}"}
            step = measure_auth_step(data_dir, env, key, token_auth["Authorization"][7:])
            results["auth_step_us"] = step
            print(f"auth step, in process (best of 5 x 200,000 calls): key {step['key']:.2f} us, cached identity "
                  f"token {step['aad_token']:.2f} us: {step['aad_token'] - step['key']:+.2f} us per call "
                  "(goal: within 50 us)", flush=True)

        step = measure_journal_step(data_dir, env)
        results["journal_step_us"] = step
        print(f"counting a call, in process (best of 5 x 200,000): in memory {step['memory_only']:.2f} us, with the "
              f"usage journal {step['journaled']:.2f} us: {step['journaled'] - step['memory_only']:+.2f} us per call",
              flush=True)

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
        runs: dict[str, list[dict]] = {"direct": [], "gateway": [], "unmetered": [], "unjournaled": [], "mlflow": [],
                                       "direct_aad": [], "aad_token": [], "before": []}
        results["load_average_before"] = os.getloadavg()
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}", flush=True)
            watch = {"model": [model.pid], "gateway": [gateway.pid]}
            runs["direct"].append(measure("direct", direct_url, STUDIO_BODY, direct_auth, args, workdir, watch))
            runs["gateway"].append(measure("gateway", gateway_url, STUDIO_BODY, auth, args, workdir, watch))
            if before_url:
                runs["before"].append(measure("before", before_url, STUDIO_BODY, auth, args, workdir,
                                              {"gateway": [before.pid]}))
            if unmetered_url:
                runs["unmetered"].append(measure("unmetered", unmetered_url, STUDIO_BODY, auth, args, workdir,
                                                 {"gateway": [unmetered.pid]}))
                runs["unjournaled"].append(measure("unjournaled", unjournaled_url, STUDIO_BODY, auth, args, workdir,
                                                   {"gateway": [unjournaled.pid]}))
            if mlflow_url:
                runs["mlflow"].append(measure("mlflow", mlflow_url, MLFLOW_BODY, {}, args, workdir,
                                              {"mlflow": [mlflow_proc.pid]}))
            if aad_url:
                runs["direct_aad"].append(measure("direct2", aad_direct_url, STUDIO_BODY, aad_direct_auth, args,
                                                  workdir))
                runs["aad_token"].append(measure("aad", aad_url, STUDIO_BODY, token_auth, args, workdir,
                                                 {"gateway": [gateway.pid]}))

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
        if runs["before"]:
            # The other tree's gateway, against the same direct run of its round.
            b_ratios = [b["rps"] / d["rps"] for d, b in zip(runs["direct"], runs["before"], strict=True)]
            b_added = [b["p50_ms"] - d["p50_ms"] for d, b in zip(runs["direct"], runs["before"], strict=True)]
            print(f"{args.compare_tree} gateway / direct throughput: {statistics.median(b_ratios):.2f}x (rounds "
                  f"{', '.join(f'{r:.2f}' for r in b_ratios)}); added p50 {statistics.median(b_added):.2f} ms "
                  f"(rounds {', '.join(f'{a:.2f}' for a in b_added)})")
            if runs["unjournaled"]:
                # A tree from before the usage journal has none: this tree's gateway without it, likewise.
                u_ratios = [u["rps"] / d["rps"] for d, u in zip(runs["direct"], runs["unjournaled"], strict=True)]
                u_added = [u["p50_ms"] - d["p50_ms"] for d, u in zip(runs["direct"], runs["unjournaled"], strict=True)]
                print(f"this tree's gateway without the usage journal / direct: {statistics.median(u_ratios):.2f}x; "
                      f"added p50 {statistics.median(u_added):.2f} ms")
                verdict.update({"unjournaled_throughput_ratio": statistics.median(u_ratios),
                                "unjournaled_added_p50_ms": statistics.median(u_added)})
            # CPU per call of each gateway's process: what the machine's other load disturbs least.
            cpu = {name: statistics.median(r["cpu_ms_per_request_gateway"] for r in runs[name])
                   for name in ("gateway", "before", "unjournaled") if runs[name]}
            print("gateway CPU per call (median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in cpu.items()))
            verdict["gateway_cpu_ms_per_request"] = cpu
            verdict.update({"compare_tree": str(args.compare_tree), "before_throughput_ratio":
                            statistics.median(b_ratios), "before_added_p50_ms": statistics.median(b_added),
                            "before_round_ratios": b_ratios, "before_round_added_p50_ms": b_added})
        if runs["unmetered"]:
            costs = [1 - g["rps"] / u["rps"] for g, u in zip(runs["gateway"], runs["unmetered"], strict=True)]
            metering_cost = statistics.median(costs)
            print(f"metering costs {metering_cost * 100:.1f}% of gateway throughput (goal <= 3%; rounds "
                  f"{', '.join(f'{c * 100:.1f}%' for c in costs)})")
            verdict.update({"metering_throughput_cost": metering_cost, "metering_goal_met": metering_cost <= 0.03})
            costs = [1 - g["rps"] / u["rps"] for g, u in zip(runs["gateway"], runs["unjournaled"], strict=True)]
            journal_cost = statistics.median(costs)
            print(f"the usage journal costs {journal_cost * 100:.1f}% of gateway throughput (rounds "
                  f"{', '.join(f'{c * 100:.1f}%' for c in costs)})")
            verdict["usage_journal_throughput_cost"] = journal_cost
        if runs["aad_token"]:
            # Each gateway's added p50 over its own server's direct p50, aad_token minus key, round by round.
            extra = [(a["p50_ms"] - da["p50_ms"]) - (g["p50_ms"] - d["p50_ms"]) for d, g, da, a in
                     zip(runs["direct"], runs["gateway"], runs["direct_aad"], runs["aad_token"], strict=True)]
            tput = [a["rps"] / da["rps"] / (g["rps"] / d["rps"]) for d, g, da, a in
                    zip(runs["direct"], runs["gateway"], runs["direct_aad"], runs["aad_token"], strict=True)]
            print(f"aad_token endpoint vs key endpoint: added p50 {statistics.median(extra):+.3f} ms (goal <= 0.05; "
                  f"rounds {', '.join(f'{e:+.3f}' for e in extra)}), "
                  f"relative throughput {statistics.median(tput):.3f}x")
            verdict.update({"aad_token_added_p50_ms": statistics.median(extra), "aad_token_round_added_p50_ms": extra,
                            "aad_token_relative_throughput": statistics.median(tput),
                            "aad_token_goal_met": statistics.median(extra) <= 0.05})
        if args.unloaded_seconds:
            # One connection: no queueing, so the difference is the gateway's own latency.
            one = argparse.Namespace(**{**vars(args), "connections": 1, "duration": args.unloaded_seconds})
            print("one connection (no queueing):", flush=True)
            d1 = measure("direct", direct_url, STUDIO_BODY, direct_auth, one, workdir)
            g1 = measure("gateway", gateway_url, STUDIO_BODY, auth, one, workdir)
            verdict["unloaded_added_p50_ms"] = g1["p50_ms"] - d1["p50_ms"]
            runs["unloaded"] = [d1, g1]
            print(f"added p50 at 1 connection: {verdict['unloaded_added_p50_ms']:.2f} ms")
            if before_url:
                b1 = measure("before", before_url, STUDIO_BODY, auth, one, workdir)
                verdict["before_unloaded_added_p50_ms"] = b1["p50_ms"] - d1["p50_ms"]
                runs["unloaded"].append(b1)
                print(f"{args.compare_tree} added p50 at 1 connection: "
                      f"{verdict['before_unloaded_added_p50_ms']:.2f} ms")
            if aad_url:
                d2 = measure("direct2", aad_direct_url, STUDIO_BODY, aad_direct_auth, one, workdir)
                a1 = measure("aad", aad_url, STUDIO_BODY, token_auth, one, workdir)
                verdict["unloaded_aad_token_added_p50_ms"] = (a1["p50_ms"] - d2["p50_ms"]) - verdict[
                    "unloaded_added_p50_ms"]
                runs["unloaded"] += [d2, a1]
                print(f"aad_token vs key added p50 at 1 connection: "
                      f"{verdict['unloaded_aad_token_added_p50_ms']:+.3f} ms (goal <= 0.05)")
        if "mlflow" in summary:
            vs = summary["gateway"]["rps"] / summary["mlflow"]["rps"]
            print(f"studio end-to-end / mlflow direct throughput: {vs:.2f}x (goal > 1.0)")
            verdict.update({"studio_vs_mlflow": vs, "mlflow_goal_met": vs > 1.0})
        results.update({"runs": runs, "summary": summary, "verdict": verdict})
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"gateway-{time.strftime('%Y%m%dT%H%M%S')}.json"
        out.write_text(json.dumps(results, indent=2, default=str))
        print(f"written {out.relative_to(ROOT)}")
        return 0
    finally:
        services.stop_all()
        if provider is not None:
            provider.stop()
        if os.environ.get("STUDIO_BENCH_KEEP"):
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
