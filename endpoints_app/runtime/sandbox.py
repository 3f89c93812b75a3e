"""The sandbox that user code runs in: model servers (the studio's and llama.cpp's), batch servers
and upload checks. Every such process starts through bubblewrap (`bwrap`, Debian's package, installed
by scripts/install.sh), never through a launcher of our own that would touch user input with
privileges.

DESIGN. What a sandboxed process gets:
- namespaces of its own: user, mount, PID, IPC, UTS, network (only `lo`, so no route to PostgreSQL,
  Redis or anything else on this host or another), `--new-session`, no capabilities, `no_new_privs`
  and no further user namespaces (`--disable-userns`);
- a filesystem built from nothing: read-only binds of /usr (and the /bin, /lib links), the dynamic
  loader's cache, the interpreter, the venv and the project's `endpoints_app` package, its own
  folder `<data dir>/sandbox/<name>/` read-only (links to its own artifacts only), a private tmpfs
  home, /tmp and /dev/shm of bounded size, its own /proc (it sees only its own processes) and a
  minimal /dev. Nothing else of the host or the data dir exists for it;
- a batch score.py's output folder at OUTPUT_INSIDE: a tmpfs bounded by limits.output_bytes, its own;
- its run folder `<data dir>/sandbox/<name>/run/` bound writable at RUN_INSIDE: the model server
  listens there on a Unix socket, the only way in (the gateway and the controller connect to it
  and check the peer's uid, channel.py);
- a seccomp filter (SECCOMP_DENY below: connect(), MSG_FASTOPEN, io_uring, ptrace, keyrings, bpf,
  mount and namespace calls...);
- rlimits (address space per process, open files, file size, which caps the log it writes, no cores);
- when the studio is root: a uid of its own on the host, allocated so that no other live sandbox
  has it (a registry in UID_REGISTRY, not derived from the port), and a cgroup per sandbox (v1
  memory for all its processes together, pids, cpu shares) when the host offers writable cgroups;
  else a log line says what is missing (`describe()`).

How it starts: the studio writes bwrap's options (with the user's environment variables as
`--setenv`) into a memory file and runs the shim sandbox_exec.py with an EMPTY environment
(`python -I -S`, nothing from the user on its command line). As root, the shim joins the cgroups,
masks the folders the sandbox uid could not traverse (/root holding the interpreter, the data dir) in
a private mount namespace and drops to the sandbox uid (no groups); then it sets rlimits and starts
bwrap, which reads its options from the file, and stays bwrap's parent to pass stop signals on (the
pid the controller records is the shim's). So no process holding privileges ever reads a user's
variable or file: the variables exist only in the final, unprivileged exec inside the sandbox.
Unprivileged, the same happens without uid, masks or cgroups (the studio's uid).

Standard library only: the web process imports this module."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import hashlib
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

log = logging.getLogger("studio.sandbox")

GIB = 1024**3
MIB = 1024**2
# High enough to stay clear of accounts and of the subordinate-id ranges container runtimes use.
UID_BASE: int = settings.STUDIO_SANDBOX_UID_BASE
UID_SPAN = 1_000_000
# One file per uid in use, machine-wide (studios with different data dirs share the host's uids).
UID_REGISTRY = Path("/run/studio-sandbox-uids")
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_CONTROLLERS = ("memory", "pids", "cpu")
SANDBOX_DIRNAME = "sandbox"
EXEC_SCRIPT = Path(__file__).with_name("sandbox_exec.py")
RUN_INSIDE = "/run/studio"
OUTPUT_INSIDE = "/run/output"
SOCKET_NAME = "server.sock"
PROJECT_DIR = Path(__file__).resolve().parents[2]
MSG_FASTOPEN = 0x20000000

# System calls a sandboxed process is refused (errno), on top of what no capabilities already refuse.
# connect(): no outbound connection even inside its own network namespace; sendto/sendmsg with
# MSG_FASTOPEN would open one anyway; io_uring would bypass the filter; the rest are kernel attack
# surface a model server never needs.
SECCOMP_DENY = {
    "connect": errno.EACCES, "io_uring_setup": errno.ENOSYS, "io_uring_enter": errno.ENOSYS,
    "io_uring_register": errno.ENOSYS, "ptrace": errno.EPERM, "process_vm_readv": errno.EPERM,
    "process_vm_writev": errno.EPERM, "keyctl": errno.ENOSYS, "add_key": errno.ENOSYS,
    "request_key": errno.ENOSYS, "bpf": errno.EPERM, "userfaultfd": errno.EPERM,
    "perf_event_open": errno.EPERM, "unshare": errno.EPERM, "setns": errno.EPERM, "mount": errno.EPERM,
    "umount2": errno.EPERM, "pivot_root": errno.EPERM, "open_tree": errno.EPERM, "move_mount": errno.EPERM,
    "fsopen": errno.EPERM, "kexec_load": errno.EPERM, "init_module": errno.EPERM,
    "finit_module": errno.EPERM, "open_by_handle_at": errno.EPERM, "name_to_handle_at": errno.EPERM,
}
# (system call, index of its flags argument): refused when the flags hold MSG_FASTOPEN.
FASTOPEN_CALLS = (("sendto", 3), ("sendmsg", 2), ("sendmmsg", 3))


@dataclass(frozen=True)
class Limits:
    memory_bytes: int | None = None  # cgroup: all processes of the sandbox together (and its tmpfs files)
    address_space: int | None = None  # RLIMIT_AS, per process
    cpu_seconds: int | None = None  # RLIMIT_CPU
    processes: int = 128  # cgroup pids.max, and RLIMIT_NPROC for its own uid
    cpu_shares: int = 1024  # cgroup cpu.shares (1024 per core)
    open_files: int = 4096
    home_bytes: int = 512 * MIB  # tmpfs sizes
    tmp_bytes: int = 512 * MIB
    shm_bytes: int = 256 * MIB
    file_bytes: int = 128 * MIB  # RLIMIT_FSIZE: no file it writes, its log included, grows past this
    output_bytes: int = 256 * MIB  # a batch score.py's output folder (tmpfs), all its files together


def instance_limits(cores: int | None, memory_gb: float | None) -> Limits:
    """Limits of one model server from its instance type.

    The cgroup holds the instance's memory for all its processes together. RLIMIT_AS counts virtual
    memory, not resident memory (torch reserves 1.4 GiB of address space to embed one sentence,
    llama.cpp maps the whole GGUF file), so it stays as a per-process backstop at the instance's
    memory plus 2 GiB. Threads count against pids, hence 32 per core."""
    cores = max(1, int(cores or 1))
    memory = max(float(memory_gb or 2), 2.0)
    return Limits(memory_bytes=int(memory * GIB), address_space=int(memory * GIB) + 2 * GIB,
                  processes=max(128, 32 * cores), cpu_shares=1024 * cores)


def validation_limits(timeout: float) -> Limits:
    return Limits(memory_bytes=3 * GIB, address_space=4 * GIB, cpu_seconds=max(1, int(timeout)), processes=64)


def privileged() -> bool:
    return os.geteuid() == 0


@functools.cache
def bwrap() -> str | None:
    return shutil.which("bwrap")


def unreachable_roots(paths: list[str], uid: int) -> dict[str, set[str]]:
    """For paths `uid` must reach: the first ancestor it cannot enter -> those paths (a mask over that
    ancestor shows them alone, however many closed folders lie between)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        parts = Path(os.path.realpath(path)).parts
        for depth in range(1, len(parts)):
            ancestor = os.path.join(*parts[:depth])
            try:
                st = os.stat(ancestor)
            except OSError:
                break
            other_x = st.st_mode & 0o001 or (st.st_uid == uid and st.st_mode & 0o100)
            if not other_x:
                found.setdefault(ancestor, set()).add(os.path.join(*parts))
                break
    return found


