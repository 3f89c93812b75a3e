"""Hostile code, as a Contributor of another workspace would upload it, against the sandbox
(runtime/sandbox.py: bubblewrap, own uid, cgroups, seccomp) at upload validation and in running model
servers. Each attack must fail, and the studio (and the other team's instance) must keep serving."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.controller import process
from endpoints_app.models import CatalogModel, Deployment, InstanceType
from endpoints_app.runtime import channel, sandbox
from endpoints_app.runtime.launch import launch_spec
from endpoints_app.runtime.validate import validate_in_subprocess
from tests.runtime.conftest import free_port, over_socket

pytestmark = pytest.mark.slow

root_only = pytest.mark.skipif(not sandbox.privileged(), reason="own uids need the studio to run as root")
with_cgroups = pytest.mark.skipif(sandbox.cgroups_available() != "",
                                  reason=f"no cgroups here: {sandbox.cgroups_available()}")
if not sandbox.bwrap():
    pytest.skip("bubblewrap is not installed (scripts/install.sh installs it)", allow_module_level=True)

# Reads every secret it can think of; prints nothing, returns what it found.
PROBE = '''
import json, os

TARGETS = __TARGETS__


def attempt(path):
    try:
        with open(path, "rb") as fh:
            return "READ " + fh.read(64).decode("utf-8", "replace")
    except Exception as exc:
        return "DENIED " + type(exc).__name__


def probe():
    found = {name: attempt(path) for name, path in TARGETS.items()}
    try:
        found["data_dir_listing"] = "READ " + ",".join(sorted(os.listdir(__DATA_DIR__)))
    except Exception as exc:
        found["data_dir_listing"] = "DENIED " + type(exc).__name__
    found["env"] = sorted(os.environ)
    found["uid"] = os.getuid()
    return found
'''

VALIDATE_PROBE = PROBE + '''

def init():
    import socket

    found = probe()
    try:  # a service on this host that trusts loopback (PostgreSQL, Redis)
        socket.create_connection(("127.0.0.1", __LISTENER__), timeout=2).close()
        found["listener_on_this_host"] = "READ connected"
    except Exception as exc:
        found["listener_on_this_host"] = "DENIED " + type(exc).__name__
    raise RuntimeError("PROBE" + json.dumps(found))


def run(raw_data):
    return {}
'''

SERVER_PROBE = PROBE + '''
import socket, struct, time


def outcome(fn):
    try:
        return "READ " + str(fn())
    except Exception as exc:
        return "DENIED " + type(exc).__name__


def init():
    pass


def fork_bomb():
    children = 0
    while children < 5000:
        try:
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            os.setsid()  # leave the group, as a process hiding from a group kill would
            time.sleep(600)
            os._exit(0)
        children += 1
    return children


def fastopen(port):
    s = socket.socket()
    return s.sendto(b"GET /metrics HTTP/1.0\\r\\n\\r\\n", socket.MSG_FASTOPEN, ("127.0.0.1", port))


def udp(port):
    return socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"hello", ("127.0.0.1", port))


def unix_dgram(address):
    return socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b"hello", address)


def listeners():
    """Every TCP listener a netlink socket-diag dump shows (what `ss -ltn` would list)."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    req = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << 10) + bytes(48)
    s.send(struct.pack("=IHHII", 16 + len(req), 20, 0x301, 1, 0) + req)
    ports = []
    while True:
        data = s.recv(65536)
        offset = 0
        while offset < len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if kind == 3:  # NLMSG_DONE
                return ports
            if kind == 2:  # NLMSG_ERROR
                raise OSError("netlink error")
            ports.append(struct.unpack_from("!H", data, offset + 16 + 4)[0])
            offset += (length + 3) & ~3


