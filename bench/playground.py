"""Serverless cold start and the playground's relay, measured on the embedded default.

Run: .venv/bin/python bench/playground.py [--rounds 6] [--max-tokens 32]

Makes a throwaway data dir (SQLite, filesystem broker), migrates, seeds the catalog, starts a
real Celery worker with beat and the web process (uvicorn on portal.asgi, which mounts the
gateway, as `make run` serves it), then:
- cold start: subscribe and create a serverless SmolLM2 endpoint through the REST API and time
  until its platform pool has a ready instance, against starting the same llama.cpp server by
  hand (runtime.launch.launch_spec) and waiting for its readiness path, same run;
- playground relay: the same streamed chat request (temperature 0) alternately straight to the
  gateway with the endpoint's key and through the playground (session login, Django checks the
  role and relays with the key); time to first content token and to the end, medians.
Prints the figures with ratios and writes bench/results/playground-<time>.json."""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-node"
CHAT = "smollm2-135m-instruct"
PASSWORD = "bench-password-not-secret"

from bench.common import (  # noqa: E402
    owner_api,
    setup_studio,
    start_by_hand,
    start_process,
    start_worker,
    stop_studio,
    wait,
)


def stream_times(response, started: float) -> tuple[float, float, int]:
    """(seconds to the first content token, seconds to the end, content characters)."""
    first, chars = None, 0
    for line in response.iter_lines():
        if not line.startswith(b"data:") or line.strip() == b"data: [DONE]":
            continue
        chunk = json.loads(line[5:])
        for choice in chunk.get("choices") or []:
            content = (choice.get("delta") or {}).get("content")
            if content:
                first = first or time.monotonic() - started
                chars += len(content)
    return first or float("nan"), time.monotonic() - started, chars


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()

    port = 18000 + secrets.randbelow(1000)
    data_dir = setup_studio("playground", STUDIO_NODE_NAME=NODE, STUDIO_PORT=str(port))
    import requests

    from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance
    from endpoints_app.services.keys import get_keys
    from endpoints_app.services.serverless import pool_instance_type

    api = owner_api(password=PASSWORD)
    model = CatalogModel.objects.get(registry="studio", name=CHAT)

    worker = start_worker(data_dir, NODE, level="warning")
    web = start_process(["uvicorn", "portal.asgi:application", "--port", str(port), "--lifespan", "on",
                         "--no-access-log", "--loop", "uvloop", "--http", "httptools"], data_dir / "web.log")
    base = f"http://127.0.0.1:{port}"
    result: dict = {"machine_cores": os.cpu_count(), "rounds": args.rounds, "max_tokens": args.max_tokens}
    try:
        def web_up() -> bool:
            try:
                return requests.get(f"{base}/healthz", timeout=1).ok
            except requests.RequestException:
                return False

        wait(web_up, 60, 0.2, "web")

        # -- cold start ------------------------------------------------------------------------------------------
        sample = Deployment(endpoint=Endpoint(name="hand"), name="hand", model=model,
                            instance_type=pool_instance_type())
        hand = start_by_hand(sample)
        ws = "/api/v1/workspaces/bench"
        began = time.monotonic()
        assert api.post(f"{ws}/marketplace-subscriptions", {"model_id": model.asset_id},
                        format="json").status_code == 201
        created = api.post(f"{ws}/serverless-endpoints", {"name": "smol", "model_id": model.asset_id}, format="json")
        assert created.status_code == 201, created.content
        endpoint = Endpoint.objects.get(name="smol")
        wait(lambda: Instance.objects.filter(deployment_id=endpoint.pool_id, state="Ready").exists(), 300, 0.05,
             "the pool")
        cold = time.monotonic() - began
        result["cold_start"] = {"by_hand_s": round(hand, 3), "studio_s": round(cold, 3),
                                "ratio": round(cold / hand, 3)}
        print(f"cold start      by hand {hand:6.2f} s   serverless create -> pool ready {cold:6.2f} s   "
              f"({cold / hand:.2f}x)", flush=True)

        # -- the playground's relay ------------------------------------------------------------------------------
        key = get_keys(endpoint)["primary_key"]
        session = requests.Session()
        login = session.get(f"{base}/login/").text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login).group(1)
        session.post(f"{base}/login/", data={"username": "bench", "password": PASSWORD,
                                             "csrfmiddlewaretoken": token}, headers={"Referer": f"{base}/login/"})
        page = session.get(f"{base}/endpoints/smol/test/").text
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        message = "Name three colours."
        body = {"messages": [{"role": "user", "content": message}], "temperature": 0,
                "max_tokens": args.max_tokens, "stream": True, "stream_options": {"include_usage": True}}

        def direct() -> tuple[float, float, int]:
            started = time.monotonic()
            with requests.post(f"{base}/inference/smol/chat/completions", json=body, stream=True, timeout=300,
                               headers={"Authorization": f"Bearer {key}"}) as response:
                assert response.status_code == 200, response.text
                return stream_times(response, started)

        def relayed() -> tuple[float, float, int]:
            started = time.monotonic()
            form = {"message": message, "temperature": "0", "max_tokens": str(args.max_tokens), "history": "[]"}
            with session.post(f"{base}/endpoints/smol/playground/chat/", data=form, stream=True, timeout=300,
                              headers={"X-CSRFToken": csrf, "Referer": f"{base}/endpoints/smol/test/"}) as response:
                assert response.status_code == 200, response.text
                return stream_times(response, started)

        direct()  # warm both paths once
        relayed()
        runs: dict[str, list[tuple[float, float, int]]] = {"direct": [], "playground": []}
        for index in range(args.rounds):
            order = [("direct", direct), ("playground", relayed)]
            for name, call in order if index % 2 == 0 else order[::-1]:
                runs[name].append(call())
        for name, rows in runs.items():
            ttft = statistics.median(r[0] for r in rows) * 1000
            total = statistics.median(r[1] for r in rows)
            result[name] = {"ttft_ms_median": round(ttft, 1), "total_s_median": round(total, 3),
                            "runs": [[round(a * 1000, 1), round(b, 3), c] for a, b, c in rows]}
        d, p = result["direct"], result["playground"]
        added = p["ttft_ms_median"] - d["ttft_ms_median"]
        result["playground_added_ttft_ms"] = round(added, 1)
        for name in ("direct", "playground"):
            print(f"{name:15s} first token {result[name]['ttft_ms_median']:8.1f} ms   "
                  f"whole answer {result[name]['total_s_median']:6.2f} s", flush=True)
        print(f"playground relay adds {added:+.1f} ms to the first token "
              f"({p['total_s_median'] / d['total_s_median']:.3f}x the whole answer's time)", flush=True)
    finally:
        stop_studio(data_dir, [web, worker])
    out = ROOT / "bench" / "results" / f"playground-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
