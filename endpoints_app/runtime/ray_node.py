"""What runs on a Ray node for the studio: one Ray actor per instance (`InstanceActor`).

The actor starts the same sandboxed model server as the local backend (runtime/sandbox.py: bubblewrap,
own uid, own namespaces, listening only on the Unix socket in its sandbox folder) and a relay that
is the one way in from other machines:

- **Relay**: a TCP port on the node (from STUDIO_NODE_RELAY_PORTS, default 19000-19499) that accepts a
  connection only once its first request presents the instance's secret (`Authorization: Bearer`,
  compared in constant time), then connects to the instance's socket, checks with SO_PEERCRED that the
  server there runs as the sandbox's uid, and passes bytes both ways. A caller without the secret never
  reaches the sandbox; no other sandbox can take the socket (runtime/channel.py).
- **Artifacts**: the studio sends, per file of the model, its content hash and a signed token; the node
  fetches the file from the studio's internal route (`/internal/node-artifacts/<token>`, views/
  node_artifacts.py), checks the hash and keeps it in a cache by hash (`<node dir>/cache/`), so a
  second instance of the model on that node fetches nothing. Nothing is read from the studio's disk.
- **Environments**: a deployment with its own environment gets the studio's built venv packed once
  (runtime/environments.py `packed_venv`), by content hash and signed token over the same route; the
  node unpacks it once into `<node dir>/environments/<hash>/venv` (under a lock, into a temporary
  folder renamed into place, so concurrent instances neither fetch it twice nor see half of it),
  and every instance there links it into its sandbox as the studio does locally. A venv moves: Python
  finds its prefix from the `pyvenv.cfg` beside `bin/python`, whose link names the studio's Python,
  which a node has at the same path (docs/cluster.md).
- **Paths from the spec** (`rel`, content hashes, archive members) are checked before anything is
  written as root: nothing absolute, no `..`, nothing that lands outside its folder through a symlink.
- **Logs and samples**: the server's output goes to `<node dir>/logs/<name>.log`; the studio's
  controller reads it back in pieces, with CPU time and resident memory, through `status()`.

Ray restarts the actor on another node when its node dies (the controller creates it detached, with
max_restarts=-1): `__init__` runs again there and the controller sees a new address. The model server
is the actor's child with PR_SET_PDEATHSIG, so it never outlives its actor's process.

The node needs the studio's code and this venv (docs/cluster.md), but no database and no SECRET_KEY.
STUDIO_NODE_DIR (default ~/.cache/studio/node) holds the cache, the sandboxes and the logs."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import urllib.request
from pathlib import Path, PurePosixPath

ROOT_MARK = "@@ROOT@@"
PYTHON_MARK = "@@PYTHON@@"
PROJECT_MARK = "@@PROJECT@@"
PROJECT_DIR = Path(__file__).resolve().parents[2]
HEAD_LIMIT = 64 * 1024
PR_SET_PDEATHSIG = 1


def node_dir() -> Path:
    path = Path(os.environ.get("STUDIO_NODE_DIR") or Path.home() / ".cache" / "studio" / "node")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def relay_ports() -> range:
    low, _, high = (os.environ.get("STUDIO_NODE_RELAY_PORTS") or "19000-19499").partition("-")
    return range(int(low), int(high or low) + 1)


def _django() -> None:
    """runtime/sandbox.py reads one setting; a node has no studio settings (no database, no secret)."""
    from django.conf import settings

    if not settings.configured and not os.environ.get("DJANGO_SETTINGS_MODULE"):
        settings.configure(STUDIO_SANDBOX_UID_BASE=int(os.environ.get("STUDIO_SANDBOX_UID_BASE", 1_500_000_000)))


def _fill(value: str, root: Path) -> str:
    return (value.replace(ROOT_MARK, str(root)).replace(PYTHON_MARK, sys.executable)
            .replace(PROJECT_MARK, str(PROJECT_DIR)))


# -- artifacts ---------------------------------------------------------------------------------------

DIGEST = re.compile(r"^[0-9a-f]{64}$")


class UnsafePath(ValueError):
    """A path from the spec or an archive that would land outside its folder: nothing is written."""


class EnvironmentUnavailable(RuntimeError):
    """This node could not get the instance's environment (the instance fails with this message)."""


