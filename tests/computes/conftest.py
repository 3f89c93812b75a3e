"""Fixtures for computes: a staff (IT) user, and a real Ray head started the way the studio starts its
own (controller/clusters.py ManagedHead: `ray start --head --block --node-ip-address=127.0.0.1`), once
per module, stopped at the end with its whole process group.

Ports: the head takes the 100 ports from STUDIO_TEST_RAY_HEAD_PORT_MIN (default 31500: outside the
instance ports 20000-29999 and the three-node cluster's STUDIO_TEST_RAY_PORT_MIN..MAX, tests/ray_cluster.py,
which a session may keep running meanwhile); ports from MIN+100 to STUDIO_TEST_RAY_HEAD_PORT_MAX (default
MIN+199) are spare ones the tests use for addresses where no Ray head answers."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from tests.conftest import PASSWORD, api_client_for
from tests.endpoints.conftest import catalog_model, node  # noqa: F401  (a catalog model; a live node)
from tests.live import ROOT

RAY_PORT_MIN = int(os.environ.get("STUDIO_TEST_RAY_HEAD_PORT_MIN") or 31500)
RAY_PORT_MAX = int(os.environ.get("STUDIO_TEST_RAY_HEAD_PORT_MAX") or RAY_PORT_MIN + 199)
HEAD_START_SECONDS = 90


def spare_port() -> int:
    """A free port of the range that no Ray head uses."""
    for port in range(RAY_PORT_MIN + 100, RAY_PORT_MAX + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {RAY_PORT_MIN + 100}-{RAY_PORT_MAX}")


@pytest.fixture
def staff(workspace):
    return get_user_model().objects.create_user("ivy", password=PASSWORD, is_staff=True)


@pytest.fixture
def staff_api(staff):
    return api_client_for(staff)


@dataclass
class Head:
    address: str
    data_dir: Path

    @property
    def auth_env(self) -> dict[str, str]:
        """Ray's variables that carry the head's token to a client (as IT gives them to the studio for a
        token-authenticated cluster of its own)."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.data_dir / "ray" / "auth-token")}


def wait_for_live_node(head: Head, timeout: float) -> None:
    """Until the head's GCS lists a live node (its raylet registers after the GCS port opens)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        done = subprocess.run([sys.executable, "-m", "endpoints_app.controller.ray_probe", head.address, "3"],
                              capture_output=True, text=True, timeout=15, cwd=ROOT,
                              env={**os.environ, **head.auth_env})
        last = done.stdout.strip() or done.stderr.strip()[-500:]
        if done.returncode == 0 and any(n["alive"] for n in json.loads(done.stdout)["nodes"]):
            return
        time.sleep(1)
    pytest.fail(f"no live Ray node at {head.address} within {timeout} s: {last}")


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    """A real Ray head on this machine, as the studio's supervisor starts one (token authentication on);
    yields its Head (address, data dir)."""
    from endpoints_app.controller.clusters import ManagedHead, head_dir

    data_dir = tmp_path_factory.mktemp("ray-data")
    # The head's settings only while it starts and stops: the tests keep their own.
    head_settings = override_settings(STUDIO_RAY_PORT_MIN=RAY_PORT_MIN, DATA_DIR=data_dir, STUDIO_RAY_HEAD_CPUS=2)
    head = ManagedHead()
    with head_settings:
        process = head.start()
    try:
        with head_settings:
            ready = head.wait_ready(HEAD_START_SECONDS)
        if not ready:
            log = (Path(data_dir) / "logs" / "ray-head.log").read_text(errors="replace")[-3000:]
            pytest.fail(f"the Ray head did not answer within {HEAD_START_SECONDS} s (exit {process.poll()}):\n{log}")
        head_info = Head(f"127.0.0.1:{RAY_PORT_MIN}", Path(data_dir))
        wait_for_live_node(head_info, HEAD_START_SECONDS)
        yield head_info
    finally:
        with head_settings:
            head.stop(timeout=20)
            assert not (head_dir() / "head.pid").exists()
    deadline = time.monotonic() + 10  # SIGKILLed members may take a moment to be gone
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("the Ray head left processes in its group")
