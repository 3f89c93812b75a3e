"""The process backend: start, probe, recognise and stop model-server processes
on this node.

Each instance runs in its own session (so a signal to its group reaches every
process it forks), writes stdout and stderr to
$STUDIO_DATA_DIR/logs/instances/<name>.log, and has a pid file in
$STUDIO_DATA_DIR/run/instances/<name>.pid that the supervisor uses to stop
model servers at shutdown. A process is recognised as an instance's by the
STUDIO_INSTANCE variable in its environment, so a recycled pid is never
mistaken for a live instance after a worker restart.

Instances run sandboxed (runtime/sandbox.py: bubblewrap, their own uid, cgroups when
root), are probed over their own Unix socket (runtime/channel.py), and stopped by
signalling what runs below their bwrap process, then by cgroup and uid, so a
process that left the group with setsid() goes too."""

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

from endpoints_app.runtime import channel
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
    """Start one model server in its sandbox; returns its pid (the outer bwrap process, which ends with
    the server). Output is appended to the instance log, rotated here once it passed half its cap (a
    running server cannot write past the cap: RLIMIT_FSIZE)."""
    reap()
    path = log_path(name)
    env = dict(env)
    env["STUDIO_INSTANCE"] = name
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    if sandbox is not None:
        # Level-triggered: whatever of its folder, uid or cgroups is missing or left over, made afresh.
        sb.prepare(sandbox)
        rotate(path, sandbox.limits.file_bytes // 2)
    with open(path, "ab") as log:
        log.write(f"=== {stamp} UTC starting instance {name}{(' ' + note) if note else ''} ===\n".encode())
        if sandbox is not None:
            log.write(f"=== {sb.describe(sandbox.limits)} ===\n".encode())
        log.flush()
        if sandbox is not None:
            proc = sb.popen(sandbox, argv, env, cwd, marker=name, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT)
        else:
            proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    _children[proc.pid] = proc
    pid_file(name).write_text(str(proc.pid))
    return proc.pid


def rotate(path: Path, limit: int) -> None:
    """Keep one previous log (<name>.log.1) once the log passed `limit` bytes."""
    try:
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


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
    """`sig` to the instance: its shim (`pid`, runtime/sandbox_exec.py) passes SIGTERM on to the server
    inside the sandbox; with SIGKILL, the whole sandbox dies with it."""
    sb.signal_sandbox(pid, sig)


def stop(pid: int | None, name: str, grace: float = 5.0) -> None:
    """SIGTERM the instance's process group, SIGKILL after `grace` seconds; remove its pid file."""
    if not pid:
        return
    if is_running(pid, name):
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
    # forget() removes what is left: processes of its cgroup and uid, the cgroups, its folder and uid.
    forget(name, pid)


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
    # Its processes, cgroups, uid and folder (the tmpfs home, /tmp and /dev/shm went with its namespace).
    sb.remove_named(Path(settings.DATA_DIR), name)
    reap()


def probe(host: str, port: int | None, path: str, timeout: float, headers: dict[str, str] | None = None,
          name: str = "") -> bool:
    """One HTTP GET; True on a 2xx answer. With `name`, over the instance's own socket, checking that
    its server answers there (runtime/channel.py); else to host:port."""
    if name:
        conn = channel.connection(Path(settings.DATA_DIR), name, timeout)
    elif port:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    else:
        return False
    return channel.answers_2xx(conn, path, headers)


# Readiness and liveness probes of llama.cpp's server land in its access log every few seconds.
PROBE_LINE = '"GET /v1/models HTTP/1.1" 200'


# The Logs API and failure causes read this much of a log's end, never the whole file.
TAIL_BYTES = 4 * 1024 * 1024


def _end_lines(path: str | Path, max_bytes: int = TAIL_BYTES) -> list[str]:
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - max_bytes))
            data = fh.read(max_bytes)
    except FileNotFoundError:
        return []
    lines = data.decode(errors="replace").splitlines(keepends=True)
    return lines[1:] if size > max_bytes and lines else lines  # the first may be cut


def tail(path: str | Path, lines: int) -> str:
    return "".join(_end_lines(path)[-lines:]) if lines > 0 else ""


def tail_without_probes(path: str | Path, lines: int) -> tuple[list[str], int]:
    """The last `lines` lines that are not probe lines, and how many probe lines the end of the file
    (its last TAIL_BYTES) holds."""
    probes = 0
    kept: deque[str] = deque(maxlen=lines)
    for line in _end_lines(path):
        if PROBE_LINE in line:
            probes += 1
        else:
            kept.append(line)
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
