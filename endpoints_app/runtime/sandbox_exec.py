"""The shim in front of bubblewrap (runtime/sandbox.py):

    python -I -S sandbox_exec.py [--uid=N [--cgroup=DIR]... [--mask=DIR:KEEP,...]...] [rlimits] -- bwrap ARGS...

It runs with an empty environment and `-I` (no PYTHON* variable, no user site, no cwd on sys.path),
from /, and reads nothing a user controls: its options are the studio's, and bwrap's own options
(with the user's variables) stay in a memory file that only bwrap reads, after this process dropped
every privilege. In order:
1. (root) joins the sandbox's cgroups (so every process it will have is counted there);
2. (root) in a private mount namespace, covers each --mask DIR (a folder the sandbox uid cannot enter,
   such as /root where pyenv keeps the interpreter, or the data dir) with an empty tmpfs holding only
   its KEEP paths bound back at their place, so that bwrap, running as the sandbox uid, can bind them;
3. (root) drops to --uid (gid the same, no groups); sets rlimits and no core files;
4. starts bwrap (argv after --), which builds the sandbox from nothing, and stays its parent: a
   SIGTERM (SIGINT, SIGHUP) to this process or its group is passed on to the server inside (which
   lives in a session and PID namespace of its own, out of reach of a group signal), and when this
   process dies, bwrap and everything in the sandbox die with it (`--die-with-parent`, then the PID
   namespace's end). It exits with the server's status.
Standard library only, no project import: it must start fast and trust nothing on sys.path."""

import ctypes
import os
import resource
import signal
import sys

CLONE_NEWNS = 0x00020000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), ctypes.c_ulong(flags), _enc(data)),
           f"mount {target}")


def private_namespace() -> None:
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    # Nothing done here may propagate back to the host's mounts.
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def mask(directory: str, keep: list[str]) -> None:
    fds = [(path, os.open(path, os.O_PATH)) for path in keep]
    _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m")
    for path, fd in fds:
        parts = os.path.relpath(path, directory).split(os.sep)
        current = directory
        for part in parts[:-1]:
            current = os.path.join(current, part)
            os.makedirs(current, exist_ok=True)
            os.chmod(current, 0o755)
        target = os.path.join(directory, *parts)
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            os.makedirs(target, exist_ok=True)
            os.chmod(target, 0o755)
        else:
            open(target, "a").close()
        _mount(f"/proc/self/fd/{fd}", target, None, MS_BIND | MS_REC)
        os.close(fd)


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (orphans in a sandbox are re-parented to its init, so none escapes)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    data = fh.read()
            except OSError:
                continue
            ppid = int(data[data.rfind(b")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/comm", "rb") as fh:
            return fh.read().strip()
    except OSError:
        return b""


def supervise(argv: list[str]) -> int:
    """Run bwrap as a child, pass stop signals on to the sandbox's processes, return its status."""
    child = os.fork()
    if child == 0:
        os.setpgid(0, 0)  # out of the shim's group: a signal to that group is the shim's to pass on
        os.execve(argv[0], argv, os.environ)

    def forward(sig: int, _frame) -> None:
        # To the server and its children, not to bwrap: its monitor would die of it and its init (PID 1
        # of the sandbox) ignores signals it has no handler for.
        for pid in descendants(child):
            if _command(pid) != b"bwrap":
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def main(args: list[str]) -> int:
    sep = args.index("--")
    options, argv = args[:sep], args[sep + 1:]
    limits = {"--nproc": resource.RLIMIT_NPROC, "--nofile": resource.RLIMIT_NOFILE,
              "--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU, "--fsize": resource.RLIMIT_FSIZE}
    uid, masks, cgroups, rlimits = None, [], [], []
    for option in options:
        key, _, value = option.partition("=")
        if key == "--uid":
            uid = int(value)
        elif key == "--cgroup":
            cgroups.append(value)
        elif key == "--mask":
            directory, _, keep = value.partition(":")
            masks.append((directory, [k for k in keep.split(",") if k]))
        elif key in limits:
            rlimits.append((limits[key], int(value), key == "--cpu"))
        else:
            raise OSError(22, f"unknown option {option}")
    if uid == 0 or (os.geteuid() == 0 and uid is None):
        raise OSError(22, "run as root, --uid (not 0) is required")
    for path in cgroups:
        with open(os.path.join(path, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    if masks:
        private_namespace()
        for directory, keep in masks:
            mask(directory, keep)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for which, value, cpu in rlimits:
        # CPU: the soft limit sends SIGXCPU (a clean exit); the hard one, a second later, SIGKILL.
        resource.setrlimit(which, (value, value + 1) if cpu else (value, value))
    return supervise(argv)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as exc:
        print(f"sandbox: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(126)