def checked_digest(digest: str) -> str:
    """A sha256 hex digest (it names a path in the cache), else UnsafePath."""
    if not isinstance(digest, str) or not DIGEST.match(digest):
        raise UnsafePath(f"{digest!r} is not a content hash")
    return digest


def checked_rel(rel: str) -> str:
    """A relative path without `..`, else UnsafePath."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        raise UnsafePath(f"{rel!r} is not a relative path")
    parts = PurePosixPath(rel).parts
    if rel.startswith("/") or ".." in parts or not parts:
        raise UnsafePath(f"{rel!r} would land outside its folder")
    return rel


def inside(folder: Path, rel: str) -> Path:
    """`folder`/`rel`, whose existing part resolves inside `folder` (no symlink on the way leads out)."""
    dest = folder / checked_rel(rel)
    real_folder = os.path.realpath(folder)
    real = os.path.realpath(dest.parent)
    if (real != real_folder and not real.startswith(real_folder + "/")) or os.path.islink(dest):
        raise UnsafePath(f"{rel!r} would land outside its folder")
    return dest


def _download(studio_url: str, token: str, digest: str, part: Path, timeout: float) -> None:
    """The file the studio signed `token` for into `part`, checked against `digest` (else removed)."""
    sha = hashlib.sha256()
    request = urllib.request.Request(f"{studio_url.rstrip('/')}/internal/node-artifacts/{token}")
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with urllib.request.urlopen(request, timeout=timeout) as answer, os.fdopen(fd, "wb") as out:
        while chunk := answer.read(1 << 20):
            sha.update(chunk)
            out.write(chunk)
    if sha.hexdigest() != digest:
        part.unlink(missing_ok=True)
        raise OSError(f"artifact {digest[:12]} arrived with another content hash; not used")


def fetch(studio_url: str, token: str, digest: str, cache: Path, timeout: float = 60) -> Path:
    """The file with content hash `digest`, from the cache or fetched from the studio (and checked)."""
    path = cache / checked_digest(digest)[:2] / digest
    if path.exists():
        return path
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    part = path.with_name(f"{digest}.{os.getpid()}.{threading.get_ident()}.part")
    part.unlink(missing_ok=True)
    try:
        _download(studio_url, token, digest, part, timeout)
        os.chmod(part, 0o444)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    return path


def _place(src: Path, dest: Path) -> None:
    """A hard link of the cached `src` at `dest` (a copy across filesystems); never through a symlink."""
    try:
        os.link(src, dest, follow_symlinks=False)
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
            raise
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444)
    with open(src, "rb") as fh, os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(fh, out)


def stage(spec: dict, folder: Path) -> list[tuple[str, str]]:
    """Hard links from the cache into `folder`, laid out as the studio's links were; the sandbox's links
    (the instance's environment among them). Runs as root: every `rel` and hash is checked first."""
    shutil.rmtree(folder, ignore_errors=True)
    if folder.is_symlink():  # rmtree leaves a symlink in place of the folder
        folder.unlink()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    cache = node_dir() / "cache"
    for rel, digest, token in spec["files"]:
        checked_digest(digest)
        inside(folder, rel).parent.mkdir(parents=True, exist_ok=True)
        dest = inside(folder, rel)  # again: the folders just made hold no symlink
        _place(fetch(spec["studio_url"], token, digest, cache), dest)
    links = [(str(inside(folder, rel)), rel) for rel in spec["links"]]
    for env in spec.get("environments") or []:
        rel = checked_rel(env["rel"])
        venv, _fetched = environment(env, spec["studio_url"])
        links.append((str(venv), rel))
    return links


# -- environments ------------------------------------------------------------------------------------

def unpack(archive: Path, dest: Path) -> None:
    """Unpack a venv archive into the new folder `dest`, refusing (UnsafePath, tarfile's FilterError) any
    member with an absolute name or `..`, any but folders, regular files and symlinks, and any that
    would be written outside `dest` through a symlink unpacked before it. Owners are not kept (root's)."""

    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        checked_rel(member.name)
        if not (member.isreg() or member.isdir() or member.issym()):
            raise UnsafePath(f"{member.name!r} is neither a folder, a file nor a symlink")
        # tarfile's own check resolves the name through what is unpacked: outside `dest` is refused.
        member = tarfile.tar_filter(member, path)
        return member.replace(uid=None, gid=None, uname=None, gname=None, deep=False)

    dest.mkdir(mode=0o755)
    with tarfile.open(archive, "r:") as tar:
        tar.errorlevel = 2
        tar.extractall(dest, filter=checked)


def environment(env: dict, studio_url: str, timeout: float = 600) -> tuple[Path, bool]:
    """(the environment's venv on this node, whether this call fetched it): unpacked once per content hash
    into `<node dir>/environments/<hash>/venv`. Under a lock per hash, so two instances starting here
    at once fetch it once; unpacked into a temporary folder renamed into place, so none sees half of it.
    EnvironmentUnavailable names the environment and the reason."""
    name = env.get("name") or "?"
    try:
        digest = checked_digest(env["digest"])
        root = node_dir() / "environments"
        root.mkdir(mode=0o700, exist_ok=True)
        final = root / digest
        venv = final / "venv"
        fetched = False
        if not venv.is_dir():
            with open(root / f".{digest}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not venv.is_dir():
                    for stale in root.glob(f".{digest}.*.tmp"):  # left by an actor killed midway
                        shutil.rmtree(stale, ignore_errors=True)
                    shutil.rmtree(final, ignore_errors=True)
                    work = Path(tempfile.mkdtemp(prefix=f".{digest}.", suffix=".tmp", dir=root))
                    try:
                        _download(studio_url, env["token"], digest, work / "venv.tar", timeout)
                        unpack(work / "venv.tar", work / "venv")
                        (work / "venv.tar").unlink()
                        os.rename(work, final)
                        fetched = True
                    finally:
                        shutil.rmtree(work, ignore_errors=True)
    except tarfile.TarError as exc:
        raise EnvironmentUnavailable(f"environment {name}: this node could not get it from the studio: the "
                                     f"archive it fetched is not usable ({exc})") from None
    except (OSError, ValueError) as exc:
        raise EnvironmentUnavailable(f"environment {name}: this node could not get it from the studio: "
                                     f"{exc}") from None
    python = venv / "bin" / "python"
    if not python.exists():
        target = os.readlink(python) if python.is_symlink() else str(python)
        raise EnvironmentUnavailable(f"environment {name}: its interpreter {target} is not on this node (a node "
                                     "needs the studio's Python at the same path)")
    return venv, fetched


# -- the relay ---------------------------------------------------------------------------------------

def authorized(head: bytes, secret: str) -> bool:
    """Does the request head carry `Authorization: Bearer <secret>`? (constant-time on the secret)"""
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), secret.encode())
    return False


