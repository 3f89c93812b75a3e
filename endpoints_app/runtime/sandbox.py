"""The sandbox that user code (score.py, pickles) runs in: model servers and upload validation.

What a sandboxed process gets, when the studio runs as root (as `make run` in a container and CI do):
- its own uid and gid, with no account (`STUDIO_SANDBOX_UID_BASE` + the instance's port, or a
  validation range above the ports), no supplementary groups and `no_new_privs`: it cannot read
  files the studio keeps private, signal studio processes or read their `/proc/<pid>/environ`,
  and one model server cannot reach another's (each has its own uid);
- a data dir that it cannot list (0711) whose entries are private (0700/0600: database, secret
  key, admin password, broker, logs, every workspace's artifacts), except `sandbox/<name>/`:
  hard links to its own artifacts only (read-only to it) and a private writable home;
- a minimal environment (built by the caller: no SECRET_KEY, DATABASE_URL or studio settings);
- its own session, and at stop every process of its uid killed (a child that called setsid()
  to leave the group is found by uid);
- rlimits: address space from the instance type's memory, processes (RLIMIT_NPROC counts per
  uid, so it bounds fork bombs), CPU seconds for validation, no core files.

Run unprivileged, the studio cannot change uid: children keep the rlimits, the session and the
minimal environment, and the log says so (`describe()`).

Standard library only: the web process imports this module.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("studio.sandbox")

GIB = 1024**3
# High enough to stay clear of accounts and of the subordinate-id ranges container runtimes use.
UID_BASE = int(os.environ.get("STUDIO_SANDBOX_UID_BASE", "1500000000"))
# Instances use UID_BASE + port (ports are unique per node among live instances); validations a range above.
VALIDATION_UID_OFFSET = 70000
VALIDATION_UID_SPAN = 20000
SANDBOX_DIRNAME = "sandbox"
EXEC_SCRIPT = Path(__file__).with_name("sandbox_exec.py")


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None  # RLIMIT_AS
    cpu_seconds: int | None = None  # RLIMIT_CPU
    processes: int = 128  # RLIMIT_NPROC: processes and threads of the sandbox uid
    open_files: int = 4096

    def argv(self, own_uid: bool = True) -> list[str]:
        # RLIMIT_NPROC counts every process of the uid: under the studio's own uid (unprivileged) it would
        # count the user's other processes too, so it is set only for a sandbox uid.
        out = [f"--nofile={self.open_files}"]
        if own_uid:
            out.append(f"--nproc={self.processes}")
        if self.memory_bytes:
            out.append(f"--as={self.memory_bytes}")
        if self.cpu_seconds:
            out.append(f"--cpu={self.cpu_seconds}")
        return out


def instance_limits(cores: int | None, memory_gb: float | None) -> Limits:
    """Limits of one model server from its instance type.

    RLIMIT_AS counts virtual memory, not resident memory: torch reserves about 1.4 GiB of address
    space to embed one sentence (500 MiB resident), llama.cpp maps the whole GGUF file, and every
    thread adds a stack and a malloc arena. So the limit is the instance's memory plus 2 GiB of
    headroom for reservations that are never touched; an allocation past it fails (MemoryError)
    in that process only. Threads count against RLIMIT_NPROC, hence 32 per core."""
    cores = max(1, int(cores or 1))
    memory = max(float(memory_gb or 2), 2.0)
    return Limits(memory_bytes=int(memory * GIB) + 2 * GIB, processes=max(128, 32 * cores))


def validation_limits(timeout: float) -> Limits:
    return Limits(memory_bytes=4 * GIB, cpu_seconds=max(1, int(timeout)), processes=64)


def privileged() -> bool:
    return os.geteuid() == 0


def _unreachable_roots(paths: list[str]) -> dict[str, set[str]]:
    """For paths another uid must read: the first ancestor it cannot enter -> the child on the way."""
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(os.path.realpath(path)).parts
        for depth in range(1, len(parts)):
            ancestor = os.path.join(*parts[:depth])
            try:
                mode = os.stat(ancestor).st_mode
            except OSError:
                break
            if not mode & 0o001:
                found.setdefault(ancestor, set()).add(os.path.join(*parts[: depth + 1]))
                break
    return found


_mode: tuple[str, dict[str, set[str]]] | None = None


def mode() -> tuple[str, dict[str, set[str]]]:
    """("namespace" | "uid" | "root" | "unprivileged", masks for the interpreter's folders), probed once.

    - namespace: own uid, and a private mount namespace showing only the sandbox's own data-dir folder;
    - uid: own uid, data dir protected by file modes only (no mount namespace here);
    - root: root, but the sandbox uid could not reach the interpreter and no namespace can fix it;
    - unprivileged: the studio is not root."""
    global _mode
    if _mode is None:
        if not privileged():
            _mode = ("unprivileged", {})
        else:
            project = str(Path(__file__).resolve().parents[2])
            masks = _unreachable_roots([sys.base_prefix, sys.prefix, os.path.realpath(sys.executable), project])
            import subprocess

            probe = subprocess.run([sys.executable, "-S", str(EXEC_SCRIPT), "--probe"], capture_output=True)
            if probe.returncode == 0:
                _mode = ("namespace", masks)
            elif not masks:
                _mode = ("uid", {})
            else:
                log.error("sandbox: the interpreter's folders %s are closed to other users and no mount namespace "
                          "can be made (%s): user code runs as root, with limits only", sorted(masks),
                          probe.stderr.decode(errors="replace").strip())
                _mode = ("root", {})
    return _mode


_described: set[str] = set()


@functools.cache
def outbound_blockable() -> bool:
    """Whether sandbox_exec can refuse outbound connections (its seccomp filter needs libseccomp)."""
    import ctypes.util

    return ctypes.util.find_library("seccomp") is not None


def describe(limits: Limits | None = None) -> str:
    """One line naming the isolation in force (logged once per process and kind)."""
    parts = []
    kind = mode()[0]
    if kind == "namespace":
        parts.append("own uid/gid without an account, no groups, no_new_privs, private mount namespace "
                     "showing only its own data-dir folder, data dir modes private, no network for upload checks")
    elif kind == "uid":
        parts.append("own uid/gid without an account, no groups, no_new_privs, data dir modes private "
                     "(no mount namespace)")
    elif kind == "root":
        parts.append("ROOT (cannot drop privileges: see the error above)")
    else:
        parts.append(f"same uid {os.geteuid()} as the studio (not root: cannot drop privileges; "
                     "user code can read what the studio can)")
    if outbound_blockable():
        parts.append("no outbound connections (seccomp: connect() refused)")
    else:
        parts.append("outbound connections possible (libseccomp not found)")
    parts.append("own session killed whole at stop, minimal environment")
    if limits is not None:
        lim = [f"nproc={limits.processes}"] if kind in ("namespace", "uid") else []
        if limits.memory_bytes:
            lim.append(f"as={limits.memory_bytes // (1024 * 1024)}MiB")
        if limits.cpu_seconds:
            lim.append(f"cpu={limits.cpu_seconds}s")
        parts.append("rlimits " + " ".join(lim))
    text = "sandbox: " + "; ".join(parts)
    key = text.split("; rlimits")[0]
    if key not in _described:
        _described.add(key)
        (log.info if kind in ("namespace", "uid") else log.warning)(text)
    return text


@dataclass
class SandboxSpec:
    """Where one sandboxed process lives and what it may see; built by launch_spec (pure) and made
    real by prepare() just before the process starts."""

    name: str
    data_dir: Path
    uid: int
    limits: Limits
    links: list[tuple[str, str]] = field(default_factory=list)  # (source, path relative to root)
    # No network at all (upload checks): only where a namespace can be made.
    network: bool = True

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / SANDBOX_DIRNAME / self.name

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def gid(self) -> int:
        return self.uid

    def expose(self, path: Path, under: str) -> Path:
        """The path the sandboxed process uses for `path`: a link under its root when `path` is in the
        data dir (which it cannot reach), else `path` itself (files a package ships are public) unless
        other users cannot reach it."""
        path = Path(path)
        try:
            path.resolve().relative_to(Path(self.data_dir).resolve())
        except ValueError:
            if not _unreachable_roots([str(path)]):
                return path
            # Elsewhere but closed to other users (a folder under /root or pytest's tmp): linked too.
        rel = f"{under}/{path.name}"
        if (str(path), rel) not in self.links:
            self.links.append((str(path), rel))
        return self.root / rel

    def env(self) -> dict[str, str]:
        """Variables that point the process at its own home instead of the studio's."""
        home = str(self.home)
        return {"HOME": home, "TMPDIR": f"{home}/tmp", "USER": "studio-sandbox", "LOGNAME": "studio-sandbox",
                "XDG_CACHE_HOME": f"{home}/.cache", "PYTHONDONTWRITEBYTECODE": "1"}

    def wrap(self, argv: list[str], cwd: str | None = None) -> list[str]:
        """argv run through sandbox_exec, which enters the sandbox (namespace, uid, limits) and execs argv."""
        kind, masks = mode()
        options = self.limits.argv(own_uid=kind in ("namespace", "uid"))
        if kind in ("namespace", "uid"):
            options.append(f"--uid={self.uid}")
        if kind == "namespace":
            data_dir = os.path.realpath(self.data_dir)
            for directory, keep in sorted(masks.items()):
                options.append(f"--mask={directory}:{','.join(sorted(keep))}")
            options.append(f"--mask={data_dir}:{os.path.join(data_dir, SANDBOX_DIRNAME, self.name)}")
            if not self.network:
                options.append("--no-network")
        if outbound_blockable():
            options.append("--no-outbound")
        if cwd:
            options.append(f"--cwd={cwd}")
        return [sys.executable, "-S", str(EXEC_SCRIPT), *options, "--", *argv]

    def popen_kwargs(self) -> dict:
        """Keyword arguments for subprocess.Popen (no preexec_fn: parents have threads)."""
        return {"start_new_session": True, "close_fds": True, "umask": 0o077}


def sanitize(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:100] or "sandbox"


def instance_sandbox(name: str, port: int, data_dir: Path, limits: Limits) -> SandboxSpec:
    return SandboxSpec(name=sanitize(name), data_dir=Path(data_dir), uid=UID_BASE + int(port), limits=limits)


def validation_sandbox(data_dir: Path, limits: Limits) -> SandboxSpec:
    slot = secrets.randbelow(VALIDATION_UID_SPAN)
    return SandboxSpec(name=f"validate-{slot}-{secrets.token_hex(4)}", data_dir=Path(data_dir),
                       uid=UID_BASE + VALIDATION_UID_OFFSET + slot, limits=limits, network=False)


# -- making it real -------------------------------------------------------------------------------
def harden_data_dir(data_dir: Path) -> None:
    """Data dir 0711 (enter, not list) and every entry in it private, but the sandbox folder."""
    data_dir = Path(data_dir)
    os.chmod(data_dir, 0o711)
    for entry in os.scandir(data_dir):
        if entry.name == SANDBOX_DIRNAME:
            continue
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
            if mode & 0o077 and not entry.is_symlink():
                os.chmod(entry.path, mode & ~0o077 & 0o7777)
        except FileNotFoundError:
            continue


def _link_file(src: str, dst: str, uid: int | None) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst, follow_symlinks=False)
    if uid is not None and not os.path.islink(dst):
        st = os.stat(dst)
        # Readable by anyone who can reach it (only this sandbox can: see the folder modes), writable by none.
        os.chmod(dst, (st.st_mode | 0o444) & ~0o022 & 0o7777)


