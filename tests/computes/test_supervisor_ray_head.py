"""`make run`'s supervisor owns the Ray head of a Ray compute without an address: it starts it once such
a compute exists (a real `ray start --head`), the compute then reads Ready with the head's node, and it
stops the head, leaving no process, once the compute is deleted."""

from __future__ import annotations

import os
import time

import pytest

from endpoints_app.controller import clusters
from endpoints_app.models import Compute
from tests.computes.conftest import HEAD_START_SECONDS, RAY_PORT_MIN

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_the_supervisor_starts_and_stops_the_studios_own_ray_head(settings, tmp_path):
    from portal.supervisor import RayHead

    settings.STUDIO_RAY_PORT_MIN, settings.DATA_DIR, settings.STUDIO_RAY_HEAD_CPUS = RAY_PORT_MIN, tmp_path, 1
    settings.STUDIO_COMPUTE_VIEW_CACHE_SECONDS = 0
    owner = RayHead()
    owner.check(time.monotonic())
    assert owner.head is None  # no Ray compute: nothing started

    compute = Compute.objects.create(name="here", type="ray", address="")
    owner.next_check = 0
    owner.check(time.monotonic())
    try:
        assert owner.head is not None and owner.head.running()
        pid = owner.head.process.pid
        deadline, seen = time.monotonic() + HEAD_START_SECONDS, None
        while time.monotonic() < deadline:
            seen = clusters.view(compute, use_cache=False)
            if seen.state == "Ready":
                break
            assert seen.state in ("Starting", "Unreachable"), seen
            time.sleep(1)
        assert seen is not None and seen.state == "Ready", seen
        assert [n["alive"] for n in seen.nodes] == [True] and seen.nodes[0]["resources"]["CPU"] == 1
        assert (tmp_path / "logs" / "ray-head.log").exists()

        compute.delete()
        owner.next_check = 0
        owner.check(time.monotonic())
        assert owner.head is None
    finally:
        owner.stop(timeout=20)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the Ray head's processes outlived its stop")
