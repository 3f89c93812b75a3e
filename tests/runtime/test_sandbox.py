"""A malicious score.py, at upload validation and in a running model server, cannot reach the
studio's secrets, and its fork bomb and memory hog stay inside its own limits."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.conf import settings
from django.db import connection

from endpoints_app.controller import process
from endpoints_app.models import CatalogModel, Deployment, InstanceType
from endpoints_app.runtime import sandbox
from endpoints_app.runtime.launch import launch_spec
from endpoints_app.runtime.validate import validate_in_subprocess
from tests.runtime.conftest import free_port

pytestmark = pytest.mark.slow

isolated = pytest.mark.skipif(
    sandbox.mode()[0] not in ("namespace", "uid"),
    reason=f"the studio cannot drop privileges here (sandbox mode {sandbox.mode()[0]})",
)

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
    try:  # a service on this host that trusts loopback (PostgreSQL, Redis): upload checks get no network
        socket.create_connection(("127.0.0.1", __LISTENER__), timeout=2).close()
        found["listener_on_this_host"] = "READ connected"
    except Exception as exc:
        found["listener_on_this_host"] = "DENIED " + type(exc).__name__
    raise RuntimeError("PROBE" + json.dumps(found))


def run(raw_data):
    return {}
'''

SERVER_PROBE = PROBE + '''
import time


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


def run(raw_data):
    request = json.loads(raw_data)
    what = request["do"]
    if what == "probe":
        return probe()
    if what == "connect":  # a service on this host that trusts loopback (PostgreSQL, Redis)
        import socket

        try:
            socket.create_connection(("127.0.0.1", request["port"]), timeout=2).close()
            return {"connect": "READ connected"}
        except Exception as exc:
            return {"connect": "DENIED " + type(exc).__name__}
    if what == "fork":
        return {"children": fork_bomb()}
    if what == "hog":
        try:
            block = bytearray(64 * 1024**3)
            return {"allocated": len(block)}
        except MemoryError:
            return {"allocated": 0, "error": "MemoryError"}
    return {"pid": os.getpid()}
'''


@pytest.fixture
def secrets_on_disk(db):
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
    }
    if connection.vendor == "sqlite":
        targets["database"] = str(connection.settings_dict["NAME"])
        assert Path(targets["database"]).exists()
    return targets


def _probe(source: str, targets: dict) -> str:
    return source.replace("__TARGETS__", repr(targets)).replace("__DATA_DIR__", repr(str(settings.DATA_DIR)))


def _code_dir(tmp_path: Path, source: str) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "score.py").write_text(textwrap.dedent(source))
    return code


def _assert_nothing_read(found: dict) -> None:
    # In a mount namespace the data dir shows its sandbox folder and nothing else; else it cannot be listed.
    if found["data_dir_listing"] == "READ sandbox":
        found.pop("data_dir_listing")
    leaked = {name: value for name, value in found.items() if isinstance(value, str) and value.startswith("READ")}
    assert leaked == {}, leaked
    for name in ("SECRET_KEY", "DATABASE_URL", "STUDIO_DATA_DIR", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE"):
        assert name not in found["env"]
    assert found["uid"] >= sandbox.UID_BASE


@isolated
def test_it_keeps_secrets_from_a_score_py_at_upload_validation(secrets_on_disk, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    source = _probe(VALIDATE_PROBE, secrets_on_disk).replace("__LISTENER__", str(listener.getsockname()[1]))
    code = _code_dir(tmp_path, source)
    with listener:
        result = validate_in_subprocess("custom", code, timeout=60, project_dir=Path(settings.BASE_DIR))
    assert not result.ok
    found = json.loads(result.message.split("PROBE", 1)[1])
    _assert_nothing_read(found)
    # Every target really is there for the studio itself to read.
    for path in secrets_on_disk.values():
        Path(path).read_bytes()


@isolated  # RLIMIT_NPROC needs a uid of its own
def test_a_fork_bomb_at_validation_is_contained_and_killed_whole(tmp_path):
    drop = Path(tempfile.mkdtemp(prefix="studio-test-", dir="/tmp"))
    os.chmod(drop, 0o1777)
    code = _code_dir(tmp_path, f'''
        import os, time

        def init():
            open({str(drop / "uid")!r}, "w").write(str(os.getuid()))
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
            open({str(drop / "children")!r}, "w").write(str(children))
            while True:  # and then never finish
                pass

        def run(raw_data):
            return {{}}
    ''')
    began = time.monotonic()
    result = validate_in_subprocess("custom", code, timeout=8, project_dir=Path(settings.BASE_DIR))
    assert time.monotonic() - began < 30
    assert not result.ok and "longer than 8 seconds" in result.message
    children = int((drop / "children").read_text())
    assert children < sandbox.validation_limits(8).processes
    # The studio can still start processes, and nothing of the check is left.
    assert subprocess.run(["true"]).returncode == 0
    if sandbox.mode()[0] in ("namespace", "uid"):
        assert sandbox.pids_of_uid(int((drop / "uid").read_text())) == []


def test_a_memory_hog_at_validation_fails_in_its_own_process(tmp_path):
    code = _code_dir(tmp_path, '''
        def init():
            global block
            block = bytearray(64 * 1024**3)

        def run(raw_data):
            return {}
    ''')
    result = validate_in_subprocess("custom", code, timeout=60, project_dir=Path(settings.BASE_DIR))
    assert not result.ok and "MemoryError" in result.message


@pytest.fixture
def hostile_server(secrets_on_disk, tmp_path):
    """The malicious score.py as a running model server, started and stopped by the controller's backend."""
    code = _code_dir(tmp_path, _probe(SERVER_PROBE, secrets_on_disk))
    model = CatalogModel(registry="team", name="hostile", version=1, format="custom", task="custom",
                         artifact_path=str(code), scoring_script="score.py")
    deployment = Deployment(
        name="blue", model=model, code_configuration={}, environment_variables={},
        instance_type=InstanceType(name="Standard_DS1_v2", family="DSv2", cores=1, memory_gb=Decimal("3.5"),
                                   price_per_hour=Decimal("0.07")),
    )
    port = free_port()
    name = f"hostile-blue-{port}"
    spec = launch_spec(deployment, port, name=name)
    pid = process.start(name, spec.argv, spec.env, spec.cwd, sandbox=spec.sandbox)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.probe("127.0.0.1", port, spec.ready_path, 1, spec.probe_headers):
            break
        time.sleep(0.2)
    else:
        process.stop(pid, name, grace=1)
        pytest.fail(process.tail(process.log_path(name), 30))

    def call(what: str, **more) -> requests.Response:
        return requests.post(f"{base}/score", json={"do": what, **more}, timeout=60, headers=spec.probe_headers)

    yield call, pid, name, spec
    process.stop(pid, name, grace=1)


