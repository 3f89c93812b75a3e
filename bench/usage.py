"""Monitoring tab and usage API over 30 days of per-minute data for 100 deployments.

Run: .venv/bin/python bench/usage.py [--endpoints 20] [--deployments-per-endpoint 5] [--days 30] [--requests 20]
     .venv/bin/python bench/usage.py --keep          (keeps the data dir, prints it)
     .venv/bin/python bench/usage.py --reuse DIR     (times against a kept data dir, no seeding)

Makes a throwaway data dir (SQLite, the embedded default, DEBUG off), migrates, and seeds:
- 20 endpoints x 5 deployments = 100 deployments (2 endpoints serverless, with token counts),
  one instance per deployment running the whole time, and one instance-type price change;
- one UsageMinute row per deployment per minute for 30 days (4.32 million rows), inserted
  with executemany in big transactions; each row's latency histogram is one of 64 seeded
  random templates and its request count is that histogram's total, with per-status-code
  counts (200, 401, 429, 503) that add up to it;
- the hourly and daily rollups, made by the real rollup (rollup_usage(), timed), which
  leaves the last partial hour to be read from minute rows, as in production.
Then times requests through Django's test Client: the whole request/response cycle in this
process (middleware, view, ORM, plotly figure building, template or JSON), no network.

--reuse times the same requests against the same rows: the clock (django.utils.timezone.now)
is set back to the instant the kept run began timing, and ticks from there, so every range
("last 24h", the rollup cursor's partial hour, the month) covers what it covered then."""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402

META = "bench-usage.json"  # what --reuse needs to know about a kept data dir


