"""The process backend: start, probe, recognise and stop model-server processes
on this node.

Each instance runs in its own session (so a signal to its group reaches every
process it forks), writes stdout and stderr to
$STUDIO_DATA_DIR/logs/instances/<name>.log, and has a pid file in
$STUDIO_DATA_DIR/run/instances/<name>.pid that the supervisor uses to stop
model servers at shutdown. A process is recognised as an instance's by the
STUDIO_INSTANCE variable in its environment, so a recycled pid is never
mistaken for a live instance after a worker restart.

Instances run sandboxed (runtime/sandbox.py): started with the spec's sandbox
(its own uid when the studio is root), and stopped by group and then by uid, so
a process that left the group with setsid() goes too."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from collections import deque
from datetime import UTC, datetime
from pathlib import Path

from django.conf import settings

from endpoints_app.runtime import sandbox as sb

# Popen objects this process started, so it reaps its own children (no zombies).
_children: dict[int, subprocess.Popen] = {}


def pid_dir() -> Path:
    path = Path(settings.DATA_DIR) / "run" / "instances"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_dir() -> Path:
    path = Path(settings.DATA_DIR) / "logs" / "instances"
    path.mkdir(parents=True, exist_ok=True)
    return path


def log_path(name: str) -> Path:
    return log_dir() / f"{name}.log"


def pid_file(name: str) -> Path:
    return pid_dir() / f"{name}.pid"


def start(name: str, argv: list[str], env: dict[str, str], cwd: str | None, note: str = "",
          sandbox: sb.SandboxSpec | None = None) -> int:
    """Start one model server; returns its pid. Output is appended to the instance log."""
    reap()
    path = log_path(name)
    env = dict(env)
    env["STUDIO_INSTANCE"] = name
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    kwargs: dict = {"start_new_session": True, "close_fds": True}
    if sandbox is not None:
        sb.prepare(sandbox)
        kwargs = sandbox.popen_kwargs()
    with open(path, "ab") as log:
        log.write(f"=== {stamp} UTC starting instance {name}{(' ' + note) if note else ''} ===\n".encode())
        if sandbox is not None:
            log.write(f"=== {sb.describe(sandbox.limits)} ===\n".encode())
        log.flush()
        proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            **kwargs,
        )
    _children[proc.pid] = proc
    pid_file(name).write_text(str(proc.pid))
    return proc.pid


def note(name: str, message: str) -> None:
    """Append a controller line to the instance log (never anything secret)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    with open(log_path(name), "a") as log:
        log.write(f"=== {stamp} UTC {message} ===\n")


def reap() -> None:
    """Collect exit statuses of children this process started, so none stays a zombie."""
    for pid, proc in list(_children.items()):
        if proc.poll() is not None:
            del _children[pid]


def exit_code(pid: int) -> int | None:
    proc = _children.get(pid)
    return proc.poll() if proc is not None else None


def proc_state(pid: int) -> str | None:
    """The /proc state letter of a process (R, S, Z, ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return "?"
    # The state letter follows the parenthesised command name.
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3].decode() or "?"


def is_running(pid: int | None, name: str) -> bool:
    """True if `pid` is alive (not a zombie) and is the model server of instance `name`."""
    if not pid:
        return False
    reap()
    state = proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            environ = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except PermissionError:
        # Not ours to read: fall back to "some process holds this pid".
        return True
    return f"STUDIO_INSTANCE={name}".encode() in environ.split(b"\0")


def signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def stop(pid: int | None, name: str, grace: float = 5.0) -> None:
    """SIGTERM the instance's process group, SIGKILL after `grace` seconds; remove its pid file."""
    if not pid:
        return
    uid = None
    if is_running(pid, name):
        uid = sb.uid_of(pid)
        signal_group(pid, signal.SIGTERM)
        # Identity is checked once, above: an exiting process's environ reads empty
        # before it is gone, so from here on wait for the pid itself to end.
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            signal_group(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.05)
    if uid is not None:
        # Whatever of this sandbox uid is left (children that left the group): only that instance uses it.
        sb.kill_uid(uid)
    forget(name, pid)


def kill_sandbox(port: int | None) -> None:
    """Kill what is left of the sandbox uid of the instance that had this port (see sandbox.instance_sandbox)."""
    if port:
        sb.kill_uid(sb.UID_BASE + int(port))


def _alive(pid: int) -> bool:
    reap()
    return proc_state(pid) not in (None, "Z", "X")


def forget(name: str, pid: int | None = None) -> None:
    """Remove the instance's pid file; with `pid`, only if the file still names that process
    (a restart may already have written its successor's pid there)."""
    path = pid_file(name)
    if pid is not None:
        try:
            current = int(path.read_text().strip())
        except (FileNotFoundError, ValueError):
            current = None
        if current is not None and current != pid:
            reap()
            return
    path.unlink(missing_ok=True)
    sb.remove_named(Path(settings.DATA_DIR), name)
    reap()


def probe(host: str, port: int | None, path: str, timeout: float, headers: dict[str, str] | None = None) -> bool:
    """One HTTP GET; True on a 2xx answer."""
    if not port:
        return False
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        response.read()
        return 200 <= response.status < 300
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


# Readiness and liveness probes of llama.cpp's server land in its access log every few seconds.
PROBE_LINE = '"GET /v1/models HTTP/1.1" 200'


def tail(path: str | Path, lines: int) -> str:
    try:
        with open(path, errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines))
    except FileNotFoundError:
        return ""


def tail_without_probes(path: str | Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines that are not probe lines, and how many probe lines the file holds."""
    probes = 0
    kept: deque[str] = deque(maxlen=lines)
    try:
        with open(path, errors="replace") as fh:
            for line in fh:
                if PROBE_LINE in line:
                    probes += 1
                else:
                    kept.append(line)
    except FileNotFoundError:
        pass
    return list(kept), probes


def last_attempt(path: str | Path, lines: int = 25) -> str:
    """The last lines of the log since the controller's last start marker: the cause of a failure."""
    recent = tail(path, 400).splitlines()
    for index in range(len(recent) - 1, -1, -1):
        if recent[index].startswith("=== ") and "starting instance" in recent[index]:
            recent = recent[index + 1 :]
            break
    kept = [line for line in recent if line.strip() and not line.startswith("=== ")]
    return "\n".join(kept[-lines:])


def pid_files() -> dict[str, int]:
    """Instance name -> pid, for every pid file on this node."""
    found = {}
    for path in pid_dir().glob("*.pid"):
        try:
            found[path.stem] = int(path.read_text().strip())
        except (ValueError, OSError):
            continue
    return found


def pid_file_age(name: str) -> float:
    try:
        return time.time() - pid_file(name).stat().st_mtime
    except FileNotFoundError:
        return 0.0