async def _undelivered(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, exc: Exception) -> None:
    """Answer a request that never reached the model server (it is gone or not yet there) with a 502 the
    gateway knows (channel.UNDELIVERED_HEADER), so it may try another instance. The request's body is read
    first: closing with it unread would reset the connection before the answer is read."""
    from endpoints_app.runtime import channel

    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            length = int(value.strip())
    try:
        while length > 0:
            chunk = await asyncio.wait_for(reader.read(min(length, 1 << 20)), 30)
            if not chunk:
                return
            length -= len(chunk)
    except TimeoutError:
        return
    body = json.dumps({"error": {"code": "BadGateway", "message": f"The model server did not take the "
                                 f"request ({type(exc).__name__}); it was not delivered."}}).encode()
    writer.write(b"HTTP/1.1 502 Bad Gateway\r\n%s: 1\r\nContent-Type: application/json\r\nContent-Length: %d"
                 b"\r\nConnection: close\r\n\r\n%s" % (channel.UNDELIVERED_HEADER, len(body), body))
    await writer.drain()


class Relay:
    """TCP on the node -> the instance's Unix socket, for callers that present its secret."""

    def __init__(self, host: str, socket_path: Path, uid: int, secret: str) -> None:
        self.host, self.socket_path, self.uid, self.secret = host, socket_path, uid, secret
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.connections = 0
        ready = threading.Event()
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, args=(ready,), name="studio-relay", daemon=True)
        self.thread.start()
        ready.wait(30)
        if self.error is not None:
            raise self.error

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(self._listen())
        except Exception as exc:  # told to __init__
            self.error = exc
            ready.set()
            return
        ready.set()
        self.loop.run_forever()

    async def _listen(self):
        last: OSError | None = None
        for port in relay_ports():
            try:
                server = await asyncio.start_server(self._serve, self.host, port, reuse_address=True)
            except OSError as exc:
                last = exc
                continue
            self.port = port
            return server
        raise OSError(f"no free relay port in {relay_ports()}: {last}")

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from endpoints_app.runtime import channel
        from endpoints_app.runtime.egress_relay import pipe

        upstream = None
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                return
            if not authorized(head, self.secret):
                writer.write(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                await writer.drain()
                return
            try:
                up_reader, upstream = await asyncio.open_unix_connection(channel.connect_path(self.socket_path))
                channel.check_peer(upstream.get_extra_info("socket"), self.uid)
            except (OSError, channel.WrongPeer) as exc:
                await _undelivered(reader, writer, head, exc)
                return
            self.connections += 1
            upstream.write(head)
            await asyncio.gather(pipe(reader, upstream), pipe(up_reader, writer))
        except (OSError, channel.WrongPeer):
            pass
        finally:
            for w in (upstream, writer):
                if w is not None:
                    w.close()

    def close(self) -> None:
        def _stop() -> None:
            if self.server is not None:
                self.server.close()
            self.loop.stop()

        self.loop.call_soon_threadsafe(_stop)
        self.thread.join(5)


# -- the actor ---------------------------------------------------------------------------------------

def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _cpu_and_rss(pid: int) -> tuple[float, float] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/statm") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # The sandbox's processes: the shim, bwrap and the server below it (children's times once reaped).
    cpu = sum(int(f) for f in fields[11:15]) / ticks
    return cpu, pages * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


class InstanceActor:
    """One instance of a deployment on this node (see the module docstring)."""

    def __init__(self, spec: dict) -> None:
        _django()
        import ray

        from endpoints_app.runtime import sandbox as sb

        self.spec = spec
        self.name = spec["name"]
        self.started = time.time()
        self.node_id = ray.get_runtime_context().get_node_id()
        # The address the node joined with (`ray start --node-ip-address`), which the gateway reaches.
        self.host = next((n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == self.node_id),
                         None) or ray.util.get_node_ip_address()
        base = node_dir()
        logs = base / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        self.log_path = logs / f"{sb.sanitize(self.name)}.log"
        box = sb.SandboxSpec(name=sb.sanitize(self.name), data_dir=base, limits=sb.Limits(**spec["limits"]))
        self.box = box
        with open(self.log_path, "ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            log.write(f"=== {stamp} UTC starting instance {self.name} on Ray node {self.host} "
                      f"({self.node_id[:12]}) ===\n".encode())
        self.failure = ""
        self.proc: subprocess.Popen | None = None
        self.relay: Relay | None = None
        try:
            self._start(spec, base)
        except Exception as exc:  # noqa: BLE001 - said to the controller, which stops this actor
            # The actor stays up to say why it could not start: once an actor dies in its constructor,
            # Ray forgets its name, and the cause with it, before the controller next asks.
            self.failure = f"it could not start: {type(exc).__name__}: {exc}"[:1500]
            self.stop(grace=0)  # whatever of it did start

    def _start(self, spec: dict, base: Path) -> None:
        from endpoints_app.runtime import sandbox as sb

        box = self.box
        box.links = stage(spec, base / "staged" / box.name)
        box.binds = [_fill(b, box.root) for b in spec["binds"]]
        box.output_dir = spec.get("output_dir")
        argv = [_fill(a, box.root) for a in spec["argv"]]
        env = {k: _fill(v, box.root) for k, v in spec["env"].items()}
        cwd = _fill(spec["cwd"], box.root) if spec.get("cwd") else None
        sb.prepare(box)
        if spec.get("inputs_dir"):
            # A batch server's inputs, linked in per mini-batch (stage_inputs); empty until then.
            (box.root / spec["inputs_dir"]).mkdir()
            os.chmod(box.root / spec["inputs_dir"], 0o755)
        with open(self.log_path, "ab") as log:
            self.proc = sb.popen(box, argv, env, cwd, marker=self.name, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.relay = Relay(self.host, box.socket_path, box.uid, spec["secret"])

    def info(self) -> dict:
        if self.failure:
            return {"host": self.host, "port": 0, "pid": 0, "node_id": self.node_id, "started": self.started,
                    "uid": None}
        return {"host": self.host, "port": self.relay.port, "pid": self.proc.pid, "node_id": self.node_id,
                "started": self.started, "uid": self.box.uid}

    def status(self, log_offset: int = 0, for_pid: int | None = None, max_bytes: int = 256 * 1024) -> dict:
        """Alive or exit code, CPU seconds and resident MB of the server, and its log from `log_offset`
        (from the start when the caller's offset was of another server process than this one); for an
        instance that could not start, exit code 1 and `failure`, the reason."""
        if self.failure:
            return {**self.info(), "exit_code": 1, "failure": self.failure, "cpu_seconds": None, "rss_mb": None,
                    "log": b"", "log_offset": log_offset, "log_size": 0, "relayed_connections": 0}
        code = self.proc.poll()
        if for_pid != self.proc.pid:
            log_offset = 0
        usage = _cpu_and_rss(self.proc.pid) if code is None else None
        data = b""
        size = 0
        try:
            with open(self.log_path, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                if log_offset < size:
                    fh.seek(log_offset)
                    data = fh.read(max_bytes)
        except FileNotFoundError:
            pass
        rss = self._tree_rss() if usage is not None else None
        return {**self.info(), "exit_code": code, "cpu_seconds": usage[0] if usage else None,
                "rss_mb": rss, "log": data, "log_offset": log_offset + len(data), "log_size": size,
                "relayed_connections": self.relay.connections}

    def _tree_rss(self) -> float:
        from endpoints_app.runtime import sandbox as sb

        uid = self.box.uid
        pids = sb.pids_of_uid(uid) if uid and uid != os.geteuid() else [self.proc.pid]
        return round(sum((_cpu_and_rss(p) or (0, 0))[1] for p in pids), 1)

    def stage_inputs(self, files: list[list[str]]) -> dict[str, str]:
        """A mini-batch's input files, each [path relative to the studio's datastore, content hash, token],
        fetched into the node's cache (as artifacts are) and linked read-only into this sandbox's own
        inputs folder, which only its server sees; returns where the server reads each one."""
        inputs = self.box.root / self.spec["inputs_dir"]  # as the sandbox sees it too (bound at its own path)
        cache = node_dir() / "cache"
        where: dict[str, str] = {}
        for rel, digest, token in files:
            dest = inside(inputs, rel)  # UnsafePath: absolute, `..` or out through a symlink
            src = fetch(self.spec["studio_url"], token, digest, cache)
            if not (dest.exists() and os.path.samefile(src, dest)):
                folder = inputs
                for name in Path(rel).parent.parts:
                    folder = folder / name
                    folder.mkdir(exist_ok=True)
                    os.chmod(folder, 0o755)  # the sandbox's uid traverses it
                part = dest.with_name(f".{dest.name}.{threading.get_ident()}.part")
                try:
                    os.link(src, part)
                except OSError:
                    shutil.copy2(src, part)
                os.replace(part, dest)
            where[rel] = str(dest)
        return where

    def probe(self, path: str, timeout: float, headers: dict[str, str]) -> bool:
        from endpoints_app.runtime import channel

        return channel.answers_2xx(channel.UnixHTTPConnection(self.box.socket_path, self.box.uid, timeout), path,
                                   headers)

    def signal(self, sig: int) -> None:
        from endpoints_app.runtime import sandbox as sb

        if self.proc is not None and self.proc.poll() is None:
            sb.signal_sandbox(self.proc.pid, sig)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, SIGKILL after `grace`, then everything of the sandbox goes (its folder, uid, cgroups)."""
        from endpoints_app.runtime import sandbox as sb

        if self.proc is not None:
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and self.proc.poll() is None:
                time.sleep(0.05)
            self.signal(signal.SIGKILL)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        if self.relay is not None:
            self.relay.close()
        sb.remove(self.box)
