"""Soak: the whole studio under mixed traffic for a long time, with a fault injected every few minutes.

Run: .venv/bin/python bench/soak.py [--minutes 30] [--fault-every 150] [--warmup 60]

Starts a studio as `make run` does (portal/supervisor.py: web with its embedded gateway, two Celery worker
processes, beat) in a throwaway data dir, on the embedded default, or on PostgreSQL and Redis when
DATABASE_URL / CELERY_BROKER_URL / REDIS_URL are set. Traffic, all through the gateway and the REST API:
- online `/score` on endpoint `soak` with two deployments (blue 70 %, green 30 %), two client threads;
- serverless embeddings (all-MiniLM-L6-v2) and, when llama-cpp-python is installed, serverless chat
  (SmolLM2, a few tokens), one thread each;
- batch jobs back to back over a CSV data asset (iris model), one at a time.
Every --fault-every seconds, the next fault of the list (cycling): SIGKILL worker-1, beat, a web worker, an
online model server, worker-2, the web main process; SIGSTOP an online model server for 30 s.

Prints: success rate excluding 429s (goal >= 99.9 %), each fault's recovery time (the part back, and the
time from the fault to the last failed call it caused), the resident memory of every long-lived process by
role, RssAnon and RssFile apart, after its warm-up and at the end, a process a fault replaced compared with its
successor at the same age (MemoryWatch; goal: flat within 10 %), client-side counts against the usage API's
(goal: equal), batch rows in against rows out (goal: equal). Writes bench/results/soak-<time>.json, with
every memory reading (one per role every 10 s)."""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402

from bench.faults import (  # noqa: E402
    SupervisedStudio,
    age_s,
    alive,
    children_of,
    cmdline,
    memory_mb,
    wait_until,
)

