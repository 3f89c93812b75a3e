"""Catalog page and catalog list API with 1,000 models: server time and query counts.

Run: .venv/bin/python bench/catalog.py [--models 1000] [--requests 60]

Makes a throwaway data dir (SQLite, the embedded default), migrates, seeds N catalog
models (latest of two versions each for a tenth of them, some workspace-registered),
then times requests through Django's test Client: the whole request/response cycle
in this process (middleware, view, ORM, template or serializer), no network."""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import percentile  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="studio-bench-catalog-")
    os.environ["STUDIO_DATA_DIR"] = data_dir
    # Production-like: DEBUG off (no query log), so a throwaway SECRET_KEY.
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

    from endpoints_app.models import ApiToken, CatalogModel, Membership, Role, Workspace

    setup_test_environment()
    call_command("migrate", verbosity=0)

    workspace = Workspace.objects.create(name="bench")
    user = get_user_model().objects.create_user("bench", password="bench-password")
    Membership.objects.create(workspace=workspace, user=user, role=Role.OWNER)
    _, token = ApiToken.objects.create(user=user)

    tasks = ["classification", "regression", "embeddings", "chat-completion", "text-generation"]
    formats = ["sklearn", "onnx", "sentence-transformers", "gguf", "custom"]
    licences = ["MIT", "Apache-2.0", "BSD-3-Clause", "CC-BY-4.0"]
    rows = []
    for index in range(args.models):
        own = index % 10 == 9
        rows.append(CatalogModel(
            registry="bench" if own else "studio",
            workspace=workspace if own else None,
            name=f"model-{index:04d}",
            version=1,
            display_name=f"Model {index}",
            task=tasks[index % len(tasks)],
            format=formats[index % len(formats)],
            license=licences[index % len(licences)],
            summary=f"Benchmark model number {index}, a {tasks[index % len(tasks)]} model.",
            deployment_kinds=["online", "batch"] if index % 3 else ["online", "serverless"],
            sample_request={"input_data": {"columns": ["a", "b", "c"], "data": [[1, 2, 3]]}},
            input_schema={"type": "object"},
        ))
        if index % 10 == 0:  # every tenth model has a second version
            rows.append(CatalogModel(
                registry="studio", name=f"model-{index:04d}", version=2, task=rows[-1].task,
                format=rows[-1].format, license=rows[-1].license, deployment_kinds=["online"],
                summary="Second version.",
            ))
    CatalogModel.objects.bulk_create(rows, batch_size=500)

    browser = Client()
    browser.force_login(user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")
    cases = [
        ("catalog page (full, 24 cards)", browser, "/catalog/", {}),
        ("catalog page, htmx filter", browser, "/catalog/?task=regression&search=model-01",
         {"HTTP_HX_REQUEST": "true"}),
        ("model page", browser, f"/catalog/model-{args.models // 2:04d}/", {}),
        ("models API list (50 rows)", api, "/api/v1/workspaces/bench/models", {}),
        ("models API list, filtered", api, "/api/v1/workspaces/bench/models?task=regression&deployment_kind=batch", {}),
        ("models API list (500 rows)", api, "/api/v1/workspaces/bench/models?limit=500", {}),
    ]
    print(f"{args.models} models ({CatalogModel.objects.count()} rows with versions), "
          f"{args.requests} requests each, SQLite, DEBUG off\n")
    print(f"{'request':<34} {'median ms':>10} {'p95 ms':>8} {'queries':>8} {'bytes':>8}")
    for label, client, url, headers in cases:
        for _ in range(5):  # warm up caches and connections
            client.get(url, **headers)
        queries: list[str] = []

        def count(execute, sql, params, many, context, queries=queries):
            queries.append(sql)
            return execute(sql, params, many, context)

        with connection.execute_wrapper(count):
            response = client.get(url, **headers)
        assert response.status_code == 200, (url, response.status_code)
        timings = []
        for _ in range(args.requests):
            started = time.perf_counter()
            response = client.get(url, **headers)
            timings.append((time.perf_counter() - started) * 1000)
        print(f"{label:<34} {statistics.median(timings):>10.1f} {percentile(timings, 0.95):>8.1f} "
              f"{len(queries):>8} {len(response.content):>8}")
    shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
