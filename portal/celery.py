import gc
import os

from celery import Celery
from celery.signals import worker_process_init

import portal.broker  # noqa: F401  (filesystem:// messages are written atomically)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Controller tasks live in endpoints_app/controller/tasks.py (provisioning, reconcile, batch jobs).
app.autodiscover_tasks(["endpoints_app.controller"])
# Metering tasks: endpoints_app/metering/tasks.py (rollups, instance samples).
app.autodiscover_tasks(["endpoints_app.metering"])


@worker_process_init.connect
def _freeze_inherited_objects(**_kwargs) -> None:
    """What a pool child inherits (Django, DRF, Celery, the studio's modules: ~75k objects) lives as long
    as the child: kept out of the collector's full passes, which otherwise walk it all (~30 ms, several
    times that under load) every few mini-batches."""
    gc.freeze()