def _public(path: Path) -> bool:
    """Readable by any user, as far as its own modes go (a folder: with everything in it)."""
    try:
        if not path.is_dir():
            return bool(path.stat().st_mode & 0o004)
        for folder, _dirs, files in os.walk(path):
            if os.stat(folder).st_mode & 0o005 != 0o005:
                return False
            if any(not os.stat(os.path.join(folder, name)).st_mode & 0o004 for name in files):
                return False
        return True
    except OSError:
        return False


# -- cgroups (v1) ------------------------------------------------------------------------------------
@functools.cache
def cgroups_available() -> str:
    """"" when this process can make cgroups for sandboxes, else why not."""
    if not privileged():
        return "the studio is not root"
    for controller in CGROUP_CONTROLLERS:
        path = CGROUP_ROOT / controller
        if not (path / "cgroup.procs").exists():
            return f"no cgroup v1 {controller} controller at {path}"
        if not os.access(path, os.W_OK):
            return f"{path} is not writable"
    return ""


def _cgroup_group(data_dir: Path) -> str:
    # Studios with different data dirs on one host keep apart (instance names repeat across them).
    return "studio-" + hashlib.sha256(str(Path(data_dir).resolve()).encode()).hexdigest()[:10]


# -- seccomp ----------------------------------------------------------------------------------------
class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


