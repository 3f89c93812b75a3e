"""`make run` as a user runs it: starts, answers /healthz, and Ctrl-C leaves no process behind."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def processes_using(data_dir: Path) -> list[int]:
    """Pids whose environment names this data dir: web, worker, beat and model servers all inherit it."""
    marker = f"STUDIO_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                state = (entry / "stat").read_text().split(") ")[-1].split()[0]
                if state != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_make_run_serves_healthz_and_ctrl_c_stops_everything(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_ALLOW_ASYNC_UNSAFE")}
    env.update(STUDIO_DATA_DIR=str(data_dir), STUDIO_PORT=str(port), STUDIO_ADMIN_PASSWORD="s3cret-pass")
    log = (tmp_path / "make-run.log").open("w")
    proc = subprocess.Popen(["make", "run"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        status = None
        while time.monotonic() < deadline:
            try:
                response = requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                status = response.status_code
                if status == 200:
                    break
            except requests.RequestException:  # not up yet, or busy booting workers
                pass
            assert proc.poll() is None, (tmp_path / "make-run.log").read_text()[-3000:]
            time.sleep(0.5)
        assert status == 200, (tmp_path / "make-run.log").read_text()[-3000:]
        assert response.json() == {"status": "ok"}
        login = requests.get(f"http://127.0.0.1:{port}/login/", timeout=5)
        assert login.status_code == 200 and "Sign in" in login.text
        assert processes_using(data_dir), "expected web and worker processes while running"
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    time.sleep(0.5)
    assert processes_using(data_dir) == []
    assert (data_dir / "studio.sqlite3").exists()
