"""Foundation models through the gateway vs calling the model servers directly, and vs LiteLLM's proxy.

    .venv/bin/python bench/serverless.py                     # 5 rounds; LiteLLM in var/bench-litellm-venv
    .venv/bin/python bench/serverless.py --rounds 3 --no-litellm
    .venv/bin/python bench/serverless.py --threads 2          # llama.cpp on both cores (see --threads)

Starts, in a throwaway data dir: llama.cpp's server on SmolLM2-135M (GGUF, as the studio runs it,
runtime/llama_server.py), the studio's model server on all-MiniLM-L6-v2, the gateway (gunicorn + one
uvicorn worker) with online endpoint `chat` routing to the first and `emb` to the second, and
LiteLLM's proxy (`litellm --config`, its own venv from requirements-bench.txt) in front of the same two
servers. Then, alternating the three within each round (the machine is shared):

    streaming chat, one client (llama.cpp generates one request at a time): time to first token and
        tokens per second (streamed content chunks / generation time), max_tokens 64, the same prompt
    embeddings: requests per second with wrk, 8 connections, a short input

Goals: gateway >= 0.97 x direct tokens/s, <= 2 ms added time to first token, >= 0.9 x direct
embeddings req/s. Ratios are taken within a round and the median printed; results are also written
to bench/results/serverless-<time>.json."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.gateway import Services, free_port, run_aiohttp, run_wrk, studio_env, wait_ok, wait_post_ok  # noqa: E402

BIN = Path(sys.executable).parent
LITELLM_VENV = Path(os.environ.get("STUDIO_BENCH_LITELLM_VENV", ROOT / "var" / "bench-litellm-venv"))
CHAT_BODY = {"messages": [{"role": "user", "content": "Tell me about the sea in three sentences."}],
             "max_tokens": 64, "temperature": 0, "seed": 1, "stream": True}
LITELLM_KEY = "sk-studio-bench-0123456789abcdef"  # LiteLLM's proxy refuses to start without a master key
EMB_BODY = {"input": "The studio serves models on your own machines.", "model": "minilm"}


def model_files(data_dir: Path) -> tuple[str, str]:
    script = ("import django; django.setup()\n"
              "from endpoints_app.catalog.seed import minilm_dir, smollm2_file\n"
              "print(smollm2_file()); print(minilm_dir())\n")
    out = subprocess.run([sys.executable, "-c", script], env=studio_env(data_dir), cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-2], out[-1]


def create_endpoints(data_dir: Path, chat_port: int, emb_port: int) -> tuple[str, str]:
    """Fresh SQLite: online endpoints chat (SmolLM2) and emb (MiniLM), one ready instance each."""
    script = f"""
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from endpoints_app import keys
from endpoints_app.catalog.instance_types import seed_instance_types
from endpoints_app.models import *
seed_instance_types()
ws = Workspace.objects.create(name="bench", display_name="Bench")
node = Node.objects.create(name="local", host="127.0.0.1", cores=2, memory_gb=4, queue="node.local")
models = {{
    "chat": CatalogModel.objects.create(name="smollm2-135m-instruct", task="chat-completion", format="gguf",
                                        license="Apache-2.0", deployment_kinds=["online"],
                                        tags={{"context_length": 2048, "model_type": "chat-completion"}}),
    "emb": CatalogModel.objects.create(name="all-minilm-l6-v2", task="embeddings", format="sentence-transformers",
                                       license="Apache-2.0", deployment_kinds=["online"],
                                       tags={{"dimensions": 384, "model_type": "embeddings"}}),
}}
ports = {{"chat": {chat_port}, "emb": {emb_port}}}
out = []
for name, model in models.items():
    nonce = keys.new_nonce()
    key = keys.derive_key(nonce)
    ep = Endpoint.objects.create(workspace=ws, name=name, traffic={{"blue": 100}}, provisioning_state="Succeeded",
                                 primary_key_nonce=nonce)
    dep = Deployment.objects.create(endpoint=ep, name="blue", model=model, instance_type=InstanceType.objects.first(),
                                    request_settings={{"max_concurrent_requests_per_instance": 64,
                                                       "request_timeout_ms": 60000}},
                                    provisioning_state="Succeeded")
    Instance.objects.create(deployment=dep, name=name + "-blue-0", node=node, port=ports[name], state="Ready")
    out.append(key)