SCMP_ACT_ALLOW, SCMP_ACT_ERRNO, SCMP_CMP_MASKED_EQ = 0x7FFF0000, 0x00050000, 7


@functools.cache
def seccomp_program() -> bytes | None:
    """SECCOMP_DENY and FASTOPEN_CALLS as a BPF program for `bwrap --seccomp` (libseccomp exports it);
    None without libseccomp."""
    name = ctypes.util.find_library("seccomp")
    if not name:
        return None
    lib = ctypes.CDLL(name)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    fd = os.memfd_create("studio-seccomp")
    try:
        rules = [(call, err, None) for call, err in SECCOMP_DENY.items()]
        rules += [(call, errno.EACCES, index) for call, index in FASTOPEN_CALLS]
        for call, err, flags_arg in rules:
            number = lib.seccomp_syscall_resolve_name(call.encode())
            if number < 0:
                continue  # not on this architecture
            cmps = (_ArgCmp * 1)(_ArgCmp(flags_arg, SCMP_CMP_MASKED_EQ, MSG_FASTOPEN, MSG_FASTOPEN)) \
                if flags_arg is not None else None
            rc = lib.seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO | err, number, 1 if cmps else 0, cmps)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({call}): {os.strerror(-rc)}")
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc != 0:
            raise OSError(-rc, f"seccomp_export_bpf: {os.strerror(-rc)}")
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
        lib.seccomp_release(ctx)


_described: set[str] = set()


