"""The `studio` CLI: start-up time of `studio online-endpoint list` (goal < 0.3 s: no Django on
the client side) and the blue/green walk-through of examples/README.md end to end.

Run: .venv/bin/python bench/cli.py [--runs 20] [--skip-rollout]

Makes a throwaway data dir (SQLite + filesystem broker), migrates, seeds the catalog, starts the
web process (uvicorn portal.asgi) and, for the walk-through, a real Celery worker with beat.
References measured in the same run: the bare interpreter (`python -c pass`), one GET of the
same URL with `requests` (what the CLI cannot beat), and `django.setup()` (what the old CLI
design would pay had it imported the app). The walk-through runs the README's shell block
step by step, timing each step; its reference is the first deployment's own create."""

from __future__ import annotations

import argparse
import os
import re
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
NODE = "bench-cli"

from bench.common import percentile, stop_studio, wait  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def timed(argv: list[str], env: dict, runs: int, cwd: Path = ROOT) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out.append(time.perf_counter() - began)
    return out


def line(name: str, values: list[float], reference: float | None = None) -> str:
    median = statistics.median(values)
    ratio = f"   {median / reference:5.2f}x the bare GET" if reference else ""
    return f"{name:38s} median {median * 1000:7.1f} ms   p90 {percentile(values, 0.9) * 1000:7.1f} ms{ratio}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--skip-rollout", action="store_true", help="measure start-up only")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="studio-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    env.update({"STUDIO_DATA_DIR": str(data_dir), "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50),
                "DJANGO_SETTINGS_MODULE": "portal.settings", "PYTHONPATH": str(ROOT), "STUDIO_NODE_NAME": NODE,
                "STUDIO_RECONCILE_SECONDS": "1"})
    setup = """
import django
django.setup()
from django.contrib.auth import get_user_model
from django.core.management import call_command
from endpoints_app.models import ApiToken
from endpoints_app.catalog.instance_types import seed_instance_types
from endpoints_app.catalog.seed import seed_catalog
from endpoints_app.models import Membership, RouteVersion, Workspace
call_command("migrate", verbosity=0)
seed_instance_types()
seed_catalog()
RouteVersion.objects.get_or_create(pk=1)
ws = Workspace.objects.create(name="bench", display_name="Bench")
user = get_user_model().objects.create_user("bench")
Membership.objects.create(workspace=ws, user=user, role="Owner")
print(ApiToken.objects.create(user=user)[1])
"""
    print("setting up a throwaway studio ...", flush=True)
    token = subprocess.run([sys.executable, "-c", setup], env=env, cwd=ROOT, check=True, capture_output=True,
                           text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "uvicorn"), "portal.asgi:application", "--port", str(port),
                               "--lifespan", "on", "--no-access-log", "--log-level", "warning"],
                              cwd=ROOT, env=env, stdout=open(data_dir / "web.log", "wb"), stderr=subprocess.STDOUT,
                              start_new_session=True)]
    try:
        import requests

        wait(lambda: _up(requests, url), 60, 0.2, "the web process")
        cli_env = {k: v for k, v in env.items() if k != "DJANGO_SETTINGS_MODULE"}
        cli_env.update({"STUDIO_URL": url, "STUDIO_TOKEN": token, "STUDIO_WORKSPACE": "bench",
                        "STUDIO_CONFIG": str(data_dir / "cli.json")})
        list_url = f"{url}/api/v1/workspaces/bench/online-endpoints"
        py = sys.executable
        studio = [py, "-m", "studio_client"]
        timed([*studio, "online-endpoint", "list"], cli_env, 2)  # warm the page cache
        bare = timed([py, "-c", "pass"], cli_env, args.runs)
        # The floor of any stdlib HTTP client: the modules the CLI cannot do without.
        stdlib = timed([py, "-c", "import argparse, json, http.client, urllib.parse, pathlib"], cli_env, args.runs)
        get = timed([py, "-c", f"import requests; requests.get({list_url!r}, "
                               f"headers={{'Authorization': 'Token {token}'}}).raise_for_status()"], cli_env, args.runs)
        cli = timed([*studio, "online-endpoint", "list"], cli_env, args.runs)
        table = timed([*studio, "online-endpoint", "list", "-o", "table"], cli_env, args.runs)
        # The server's share: the same GET on a warm connection from this process.
        server = []
        session = requests.Session()
        for _ in range(args.runs):
            began = time.perf_counter()
            session.get(list_url, headers={"Authorization": f"Token {token}"}).raise_for_status()
            server.append(time.perf_counter() - began)
        help_only = timed([*studio, "--help"], cli_env, args.runs)
        django_setup = timed([py, "-c", "import django; django.setup()"], env, max(3, args.runs // 4))
        reference = statistics.median(get)
        print(f"\nstart-up, {args.runs} runs each ({os.cpu_count()} cores, machine shared):")
        print(line("python -c pass", bare, reference))
        print(line("import argparse, json, http.client ...", stdlib, reference))
        print(line("requests.get of the same URL", get, reference))
        print(line("studio online-endpoint list", cli, reference))
        print(line("studio online-endpoint list -o table", table, reference))
        print(line("studio --help (no network)", help_only, reference))
        print(line("the GET alone, warm, in-process", server, reference))
        print(line("django.setup() alone (not paid)", django_setup, reference))
        own = statistics.median(cli) - statistics.median(server)
        verdict = "OK" if statistics.median(cli) < 0.3 else "MISSED"
        print(f"goal: studio online-endpoint list < 300 ms: {verdict} "
              f"({statistics.median(cli) * 1000:.0f} ms, of which the CLI's own {own * 1000:.0f} ms; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")

        if not args.skip_rollout:
            procs.append(subprocess.Popen(
                [str(bin_dir / "celery"), "-A", "portal", "worker", "-B", "-Q", f"celery,node.{NODE}",
                 "-n", f"worker@{NODE}", "-c", "3", "-l", "info", "-s", str(data_dir / "beat-schedule")],
                cwd=ROOT, env=env, stdout=open(data_dir / "worker.log", "wb"), stderr=subprocess.STDOUT,
                start_new_session=True))
            # The node registers with its first heartbeat, after Celery says it is ready.
            wait(lambda: b" ready." in (data_dir / "worker.log").read_bytes(), 120, 0.2, "the worker")
            time.sleep(3)
            rollout(cli_env, data_dir)
    finally:
        stop_studio(data_dir, list(reversed(procs)))
    return 0


def _up(requests, url: str) -> bool:
    try:
        return requests.get(url + "/healthz", timeout=1).status_code == 200
    except requests.RequestException:
        return False


def rollout(cli_env: dict, data_dir: Path) -> None:
    text = (ROOT / "examples" / "README.md").read_text()
    block = re.search(r"## Blue/green rollout.*?```sh\n(.*?)```", text, re.S).group(1)
    steps = re.split(r"\n(?=# \d\.)", block.strip())
    wrapper = f'studio() {{ "{sys.executable}" -m studio_client "$@"; }}\n'
    cwd, timings = ROOT, []
    first_create = None
    began = time.perf_counter()
    for step in steps:
        lines = [ln for ln in step.splitlines() if ln.strip() and not ln.startswith("#")]
        step_began = time.perf_counter()
        for command in lines:
            t0 = time.perf_counter()
            script = f"set -euo pipefail\n{wrapper}{command}\npwd > {data_dir / 'cwd'}\n"
            result = subprocess.run(["bash", "-c", script], cwd=cwd, env=cli_env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"step failed: {command}\n{result.stderr}")
            cwd = Path((data_dir / "cwd").read_text().strip())
            if first_create is None and "online-deployment create" in command:
                first_create = time.perf_counter() - t0
        heading = step.splitlines()[0] if step.startswith("#") else "# 0. endpoint + blue at 100%"
        timings.append((heading, time.perf_counter() - step_began))
    total = time.perf_counter() - began
    print("\nblue/green walk-through (examples/README.md), step by step:")
    for heading, seconds in timings:
        print(f"  {heading[2:60]:58s} {seconds:6.1f} s")
    print(f"  {'total':58s} {total:6.1f} s   ({total / first_create:4.1f}x one `online-deployment create` "
          f"of {first_create:.1f} s)")


if __name__ == "__main__":
    raise SystemExit(main())