def squat(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen()
    return path


def proc_view():
    pids = [p for p in os.listdir("/proc") if p.isdigit()]
    cmdlines = []
    for p in pids:
        try:
            cmdlines.append(open(f"/proc/{p}/cmdline", "rb").read().replace(b"\\0", b" ").decode())
        except OSError:
            pass
    return {"pids": pids, "cmdlines": cmdlines}


def shm():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    segment = libc.shmget(0x5747, 1 << 20, 0o1000 | 0o666)  # IPC_CREAT
    with open("/dev/shm/studio-leftover", "wb") as fh:
        fh.write(b"x" * 4096)
    return segment


def run(raw_data):
    request = json.loads(raw_data)
    what = request["do"]
    if what == "probe":
        return probe()
    if what == "connect":
        return {"connect": outcome(lambda: socket.create_connection(("127.0.0.1", request["port"]), timeout=2))}
    if what == "fastopen":
        return {"fastopen": outcome(lambda: fastopen(request["port"]))}
    if what == "udp":
        return {"udp": outcome(lambda: udp(request["port"]))}
    if what == "unix_dgram":
        return {"unix_path": outcome(lambda: unix_dgram(request["path"])),
                "unix_abstract": outcome(lambda: unix_dgram(request["abstract"]))}
    if what == "netlink":
        return {"netlink": outcome(listeners)}
    if what == "squat":
        return {"squat": outcome(lambda: squat(request["path"])),
                "tcp": outcome(lambda: socket.create_server(("127.0.0.1", request["port"])).getsockname())}
    if what == "proc":
        return proc_view()
    if what == "shm":
        return {"shm": outcome(shm)}
    if what == "fork":
        return {"children": fork_bomb()}
    if what == "hog":
        try:
            block = bytearray(64 * 1024**3)
            return {"allocated": len(block)}
        except MemoryError:
            return {"allocated": 0, "error": "MemoryError"}
    return {"pid": os.getpid(), "uid": os.getuid()}
'''

# Team A's model: answers who it is.
VICTIM = '''
import os

def init():
    pass

def run(raw_data):
    return {"team": "a", "uid": os.getuid()}
'''

# Shadows a module the old root launcher imported, and the one a `PYTHONPATH=.` start would find first.
SHADOW = '''
import importlib, os, sys
sys.stderr.write(f"SHADOW ran as uid={os.getuid()}\\n")
sys.stderr.flush()
# Then behave: load the real module, so only who ran this line matters.
_here = os.path.dirname(os.path.abspath(__file__))
_saved = sys.path[:]
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _here]
del sys.modules[__name__]
_real = importlib.import_module(__name__)
sys.path[:] = _saved
sys.modules[__name__] = _real
globals().update(_real.__dict__)
'''

PRELOAD_C = r'''
#include <stdio.h>
#include <unistd.h>
__attribute__((constructor)) static void hello(void) {
    fprintf(stderr, "PRELOAD ran as uid=%d in %d\n", (int)getuid(), (int)getpid());
}
'''


def _targets() -> dict:
    """The files the studio keeps secret, as `make run` leaves them in the data dir."""
    data_dir = Path(settings.DATA_DIR)
    password = data_dir / "admin-password.txt"
    if not password.exists():
        fd = os.open(password, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("not-for-user-code\n")
    media = Path(settings.MEDIA_ROOT) / "other-team" / "private-model"
    media.mkdir(parents=True, exist_ok=True)
    (media / "weights.bin").write_bytes(b"another workspace's weights")
    targets = {
        "secret_key": str(data_dir / "secret-key.txt"),
        "admin_password": str(password),
        "other_workspace_artifact": str(media / "weights.bin"),
        "studio_process_environ": f"/proc/{os.getpid()}/environ",
        "parent_environ": f"/proc/{os.getppid()}/environ",
        "a_make_run_log_in_tmp": "/tmp/studio-make-run.log",
    }
    for name in ("test.sqlite3", "studio.sqlite3"):
        if (data_dir / name).exists():
            targets[name] = str(data_dir / name)
    return targets


@pytest.fixture(scope="module")
def secrets_on_disk() -> dict:
    log = Path("/tmp/studio-make-run.log")
    log.write_text("admin password: not-for-user-code\n")
    yield _targets()
    log.unlink(missing_ok=True)


def _probe(source: str, targets: dict) -> str:
    return source.replace("__TARGETS__", repr(targets)).replace("__DATA_DIR__", repr(str(settings.DATA_DIR)))


def _code_dir(parent: Path, source: str, name: str = "code") -> Path:
    code = parent / name
    code.mkdir()
    (code / "score.py").write_text(textwrap.dedent(source))
    return code


def _assert_nothing_read(found: dict) -> None:
    # The data dir exists in a sandbox only as the path to its own folder.
    if found["data_dir_listing"] == "READ sandbox":
        found.pop("data_dir_listing")
    leaked = {name: value for name, value in found.items() if isinstance(value, str) and value.startswith("READ")}
    assert leaked == {}, leaked
    for name in ("SECRET_KEY", "DATABASE_URL", "STUDIO_DATA_DIR", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        assert name not in found["env"]
    if sandbox.privileged():
        assert found["uid"] >= sandbox.UID_BASE


def _deployment(code: Path, name: str, env: dict | None = None, memory_gb: str = "3.5") -> Deployment:
    model = CatalogModel(registry="team", name=name, version=1, format="custom", task="custom",
                         artifact_path=str(code), scoring_script="score.py")
    return Deployment(name="blue", model=model, code_configuration={}, environment_variables=env or {},
                      instance_type=InstanceType(name="Standard_DS1_v2", family="DSv2", cores=1,
                                                 memory_gb=Decimal(memory_gb), price_per_hour=Decimal("0.07")))


class Instance:
    """A model server started and stopped by the controller's backend (controller/process.py)."""

    def __init__(self, deployment: Deployment, prefix: str, extra_env: dict | None = None) -> None:
        self.port = free_port()
        self.name = f"{prefix}-{self.port}"
        self.spec = launch_spec(deployment, self.port, name=self.name)
        self.spec.env.update(extra_env or {})
        self.pid = process.start(self.name, self.spec.argv, self.spec.env, self.spec.cwd, sandbox=self.spec.sandbox)
        began = time.monotonic()
        # Generous: a model server starts in a few seconds, but a shared CI machine can be many times slower.
        deadline = began + 120
        while not process.probe("", None, self.spec.ready_path, 1, self.spec.probe_headers, name=self.name):
            running = process.is_running(self.pid, self.name)
            if time.monotonic() > deadline or not running:
                why = self._why_not_ready()
                self.stop()
                state = "still running" if running else f"exited with {process.exit_code(self.pid)}"
                pytest.fail(f"not ready after {time.monotonic() - began:.1f} s, {state}; probe: {why}\n"
                            + process.tail(process.log_path(self.name), 30))
            time.sleep(0.1)

    def _why_not_ready(self) -> str:
        """What the readiness probe runs into, for a failure message."""
        try:
            answer = over_socket(self.name, "GET", self.spec.ready_path, self.spec.probe_headers, timeout=5)
        except Exception as error:  # noqa: BLE001 - any failure is the diagnosis
            return f"{type(error).__name__}: {error}"
        return f"{answer.status_code} {answer.text[:200]}"

    def call(self, what: str, **more) -> dict:
        answer = over_socket(self.name, "POST", "/score", self.spec.probe_headers, json_body={"do": what, **more},
                             timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def log(self) -> str:
        return process.log_path(self.name).read_text(errors="replace")

    def stop(self) -> None:
        process.stop(self.pid, self.name, grace=2)


@pytest.fixture(scope="module")
def preload_library(tmp_path_factory) -> Path | None:
    if not shutil.which("gcc"):
        return None
    folder = tmp_path_factory.mktemp("preload")
    (folder / "evil.c").write_text(PRELOAD_C)
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(folder / "evil.so"), str(folder / "evil.c")], check=True)
    return folder / "evil.so"


@pytest.fixture(scope="module")
def team_a(tmp_path_factory):
    """Team A's instance: the one team B's code would like to read, squat or impersonate."""
    code = _code_dir(tmp_path_factory.mktemp("team-a"), VICTIM)
    instance = Instance(_deployment(code, "team-a-model"), "team-a-blue")
    yield instance
    instance.stop()


@pytest.fixture(scope="module")
def team_b(secrets_on_disk, preload_library, tmp_path_factory):
    """Team B's hostile model server, deployed with loader and interpreter variables pointing at its own
    files (as if the API had let them through) and a module shadowing one the launcher imports."""
    code = _code_dir(tmp_path_factory.mktemp("team-b"), _probe(SERVER_PROBE, secrets_on_disk))
    (code / "resource.py").write_text(SHADOW)  # the old root launcher imported it, from the code folder
    # (the studio's package stays importable: the server must start for the variables to matter)
    env = {"PYTHONPATH": f"{settings.BASE_DIR}:.", "PYTHONSTARTUP": str(code / "resource.py")}
    if preload_library is not None:
        shutil.copy(preload_library, code / "evil.so")
        env["LD_PRELOAD"] = str(code / "evil.so")
    # Readable by all, so the sandbox sees the folder at its own path (where LD_PRELOAD points).
    for path in [code.parent, code, *code.iterdir()]:
        path.chmod(0o755 if path.is_dir() or path.suffix == ".so" else 0o644)
    # The services refuse these names and launch drops them (tests/endpoints/test_hostile_inputs.py,
    # tests/runtime/test_model_server.py): here they are put into the server's environment after launch,
    # as if both had let them through, to show that no privileged process reads them even then.
    instance = Instance(_deployment(code, "team-b-model"), "team-b-blue", extra_env=env)
    yield instance
    instance.stop()


def _still_serving(team_a: Instance, team_b: Instance | None = None) -> None:
    assert team_a.call("who") == {"team": "a", "uid": team_a.spec.sandbox.uid}
    if team_b is not None:
        assert team_b.call("ping")["pid"] > 0


# -- upload checks ----------------------------------------------------------------------------------
def test_it_keeps_secrets_from_a_score_py_at_upload_validation(secrets_on_disk, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    source = _probe(VALIDATE_PROBE, secrets_on_disk).replace("__LISTENER__", str(listener.getsockname()[1]))
    code = _code_dir(tmp_path, source)
    with listener:
        result = validate_in_subprocess("custom", code, timeout=60)
    assert not result.ok
    found = json.loads(result.message.split("PROBE", 1)[1])
    _assert_nothing_read(found)
    for path in secrets_on_disk.values():  # every target really is there for the studio itself to read
        Path(path).read_bytes()


def test_a_fork_bomb_at_validation_is_contained_and_killed_whole(tmp_path):
    code = _code_dir(tmp_path, '''
        import os, time

        def init():
            children = 0
            while children < 5000:
                try:
                    pid = os.fork()
                except OSError:
                    break
                if pid == 0:
                    os.setsid()
                    time.sleep(600)
                    os._exit(0)
                children += 1
            raise RuntimeError(f"BOMB children={children} uid={os.getuid()}")

        def run(raw_data):
            return {}
    ''')
    result = validate_in_subprocess("custom", code, timeout=30)
    assert not result.ok and "BOMB" in result.message, result.message
    children = int(result.message.split("children=")[1].split()[0])
    uid = int(result.message.split("uid=")[1].split()[0].rstrip(".'\""))
    assert 0 < children < sandbox.validation_limits(30).processes
    # The studio can still start processes, and nothing of the check is left.
    assert subprocess.run(["true"]).returncode == 0
    if sandbox.privileged():
        assert sandbox.pids_of_uid(uid) == []


def test_a_memory_hog_at_validation_fails_in_its_own_process(tmp_path):
    code = _code_dir(tmp_path, '''
        def init():
            global block
            block = bytearray(64 * 1024**3)

        def run(raw_data):
            return {}
    ''')
    result = validate_in_subprocess("custom", code, timeout=60)
    assert not result.ok and "MemoryError" in result.message


def test_an_upload_check_cannot_forge_its_result(tmp_path):
    """init() writes a forged answer everywhere it can (files, every descriptor, the checker's /proc
    entries) and ends the process with status 0: the result still comes from the checker."""
    forged = {"ok": True, "format": "custom", "task": "classification", "message": "FORGED",
              "details": {"forged": True}, "sample_request": {"forged": True}, "sample_response": "FORGED"}
    code = _code_dir(tmp_path, f'''
        import json, os

        FORGED = json.dumps({forged!r}).encode()

        def init():
            for place in ("result.json", os.path.expanduser("~/result.json"), "/tmp/result.json"):
                try:
                    open(place, "wb").write(FORGED)
                except OSError:
                    pass
            targets = [f"/proc/self/fd/{{fd}}" for fd in os.listdir("/proc/self/fd")]
            targets += [f"/proc/{{os.getppid()}}/fd/{{fd}}" for fd in range(64)]
            for target in targets:
                try:
                    fd = os.open(target, os.O_WRONLY)
                    os.write(fd, FORGED)
                    os.close(fd)
                except OSError:
                    pass
            for fd in range(64):
                try:
                    os.write(fd, FORGED)
                except OSError:
                    pass
            os._exit(0)

        def run(raw_data):
            return {{}}
    ''')
    result = validate_in_subprocess("custom", code, timeout=60)
    text = json.dumps(result.__dict__)
    assert "FORGED" not in text and "forged" not in text, text
    # What got through is what the checker itself vouches for: the format and script it was asked about.
    if result.ok:
        assert result.task == "custom" and result.details == {"scoring_script": "score.py"}
        assert result.sample_request == {} and result.sample_response is None


# -- model servers ----------------------------------------------------------------------------------
def test_it_keeps_secrets_from_a_running_model_server(team_b, team_a):
    found = team_b.call("probe")
    _assert_nothing_read(found)
    assert found["uid"] == team_b.spec.sandbox.uid != team_a.spec.sandbox.uid
    _still_serving(team_a, team_b)


def test_loader_and_interpreter_variables_reach_only_the_unprivileged_server(team_b, team_a, preload_library):
    """PYTHONPATH=. with a shadowing module and LD_PRELOAD with the zip's own library: no process that
    holds privileges reads them (the root launcher of old ran them as uid 0)."""
    log = team_b.log()
    for line in log.splitlines():
        if "SHADOW ran" in line or "PRELOAD ran" in line:
            assert "uid=0 " not in line + " ", line
    if preload_library is not None:
        assert "PRELOAD ran as uid=" in log  # it did run: in the sandbox only
    # The processes outside the sandbox (bwrap, started by the root shim) never had them, in their
    # environment or their command line.
    for pid in [team_b.pid]:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        for name in (b"LD_PRELOAD", b"PYTHONPATH", b"PYTHONSTARTUP"):
            assert name not in environ and name not in cmdline
    _still_serving(team_a, team_b)


def test_a_model_server_cannot_connect_to_services_on_this_host(team_b, team_a):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        listener.settimeout(0.5)
        assert team_b.call("connect", port=port)["connect"].startswith("DENIED")
        assert team_b.call("fastopen", port=port)["fastopen"].startswith("DENIED")
        with pytest.raises(TimeoutError):
            listener.accept()  # neither a connect() nor a MSG_FASTOPEN sendto() arrived
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the studio itself can
    _still_serving(team_a, team_b)


def test_datagrams_from_a_model_server_reach_nothing_on_this_host(team_b, team_a, tmp_path):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.5)
    path = str(tmp_path / "dgram.sock")
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    unix.bind(path)
    unix.settimeout(0.5)
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    abstract.bind(b"\0studio-test-" + str(os.getpid()).encode())
    abstract.settimeout(0.5)
    with udp, unix, abstract:
        team_b.call("udp", port=udp.getsockname()[1])  # a UDP send "succeeds" into its own empty network
        answer = team_b.call("unix_dgram", path=path, abstract="\0studio-test-" + str(os.getpid()))
        assert answer["unix_path"].startswith("DENIED") and answer["unix_abstract"].startswith("DENIED")
        for sock in (udp, unix, abstract):
            with pytest.raises(TimeoutError):
                sock.recv(100)
    _still_serving(team_a, team_b)


def test_a_netlink_dump_shows_none_of_the_hosts_listeners(team_b, team_a):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        found = team_b.call("netlink")["netlink"]
        # Its own network namespace: a dump that works lists its own sockets only, never the host's.
        assert str(port) not in found.split("[", 1)[-1].replace(",", " ").replace("]", " ").split()
    _still_serving(team_a, team_b)


def test_proc_shows_a_model_server_only_its_own_processes(team_b, team_a):
    view = team_b.call("proc")
    assert len(view["pids"]) < 10, view
    assert str(team_a.pid) not in view["pids"]
    assert not any(team_a.name in c or "team-a" in c or "celery" in c or "manage.py" in c for c in view["cmdlines"])
    _still_serving(team_a, team_b)


def test_another_instance_cannot_squat_its_socket_before_or_after_it_crashes(team_b, tmp_path):
    code = _code_dir(tmp_path, VICTIM)
    victim = Instance(_deployment(code, "team-a-model"), "team-a-green")
    path = victim.spec.sandbox.socket_path
    try:
        # Before: the victim's folder does not exist in team B's sandbox; a TCP port there is its own.
        answer = team_b.call("squat", path=str(path), port=victim.port)
        assert answer["squat"].startswith("DENIED")
        assert victim.call("who") == {"team": "a", "uid": victim.spec.sandbox.uid}
        # After a crash: the socket answers nobody, and a squatter that got the path anyway (here the
        # test itself, as another uid) is refused by the peer check.
        sandbox.signal_sandbox(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while process.is_running(victim.pid, victim.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert team_b.call("squat", path=str(path), port=victim.port)["squat"].startswith("DENIED")
        with pytest.raises(OSError):
            victim.call("who")
        path.unlink(missing_ok=True)
        squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        squatter.bind(str(path))
        squatter.listen()
        with squatter, pytest.raises(channel.WrongPeer):
            over_socket(victim.name, "GET", "/health/ready")
        assert not process.probe("", None, "/health/ready", 1, name=victim.name)
    finally:
        victim.stop()
    team_b.call("ping")


@root_only
def test_each_live_sandbox_gets_a_uid_of_its_own(tmp_path):
    specs = [sandbox.instance_sandbox(f"uid-{i}", Path(settings.DATA_DIR), sandbox.Limits()) for i in range(20)]
    try:
        for spec in specs:
            sandbox.prepare(spec)
        uids = [spec.uid for spec in specs]
        assert len(set(uids)) == len(uids) and min(uids) >= sandbox.UID_BASE
    finally:
        for spec in specs:
            sandbox.remove(spec)
    assert not any((sandbox.UID_REGISTRY / str(uid)).exists() for uid in uids)


@root_only
def test_a_fork_bomb_and_a_memory_hog_in_a_model_server_are_contained(secrets_on_disk, team_a, tmp_path):
    code = _code_dir(tmp_path, _probe(SERVER_PROBE, secrets_on_disk))
    bomber = Instance(_deployment(code, "team-b-bomb"), "team-b-bomb")
    try:
        answer = bomber.call("fork")
        assert 0 < answer["children"] < bomber.spec.sandbox.limits.processes
        assert bomber.call("hog") == {"allocated": 0, "error": "MemoryError"}
        assert bomber.call("ping")["pid"] > 0
        assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True).stdout == b"ok\n"
        uid = bomber.spec.sandbox.uid
    finally:
        bomber.stop()
    # The forks left the session with setsid(); stopping the instance still ended them all.
    assert sandbox.pids_of_uid(uid) == []
    assert not bomber.spec.sandbox.root.exists()
    _still_serving(team_a)


def test_shared_memory_and_dev_shm_leave_nothing_behind(secrets_on_disk, team_a, tmp_path):
    code = _code_dir(tmp_path, _probe(SERVER_PROBE, secrets_on_disk))
    leaver = Instance(_deployment(code, "team-b-shm"), "team-b-shm")
    try:
        assert leaver.call("shm")["shm"].startswith("READ")
        # Its /dev/shm and its System V segments are its own: the host's show nothing of them...
        assert not Path("/dev/shm/studio-leftover").exists()
        assert "5747" not in Path("/proc/sysvipc/shm").read_text()
    finally:
        leaver.stop()
    # ...and they went with it.
    assert not leaver.spec.sandbox.root.exists()
    assert "5747" not in Path("/proc/sysvipc/shm").read_text()
    _still_serving(team_a)


# -- limits, with a small sandbox ---------------------------------------------------------------------
def _run_in_sandbox(tmp_path, source: str, limits: sandbox.Limits, timeout: float = 60) -> tuple[int, str, Path]:
    """Run `source` as user code in a sandbox of its own, as the controller would; returns its exit
    status, its log (capped like an instance's) and the log's path."""
    spec = sandbox.instance_sandbox(f"limits-{os.getpid()}-{time.monotonic_ns()}", Path(settings.DATA_DIR), limits)
    sandbox.prepare(spec)
    log_path = tmp_path / "user.log"
    try:
        with open(log_path, "ab") as log:
            proc = sandbox.popen(spec, [sys.executable, "-c", textwrap.dedent(source)],
                                 {"PATH": "/usr/bin", **spec.env()}, None,
                                 stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            sandbox.signal_sandbox(proc.pid, signal.SIGKILL)
            status = proc.wait(10)
    finally:
        sandbox.remove(spec)
    assert not spec.root.exists() and sandbox.cgroup_pids(spec) == []
    return status, log_path.read_text(errors="replace"), log_path


@with_cgroups
def test_memory_holds_for_all_children_of_an_instance_together(tmp_path, team_a):
    limits = sandbox.Limits(memory_bytes=384 * sandbox.MIB, address_space=2 * sandbox.GIB)
    status, log, _ = _run_in_sandbox(tmp_path, '''
        import os, time
        pids = []
        for _ in range(3):  # each alone fits (200 MiB), all three do not
            pid = os.fork()
            if pid == 0:
                block = bytearray(200 * 1024 * 1024)
                for i in range(0, len(block), 4096):
                    block[i] = 1
                time.sleep(3)
                os._exit(0)
            pids.append(pid)
        results = [os.waitpid(pid, 0)[1] for pid in pids]
        print("CHILDREN", results, flush=True)
    ''', limits)
    statuses = [int(s) for s in log.split("CHILDREN [")[1].split("]")[0].split(",")]
    # The cgroup's OOM killer ended at least one child (SIGKILL): together they could not hold 600 MiB.
    assert any(os.WIFSIGNALED(s) and os.WTERMSIG(s) == signal.SIGKILL for s in statuses), log
    _still_serving(team_a)


def test_disk_and_log_floods_stop_at_their_limits(tmp_path, team_a):
    limits = sandbox.Limits(home_bytes=8 * sandbox.MIB, tmp_bytes=8 * sandbox.MIB, shm_bytes=8 * sandbox.MIB,
                            file_bytes=4 * sandbox.MIB)
    _status, log, log_path = _run_in_sandbox(tmp_path, '''
        import os
        for place in (os.environ["HOME"], "/tmp", "/dev/shm"):
            written = 0
            try:
                with open(os.path.join(place, "flood"), "wb") as fh:
                    for _ in range(64):
                        fh.write(b"x" * (1024 * 1024))
                        fh.flush()
                        written += 1
            except OSError as exc:
                print("FULL", place, written, exc.errno, flush=True)
        line = b"y" * 1023 + b"\\n"
        for _ in range(64 * 1024):  # 64 MiB of log
            try:
                os.write(1, line)
            except OSError:
                pass
    ''', limits)
    full = {line.split()[1]: int(line.split()[2]) for line in log.splitlines() if line.startswith("FULL")}
    assert len(full) == 3 and "/tmp" in full and "/dev/shm" in full, log[:2000]  # home, /tmp, /dev/shm
    assert all(written <= 8 for written in full.values()), full
    assert log_path.stat().st_size <= 4 * sandbox.MIB
    _still_serving(team_a)


# -- the studio's side --------------------------------------------------------------------------------
def test_an_instance_starts_again_after_its_sandbox_folder_vanished(tmp_path, team_a):
    code = _code_dir(tmp_path, VICTIM)
    first = Instance(_deployment(code, "team-a-model"), "team-a-again")
    first.stop()
    shutil.rmtree(Path(settings.DATA_DIR) / sandbox.SANDBOX_DIRNAME / first.name, ignore_errors=True)
    again = Instance(_deployment(code, "team-a-model"), "team-a-again")
    try:
        assert again.call("who")["team"] == "a"
    finally:
        again.stop()


def test_the_data_dir_is_private():
    assert os.stat(settings.DATA_DIR).st_mode & 0o077 == 0


def test_the_logs_api_reads_a_flooded_log_from_its_end(tmp_path):
    path = tmp_path / "flood.log"
    with open(path, "wb") as fh:
        for _ in range(12):  # 12 MiB
            fh.write((b"z" * 1023 + b"\n") * 1024)
        fh.write(b"the last line\n")
    assert process.tail(path, 1) == "the last line\n"
    kept, probes = process.tail_without_probes(path, 2)
    assert kept[-1] == "the last line\n" and probes == 0
    assert len(process._end_lines(path)) <= process.TAIL_BYTES // 1024 + 1


def test_namespaces_mounts_ptrace_and_keyrings_are_refused_to_user_code(tmp_path, team_a):
    _status, log, _ = _run_in_sandbox(tmp_path, '''
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        def tried(name, result):
            print("TRIED", name, "ok" if result == 0 else f"refused:{ctypes.get_errno()}", flush=True)
        tried("unshare-user", libc.unshare(0x10000000))
        tried("unshare-net", libc.unshare(0x40000000))
        tried("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        tried("ptrace", libc.ptrace(16, 1, None, None))  # PTRACE_ATTACH to its PID 1
        tried("keyctl", 0 if libc.syscall(250, 0, -1, 0, 0, 0) >= 0 else -1)  # KEYCTL_GET_KEYRING_ID
        tried("io_uring", 0 if libc.syscall(425, 8, ctypes.create_string_buffer(120)) >= 0 else -1)
    ''', sandbox.Limits())
    tried = dict(line.split()[1:3] for line in log.splitlines() if line.startswith("TRIED"))
    assert set(tried) == {"unshare-user", "unshare-net", "mount", "ptrace", "keyctl", "io_uring"}, log
    assert all(value.startswith("refused") for value in tried.values()), tried
    _still_serving(team_a)


def test_a_log_that_passed_half_its_cap_is_rotated_at_the_next_start(tmp_path):
    log = tmp_path / "instance.log"
    log.write_bytes(b"x" * 2048)
    process.rotate(log, 1024)
    assert not log.exists() and (tmp_path / "instance.log.1").stat().st_size == 2048
    log.write_bytes(b"y" * 10)
    process.rotate(log, 1024)  # small: kept
    assert log.read_bytes() == b"y" * 10