WS = "/api/v1/workspaces/bench"
FAULTS = ["worker-1", "beat", "web-worker", "model-server", "worker-2", "web", "hang-model-server"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Tally:
    """What the clients saw, per stream: statuses of answered calls, and calls with no answer."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_stream: dict[str, Counter] = {}
        self.failures: list[tuple[float, str, str]] = []  # (time, stream, outcome)

    def add(self, stream: str, outcome: str) -> None:
        with self.lock:
            self.by_stream.setdefault(stream, Counter())[outcome] += 1
            if outcome not in ("200", "429"):
                self.failures.append((time.monotonic(), stream, outcome))


def loop(stop: threading.Event, tally: Tally, stream: str, call) -> None:
    while not stop.is_set():
        try:
            outcome = str(call().status_code)
        except requests.RequestException as exc:
            outcome = type(exc).__name__
        tally.add(stream, outcome)
        time.sleep(0.01)


def api(session: requests.Session, method: str, url: str, ok: tuple[int, ...], **kwargs) -> requests.Response:
    response = session.request(method, url, timeout=60, **kwargs)
    if response.status_code not in ok:
        raise RuntimeError(f"{method} {url}: {response.status_code} {response.text[:300]}")
    return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--fault-every", type=float, default=150, help="seconds between faults")
    parser.add_argument("--warmup", type=float, default=60,
                        help="a process's memory is first compared once it is this old, this far into the run, and "
                             "its mapped files stopped paging in")
    args = parser.parse_args()

    production = bool(os.environ.get("DATABASE_URL"))
    data_dir = Path(tempfile.mkdtemp(prefix="studio-soak-"))
    data_dir.chmod(0o755)
    os.environ.update({"STUDIO_DATA_DIR": str(data_dir), "DEBUG": "0", "DJANGO_SETTINGS_MODULE": "portal.settings",
                       "STUDIO_ADMIN_PASSWORD": os.urandom(12).hex(),  # a throwaway admin, not printed
                       "SECRET_KEY": os.environ.get("SECRET_KEY") or os.urandom(24).hex(), "LOG_LEVEL": "WARNING"})
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from endpoints_app.catalog.instance_types import seed_instance_types
    from endpoints_app.catalog.seed import seed_catalog
    from endpoints_app.models import ApiToken, BatchJob, CatalogModel, Membership, Workspace
    from endpoints_app.services.batch import expected_columns

    call_command("migrate", verbosity=0)
    if production:
        call_command("flush", interactive=False, verbosity=0)  # the run's own database, made empty
    seed_instance_types()
    seed_catalog()
    call_command("studio_bootstrap", verbosity=0)
    workspace = Workspace.objects.create(name="bench")
    user = get_user_model().objects.create_user("bench")
    Membership.objects.create(workspace=workspace, user=user, role="Owner")
    token = ApiToken.objects.create(user=user)[1]
    iris = CatalogModel.objects.get(registry="studio", name="iris-classifier")

    env = dict(os.environ, STUDIO_NODE_NAME="soak-node", STUDIO_HOST="127.0.0.1")
    studio = SupervisedStudio(data_dir=data_dir, port=free_port(), env=env)
    studio.start()
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    base = studio.url
    tally = Tally()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    configuration = "PostgreSQL + Redis" if production else "embedded default"
    report: dict = {"minutes": args.minutes, "configuration": configuration}
    try:
        studio.wait_healthy(180)
        # Online: two deployments of the iris model, split 70/30.
        api(session, "POST", f"{base}{WS}/online-endpoints", (201,), json={"name": "soak"})
        for name in ("blue", "green"):
            api(session, "POST", f"{base}{WS}/online-endpoints/soak/deployments", (202,),
                json={"name": name, "model": iris.asset_id, "instance_type": "Standard_DS1_v2",
                      "instance_count": 2 if name == "blue" else 1})
        for name in ("blue", "green"):
            wait_until(lambda name=name: api(session, "GET", f"{base}{WS}/online-endpoints/soak/deployments/{name}",
                                             (200,)).json()["provisioning_state"] == "Succeeded", 300, name)
        api(session, "PATCH", f"{base}{WS}/online-endpoints/soak", (200,), json={"traffic": {"blue": 70, "green": 30}})
        online_key = api(session, "POST", f"{base}{WS}/online-endpoints/soak/list-keys", (200,)).json()["primary_key"]
        sample = {"data": [[5.1, 3.5, 1.4, 0.2]]}

        # Serverless: embeddings, and chat when llama.cpp is there.
        serverless = {"soak-emb": "all-minilm-l6-v2"}
        if importlib.util.find_spec("llama_cpp") is not None:
            serverless["soak-chat"] = "smollm2-135m-instruct"
        keys = {}
        for endpoint, model in serverless.items():
            model_id = f"studio://registries/studio/models/{model}"
            api(session, "POST", f"{base}{WS}/marketplace-subscriptions", (200, 201), json={"model_id": model_id})
            api(session, "POST", f"{base}{WS}/serverless-endpoints", (201,),
                json={"name": endpoint, "model_id": model_id})
            keys[endpoint] = api(session, "POST", f"{base}{WS}/serverless-endpoints/{endpoint}/list-keys",
                                 (200,)).json()["primary_key"]

        # Batch: a data asset of CSV files, and an endpoint scoring them with the iris model.
        columns = expected_columns(iris)
        rng = random.Random(3)
        files = []
        for i in range(4):
            out = io.StringIO()
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for _ in range(2500):
                writer.writerow([round(rng.uniform(0, 8), 2) for _ in columns])
            files.append(("files", (f"part-{i}.csv", out.getvalue().encode(), "text/csv")))
        rows_per_job = 4 * 2500
        asset = api(session, "POST", f"{base}{WS}/data", (201,), data={"name": "soak-rows"}, files=files).json()["id"]
        api(session, "POST", f"{base}{WS}/batch-endpoints", (201,), json={"name": "soak-batch"})
        api(session, "POST", f"{base}{WS}/batch-endpoints/soak-batch/deployments", (201, 202),
            json={"name": "blue", "model": iris.asset_id, "instance_type": "Standard_DS1_v2",
                  "instance_count": 1})

        def score() -> requests.Response:
            return requests.post(f"{base}/inference/soak/score", json=sample,
                                 headers={"Authorization": f"Bearer {online_key}"}, timeout=60)

        def embed() -> requests.Response:
            return requests.post(f"{base}/inference/soak-emb/embeddings", json={"input": ["a soak test"]},
                                 headers={"Authorization": f"Bearer {keys['soak-emb']}"}, timeout=60)

        def chat() -> requests.Response:
            return requests.post(f"{base}/inference/soak-chat/chat/completions",
                                 json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4},
                                 headers={"Authorization": f"Bearer {keys['soak-chat']}"}, timeout=120)

        batch_rows = {"in": 0, "out": 0, "duplicates": 0, "jobs": 0, "failed_jobs": []}

        def batch_loop() -> None:
            while not stop.is_set():
                try:
                    job = api(session, "POST", f"{base}{WS}/batch-endpoints/soak-batch/jobs", (202,),
                              json={"inputs": {"input_data": {"type": "uri_folder", "path": asset}},
                                    "settings": {"mini_batch_size": 1}}).json()["name"]
                except (RuntimeError, requests.RequestException) as exc:
                    tally.add("batch-invoke", type(exc).__name__)
                    time.sleep(2)
                    continue
                tally.add("batch-invoke", "200")
                deadline = time.monotonic() + 900
                while time.monotonic() < deadline:
                    row = BatchJob.objects.filter(name=job).values("status", "error").first()
                    if row and row["status"] in ("Completed", "Failed", "Canceled"):
                        break
                    time.sleep(1)
                job_row = BatchJob.objects.get(name=job)
                batch_rows["jobs"] += 1
                batch_rows["in"] += rows_per_job
                if job_row.status != "Completed":
                    batch_rows["failed_jobs"].append((job, job_row.status, job_row.error[:200]))
                    continue
                seen: set = set()
                lines = 0
                with open(job_row.output_root / job_row.output_file_name, newline="") as fh:
                    for line in csv.DictReader(fh):
                        seen.add((line["file"], line["row"]))
                        lines += 1
                batch_rows["out"] += len(seen)
                batch_rows["duplicates"] += lines - len(seen)

        streams = [("online", score), ("online", score), ("embeddings", embed)]
        if "soak-chat" in keys:
            streams.append(("chat", chat))
        began_wall = datetime.now(UTC) - timedelta(minutes=1)
        for stream, call in streams:
            threads.append(threading.Thread(target=loop, args=(stop, tally, stream, call), daemon=True))
        threads.append(threading.Thread(target=batch_loop, daemon=True))
        for thread in threads:
            thread.start()
        started = time.monotonic()
        end = started + args.minutes * 60
        print(f"soak: {report['configuration']}, {args.minutes:g} min, streams {[s for s, _ in streams]} + batch; "
              f"a fault every {args.fault_every:g} s", flush=True)

        watch = MemoryWatch(studio)
        watch.start()
        next_fault = started + max(args.warmup, args.fault_every)
        faults: list[dict] = []
        index = 0
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_fault and end - now > 60:
                faults.append(inject(studio, FAULTS[index % len(FAULTS)], session, base))
                index += 1
                next_fault = time.monotonic() + args.fault_every
            time.sleep(0.5)
        watch.close()
        stop.set()
        for thread in threads:
            thread.join(timeout=300)

        # Recovery: for each fault, when the last failed call that came after it (before the next fault) happened.
        for i, fault in enumerate(faults):
            until = faults[i + 1]["at"] if i + 1 < len(faults) else float("inf")
            caused = [t for t, _s, _o in tally.failures if fault["at"] <= t < until]
            fault["failed_calls"] = len(caused)
            fault["calls_recovered_s"] = round(max(caused) - fault["at"], 1) if caused else 0.0
            fault.pop("at")

        time.sleep(5)  # the gateway's last usage flush
        usage = {}
        names = {"online": "soak", "embeddings": "soak-emb", "chat": "soak-chat"}
        for stream, endpoint in names.items():
            if stream not in tally.by_stream:
                continue
            totals = api(session, "GET", f"{base}{WS}/usage", (200,),
                         params={"endpoint": endpoint, "from": began_wall.isoformat()}).json()["totals"]
            answered = sum(n for outcome, n in tally.by_stream[stream].items() if outcome.isdigit())
            usage[stream] = {"client_answered": answered, "usage_requests": totals["requests"],
                             "client_2xx": sum(n for o, n in tally.by_stream[stream].items() if o.startswith("2")),
                             "usage_2xx": totals["status_2xx"]}
        report.update(streams={s: dict(c) for s, c in tally.by_stream.items()}, faults=faults,
                      memory=watch.report(args.warmup, args.minutes * 60), memory_readings=watch.readings,
                      warmup_s=args.warmup,
                      usage=usage, batch=batch_rows)
    finally:
        stop.set()
        studio.stop()
        from portal.supervisor import stop_instances

        stop_instances(data_dir)
    print_report(report)


class MemoryWatch:
    """Resident memory of every long-lived process, by role, read every `every` seconds in a thread of its own.

    Roles: the supervisor, the web master, each web worker, each Celery worker's main process and any pool
    children, beat, and each model server (by instance name; its recorded pid is its sandbox's launcher, so a
    reading is that process and everything below it, runtime/sandbox_exec.py). A role keeps its process until
    that process is gone; a new one (the supervisor's, gunicorn's or reconcile's replacement) then takes it,
    so a role's readings may belong to several pids in turn, and the report compares like with like: the same
    pid from after the warm-up to the end, or, for a replaced one, its replacement at the same age."""

    def __init__(self, studio: SupervisedStudio, every: float = 10) -> None:
        self.studio = studio
        self.every = every
        self.began = time.monotonic()
        # role -> [(seconds into the run, pid, age of the pid in s, {RssAnon, RssFile, RssShmem, rss})]
        self.readings: dict[str, list[tuple[float, int, float, dict[str, float]]]] = {}
        self.slots: dict[str, list[int]] = {}  # a many-process role's pids, kept in place while they live
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.read()  # the end reading
        self.stop.set()
        self.thread.join(timeout=60)

    def _run(self) -> None:
        while not self.stop.wait(self.every):
            try:
                self.read()
            except Exception as exc:  # noqa: BLE001 - a reading lost to a race must not end the watch
                print(f"  memory reading failed: {exc!r}", flush=True)

    def _slotted(self, group: str, pids: list[int]) -> list[tuple[str, int]]:
        """`group 1..n` roles for `pids`: a live pid keeps its number, a new one takes a number left free."""
        slots = self.slots.setdefault(group, [])
        live = set(pids)
        new = [pid for pid in pids if pid not in slots]
        for i, pid in enumerate(slots):
            if pid not in live and new:
                slots[i] = new.pop(0)
        slots.extend(new)
        return [(f"{group} {i}", pid) for i, pid in enumerate(slots, 1) if pid in live]

    def processes(self) -> list[tuple[str, list[int]]]:
        """(role, [pid and the pids counted with it]) of every long-lived process now."""
        from endpoints_app.runtime.sandbox_exec import descendants

        studio = self.studio
        found: list[tuple[str, list[int]]] = [("supervisor", [studio.proc.pid])]
        servers = studio.instance_pids()
        parts = studio.parts()
        for part, pid in sorted(parts.items()):
            if part == "web":
                found.append(("web master", [pid]))
                found += [(role, [child]) for role, child in self._slotted("web worker", children_of(pid))]
            elif part.startswith("worker-"):
                found.append((f"{part} main", [pid]))
                pool = [child for child in children_of(pid)
                        if child not in servers.values() and "celery" in " ".join(cmdline(child))]
                found += [(role, [child]) for role, child in self._slotted(f"{part} pool child", pool)]
            else:
                found.append((part, [pid]))
        for name, pid in sorted(servers.items()):
            found.append((f"model server {name}", [pid, *descendants(pid)]))
        return found

    def read(self) -> None:
        at = time.monotonic() - self.began
        for role, pids in self.processes():
            readings = [m for m in map(memory_mb, pids) if m is not None]
            age = age_s(pids[0])
            if not readings or age is None:
                continue  # it ended between the listing and the reading
            total = {key: round(sum(m[key] for m in readings), 1) for key in readings[0]}
            self.readings.setdefault(role, []).append((round(at, 1), pids[0], round(age, 1), total))

    # A process's warm-up ends once it is `warmup` s old, the run is past its warm-up, and its RssFile grew less
    # than SETTLED_MB over the last SETTLED_S: pages of mapped files (a GGUF model, torch's libraries) are
    # counted as they are first touched, which is loading, not growth. At the latest it ends a third into the run.
    SETTLED_MB = 1.0
    SETTLED_S = 60.0

    def _warm(self, readings: list, at: int, warmup: float, latest: float) -> bool:
        t, pid, age, m = readings[at]
        if t < warmup or age < warmup:
            return False
        if t >= latest:
            return True
        before = [r for r in readings[:at] if r[1] == pid and r[0] <= t - self.SETTLED_S]
        return bool(before) and m["RssFile"] - before[-1][3]["RssFile"] < self.SETTLED_MB

    def report(self, warmup: float, run_s: float) -> list[dict]:
        """Per role: its first reading after the warm-up (see _warm) and its last one. When the pid changed
        between them (a fault replaced the process), the last pid is compared with itself at the age the first
        had after its warm-up, never with its predecessor; a successor younger than that has no growth to show.
        A role whose processes never got past their warm-up (a batch job's servers, for one) is not long-lived:
        listed apart, without growth."""
        rows = []
        latest = max(warmup, run_s / 3)
        for role, readings in self.readings.items():
            last = readings[-1]
            warm = next((r for i, r in enumerate(readings) if self._warm(readings, i, warmup, latest)), None)
            row: dict = {"role": role, "end": {"pid": last[1], "age_s": last[2], "t_s": last[0], **last[3]}}
            if warm is None:
                row["short_lived"] = len({r[1] for r in readings})
                rows.append(row)
                continue
            row["warm"] = {"pid": warm[1], "age_s": warm[2], "t_s": warm[0], **warm[3]}
            row["pids"] = list(dict.fromkeys(r[1] for r in readings if r[0] >= warm[0]))
            if last[1] == warm[1]:
                row["compare"] = row["warm"]
            else:
                row["replaced"] = len(row["pids"]) - 1
                # ... and over SETTLED_S at least: a successor reaching that age just before the end shows nothing.
                same_age = [r for r in readings
                            if r[1] == last[1] and r[2] >= warm[2] and r[0] <= last[0] - self.SETTLED_S]
                row["compare"] = ({"pid": same_age[0][1], "age_s": same_age[0][2], "t_s": same_age[0][0],
                                   **same_age[0][3]} if same_age else None)
            if row["compare"] and row["compare"]["rss"]:
                row["growth_pct"] = round((last[3]["rss"] - row["compare"]["rss"]) / row["compare"]["rss"] * 100, 1)
            rows.append(row)
        return rows


def inject(studio: SupervisedStudio, fault: str, session: requests.Session, base: str) -> dict:
    """Cause one fault; return when what it hurt is back (or 120 s passed), with the time that took."""
    at = time.monotonic()
    record = {"fault": fault, "at": at}
    try:
        if fault in ("worker-1", "worker-2", "beat", "web"):
            pid = studio.pid_of(fault)
            studio.kill(pid)
            record["replaced_s"] = round(studio.replaced(fault, pid, 120), 1)
        elif fault == "web-worker":
            victim = studio.web_workers()[0]
            studio.kill(victim)
            wait_until(lambda: victim not in studio.web_workers() and len(studio.web_workers()) >= 2, 120,
                       "a new web worker")
            record["replaced_s"] = round(time.monotonic() - at, 1)
        else:
            ready = {i["name"]: i["pid"] for i in session.get(
                f"{base}{WS}/online-endpoints/soak/deployments/blue", timeout=60).json()["instances"]
                if i["state"] == "Ready"}
            name, pid = sorted(ready.items())[0]
            if fault == "model-server":
                studio.kill(pid)
            else:
                studio.kill(pid, signal.SIGSTOP)

            def back() -> bool:
                now = {i["name"]: (i["pid"], i["state"]) for i in session.get(
                    f"{base}{WS}/online-endpoints/soak/deployments/blue", timeout=60).json()["instances"]}
                return now.get(name, (None, None))[1] == "Ready" and now[name][0] != pid

            try:
                wait_until(back, 120, f"{name} replaced", interval=0.5)
            finally:
                if fault == "hang-model-server" and alive(pid):
                    studio.kill(pid, signal.SIGCONT)
            record["replaced_s"] = round(time.monotonic() - at, 1)
    except TimeoutError as exc:
        record["error"] = str(exc)
    print(f"  fault {fault}: {record.get('replaced_s', record.get('error'))}", flush=True)
    return record


def print_report(report: dict) -> None:
    print(f"\nsoak: {report['configuration']}, {report['minutes']:g} min")
    total = Counter()
    for stream, counts in report.get("streams", {}).items():
        total.update(counts)
        print(f"  {stream:13} {dict(counts)}")
    counted = sum(n for outcome, n in total.items() if outcome != "429")
    ok = total.get("200", 0)
    rate = 100 * ok / counted if counted else 0.0
    print(f"success rate excluding 429s: {rate:.3f} % of {counted} calls   goal >= 99.9 %   "
          f"{'OK' if rate >= 99.9 else 'MISSED'}")
    print("faults (part back / last failed call after it / failed calls):")
    for fault in report.get("faults", []):
        print(f"  {fault['fault']:18} {fault.get('replaced_s', fault.get('error'))!s:>6} s  "
              f"{fault['calls_recovered_s']:6.1f} s  {fault['failed_calls']}")
    memory = report.get("memory", [])
    if memory:
        print(f"resident memory (MB: RssAnon + RssFile + RssShmem = RSS) per role, after its warm-up (>= "
              f"{report['warmup_s']:g} s old and into the run, RssFile grown < {MemoryWatch.SETTLED_MB:g} MB over "
              f"{MemoryWatch.SETTLED_S:g} s) -> at the end:")
        worst, young, short = 0.0, 0, []

        def reading(r: dict) -> str:
            return (f"{r['RssAnon']:6.1f} + {r['RssFile']:5.1f} + {r['RssShmem']:4.1f} = {r['rss']:6.1f} "
                    f"(pid {r['pid']}, {r['age_s']:.0f} s old, {r['t_s']:.0f} s into the run)")

        for row in memory:
            end, compare = row["end"], row.get("compare")
            if "short_lived" in row:
                short.append(end["age_s"])
                continue

            def growth(start: dict, end: dict = end, pct: float = row.get("growth_pct", 0.0)) -> str:
                return (f"{pct:+.1f} % (anon {end['RssAnon'] - start['RssAnon']:+.1f}, "
                        f"file {end['RssFile'] - start['RssFile']:+.1f} MB)")

            print(f"  {row['role']}")
            if "replaced" not in row:
                print(f"       {reading(row['warm'])}\n    -> {reading(end)}   {growth(row['warm'])}")
            else:
                print(f"       {reading(row['warm'])}: REPLACED by faults ({row['replaced']}x); the last successor:")
                if compare is None:
                    young += 1
                    print(f"       {reading(end)}: not {row['warm']['age_s']:.0f} s old "
                          f"{MemoryWatch.SETTLED_S:g} s before the end, nothing to compare")
                else:
                    print(f"       {reading(compare)}\n    -> {reading(end)}   {growth(compare)}")
            if "growth_pct" in row:
                worst = max(worst, row["growth_pct"])
        if short:
            print(f"  {len(short)} role(s) never past a warm-up, not long-lived (a batch job's servers): the oldest "
                  f"{max(short):.0f} s old")
        print(f"largest growth {worst:+.1f} % of RSS (each process against itself; {young} successor(s) too young to "
              f"compare over {MemoryWatch.SETTLED_S:g} s)   goal within 10 %   {'OK' if worst <= 10 else 'MISSED'}")
    for stream, figures in report.get("usage", {}).items():
        equal = figures["client_answered"] == figures["usage_requests"]
        print(f"usage {stream:11} client answered {figures['client_answered']} vs usage API {figures['usage_requests']}"
              f" (2xx {figures['client_2xx']} vs {figures['usage_2xx']})   goal equal   {'OK' if equal else 'MISSED'}")
    batch = report.get("batch", {})
    if batch:
        print(f"batch: {batch['jobs']} jobs, rows in {batch['in']} vs rows out {batch['out']}   goal equal   "
              f"{'OK' if batch['in'] == batch['out'] else 'MISSED'}; duplicated rows {batch['duplicates']}; "
              f"failed jobs: {batch['failed_jobs']}")
    out = ROOT / "bench" / "results" / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
