"""`make run`: web, STUDIO_WORKER_PROCESSES Celery workers and beat under one supervisor in the foreground.

Faults cost only what failed: any child that exits while the studio runs (a crash, the OOM killer, a stray
`kill -9`) is restarted, after a delay that doubles while it keeps dying young (Child), and the reason is
logged; the other children keep serving meanwhile. The web port's listening socket is the supervisor's own,
handed to each gunicorn it starts (`-b fd://N`): while a killed web master is replaced, new connections wait
in the socket's backlog instead of being refused, and its orphaned workers finish the calls they hold
(SIGTERM) before they go (SIGKILL after ORPHAN_GRACE_SECONDS). Model servers are not its children: reconcile restarts
them. Ctrl-C (SIGINT) or SIGTERM stops every child, then every model-server instance they started, within
30 s, and leaves no process behind.

It also owns the Ray head the studio runs on its own machine (RayHead): started while a Ray compute
without an address exists (checked every RAY_HEAD_CHECK_SECONDS; without one, Ray is never started or
imported), restarted with backoff if it dies, stopped when that compute is deleted and with the rest."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

# Web and worker get this long after SIGTERM; a provisioning task waiting on a
# readiness probe must not hold Ctrl-C past the 30 s users are promised.
GRACE_SECONDS = 12
INSTANCE_GRACE_SECONDS = 8
# A dead web master's workers get this long to finish their calls (as gunicorn's --graceful-timeout).
ORPHAN_GRACE_SECONDS = 10


def listen(host: str, port: int) -> socket.socket:
    """The web port, bound once for the studio's lifetime and inherited by each gunicorn."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=2048)
    sock.set_inheritable(True)
    return sock


def _venv_bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def commands(port: int, host: str, web_workers: int, concurrency: int, node: str,
             worker_processes: int = 1, schedule: str = "", web_fd: int | None = None) -> dict[str, list[str]]:
    """Every child the supervisor runs, by name: web, worker-1..N (threads pool: see CELERY_WORKER_POOL in
    portal/settings.py), and beat once (several workers per node, so beat is not embedded in one)."""
    children = {
        "web": [
            _venv_bin("gunicorn"), "portal.asgi:application",
            "-k", "portal.workers.StudioUvicornWorker",
            "-b", f"fd://{web_fd}" if web_fd is not None else f"{host}:{port}", "-w", str(web_workers),
            # --timeout: a worker whose event loop is stuck this long is replaced; --keep-alive: idle
            # connections close after 5 s (limit on connections: portal/workers.py).
            "--graceful-timeout", "10", "--timeout", "120", "--keep-alive", "5",
            "--access-logfile", "-",
        ],
    }
    for number in range(1, worker_processes + 1):
        children[f"worker-{number}"] = [
            _venv_bin("celery"), "-A", "portal", "worker",
            "-Q", f"celery,node.{node}", "-n", f"worker{number}@{node}",
            "-c", str(concurrency), "-l", "info",
        ]
    children["beat"] = [_venv_bin("celery"), "-A", "portal", "beat", "-l", "info"]
    if schedule:
        children["beat"] += ["-s", schedule]
    return children


class Child:
    """One supervised process: restarted whenever it exits (unless the studio is stopping), after a delay that
    doubles with each exit that came soon after its start (a crash loop costs little), reset once it stays up."""

    FIRST_DELAY = 0.5
    MAX_DELAY = 30.0
    # Up this long, it counts as having started well: the next exit is restarted after FIRST_DELAY again.
    STABLE_SECONDS = 30.0

    def __init__(self, name: str, argv: list[str], pass_fds: tuple[int, ...] = ()) -> None:
        self.name = name
        self.argv = argv
        # With a socket it inherits, its orphans may finish their work: the port stays open for the successor.
        self.pass_fds = pass_fds
        self.orphans: list[tuple[int, float]] = []  # (process group of a dead instance, when to SIGKILL it)
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.delay = self.FIRST_DELAY
        self.restart_at: float | None = None
        self.restarts = 0

    def start(self) -> None:
        # Own session: the terminal's Ctrl-C reaches only us, and we stop children in order.
        self.proc = subprocess.Popen(self.argv, start_new_session=True, pass_fds=self.pass_fds)
        self.started = time.monotonic()
        self.restart_at = None

    def check(self, now: float) -> None:
        """Start it again when it is due; notice (and log) that it exited."""
        if self.proc is None:
            return
        for group, kill_at in list(self.orphans):
            if now >= kill_at:
                _signal_groups([group], signal.SIGKILL)
                self.orphans.remove((group, kill_at))
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restarts += 1
                print(f"supervisor: restarting {self.name} (restart {self.restarts})", flush=True)
                self.start()
            return
        status = self.proc.poll()
        if status is None:
            return
        # What it left in its group (gunicorn's or celery's own children) goes with it: an orphaned web worker
        # that bound the port itself would fail every restart. On the supervisor's socket they may first finish
        # their calls. Model servers run in sessions of their own and stay.
        if self.pass_fds:
            _signal_groups([self.proc.pid], signal.SIGTERM)
            self.orphans.append((self.proc.pid, now + ORPHAN_GRACE_SECONDS))
        else:
            _signal_groups([self.proc.pid], signal.SIGKILL)
        if now - self.started >= self.STABLE_SECONDS:
            self.delay = self.FIRST_DELAY
        print(f"supervisor: {self.name} (pid {self.proc.pid}) {describe_exit(status)}; "
              f"restarting it in {self.delay:g} s", flush=True)
        self.restart_at = now + self.delay
        self.delay = min(self.MAX_DELAY, self.delay * 2)