def describe(limits: Limits | None = None) -> str:
    """One line naming the isolation in force (logged once per process and kind)."""
    if not bwrap():
        text = "sandbox: bubblewrap (bwrap) is not installed: user code cannot start (scripts/install.sh installs it)"
        if text not in _described:
            _described.add(text)
            log.error(text)
        return text
    parts = ["bubblewrap: own user, mount, PID, IPC, UTS and network namespaces (no network), new session, "
             "no capabilities, no_new_privs, read-only view of its own folder, interpreter and venv only, "
             "private bounded home, /tmp and /dev/shm"]
    parts.append("seccomp filter (no connect, no MSG_FASTOPEN, no io_uring, no ptrace)" if seccomp_program()
                 else "NO seccomp filter (libseccomp not found)")
    if privileged():
        parts.append("own uid without an account, unique among live sandboxes")
        why = cgroups_available()
        parts.append("cgroup: memory of all its processes, pids, cpu shares" if not why
                     else f"NO cgroup ({why}): memory limited per process only (RLIMIT_AS)")
    else:
        parts.append(f"same uid {os.geteuid()} as the studio (not root) and NO cgroup: memory limited per "
                     "process only (RLIMIT_AS)")
    if limits is not None:
        lim = [f"pids={limits.processes}"]
        if limits.memory_bytes:
            lim.append(f"memory={limits.memory_bytes // MIB}MiB")
        if limits.address_space:
            lim.append(f"as={limits.address_space // MIB}MiB")
        if limits.cpu_seconds:
            lim.append(f"cpu={limits.cpu_seconds}s")
        lim += [f"home={limits.home_bytes // MIB}MiB", f"tmp={limits.tmp_bytes // MIB}MiB",
                f"shm={limits.shm_bytes // MIB}MiB", f"files/log={limits.file_bytes // MIB}MiB"]
        parts.append("limits " + " ".join(lim))
    text = "sandbox: " + "; ".join(parts)
    key = text.split("; limits")[0]
    if key not in _described:
        _described.add(key)
        log.info(text)
    return text


@dataclass
class SandboxSpec:
    """Where one sandboxed process lives and what it may see; built by launch_spec (pure) and made
    real by prepare() just before the process starts (which also allocates its uid)."""

    name: str
    data_dir: Path
    limits: Limits
    links: list[tuple[str, str]] = field(default_factory=list)  # (source, path relative to root)
    binds: list[str] = field(default_factory=list)  # public paths outside the data dir, bound read-only
    uid: int | None = None
    # A batch score.py's output folder (OUTPUT_INSIDE, a tmpfs of limits.output_bytes): the one place it
    # may write that outlives a call; the server hands its files to the worker (runtime/batch.py).
    output_dir: str | None = None

    @property
    def root(self) -> Path:
        return Path(self.data_dir) / SANDBOX_DIRNAME / self.name

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def socket_path(self) -> Path:
        """The model server's Unix socket, as the studio sees it."""
        return self.run_dir / SOCKET_NAME

    @property
    def socket_inside(self) -> str:
        """The same socket, as the sandboxed process sees it (a short path: sun_path holds 108 bytes)."""
        return f"{RUN_INSIDE}/{SOCKET_NAME}"

    def expose(self, path: Path, under: str) -> Path:
        """The path the sandboxed process uses for `path`: a link under its root when `path` is in the
        data dir (only its own artifacts are linked there) or closed to other users, else `path` itself
        bound read-only (files a package ships)."""
        path = Path(path)
        try:
            path.resolve().relative_to(Path(self.data_dir).resolve())
        except ValueError:
            if _public(path):
                if str(path) not in self.binds:
                    self.binds.append(str(path))
                return path
        rel = f"{under}/{path.name}"
        if (str(path), rel) not in self.links:
            self.links.append((str(path), rel))
        return self.root / rel

    def env(self) -> dict[str, str]:
        """Variables that point the process at its own home."""
        home = str(self.home)
        return {"HOME": home, "TMPDIR": "/tmp", "USER": "studio-sandbox", "LOGNAME": "studio-sandbox",
                "XDG_CACHE_HOME": f"{home}/.cache", "PYTHONDONTWRITEBYTECODE": "1"}

    def cgroups(self) -> list[Path]:
        group = _cgroup_group(self.data_dir)
        return [CGROUP_ROOT / c / group / self.name for c in CGROUP_CONTROLLERS]

    # -- bwrap's options ---------------------------------------------------------------------------
    def _read_only_paths(self) -> list[str]:
        """The interpreter, the venv, the studio's package and the public paths exposed; never a folder
        holding the data dir (that one shows the sandbox's own folder only)."""
        data_dir = os.path.realpath(self.data_dir)
        paths = [sys.base_prefix, sys.prefix, str(PROJECT_DIR / "endpoints_app"), *self.binds]
        seen: list[str] = []
        for p in paths:
            real = os.path.realpath(p)
            if not os.path.exists(real) or (data_dir + "/").startswith(real.rstrip("/") + "/"):
                continue
            if real not in seen and not any(real.startswith(s + "/") for s in seen):
                seen.append(real)
        return seen

    def bwrap_options(self, env: dict[str, str], cwd: str | None) -> list[str]:
        # --die-with-parent: bwrap's parent is the shim (sandbox_exec.py), which outlives a worker restart.
        opts = ["--unshare-all", "--unshare-user", "--disable-userns", "--new-session", "--die-with-parent",
                "--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
        for top in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            path = f"/{top}"
            if os.path.islink(path):
                opts += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                opts += ["--ro-bind", path, path]
        for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime",
                    "/etc/alternatives"):
            opts += ["--ro-bind-try", etc, etc]
        # Its own /proc, /dev, /tmp and /dev/shm first: binds below may land inside /tmp.
        opts += ["--proc", "/proc", "--dev", "/dev",
                 "--size", str(self.limits.tmp_bytes), "--tmpfs", "/tmp",
                 "--size", str(self.limits.shm_bytes), "--tmpfs", "/dev/shm"]
        if self.output_dir:
            opts += ["--size", str(self.limits.output_bytes), "--perms", "0700", "--tmpfs", self.output_dir]
        for path in self._read_only_paths():
            opts += ["--ro-bind", path, path]
        opts += ["--ro-bind", str(self.root), str(self.root),
                 "--size", str(self.limits.home_bytes), "--perms", "0700", "--tmpfs", str(self.home),
                 "--bind", str(self.run_dir), RUN_INSIDE,
                 "--clearenv"]
        for key, value in env.items():
            opts += ["--setenv", key, value]
        opts += ["--chdir", cwd or str(self.home)]
        return opts

    def masks(self, uid: int) -> dict[str, set[str]]:
        """Folders `uid` cannot traverse on the way to what bwrap binds -> what to show of them."""
        data_dir = os.path.realpath(self.data_dir)
        wanted = [*self._read_only_paths(), os.path.realpath(self.root)]
        masks = unreachable_roots(wanted, uid)
        # The data dir shows the sandbox's own folder only, whatever its modes.
        masks[data_dir] = {os.path.realpath(self.root)}
        return masks