def seed(args) -> tuple[datetime, int, object]:
    """Migrate-time data: the workspace, endpoints, deployments, instances, a price change,
    the minute rows and their rollups. Returns (now, minute rows, the bench user)."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from endpoints_app.catalog.instance_types import seed_instance_types
    from endpoints_app.metering import costs
    from endpoints_app.metering.buckets import LATENCY_BUCKETS_MS
    from endpoints_app.metering.rollup import rollup_usage
    from endpoints_app.models import (
        CatalogModel,
        Deployment,
        Endpoint,
        Instance,
        InstanceType,
        Membership,
        Node,
        Role,
        UsageMinute,
        UsageRollup,
        Workspace,
    )

    seed_instance_types()

    workspace = Workspace.objects.create(name="bench")
    user = get_user_model().objects.create_user("bench", password="bench-password")
    Membership.objects.create(workspace=workspace, user=user, role=Role.OWNER)
    model = CatalogModel.objects.create(name="bench-model", task="classification", format="sklearn", license="MIT",
                                        deployment_kinds=["online"])
    chat = CatalogModel.objects.create(name="bench-chat", task="chat-completion", format="gguf", license="MIT",
                                       deployment_kinds=["serverless"], price_input_per_1k="0.0005",
                                       price_output_per_1k="0.0015")
    node = Node.objects.create(name="bench-node", cores=64, memory_gb=256, queue="bench")
    types = list(InstanceType.objects.all())

    now = timezone.now()
    start = (now - timedelta(days=args.days)).replace(second=0, microsecond=0)
    end = now.replace(second=0, microsecond=0)
    deployments = []
    for e in range(args.endpoints):
        serverless = e < 2
        endpoint = Endpoint.objects.create(
            workspace=workspace, name=f"ep-{e:02d}", provisioning_state="Succeeded",
            kind=Endpoint.Kind.SERVERLESS if serverless else Endpoint.Kind.ONLINE,
        )
        names = [f"dep-{d}" for d in range(args.deployments_per_endpoint)]
        endpoint.traffic = {n: (100 // len(names)) + (100 % len(names) if i == 0 else 0) for i, n in enumerate(names)}
        endpoint.save()
        for i, name in enumerate(names):
            dep = Deployment.objects.create(endpoint=endpoint, name=name, model=chat if serverless else model,
                                            instance_type=types[(e + i) % len(types)], provisioning_state="Succeeded")
            Instance.objects.create(deployment=dep, name=f"{endpoint.name}-{name}-0", node=node, state="Ready",
                                    started_at=start, ready_at=start)
            deployments.append((endpoint.pk, name, serverless))
    # A price change in the middle of the range: cost reads must split there.
    itype = types[0]
    costs.record_instance_price(itype, itype.price_per_hour, itype.price_per_hour * 2, start + timedelta(days=11))

    rng = random.Random(42)
    templates = []
    for _ in range(64):
        total = rng.randint(0, 60)
        histogram = [0] * len(LATENCY_BUCKETS_MS)
        latency_sum = 0.0
        for _ in range(total):
            latency = rng.lognormvariate(3.2, 0.8)
            latency_sum += latency
            histogram[next(i for i, b in enumerate(LATENCY_BUCKETS_MS) if latency <= b)] += 1
        s5, s4 = total // 40, total // 25
        codes = {"200": total - s4 - s5, "401": s4 // 2, "429": s4 - s4 // 2, "503": s5}
        templates.append((total, latency_sum, json.dumps(histogram), json.dumps({c: n for c, n in codes.items() if n})))

    minutes = int((end - start).total_seconds() // 60)
    table = UsageMinute._meta.db_table
    sql = (f"INSERT INTO {table} (endpoint_id, deployment, minute, requests, status_2xx, status_4xx, status_5xx, "
           "bytes_in, bytes_out, tokens_in, tokens_out, latency_ms_sum, latency_histogram, status_codes) "
           "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    total_rows = len(deployments) * minutes
    print(f"seeding {len(deployments)} deployments x {minutes} minutes = {total_rows:,} minute rows ...", flush=True)
    seeded = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous=OFF")
    batch: list[tuple] = []
    rows = 0
    for m in range(minutes):
        stamp = (start + timedelta(minutes=m)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
        for endpoint_id, name, serverless in deployments:
            total, latency_sum, histogram, codes = templates[rng.randrange(64)]
            s5 = total // 40
            s4 = total // 25
            tokens_in, tokens_out = (total * 40, total * 90) if serverless else (0, 0)
            batch.append((endpoint_id, name, stamp, total, total - s4 - s5, s4, s5, total * 300, total * 500,
                          tokens_in, tokens_out, latency_sum, histogram, codes))
        if len(batch) >= 50_000:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.executemany(sql, batch)
            rows += len(batch)
            batch = []
    if batch:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, batch)
        rows += len(batch)
    print(f"  {rows:,} rows in {time.perf_counter() - seeded:.0f} s", flush=True)

    rolled = time.perf_counter()
    cursor_at = rollup_usage()
    print(f"rollup_usage() catch-up over {args.days} days: {time.perf_counter() - rolled:.0f} s, "
          f"{UsageRollup.objects.filter(period='hour').count():,} hour rows, "
          f"{UsageRollup.objects.filter(period='6h').count():,} 6-hour rows, "
          f"{UsageRollup.objects.filter(period='day').count():,} day rows, cursor {cursor_at:%Y-%m-%d %H:%M} UTC "
          f"(minute rows after it are read directly)", flush=True)
    again = time.perf_counter()
    rollup_usage()
    print(f"rollup_usage() when up to date: {(time.perf_counter() - again) * 1000:.0f} ms\n", flush=True)

    return now, rows, user


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=20)
    parser.add_argument("--deployments-per-endpoint", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--keep", action="store_true", help="keep the data dir (printed) for a second look")
    parser.add_argument("--reuse", metavar="DIR", help="time against a data dir kept by --keep; no seeding")
    args = parser.parse_args()

    meta: dict = {}
    if args.reuse:
        data_dir = args.reuse
        meta = json.loads((Path(data_dir) / META).read_text())
        args.endpoints, args.deployments_per_endpoint, args.days = (
            meta["endpoints"], meta["deployments_per_endpoint"], meta["days"])
    else:
        data_dir = tempfile.mkdtemp(prefix="studio-bench-usage-")
    os.environ["STUDIO_DATA_DIR"] = data_dir
    os.environ["DEBUG"] = "0"
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(50)
    os.environ.pop("DATABASE_URL", None)
    os.environ["LOG_LEVEL"] = "WARNING"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.utils import timezone

    from endpoints_app.models import ApiToken

    setup_test_environment()
    call_command("migrate", verbosity=0)
    if args.reuse:
        # The kept run's clock: it began timing at meta["clock"]; tick on from there.
        clock = datetime.fromisoformat(meta["clock"])
        real_now = timezone.now
        offset = clock - real_now()
        timezone.now = lambda: real_now() + offset
        now = datetime.fromisoformat(meta["now"])
        rows = meta["rows"]
        user = get_user_model().objects.get(username="bench")
        print(f"reusing {data_dir}: {rows:,} minute rows seeded up to {now:%Y-%m-%d %H:%M} UTC, "
              f"clock set to {clock:%Y-%m-%d %H:%M:%S} UTC\n", flush=True)
    else:
        now, rows, user = seed(args)
        meta = {"endpoints": args.endpoints, "deployments_per_endpoint": args.deployments_per_endpoint,
                "days": args.days, "rows": rows, "now": now.isoformat(), "clock": timezone.now().isoformat()}
        (Path(data_dir) / META).write_text(json.dumps(meta))
    _, token = ApiToken.objects.create(user=user)
    deployments = args.endpoints * args.deployments_per_endpoint
    start = (now - timedelta(days=args.days)).replace(second=0, microsecond=0)
    end = now.replace(second=0, microsecond=0)

    browser = Client()
    browser.force_login(user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    htmx = {"HTTP_HX_REQUEST": "true"}
    usage = "/api/v1/workspaces/bench/usage"
    online = f"ep-{min(5, args.endpoints - 1):02d}"
    since = f"{start:%Y-%m-%dT%H:%M}Z"
    cases = [
        ("Monitoring tab 1h (5 deployments)", browser, f"/endpoints/{online}/monitoring/?range=1h", htmx),
        ("Monitoring tab 24h", browser, f"/endpoints/{online}/monitoring/?range=24h", htmx),
        ("Monitoring tab 7d", browser, f"/endpoints/{online}/monitoring/?range=7d", htmx),
        ("Monitoring tab 30d", browser, f"/endpoints/{online}/monitoring/?range=30d", htmx),
        ("Monitoring tab 30d, serverless", browser, "/endpoints/ep-00/monitoring/?range=30d", htmx),
        ("usage API, workspace, last 24h (1h)", api, usage, {}),
        ("usage API, workspace, 30d (default 1d)", api, f"{usage}?from={since}", {}),
        ("usage API, workspace, 30d, 6h", api, f"{usage}?from={since}&interval=6h", {}),
        ("usage API, endpoint, 30d, 1h", api, f"{usage}?endpoint={online}&from={since}&interval=1h", {}),
        ("usage API, workspace, 1h, 1m", api, f"{usage}?from={end - timedelta(hours=1):%Y-%m-%dT%H:%M}Z", {}),
        ("Usage page (this month)", browser, "/usage/", {}),
        ("/metrics", browser, "/metrics", {}),
    ]
    print(f"{rows:,} minute rows, {deployments} deployments, {args.requests} requests each, SQLite, DEBUG off\n")
    print(f"{'request':<40} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'bytes':>9}")
    results = []
    for label, client, url, headers in cases:
        for _ in range(2):  # warm up
            response = client.get(url, **headers)
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
        queries: list[str] = []

        def count(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            response = client.get(url, **headers)
        timings = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(url, **headers)
            timings.append((time.perf_counter() - started) * 1000)
        results.append((label, statistics.median(timings), percentile(timings, 0.95)))
        print(f"{label:<40} {statistics.median(timings):>10.1f} {percentile(timings, 0.95):>8.1f} "
              f"{len(queries):>8} {len(response.content):>9}", flush=True)
    over = [label for label, _, p95 in results if p95 >= 300]
    print(f"\ngoal p95 < 300 ms: {'met by every case' if not over else 'missed by: ' + ', '.join(over)}")
    if args.keep or args.reuse:
        print(f"data dir kept: {data_dir}")
    else:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
