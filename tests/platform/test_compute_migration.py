"""Migration 0020_computes on a database that already has deployments: it creates the built-in
`local` compute and puts every existing deployment (online and batch, live and deleted) on it;
a deployment created afterwards without naming a compute lands on `local` too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Runs in a child process (its own SQLite file): migrate to 0019, add deployments with the models
# as they were then, migrate to the head, report.
CHILD = r"""
import json
import django
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

call_command("migrate", verbosity=0)
call_command("migrate", "endpoints_app", "0019_faults_usage_journal", verbosity=0)
old = MigrationExecutor(connection).loader.project_state(("endpoints_app", "0019_faults_usage_journal")).apps
Workspace, Endpoint, CatalogModel, InstanceType, Deployment = (
    old.get_model("endpoints_app", name)
    for name in ("Workspace", "Endpoint", "CatalogModel", "InstanceType", "Deployment"))
ws = Workspace.objects.create(name="team")
model = CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT")
itype = InstanceType.objects.create(name="Standard_DS2_v2", family="DSv2", cores=2, memory_gb=7, price_per_hour=1)
online = Endpoint.objects.create(workspace=ws, name="iris", kind="online", primary_key_nonce="a")
batch = Endpoint.objects.create(workspace=ws, name="scores", kind="batch", primary_key_nonce="c")
Deployment.objects.create(endpoint=online, name="blue", model=model, instance_type=itype)
Deployment.objects.create(endpoint=online, name="old", model=model, instance_type=itype, deleted_at=timezone.now())
Deployment.objects.create(endpoint=batch, name="nightly", model=model, instance_type=itype,
                          batch_settings={"mini_batch_size": 10})
call_command("migrate", verbosity=0)

from endpoints_app.models import Compute, Deployment as NewDeployment
from endpoints_app.models import CatalogModel as M, Endpoint as E, InstanceType as I
later = NewDeployment.objects.create(endpoint=E.objects.get(name="iris"), name="green", model=M.objects.get(),
                                     instance_type=I.objects.get())
print(json.dumps({
    "computes": list(Compute.objects.values_list("name", "type", "state")),
    "deployments": sorted(NewDeployment.all_objects.values_list("name", "compute__name")),
}))
"""


def test_existing_and_new_deployments_run_on_the_builtin_local_compute(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
    env.update(STUDIO_DATA_DIR=str(tmp_path), DATABASE_URL=f"sqlite:///{tmp_path / 'studio.sqlite3'}",
               DJANGO_SETTINGS_MODULE="portal.settings")
    done = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["computes"] == [["local", "local", "Ready"]]
    assert report["deployments"] == [["blue", "local"], ["green", "local"], ["nightly", "local"], ["old", "local"]]