def _mkdir(path: Path, gid: int | None) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if gid is not None:
        os.chown(path, 0, gid)
        os.chmod(path, 0o750)


def prepare(spec: SandboxSpec) -> None:
    """Create the sandbox folder afresh: links to its artifacts and an empty private home."""
    priv = mode()[0] in ("namespace", "uid")
    gid = spec.gid if priv else None
    base = Path(spec.data_dir) / SANDBOX_DIRNAME
    base.mkdir(parents=True, exist_ok=True)
    if priv:
        harden_data_dir(spec.data_dir)
        os.chmod(base, 0o711)
    remove(spec)
    _mkdir(spec.root, gid)
    for src, rel in spec.links:
        dest = spec.root / rel
        _mkdir(dest.parent, gid)
        if os.path.isdir(src) and not os.path.islink(src):
            for folder, dirs, files in os.walk(src):
                target = dest / os.path.relpath(folder, src)
                _mkdir(target, gid)
                for name in files:
                    _link_file(os.path.join(folder, name), str(target / name), gid)
                for name in dirs:
                    if os.path.islink(os.path.join(folder, name)):
                        _link_file(os.path.join(folder, name), str(target / name), gid)
        else:
            _link_file(src, str(dest), gid)
    for folder in (spec.home, spec.home / "tmp"):
        folder.mkdir(parents=True, exist_ok=True)
        if priv:
            os.chown(folder, spec.uid, spec.gid)
            os.chmod(folder, 0o700)


def remove(spec: SandboxSpec) -> None:
    shutil.rmtree(spec.root, ignore_errors=True)


def remove_named(data_dir: Path, name: str) -> None:
    shutil.rmtree(Path(data_dir) / SANDBOX_DIRNAME / sanitize(name), ignore_errors=True)


def pids_of_uid(uid: int) -> list[int]:
    """Live processes of a uid (zombies, already dead and waiting for init to reap them, excluded)."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid != uid:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as fh:
                    data = fh.read()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if data[data.rfind(b")") + 2 : data.rfind(b")") + 3] not in (b"Z", b"X"):
                found.append(int(entry.name))
    return found


def kill_uid(uid: int, rounds: int = 50) -> int:
    """SIGKILL every process of a sandbox uid, again until none is left (a fork bomb forks between
    rounds; RLIMIT_NPROC bounds how many it can have). Returns how many signals were sent."""
    if uid < UID_BASE or mode()[0] not in ("namespace", "uid"):
        return 0
    sent = 0
    for _ in range(rounds):
        pids = pids_of_uid(uid)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    return sent


def uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except (FileNotFoundError, ProcessLookupError):
        return None
