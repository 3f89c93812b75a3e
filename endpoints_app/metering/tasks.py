"""Metering tasks run by beat: usage rollup (and budget warnings after it), and
CPU/memory samples of the instance processes on this node."""

import logging
import os
import time
from datetime import timedelta

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from endpoints_app.controller.tasks import paused
from endpoints_app.gateway.metering import prune_segment_names
from endpoints_app.metering.rollup import rollup_usage
from endpoints_app.models import Instance, InstanceSample, InstanceState
from endpoints_app.services.usage import check_all_budgets

log = logging.getLogger(__name__)

SAMPLE_RETENTION = timedelta(days=31)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@shared_task(name="metering.rollup", ignore_result=True)
def rollup() -> None:
    if paused():  # the first rollup after resuming catches up from its cursor
        return
    cursor = rollup_usage()
    log.debug("usage rolled up until %s", cursor)
    prune_segment_names()
    check_all_budgets()


def _cpu_seconds_and_rss(pid: int) -> tuple[float, float] | None:
    """Process CPU time (user + system, seconds) and resident memory (MB) from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as fh:
            resident_pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    # After the ")" of the command name: fields[11] is utime, fields[12] is stime (stat(5) fields 14 and 15).
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return cpu, resident_pages * PAGE_SIZE / 1024 / 1024


def sample_instances(interval: float = 1.0) -> int:
    """Sample the live instances on this node: CPU over `interval` seconds and resident memory."""
    node = settings.STUDIO_NODE_NAME
    live = Instance.objects.filter(pid__isnull=False).exclude(state__in=[InstanceState.STOPPED, InstanceState.FAILED])
    if node:
        live = live.filter(node__name=node)
    instances = list(live)
    first = {i.pk: _cpu_seconds_and_rss(i.pid) for i in instances}
    started = time.monotonic()
    time.sleep(interval)
    elapsed = time.monotonic() - started
    now = timezone.now()
    samples = []
    for inst in instances:
        before, after = first.get(inst.pk), _cpu_seconds_and_rss(inst.pid)
        if before is None or after is None:
            continue
        cpu_percent = max(0.0, 100 * (after[0] - before[0]) / elapsed)
        samples.append(InstanceSample(instance=inst, time=now, cpu_percent=round(cpu_percent, 2),
                                      memory_mb=round(after[1], 1)))
    InstanceSample.objects.bulk_create(samples)
    InstanceSample.objects.filter(time__lt=now - SAMPLE_RETENTION).delete()
    return len(samples)


@shared_task(name="metering.sample_instances", ignore_result=True)
def sample() -> None:
    if not paused():
        sample_instances()
