"""The squashed migration (0001_squashed_0018_environments) upgrades an existing database: a copy
of a populated database built by the pre-squash series (0001_initial ... 0018_environments) and one
left half-way (at 0016) both migrate to the new head with their rows intact, and end with the same
schema as a new database built by the squashed migration alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SQUASHED = "0001_squashed_0018_environments.py"

# Runs in a child process (its own settings and SQLite file): `migrate`, then an optional step.
CHILD = r"""
import json, sys
import django
django.setup()
from django.core.management import call_command
from django.db import connection

step, target = sys.argv[1], sys.argv[2]
if target == "-":
    call_command("migrate", verbosity=0)
else:
    from django.db.migrations.loader import MigrationLoader
    call_command("migrate", "endpoints_app", target, verbosity=0)
    for app in sorted(MigrationLoader(connection).migrated_apps - {"endpoints_app"}):
        call_command("migrate", app, verbosity=0)
if step == "populate":
    from django.contrib.auth import get_user_model
    from endpoints_app.models import Endpoint, Membership, Role, Workspace
    user = get_user_model().objects.create_user("ada", password="x-long-password-1")
    workspace = Workspace.objects.create(name="team")
    Membership.objects.create(user=user, workspace=workspace, role=Role.OWNER)
    Endpoint.objects.create(workspace=workspace, name="iris", primary_key_nonce="a", secondary_key_nonce="b")
if step == "report":
    from django.db.migrations.executor import MigrationExecutor
    from endpoints_app.models import Endpoint, Workspace
    executor = MigrationExecutor(connection)
    schema = {}
    with connection.cursor() as cursor:
        for table in sorted(connection.introspection.table_names(cursor)):
            if not table.startswith("endpoints_app_"):
                continue
            columns = sorted((c.name, c.type_code, c.null_ok) for c in
                             connection.introspection.get_table_description(cursor, table))
            constraints = connection.introspection.get_constraints(cursor, table)
            shapes = sorted(json.dumps([sorted(v["columns"] or []), v["unique"], v["primary_key"],
                                        v["foreign_key"], v["index"]], default=str)
                            for v in constraints.values())
            schema[table] = {"columns": columns, "constraints": shapes}
    print(json.dumps({
        "pending": [m.name for m, _ in executor.migration_plan(executor.loader.graph.leaf_nodes())],
        "endpoints": list(Endpoint.objects.values_list("workspace__name", "name")),
        "workspaces": list(Workspace.objects.values_list("name", flat=True)),
        "schema": schema,
    }, default=str))
"""


def _run(data_dir: Path, step: str, target: str = "-", migrations: str | None = None) -> str:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(STUDIO_DATA_DIR=str(data_dir), DATABASE_URL=f"sqlite:///{data_dir / 'studio.sqlite3'}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), str(data_dir.parent), env.get("PYTHONPATH")])))
    env["DJANGO_SETTINGS_MODULE"] = "portal.settings"
    if migrations:
        # The pre-squash series: the same files, without the squashed migration.
        (data_dir.parent / "presquash_settings.py").write_text(
            f"from portal.settings import *  # noqa\nMIGRATION_MODULES = {{'endpoints_app': '{migrations}'}}\n")
        env["DJANGO_SETTINGS_MODULE"] = "presquash_settings"
    done = subprocess.run([sys.executable, "-c", CHILD, step, target], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{step} {target} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def test_the_squashed_migration_upgrades_a_populated_pre_squash_database(tmp_path):
    old = tmp_path / "presquash_migrations"
    old.mkdir()
    for path in (REPO / "endpoints_app" / "migrations").glob("*.py"):
        if path.name != SQUASHED:
            shutil.copy(path, old / path.name)
    assert (REPO / "endpoints_app" / "migrations" / SQUASHED).exists()

    built, half, fresh = tmp_path / "built", tmp_path / "half", tmp_path / "fresh"
    for folder in (built, half, fresh):
        folder.mkdir()
    _run(built, "populate", "0018_environments", migrations="presquash_migrations")
    _run(half, "populate", "0016_oidc_identity", migrations="presquash_migrations")
    # The upgrade runs on copies, as an operator would keep the original.
    copies = {}
    for source in (built, half):
        copy = tmp_path / f"{source.name}-copy"
        copy.mkdir()
        shutil.copy(source / "studio.sqlite3", copy / "studio.sqlite3")
        copies[source.name] = copy

    new = json.loads(_run(fresh, "report").splitlines()[-1])
    assert new["pending"] == [] and new["workspaces"] == []
    for name, copy in copies.items():
        upgraded = json.loads(_run(copy, "report").splitlines()[-1])
        assert upgraded["pending"] == [], name
        assert upgraded["workspaces"] == ["team"] and upgraded["endpoints"] == [["team", "iris"]], name
        assert upgraded["schema"].keys() == new["schema"].keys(), name
        for table, shape in new["schema"].items():
            assert upgraded["schema"][table] == shape, (name, table)
