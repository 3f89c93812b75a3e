"""Enter a sandbox, then exec the real command (run with `python -S`, before any user code).

    python -S sandbox_exec.py --nproc=128 --nofile=4096 [--as=BYTES] [--cpu=SECONDS]
        [--uid=N] [--cwd=DIR] [--mask=DIR:KEEP[,KEEP...]]... [--no-network] -- argv...
    python -S sandbox_exec.py --probe        # exit 0 if a private mount namespace can be made

Started as root (the studio is root) with --uid, it first makes a private mount namespace in
which each --mask DIR is covered by an empty tmpfs holding only its KEEP paths (bound back at
their place): the data dir then shows only this sandbox's folder, and a directory the sandbox
uid cannot enter (/root, where pyenv keeps the interpreter) shows only the interpreter. Then it
drops to --uid (gid the same, no groups), sets rlimits and no_new_privs, and execs argv.
--no-network (upload checks, which need none) also gives it an empty network namespace: it
cannot reach the database, Redis or anything else listening on this host.
Standard library only, no project import: it must start fast and trust nothing on sys.path."""

import ctypes
import os
import resource
import sys

PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _enc(text: str | None) -> bytes | None:
    return text.encode() if text is not None else None


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = _enc
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
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


def main(args: list[str]) -> None:
    if args == ["--probe"]:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        private_namespace()
        return
    sep = args.index("--")
    options, argv = args[:sep], args[sep + 1:]
    limits = {"--nproc": resource.RLIMIT_NPROC, "--nofile": resource.RLIMIT_NOFILE,
              "--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU}
    uid, cwd, masks, network = None, None, [], True
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for option in options:
        key, _, value = option.partition("=")
        if key == "--uid":
            uid = int(value)
        elif key == "--cwd":
            cwd = value
        elif key == "--no-network":
            network = False
        elif key == "--mask":
            directory, _, keep = value.partition(":")
            masks.append((directory, [k for k in keep.split(",") if k]))
        elif key == "--cpu":
            # The soft limit sends SIGXCPU (a clean exit); the hard one, a second later, SIGKILL.
            resource.setrlimit(limits[key], (int(value), int(value) + 1))
        else:
            resource.setrlimit(limits[key], (int(value), int(value)))
    if uid is not None:
        if not network:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        if masks:
            private_namespace()
            for directory, keep in masks:
                mask(directory, keep)
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    if cwd:
        os.chdir(cwd)
    _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except OSError as exc:
        print(f"sandbox: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(126)