def sanitize(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)[:100].lstrip(".") or "sandbox"


def instance_sandbox(name: str, data_dir: Path, limits: Limits) -> SandboxSpec:
    return SandboxSpec(name=sanitize(name), data_dir=Path(data_dir), limits=limits)


def validation_sandbox(data_dir: Path, limits: Limits) -> SandboxSpec:
    return SandboxSpec(name=f"validate-{secrets.token_hex(8)}", data_dir=Path(data_dir), limits=limits)


# -- uids -------------------------------------------------------------------------------------------
def _registry_entry(uid: int) -> Path:
    return UID_REGISTRY / str(uid)


def allocate_uid(spec: SandboxSpec) -> int:
    """A uid that no live sandbox on this host has: registered machine-wide with O_EXCL, and with no
    live process. An entry whose sandbox folder is gone and whose uid runs nothing is reclaimed."""
    UID_REGISTRY.mkdir(mode=0o700, exist_ok=True)
    owner = str(spec.root.resolve()).encode()
    for _ in range(200):
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        entry = _registry_entry(uid)
        try:
            fd = os.open(entry, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                holder = entry.read_bytes()
            except OSError:
                continue
            if os.path.exists(holder.decode(errors="replace")) or pids_of_uid(uid):
                continue
            entry.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "wb") as fh:
            fh.write(owner)
        if pids_of_uid(uid):  # a process of that uid from elsewhere: not ours to share
            continue
        return uid
    raise OSError(errno.EAGAIN, "no free sandbox uid")


def recorded_uid(root: Path) -> int | None:
    """The uid a sandbox folder was prepared for (the gateway checks its socket's peer against it)."""
    try:
        return int((Path(root) / "uid").read_text())
    except (OSError, ValueError):
        return None