@isolated
def test_it_keeps_secrets_from_a_running_model_server(hostile_server):
    call, pid, _name, spec = hostile_server
    found = call("probe").json()
    _assert_nothing_read(found)
    # Nor can the studio's processes read its environment... but the studio can read its own child's.
    assert found["uid"] == spec.sandbox.uid
    assert f"STUDIO_INSTANCE={_name}".encode() in Path(f"/proc/{pid}/environ").read_bytes()


@pytest.mark.skipif(not sandbox.outbound_blockable(), reason="libseccomp is not installed")
def test_a_running_model_server_cannot_connect_to_services_on_this_host(hostile_server):
    call, _pid, _name, _spec = hostile_server
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        assert call("connect", port=port).json() == {"connect": "DENIED PermissionError"}
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the studio itself can
    # Accepting the gateway's connections still works: this very call came in over one.
    assert call("ping").status_code == 200


@isolated  # RLIMIT_NPROC needs a uid of its own
def test_a_fork_bomb_and_a_memory_hog_in_a_model_server_are_contained(hostile_server):
    call, pid, name, spec = hostile_server
    answer = call("fork").json()
    assert 0 < answer["children"] < spec.sandbox.limits.processes
    hog = call("hog").json()
    assert hog == {"allocated": 0, "error": "MemoryError"}
    # The server still answers, and the rest of the machine still starts processes.
    assert call("ping").json() == {"pid": pid}
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True).stdout == b"ok\n"
    process.stop(pid, name, grace=1)
    if sandbox.mode()[0] in ("namespace", "uid"):
        # The forks left the process group with setsid(); stopping the instance still ended them all.
        assert sandbox.pids_of_uid(spec.sandbox.uid) == []
        assert not spec.sandbox.root.exists()
