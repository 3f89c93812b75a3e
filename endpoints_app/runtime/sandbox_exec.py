"""Enter a sandbox, then exec the real command (run with `python -S`, before any user code).

    python -S sandbox_exec.py --nproc=128 --nofile=4096 [--as=BYTES] [--cpu=SECONDS]
        [--uid=N] [--cwd=DIR] [--mask=DIR:KEEP[,KEEP...]]... [--no-network | --no-outbound] -- argv...
    python -S sandbox_exec.py --probe        # exit 0 if a private mount namespace can be made

Started as root (the studio is root) with --uid, it first makes a private mount namespace in
which each --mask DIR is covered by an empty tmpfs holding only its KEEP paths (bound back at
their place): the data dir then shows only this sandbox's folder, and a directory the sandbox
uid cannot enter (/root, where pyenv keeps the interpreter) shows only the interpreter. Then it
drops to --uid (gid the same, no groups), sets rlimits and no_new_privs, and execs argv.
--no-network (upload checks, which need none) also gives it an empty network namespace: it
cannot reach the database, Redis or anything else listening on this host. --no-outbound (model
servers, which must accept the gateway's connections but make none) loads a seccomp filter under
which connect() fails with EACCES and io_uring (a way around it) does not exist: no TCP connection
to the database, Redis or anything else, on this host or another.
Standard library only, no project import: it must start fast and trust nothing on sys.path."""

import ctypes
import errno
import os
import resource
import sys

PR_SET_NO_NEW_PRIVS = 38
CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18
SCMP_ACT_ALLOW, SCMP_ACT_ERRNO = 0x7FFF0000, 0x00050000
# What a process that only accepts connections is refused, and the errno it gets.
NO_OUTBOUND = ((b"connect", errno.EACCES), (b"io_uring_setup", errno.ENOSYS))

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


def block_outbound() -> None:
    """Load a seccomp filter (libseccomp) refusing NO_OUTBOUND's system calls; kept across exec."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError(errno.ENOMEM, "seccomp_init failed")
    try:
        for name, err in NO_OUTBOUND:
            rc = lib.seccomp_rule_add(ctx, SCMP_ACT_ERRNO | err, lib.seccomp_syscall_resolve_name(name), 0)
            if rc != 0:
                raise OSError(-rc, f"seccomp_rule_add({name.decode()}): {os.strerror(-rc)}")
        rc = lib.seccomp_load(ctx)
        if rc != 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")
    finally:
        lib.seccomp_release(ctx)


def main(args: list[str]) -> None:
    if args == ["--probe"]:
        _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
        private_namespace()
        return
    sep = args.index("--")
    options, argv = args[:sep], args[sep + 1:]
    limits = {"--nproc": resource.RLIMIT_NPROC, "--nofile": resource.RLIMIT_NOFILE,
              "--as": resource.RLIMIT_AS, "--cpu": resource.RLIMIT_CPU}
    uid, cwd, masks, network, outbound = None, None, [], True, True
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for option in options:
        key, _, value = option.partition("=")
        if key == "--uid":
            uid = int(value)
        elif key == "--cwd":
            cwd = value
        elif key == "--no-network":
            network = False
        elif key == "--no-outbound":
            outbound = False
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
    if not outbound:
        block_outbound()  # after no_new_privs: an unprivileged process may load a filter only then
    os.execv(argv[0], argv)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except OSError as exc:
        print(f"sandbox: cannot start: {exc}", file=sys.stderr, flush=True)
        sys.exit(126)
