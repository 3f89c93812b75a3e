"""`make run`: web, worker and beat under one supervisor in the foreground.

Ctrl-C (SIGINT) or SIGTERM stops every child, then every model-server
instance they started, within 30 s, and leaves no process behind."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

# Web and worker get this long after SIGTERM; a provisioning task waiting on a
# readiness probe must not hold Ctrl-C past the 30 s users are promised.
GRACE_SECONDS = 12
INSTANCE_GRACE_SECONDS = 8


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def commands(port: int, host: str, web_workers: int, concurrency: int, node: str) -> dict[str, list[str]]:
    return {
        "web": [
            _venv_bin("gunicorn"), "portal.asgi:application",
            "-k", "portal.workers.StudioUvicornWorker",
            "-b", f"{host}:{port}", "-w", str(web_workers),
            # --timeout: a worker whose event loop is stuck this long is replaced; --keep-alive: idle
            # connections close after 5 s (limit on connections: portal/workers.py).
            "--graceful-timeout", "10", "--timeout", "120", "--keep-alive", "5",
            "--access-logfile", "-",
        ],
        "worker": [
            _venv_bin("celery"), "-A", "portal", "worker", "-B",
            "-Q", f"celery,node.{node}", "-n", f"worker@{node}",
            "-c", str(concurrency), "-l", "info",
        ],
    }


def stop_instances(data_dir: Path) -> None:
    """Stop model servers recorded by the controller (one pid file per instance)."""
    pid_dir = data_dir / "run" / "instances"
    pids = []
    for pid_file in pid_dir.glob("*.pid"):
        try:
            pids.append(int(pid_file.read_text().strip()))
        except (ValueError, OSError):
            continue
    from endpoints_app.runtime import sandbox

    # Each sandboxed instance has its own uid: what left the group with setsid() is found by it.
    uids = {uid for uid in (sandbox.uid_of(p) for p in pids) if uid is not None}
    _signal_groups(pids, signal.SIGTERM)
    deadline = time.monotonic() + INSTANCE_GRACE_SECONDS
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.2)
    _signal_groups([p for p in pids if _alive(p)], signal.SIGKILL)
    for uid in uids:
        sandbox.kill_uid(uid)
    for pid_file in pid_dir.glob("*.pid"):
        pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    """A zombie counts as gone: an instance is usually the worker's child, and only the worker
    can reap it (waiting out the grace period for it cost every shutdown 8 s)."""
    from endpoints_app.controller.process import proc_state

    try:
        os.waitpid(pid, os.WNOHANG)  # reaps it when it is ours
    except ChildProcessError:
        pass
    return proc_state(pid) not in (None, "Z", "X")


def _signal_groups(pids: list[int], sig: int) -> None:
    from endpoints_app.controller.process import signal_group  # Django settings load lazily, if at all

    for pid in pids:
        signal_group(pid, sig)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")
    from django.conf import settings

    from portal.env import ImproperEnv

    try:
        # The first read loads portal/settings.py, which checks every variable.
        port, host, data_dir = settings.STUDIO_PORT, settings.STUDIO_HOST, settings.DATA_DIR
    except ImproperEnv as error:
        print(f"studio: {error}. See the configuration table in README.md.", file=sys.stderr, flush=True)
        return 2

    children: dict[str, subprocess.Popen] = {}
    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    argv_by_name = commands(port, host, settings.STUDIO_WEB_WORKERS, settings.STUDIO_WORKER_CONCURRENCY,
                            settings.STUDIO_NODE_NAME)
    for name, argv in argv_by_name.items():
        # Own session: the terminal's Ctrl-C reaches only us, and we stop children in order.
        children[name] = subprocess.Popen(argv, start_new_session=True)
    print(f"Studio is starting on http://{host}:{port}/  (Ctrl-C stops everything)", flush=True)

    exit_code = 0
    while not stopping:
        for name, proc in children.items():
            if proc.poll() is not None:
                print(f"{name} exited with status {proc.returncode}; stopping the studio.", flush=True)
                exit_code = proc.returncode or 1
                stopping = True
                break
        time.sleep(0.3)

    print("Stopping web, worker and beat...", flush=True)
    for proc in children.values():
        if proc.poll() is None:
            # The main process only: gunicorn and celery stop their own workers gracefully.
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for proc in children.values():
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in children.values():
        # Kill whatever is left in each child's group (gunicorn/celery pool processes too).
        _signal_groups([proc.pid], signal.SIGKILL)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    print("Stopping model servers...", flush=True)
    stop_instances(data_dir)
    print("Stopped.", flush=True)
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