RouteVersion.bump()
print(out[0]); print(out[1])
"""
    out = subprocess.run([sys.executable, "-c", script], env=studio_env(data_dir), cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()
    return out[-2], out[-1]


def ensure_litellm_venv() -> Path:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        print(f"installing litellm[proxy] into {LITELLM_VENV} (requirements-bench.txt)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
        pins = [line.strip() for line in (ROOT / "requirements-bench.txt").read_text().splitlines()
                if line.strip().startswith("litellm")]
        subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "--quiet", *pins], check=True)
    return litellm


def litellm_config(workdir: Path, chat_port: int, emb_port: int) -> Path:
    # JSON is YAML: no yaml import needed here.
    config = {"model_list": [
        {"model_name": "smollm2", "litellm_params": {"model": "openai/smollm2",
                                                     "api_base": f"http://127.0.0.1:{chat_port}/v1",
                                                     "api_key": "none"}},
        {"model_name": "minilm", "litellm_params": {"model": "openai/minilm",
                                                    "api_base": f"http://127.0.0.1:{emb_port}/v1",
                                                    "api_key": "none"}},
    ], "litellm_settings": {"drop_params": True, "telemetry": False},
       "general_settings": {"master_key": LITELLM_KEY}}
    path = workdir / "litellm.yaml"
    path.write_text(json.dumps(config))
    return path


async def stream_once(session, url: str, headers: dict, body: dict) -> dict:
    """One streamed chat: time to the first content chunk, content chunks, generation seconds."""
    began = time.perf_counter()
    first = last = None
    chunks = 0
    async with session.post(url, json=body, headers=headers) as response:
        assert response.status == 200, f"{url}: {response.status} {await response.text()}"
        buffer = b""
        async for data in response.content.iter_any():
            buffer += data
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                if not line.startswith(b"data: ") or line == b"data: [DONE]":
                    continue
                event = json.loads(line[6:])
                choices = event.get("choices") or []
                if choices and (choices[0].get("delta") or {}).get("content"):
                    now = time.perf_counter()
                    first = first or now
                    last = now
                    chunks += 1
    end = time.perf_counter()
    return {"ttft_ms": ((first or end) - began) * 1000.0, "chunks": chunks,
            "tokens_per_s": (chunks - 1) / (last - first) if first and last and last > first else 0.0,
            "total_s": end - began}


async def stream_runs(url: str, headers: dict, body: dict, count: int) -> dict:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300)) as session:
        await stream_once(session, url, headers, body)  # warm: prompt cache, connection
        runs = [await stream_once(session, url, headers, body) for _ in range(count)]
    return {"ttft_ms": statistics.median(r["ttft_ms"] for r in runs),
            "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
            "chunks": statistics.median(r["chunks"] for r in runs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--streams", type=int, default=5, help="streamed chats per target per round")
    parser.add_argument("--duration", type=int, default=5, help="seconds per embeddings run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--connections", type=int, default=8, help="embeddings connections")
    parser.add_argument("--wrk-threads", type=int, default=1)
    # One llama.cpp thread leaves a core for the relays: llama.cpp's threads spin, so with every core
    # taken each wake-up of a relay (or of the client) per token stalls generation, and the figure
    # measures CPU contention on this 2-core machine rather than what relaying costs.
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--python-client", action="store_true", help="use the aiohttp client even if wrk exists")
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) still stops the servers started below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    workdir = Path(tempfile.mkdtemp(prefix="studio-bench-serverless-"))
    data_dir = workdir / "data"
    data_dir.mkdir()
    services = Services(workdir)
    results: dict = {"config": vars(args), "cpus": os.cpu_count()}
    try:
        env = studio_env(data_dir)
        gguf, minilm = model_files(data_dir)
        chat_port, emb_port, gateway_port = free_port(), free_port(), free_port()
        llama = services.start("llama", [sys.executable, "-m", "endpoints_app.runtime.llama_server", "--model", gguf,
                                         "--model_alias", "smollm2", "--port", str(chat_port),
                                         "--n_threads", str(args.threads)], env)
        emb = services.start("minilm", [sys.executable, "-m", "endpoints_app.runtime.server", "--format",
                                        "sentence-transformers", "--artifact", minilm, "--port", str(emb_port),
                                        "--name", "minilm"], env)
        wait_ok(f"http://127.0.0.1:{chat_port}/v1/models", llama, timeout=180)
        wait_ok(f"http://127.0.0.1:{emb_port}/health/ready", emb, timeout=180)
        chat_key, emb_key = create_endpoints(data_dir, chat_port, emb_port)
        gateway = services.start("gateway", [str(BIN / "gunicorn"), "endpoints_app.gateway.asgi:application",
                                             "-k", "uvicorn_worker.UvicornWorker", "-w", "1",
                                             "-b", f"127.0.0.1:{gateway_port}"], env)
        gw = f"http://127.0.0.1:{gateway_port}"
        wait_post_ok(f"{gw}/inference/emb/embeddings", json.dumps(EMB_BODY),
                     {"Content-Type": "application/json", "Authorization": f"Bearer {emb_key}"}, gateway)

        targets = {
            "direct": {"chat": (f"http://127.0.0.1:{chat_port}/v1/chat/completions", {}),
                       "emb": (f"http://127.0.0.1:{emb_port}/v1/embeddings", {})},
            "gateway": {"chat": (f"{gw}/inference/chat/chat/completions", {"Authorization": f"Bearer {chat_key}"}),
                        "emb": (f"{gw}/inference/emb/embeddings", {"Authorization": f"Bearer {emb_key}"})},
        }
        if not args.no_litellm:
            litellm = ensure_litellm_venv()
            litellm_port = free_port()
            proxy = services.start("litellm", [str(litellm), "--config",
                                               str(litellm_config(workdir, chat_port, emb_port)),
                                               "--host", "127.0.0.1", "--port", str(litellm_port),
                                               "--num_workers", "1"],
                                   {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"})
            lt = f"http://127.0.0.1:{litellm_port}"
            lt_auth = {"Authorization": f"Bearer {LITELLM_KEY}"}
            wait_post_ok(f"{lt}/v1/embeddings", json.dumps(EMB_BODY), {"Content-Type": "application/json", **lt_auth},
                         proxy, timeout=240)
            targets["litellm"] = {"chat": (f"{lt}/v1/chat/completions", lt_auth),
                                  "emb": (f"{lt}/v1/embeddings", lt_auth)}

        use_wrk = shutil.which("wrk") and not args.python_client
        print(f"{args.rounds} rounds; {args.streams} streamed chats (max_tokens {CHAT_BODY['max_tokens']}) per target; "
              f"embeddings with {'wrk' if use_wrk else 'aiohttp'}, {args.connections} connections, {args.duration} s; "
              f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}", flush=True)
        runs: dict[str, list[dict]] = {name: [] for name in targets}
        for round_no in range(args.rounds):
            print(f"round {round_no + 1}", flush=True)
            for name, target in targets.items():
                url, headers = target["chat"]
                body = {**CHAT_BODY, "model": "smollm2"}
                chat = asyncio.run(stream_runs(url, headers, body, args.streams))
                url, headers = target["emb"]
                headers = {"Content-Type": "application/json", **headers}
                if use_wrk:
                    run_wrk(url, json.dumps(EMB_BODY), headers, args.connections, args.warmup, args.wrk_threads,
                            workdir)
                    embeddings = run_wrk(url, json.dumps(EMB_BODY), headers, args.connections, args.duration,
                                         args.wrk_threads, workdir)
                else:
                    embeddings = run_aiohttp(url, json.dumps(EMB_BODY), headers, args.connections, args.duration)
                run = {**chat, "emb_rps": embeddings["rps"], "emb_p50_ms": embeddings["p50_ms"]}
                runs[name].append(run)
                print(f"  {name:<8} ttft {run['ttft_ms']:7.2f} ms   {run['tokens_per_s']:6.1f} tokens/s   "
                      f"embeddings {run['emb_rps']:7.0f} req/s (p50 {run['emb_p50_ms']:.2f} ms)", flush=True)

        def within(name: str, key: str, how) -> list[float]:
            return [how(o[key], d[key]) for d, o in zip(runs["direct"], runs[name], strict=True)]

        print("\nmedians:")
        summary = {name: {k: statistics.median(r[k] for r in rs) for k in ("ttft_ms", "tokens_per_s", "emb_rps")}
                   for name, rs in runs.items()}
        for name, s in summary.items():
            print(f"  {name:<8} ttft {s['ttft_ms']:7.2f} ms   {s['tokens_per_s']:6.1f} tokens/s   "
                  f"embeddings {s['emb_rps']:7.0f} req/s")
        verdict: dict = {}
        for name in targets:
            if name == "direct":
                continue
            tps = statistics.median(within(name, "tokens_per_s", lambda o, d: o / d if d else 0.0))
            ttft = statistics.median(within(name, "ttft_ms", lambda o, d: o - d))
            emb = statistics.median(within(name, "emb_rps", lambda o, d: o / d if d else 0.0))
            verdict[name] = {"tokens_per_s_ratio": tps, "added_ttft_ms": ttft, "embeddings_rps_ratio": emb}
            goals = " (goals >= 0.97x, <= 2 ms, >= 0.90x)" if name == "gateway" else ""
            print(f"{name} vs direct: tokens/s {tps:.3f}x, time to first token {ttft:+.2f} ms, "
                  f"embeddings req/s {emb:.2f}x{goals}")
        if "gateway" in verdict:
            g = verdict["gateway"]
            verdict["goals_met"] = {"tokens_per_s": g["tokens_per_s_ratio"] >= 0.97,
                                    "ttft": g["added_ttft_ms"] <= 2.0, "embeddings": g["embeddings_rps_ratio"] >= 0.9}
        results.update({"runs": runs, "summary": summary, "verdict": verdict})
        out_dir = ROOT / "bench" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"serverless-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps(results, indent=2))
        print(f"written {out.relative_to(ROOT)}")
        return 0
    finally:
        services.stop_all()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