def _release_uid(root: Path) -> None:
    uid = recorded_uid(root)
    if uid is None or not privileged():
        return
    entry = _registry_entry(uid)
    try:
        if entry.read_bytes() == str(Path(root).resolve()).encode():
            entry.unlink()
    except OSError:
        pass


# -- making it real ---------------------------------------------------------------------------------
def _link_file(src: str, dst: str) -> None:
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
        shutil.copy2(src, dst, follow_symlinks=False)
    if not os.path.islink(dst):
        st = os.stat(dst)
        # Readable by the sandbox uid (only this sandbox sees the folder), writable by none.
        os.chmod(dst, (st.st_mode | 0o444) & ~0o022 & 0o7777)


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o755)


def prepare(spec: SandboxSpec) -> None:
    """Make the sandbox real, whatever is left or missing from before (level-triggered): a fresh
    folder with links to its artifacts, its run folder, its uid and its cgroups."""
    base = Path(spec.data_dir) / SANDBOX_DIRNAME
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove(spec)
    # The data dir and the sandbox base stay private: the sandbox uid reaches its own folder only
    # through the shim's mask (sandbox_exec.py), never through these modes.
    _mkdir(spec.root)
    for src, rel in spec.links:
        dest = spec.root / rel
        _mkdir(dest.parent)
        if os.path.isdir(src) and not os.path.islink(src):
            for folder, dirs, files in os.walk(src):
                target = dest / os.path.relpath(folder, src)
                _mkdir(target)
                for name in files:
                    _link_file(os.path.join(folder, name), str(target / name))
                for name in dirs:
                    if os.path.islink(os.path.join(folder, name)):
                        _link_file(os.path.join(folder, name), str(target / name))
        else:
            _link_file(src, str(dest))
    _mkdir(spec.home)  # the mount point of its tmpfs home
    spec.run_dir.mkdir(mode=0o700)
    if privileged():
        spec.uid = allocate_uid(spec)
        os.chown(spec.run_dir, spec.uid, spec.uid)
    else:
        spec.uid = os.geteuid()
    (spec.root / "uid").write_text(str(spec.uid))
    if privileged() and not cgroups_available():
        _make_cgroups(spec)


def _make_cgroups(spec: SandboxSpec) -> None:
    memory, pids, cpu = spec.cgroups()
    for path in (memory, pids, cpu):
        path.mkdir(parents=True, exist_ok=True)
    if spec.limits.memory_bytes:
        (memory / "memory.limit_in_bytes").write_text(str(spec.limits.memory_bytes))
        swap = memory / "memory.memsw.limit_in_bytes"
        if swap.exists():
            swap.write_text(str(spec.limits.memory_bytes))
    (pids / "pids.max").write_text(str(spec.limits.processes))
    (cpu / "cpu.shares").write_text(str(spec.limits.cpu_shares))