RAY_HEAD_CHECK_SECONDS = 5.0


class RayHead:
    """The studio-managed Ray head (endpoints_app/controller/clusters.py: ManagedHead, `ray start --head
    --block` with ports from STUDIO_RAY_PORT_MIN, log in $STUDIO_DATA_DIR/logs/ray-head.log)."""

    def __init__(self) -> None:
        self.head = None
        self.next_check = 0.0
        self.delay = Child.FIRST_DELAY
        self.started = 0.0

    def wanted(self) -> bool | None:
        """Whether a Ray compute without an address exists; None when the database cannot say now."""
        try:
            import django

            django.setup()
            from django.db import connection

            from endpoints_app.controller.clusters import wants_managed_head

            try:
                return wants_managed_head()
            finally:
                connection.close()
        except Exception as error:  # a database that is not migrated or not reachable yet: ask again later
            print(f"supervisor: cannot tell whether a Ray head is wanted ({error})", flush=True)
            return None

    def check(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + RAY_HEAD_CHECK_SECONDS
        running = self.head is not None and self.head.running()
        if self.head is not None and not running:
            status = self.head.process.poll() if self.head.process is not None else None
            if now - self.started >= Child.STABLE_SECONDS:
                self.delay = Child.FIRST_DELAY
            print(f"supervisor: the Ray head {describe_exit(status or 0)}; starting it again in {self.delay:g} s",
                  flush=True)
            self.head.stop(timeout=1)
            self.head = None
            self.next_check = now + self.delay
            self.delay = min(Child.MAX_DELAY, self.delay * 2)
            return
        wanted = self.wanted()
        if wanted and self.head is None:
            from endpoints_app.controller.clusters import ManagedHead, managed_head_address

            self.head = ManagedHead()
            self.head.start()
            self.started = now
            print(f"supervisor: started the studio's Ray head at {managed_head_address()} "
                  f"(pid {self.head.process.pid})", flush=True)
        elif wanted is False and self.head is not None:
            print("supervisor: no Ray compute needs the studio's Ray head any more; stopping it", flush=True)
            self.stop()

    def terminate(self) -> None:
        if self.head is not None and self.head.running():
            self.head.process.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        if self.head is not None:
            self.head.stop(timeout=timeout)
            self.head = None


def describe_exit(status: int) -> str:
    if status < 0:
        try:
            return f"was killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"was killed by signal {-status}"
    return f"exited with status {status}"


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
        # What is left of its sandbox: processes, cgroups, uid and folder.
        sandbox.remove_named(data_dir, pid_file.stem)
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

    stopping = False

    def request_stop(signum, frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        web_socket = listen(host, port)
    except OSError as error:
        print(f"studio: cannot listen on {host}:{port} ({error.strerror or error}); is another studio running "
              "there? Set STUDIO_PORT.", file=sys.stderr, flush=True)
        return 2
    argv_by_name = commands(port, host, settings.STUDIO_WEB_WORKERS, settings.STUDIO_WORKER_CONCURRENCY,
                            settings.STUDIO_NODE_NAME, settings.STUDIO_WORKER_PROCESSES,
                            settings.CELERY_BEAT_SCHEDULE_FILENAME, web_fd=web_socket.fileno())
    children = [Child(name, argv, (web_socket.fileno(),) if name == "web" else ())
                for name, argv in argv_by_name.items()]
    for child in children:
        child.start()
    ray_head = RayHead()
    print(f"Studio is starting on http://{host}:{port}/  (Ctrl-C stops everything)", flush=True)

    # Any child that exits is restarted (with backoff, logged): one crashed process costs its own restart,
    # never the rest of the studio.
    while not stopping:
        now = time.monotonic()
        for child in children:
            child.check(now)
        ray_head.check(now)
        time.sleep(0.3)

    print("Stopping web, worker and beat...", flush=True)
    ray_head.terminate()  # stops alongside them
    running = [child.proc for child in children if child.proc is not None and child.restart_at is None]
    for proc in running:
        if proc.poll() is None:
            # The main process only: gunicorn and celery stop their own workers gracefully.
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + GRACE_SECONDS
    for proc in running:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    web_socket.close()
    # A dead web master's workers still finishing their calls go now too.
    _signal_groups([group for child in children for group, _ in child.orphans], signal.SIGKILL)
    for proc in running:
        # Kill whatever is left in each child's group (gunicorn/celery pool processes too).
        _signal_groups([proc.pid], signal.SIGKILL)
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
    ray_head.stop(timeout=5)
    print("Stopping model servers...", flush=True)
    stop_instances(data_dir)
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
