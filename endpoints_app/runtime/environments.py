"""Building an environment: one virtual environment per distinct content, made with `uv`, sandboxed.

    build_venv(folder, python_version, requirements, log) -> (ok, error)

`folder` is `$STUDIO_DATA_DIR/environments/<key>/`: `requirements.txt` (the user's requirements plus
the model server's own packages pinned to the versions the studio runs, so the server behaves the
same in every environment), `venv/` (the result) and `build.log` (uv's output, which the UI, the API
and the CLI show).

Installing a package runs its code (an sdist's setup.py), so both steps (`uv venv`, `uv pip install`)
run in a sandbox: bubblewrap builds a filesystem from nothing (read-only /usr, the interpreter, the
uv binary, local wheel folders and file:// indexes; writable: the environment's venv and uv's cache
only; private /tmp; no view of the data dir, the database or the secret key), with a minimal
environment (no studio setting), its own PID/IPC/UTS/mount/user namespaces and a new session. When
the studio is root the sandbox runs as the build uid (`BUILD_UID`, no account, no groups), entered
through runtime/sandbox_exec.py (which shows it only the folders it needs of /root and the data
dir), with rlimits. Network: every build gets its own empty network namespace (bwrap --unshare-net).
When an index is an HTTP(S) URL, its only way out is the egress proxy (runtime/egress.py) that this
process runs for the build's duration on a Unix socket in the build's folder: a relay inside the
sandbox (runtime/egress_relay.py) serves it on 127.0.0.1:RELAY_PORT, uv uses it as HTTPS_PROXY, and the
proxy lets through only the index URLs' hosts (plus STUDIO_ENV_EGRESS_HOSTS), refusing private
addresses the URLs do not name and writing each refusal to build.log (it goes out through the host's
own HTTPS_PROXY when there is one). Local sources (file:// indexes, wheel folders) are bound
read-only as before. Builds run one at a time on a node (a file lock), so two builds never share the
build uid at once.

`python_for(deployment)` says which interpreter a model server runs with: the studio's own, or the
venv of the environment its deployment or model names (EnvironmentPending while it builds,
EnvironmentFailed with the installer's last lines when it failed)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
from collections import deque
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from endpoints_app.models import BuildState
from endpoints_app.runtime import egress
from endpoints_app.runtime import sandbox as sb
from endpoints_app.runtime.pins import server_requirements
from endpoints_app.tasks import request_build

# Below instance and validation uids (UID_BASE + port, + 70000...): never one of theirs.
BUILD_UID = sb.UID_BASE - 1
ERROR_LINES = 15
# The host's CA bundle, as pip would use it (the host's proxy is the egress proxy's upstream).
INDEX_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")
PYPI = "https://pypi.org/simple"
# The built venv packed for Ray nodes (runtime/ray_node.py `environment`), beside it in the build's folder.
ARCHIVE = "venv.tar"


class EnvironmentPending(Exception):
    """The environment is not built yet: the instance waits (the controller tries again)."""


class EnvironmentFailed(ValueError):
    """The environment's build failed: the instance fails with the build's error."""


def uv_binary() -> str:
    candidate = Path(sys.executable).parent / "uv"
    found = str(candidate) if candidate.exists() else shutil.which("uv")
    if not found:
        raise FileNotFoundError("uv is not installed (it is in requirements.txt: run make install)")
    return found


def base_python() -> str:
    """The interpreter the studio runs on (not its venv's link): every environment's venv is made from it."""
    return os.path.realpath(sys.executable)


# -- the sandbox ----------------------------------------------------------------------------------
def _index_options() -> tuple[list[str], list[str], list[str]]:
    """(uv options, local folders to bind read-only, remote index URLs the egress proxy lets through)."""
    options: list[str] = []
    local: list[str] = []
    remote: list[str] = []
    index = settings.STUDIO_ENV_INDEX_URL
    if index == "none":
        options.append("--no-index")
    elif index:
        options += ["--index-url", index]
    for url in settings.STUDIO_ENV_EXTRA_INDEX_URLS:
        options += ["--extra-index-url", url]
    for folder in settings.STUDIO_ENV_FIND_LINKS:
        options += ["--find-links", folder]
    for url in [index, *settings.STUDIO_ENV_EXTRA_INDEX_URLS, *settings.STUDIO_ENV_FIND_LINKS]:
        if not url or url == "none":
            continue
        if url.startswith("file://"):
            local.append(url.removeprefix("file://"))
        elif url.startswith("/"):
            local.append(url)
        else:
            remote.append(url)
    if index != "none" and not index:
        remote.append(PYPI)  # uv's default index
    return options, [p for p in local if os.path.exists(p)], remote


def _read_only_paths(local: list[str]) -> list[str]:
    """What a build reads besides its folder and cache: the interpreter's home, uv, the egress relay and
    the local package indexes (bound read-only; for an unprivileged uid, shown through closed folders)."""
    python_home = str(Path(base_python()).parents[1])
    return sorted({python_home, str(Path(uv_binary()).resolve()), str(egress.RELAY_SCRIPT), *local})


def _bwrap_argv(folder: Path, cache: Path, local: list[str], proxy_socket: Path | None) -> list[str]:
    # --unshare-all includes the network: the build's namespace has only its own loopback.
    argv = [shutil.which("bwrap") or "bwrap", "--unshare-all", "--die-with-parent", "--new-session",
            "--hostname", "build", "--ro-bind", "/usr", "/usr"]
    for top in ("bin", "sbin", "lib", "lib32", "lib64"):
        path = f"/{top}"
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    for etc in ("/etc/ld.so.cache", "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf", "/etc/ssl",
                "/etc/ca-certificates", "/etc/localtime"):
        argv += ["--ro-bind-try", etc, etc]
    # The private /tmp first: what is bound after it shows through, even from a clone under /tmp.
    argv += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    for path in _read_only_paths(local):
        argv += ["--ro-bind", path, path]
    argv += ["--ro-bind", str(folder), str(folder), "--bind", str(folder / "venv"), str(folder / "venv"),
             "--bind", str(cache), str(cache), "--chdir", "/tmp"]
    if proxy_socket is not None:
        argv += ["--ro-bind", str(proxy_socket), egress.SANDBOX_SOCKET]
    return argv


def _sandboxed(argv: list[str], folder: Path, cache: Path, log, timeout: float) -> int:
    options, local, remote = _index_options()
    if not remote:
        return _run_sandboxed(argv, options, local, folder, cache, log, timeout, None)
    allowed, named = egress.allowed_hosts(remote, settings.STUDIO_ENV_EGRESS_HOSTS)
    log.flush()
    with egress.EgressProxy(folder / "egress.sock", allowed, named, log.fileno()) as proxy:
        return _run_sandboxed(argv, options, local, folder, cache, log, timeout, proxy.socket_path)


def _run_sandboxed(argv: list[str], options: list[str], local: list[str], folder: Path, cache: Path, log,
                   timeout: float, proxy_socket: Path | None) -> int:
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "UV_CACHE_DIR": str(cache), "UV_NO_CONFIG": "1", "UV_PYTHON_DOWNLOADS": "never", "NO_COLOR": "1",
           "UV_SYSTEM_CERTS": "1"}
    env.update({k: os.environ[k] for k in INDEX_VARIABLES if os.environ.get(k)})
    command = [*argv, *(options if argv[1:3] == ["pip", "install"] else [])]
    if proxy_socket is not None:
        relay = f"http://127.0.0.1:{egress.RELAY_PORT}"
        env.update({"HTTPS_PROXY": relay, "HTTP_PROXY": relay, "https_proxy": relay, "http_proxy": relay})
        command = [base_python(), "-I", str(egress.RELAY_SCRIPT), egress.SANDBOX_SOCKET, str(egress.RELAY_PORT),
                   "--", *command]
    wrapped = _bwrap_argv(folder, cache, local, proxy_socket) + ["--clearenv"]
    for key, value in env.items():
        wrapped += ["--setenv", key, value]
    wrapped += ["--", *command]
    if sb.privileged():
        masks = sb.unreachable_roots([*_read_only_paths(local), str(folder), str(cache)], BUILD_UID)
        data_dir = os.path.realpath(settings.DATA_DIR)
        masks.setdefault(data_dir, set()).update({os.path.realpath(folder)})
        if str(cache).startswith(data_dir + "/"):
            masks[data_dir].add(os.path.realpath(cache))
        shim = [f"--uid={BUILD_UID}", "--nofile=4096", "--nproc=512", f"--as={8 * sb.GIB}"]
        shim += [f"--mask={d}:{','.join(sorted(keep))}" for d, keep in sorted(masks.items())]
        wrapped = [sys.executable, "-S", str(sb.EXEC_SCRIPT), *shim, "--", *wrapped]
    proc = subprocess.Popen(wrapped, env={"PATH": "/usr/bin:/bin"}, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        log.write(f"\n=== the build took longer than {int(timeout)} seconds: stopped ===\n".encode())
        return -1
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if sb.privileged():
            sb.kill_uid(BUILD_UID)
        proc.wait()


def _chown_tree(path: Path, uid: int) -> None:
    for folder, dirs, files in os.walk(path):
        os.lchown(folder, uid, uid)
        for name in dirs + files:
            os.lchown(os.path.join(folder, name), uid, uid)


def tree_size(path: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def _last_lines(path: Path, count: int = ERROR_LINES) -> str:
    with open(path, errors="replace") as fh:
        lines = [line.rstrip() for line in fh if line.strip() and not line.startswith("=== ")]
    return "\n".join(deque(lines, maxlen=count))


def build_venv(folder: Path, requirements: list[str]) -> tuple[bool, str]:
    """Build `folder`/venv from `requirements` (plus the server's pins) in the sandbox; (ok, error)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o755)
    venv = folder / "venv"
    shutil.rmtree(venv, ignore_errors=True)
    (folder / ARCHIVE).unlink(missing_ok=True)  # packed from the venv this build replaces
    venv.mkdir()
    cache = Path(settings.STUDIO_ENV_UV_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    lines = [*requirements, *server_requirements()]
    (folder / "requirements.txt").write_text("\n".join(lines) + "\n")
    os.chmod(folder / "requirements.txt", 0o644)
    if sb.privileged():
        os.chown(venv, BUILD_UID, BUILD_UID)
        if os.stat(cache).st_uid != BUILD_UID:
            _chown_tree(cache, BUILD_UID)
    timeout = float(settings.STUDIO_ENV_BUILD_TIMEOUT_SECONDS)
    deadline = time.monotonic() + timeout
    uv = uv_binary()
    steps = [
        [uv, "venv", "--python", base_python(), "--allow-existing", "--no-project", str(venv)],
        [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--link-mode", "copy",
         "-r", str(folder / "requirements.txt")],
    ]
    with open(folder / "build.log", "ab") as log:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
        log.write(f"=== {stamp} UTC building {folder.name[:12]}: {' '.join(lines)} ===\n".encode())
        log.flush()
        for step in steps:
            log.write(f"=== {' '.join(Path(a).name if a == uv else a for a in step)} ===\n".encode())
            log.flush()
            code = _sandboxed(step, folder, cache, log, max(1.0, deadline - time.monotonic()))
            if code != 0:
                log.write(f"=== build failed (exit status {code}) ===\n".encode())
                log.flush()
                break
        else:
            log.write(b"=== build succeeded ===\n")
    if code != 0:
        shutil.rmtree(venv, ignore_errors=True)
        return False, _last_lines(folder / "build.log") or f"the installer exited with status {code}"
    if sb.privileged():
        # Read-only from now on: no sandbox (the build uid's next build included) can change it.
        _chown_tree(venv, 0)
    return True, ""


def packed_venv(folder: Path) -> Path:
    """`folder`/venv packed into `folder`/venv.tar for Ray nodes, once (later calls find it): written
    aside and renamed into place under a lock, so no reader sees half of it. Members are the venv's
    folders, regular files and symlinks as they are (no owner, no hard links, modes without setuid or
    group/other write); the venv is root's and read-only since its build, and its files are copied as
    bytes, never interpreted."""
    archive = folder / ARCHIVE
    if archive.exists():
        return archive
    venv = folder / "venv"
    with open(folder / ".pack.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if archive.exists():
            return archive
        part = folder / f".{ARCHIVE}.{os.getpid()}.part"
        try:
            with tarfile.open(part, "w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(_tree(venv)):
                    _pack_member(tar, venv, path)
            os.chmod(part, 0o644)
            os.replace(part, archive)
        finally:
            part.unlink(missing_ok=True)
    return archive


def _tree(root: Path):
    for top, dirs, files in os.walk(root):
        for name in dirs + files:
            yield Path(top) / name


def _pack_member(tar: tarfile.TarFile, venv: Path, path: Path) -> None:
    st = os.lstat(path)
    info = tarfile.TarInfo(str(path.relative_to(venv)))
    info.mtime = int(st.st_mtime)
    info.mode = stat.S_IMODE(st.st_mode) & 0o755
    if stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
        tar.addfile(info)
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    elif stat.S_ISREG(st.st_mode):
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh:
            info.size = os.fstat(fd).st_size
            tar.addfile(info, fh)
    # Sockets, fifos and devices have no place in a venv: left out.


class build_lock:
    """One build at a time on this node (they share the build uid and uv's cache)."""

    def __enter__(self):
        root = Path(settings.DATA_DIR) / "environments"
        root.mkdir(parents=True, exist_ok=True)
        self.fh = open(root / ".build.lock", "w")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()


# -- which interpreter a model server runs with ---------------------------------------------------
def environment_of(deployment):
    """The Environment a deployment's model server runs in: its own, else its model's; None: the studio's."""
    if getattr(deployment, "environment_id", None):
        return deployment.environment
    model = deployment.model
    return model.environment if getattr(model, "environment_id", None) else None


def python_for(deployment) -> str | None:
    """The venv's python for the deployment's environment, None for the studio's own interpreter."""
    env = environment_of(deployment)
    if env is None:
        return None
    build = env.build
    if build.state == BuildState.FAILED:
        raise EnvironmentFailed(f"environment {env.name}:{env.version} failed to build:\n{build.error}")
    if build.state == BuildState.SUCCEEDED and not build.python.exists():
        build.state = BuildState.NOT_STARTED  # its folder was removed by hand: build it again
        type(build).objects.filter(pk=build.pk).update(state=BuildState.NOT_STARTED)
    if build.state != BuildState.SUCCEEDED:
        request_build(build)  # evicted, or never queued: queue it (a no-op while it builds)
        raise EnvironmentPending(f"environment {env.name}:{env.version} is {build.state}")
    type(build).objects.filter(pk=build.pk).update(last_used_at=timezone.now())
    return str(build.python)


def sandbox_python(deployment, box) -> str:
    """The interpreter path a sandboxed model server starts with: the studio's, or its environment's venv
    made visible (read-only) in the sandbox `box`."""
    venv_python = python_for(deployment)
    return sys.executable if venv_python is None else expose_venv(venv_python, box)


def expose_venv(venv_python: str, box) -> str:
    """`venv_python`'s venv shown read-only in the sandbox `box`; the interpreter path inside it."""
    venv = box.expose(Path(venv_python).parents[1], "env")
    return str(Path(venv) / "bin" / "python")