def cgroup_pids(spec_or_paths) -> list[int]:
    paths = spec_or_paths.cgroups() if isinstance(spec_or_paths, SandboxSpec) else spec_or_paths
    found: set[int] = set()
    for path in paths:
        try:
            found.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    return sorted(found)


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def popen(spec: SandboxSpec, argv: list[str], env: dict[str, str], cwd: str | None, marker: str = "",
          **kwargs) -> subprocess.Popen:
    """Start argv in the sandbox (prepare() first). `env` is the COMPLETE environment of argv: it goes
    to bwrap as --setenv options in a memory file, never into a privileged process's environment or
    command line. `marker` goes into the environment of the outer bwrap process (STUDIO_INSTANCE),
    which is how the controller recognises its pid. kwargs go to Popen (stdout, stderr, stdin)."""
    tool = bwrap()
    if tool is None:
        raise OSError(errno.ENOENT, "bubblewrap (bwrap) is not installed; scripts/install.sh installs it")
    if spec.uid is None:
        raise RuntimeError("sandbox.prepare() must run before sandbox.popen()")
    options = spec.bwrap_options(env, cwd)
    fds = []
    program = seccomp_program()
    args_fd = _memfd("studio-bwrap-args", b"\0".join(o.encode() for o in options) + b"\0")
    fds.append(args_fd)
    head = ["--args", str(args_fd)]
    if program is not None:
        seccomp_fd = _memfd("studio-seccomp", program)
        fds.append(seccomp_fd)
        head += ["--seccomp", str(seccomp_fd)]
    outer_env = {"PATH": "/usr/bin:/bin"}
    if marker:
        outer_env["STUDIO_INSTANCE"] = marker
    limits = spec.limits
    shim = [f"--nofile={limits.open_files}", f"--fsize={limits.file_bytes}"]
    if limits.address_space:
        shim.append(f"--as={limits.address_space}")
    if limits.cpu_seconds:
        shim.append(f"--cpu={limits.cpu_seconds}")
    if privileged():
        shim += [f"--uid={spec.uid}", f"--nproc={limits.processes}"]
        if not cgroups_available():
            shim += [f"--cgroup={path}" for path in spec.cgroups()]
        for directory, keep in sorted(spec.masks(spec.uid).items()):
            shim.append(f"--mask={directory}:{','.join(sorted(keep))}")
    command = [sys.executable, "-I", "-S", str(EXEC_SCRIPT), *shim, "--", tool, *head, "--", *argv]
    try:
        return subprocess.Popen(command, env=outer_env, cwd="/", pass_fds=fds, start_new_session=True,
                                close_fds=True, umask=0o077, **kwargs)
    finally:
        for fd in fds:
            os.close(fd)


def remove(spec: SandboxSpec) -> None:
    remove_named(spec.data_dir, spec.name)


def remove_named(data_dir: Path, name: str) -> None:
    """Everything the sandbox left: its processes, cgroups, uid and folder (its tmpfs went with it)."""
    root = Path(data_dir) / SANDBOX_DIRNAME / sanitize(name)
    spec = SandboxSpec(name=sanitize(name), data_dir=Path(data_dir), limits=Limits())
    kill(spec)
    for path in spec.cgroups():
        for folder in (path, path.parent):  # the studio's group too, once it is empty
            try:
                folder.rmdir()
            except OSError:
                pass
    _release_uid(root)
    shutil.rmtree(root, ignore_errors=True)


def kill(spec: SandboxSpec, rounds: int = 50) -> int:
    """SIGKILL every process of the sandbox: its cgroup's, and (as root) its uid's; again until none is
    left (a fork bomb forks between rounds). Returns how many signals were sent."""
    uid = recorded_uid(spec.root) if privileged() else None

    def pids() -> set[int]:
        found = set(cgroup_pids(spec)) if privileged() else set()
        if uid is not None and uid >= UID_BASE:
            found.update(pids_of_uid(uid))
        return found

    return _kill_until_none(pids, rounds)


def _kill_until_none(pids: Callable[[], Iterable[int]], rounds: int) -> int:
    """SIGKILL what `pids()` finds, again until it finds none (a fork bomb forks between rounds)."""
    sent = 0
    for _ in range(rounds):
        found = list(pids())
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.01)
    return sent


def signal_sandbox(pid: int, sig: int) -> None:
    """Send `sig` to the sandbox started as `pid` (popen's process, the shim): it passes SIGTERM, SIGINT
    and SIGHUP on to the server inside; with SIGKILL, everything in the sandbox dies with it."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


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
    """SIGKILL every process of a sandbox uid (the supervisor's last sweep at shutdown)."""
    if uid < UID_BASE or not privileged():
        return 0
    return _kill_until_none(lambda: pids_of_uid(uid), rounds)


def uid_of(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except (FileNotFoundError, ProcessLookupError):
        return None
