"""A studio run by its own supervisor (`python -m portal.supervisor`, what `make run` starts), with the means
to hurt it: find each process by its part (web, its workers, each Celery worker process, beat, model servers)
and signal it. Shared by the fault-matrix tests (tests/faults/) and bench/soak.py; no Django import here,
so a caller can use it before or without setting Django up."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def wait_until(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1,
               seen: Callable[[], object] | None = None):
    """Poll until `condition()` is truthy and return its value; on timeout fail saying what was waited for
    and, with `seen`, what was there instead."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"; saw {seen()!r}" if seen is not None else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{extra}")
        time.sleep(interval)


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) from /proc, or None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None and stat[1] == pid and stat[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


MEMORY_FIELDS = ("RssAnon", "RssFile", "RssShmem")


def memory_mb(pid: int) -> dict[str, float] | None:
    """Resident memory of `pid` in MB from /proc/<pid>/status, split by kind, or None when it is gone:
    RssAnon (heap and stacks: what a leak or a growing cache shows in), RssFile (pages of mapped files, such
    as a GGUF model or shared libraries, counted as they are first touched) and RssShmem; "rss" is their sum
    (VmRSS)."""
    found: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in MEMORY_FIELDS:
            found[key] = int(value.split()[0]) / 1024
    if len(found) != len(MEMORY_FIELDS):
        return None  # a zombie has no memory lines
    found["rss"] = sum(found.values())
    return found


def age_s(pid: int) -> float | None:
    """Seconds since `pid` started (from its start time in /proc/<pid>/stat), or None when it is gone."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def part_of(argv: list[str]) -> str | None:
    """Which supervised part a command line is: web, worker-<n>, beat."""
    text = " ".join(argv)
    if "gunicorn" in text:
        return "web"
    if "celery" in text and " beat" in text:
        return "beat"
    match = re.search(r"-n worker(\d+)@", text)
    if "celery" in text and match:
        return f"worker-{match.group(1)}"
    return None


@dataclass
class SupervisedStudio:
    """One studio under its supervisor, on `port`, with `data_dir` and the environment `env`."""

    data_dir: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.data_dir / "supervisor.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(self.env, STUDIO_DATA_DIR=str(self.data_dir), STUDIO_PORT=str(self.port), PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "portal.supervisor"], cwd=ROOT, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 120) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the supervisor exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                return requests.get(self.url + "/healthz", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(healthy, timeout, "the studio's /healthz", interval=0.3, seen=self.log_tail)

    def stop(self, timeout: float = 40) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
            raise

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    # -- the processes, by part ------------------------------------------------------------------------

    def parts(self) -> dict[str, int]:
        """{part: pid} of the supervisor's live children."""
        found = {}
        for pid in children_of(self.proc.pid):
            name = part_of(cmdline(pid))
            if name:
                found[name] = pid
        return found

    def pid_of(self, part: str) -> int:
        return wait_until(lambda: self.parts().get(part), 30, f"a running {part}", seen=self.parts)

    def web_workers(self) -> list[int]:
        return children_of(self.pid_of("web"))

    def instance_pids(self) -> dict[str, int]:
        """{instance name: pid} of the model servers with a pid file."""
        found = {}
        for pid_file in (self.data_dir / "run" / "instances").glob("*.pid"):
            try:
                pid = int(pid_file.read_text().strip())
            except (OSError, ValueError):
                continue
            if alive(pid):
                found[pid_file.stem] = pid
        return found

    def worker_pool_processes(self, part: str) -> list[int]:
        """Child processes of a Celery worker that are not model servers (a prefork pool's children)."""
        servers = set(self.instance_pids().values())
        return [pid for pid in children_of(self.pid_of(part))
                if pid not in servers and "celery" in " ".join(cmdline(pid))]

    def kill(self, pid: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal `pid`; SIGSTOP and SIGCONT go to everything below it too: a model server's recorded pid is
        its sandbox's launcher (runtime/sandbox_exec.py), and the server itself runs further down."""
        from endpoints_app.runtime.sandbox_exec import descendants

        targets = [pid, *descendants(pid)] if sig in (signal.SIGSTOP, signal.SIGCONT) else [pid]
        for target in targets:
            try:
                os.kill(target, sig)
            except ProcessLookupError:
                if target == pid:
                    raise

    def replaced(self, part: str, old_pid: int, timeout: float = 30) -> float:
        """Seconds until the supervisor runs `part` again under a new pid (failing with its log)."""
        began = time.monotonic()
        wait_until(lambda: self.parts().get(part) not in (None, old_pid), timeout, f"{part} restarted",
                   interval=0.1, seen=self.log_tail)
        return time.monotonic() - began


class Load:
    """Steady calls in background threads, each on a new connection, recording every outcome with its time."""

    def __init__(self, call: Callable[[], requests.Response], threads: int = 2, pause: float = 0.02) -> None:
        self.call = call
        self.pause = pause
        self.outcomes: list[tuple[float, str]] = []  # (monotonic time, "200" / "503" / "ConnectionError")
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                outcome = str(self.call().status_code)
            except requests.RequestException as exc:
                outcome = type(exc).__name__
            with self._lock:
                self.outcomes.append((time.monotonic(), outcome))
            time.sleep(self.pause)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def counts(self, since: float = 0.0) -> Counter:
        with self._lock:
            return Counter(outcome for at, outcome in self.outcomes if at >= since)

    def failures(self) -> list[tuple[float, str]]:
        with self._lock:
            return [(at, outcome) for at, outcome in self.outcomes if outcome != "200"]

    def ok(self) -> int:
        return self.counts()["200"]
