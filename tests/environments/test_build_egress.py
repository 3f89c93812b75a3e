"""An environment build reaches the package index and nothing else.

A package whose build backend, run by uv inside the build sandbox, tries the host's services (a socket
this test listens on at 127.0.0.1, PostgreSQL's 127.0.0.1:5432), a public address directly, and
non-index hosts through the egress proxy: every attempt fails, in the build log, and the proxy writes
its refusals there too; the same probe reaches pypi.org:443 through the proxy (so the probe could
succeed), and a real package (six) installs from PyPI through it. A plain-HTTP index on 127.0.0.1,
named by the index URL, serves a build through the proxy too; when the studio's host has its own
HTTPS_PROXY, the egress proxy goes out through it."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import shutil
import socket
import socketserver
import textwrap
import threading
import zipfile
from pathlib import Path

import pytest

from endpoints_app.runtime import egress, sandbox
from endpoints_app.runtime import environments as envs

pytestmark = pytest.mark.slow

BACKEND = '''
import os, socket, sys

LISTENER = {listener}
SOCKET = {socket_path!r}


def _direct(host, port):
    socket.create_connection((host, port), timeout=5).close()
    return "open"


def _connect(target, unix=False):
    if unix:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(SOCKET)
    else:
        proxy = os.environ["HTTPS_PROXY"].removeprefix("http://")
        host, port = proxy.rsplit(":", 1)
        s = socket.create_connection((host, int(port)), timeout=10)
    with s:
        if target.startswith("http://"):
            s.sendall(("GET " + target + " HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n").encode())
        else:
            s.sendall(("CONNECT " + target + " HTTP/1.1\\r\\nHost: " + target + "\\r\\n\\r\\n").encode())
        status = s.recv(4096).split(b"\\r\\n")[0].decode()
    if " 200 " not in status + " ":
        raise PermissionError(status)
    return status


def _probe():
    tries = [
        ("direct-listener", lambda: _direct("127.0.0.1", LISTENER)),
        ("direct-postgres", lambda: _direct("127.0.0.1", 5432)),
        ("direct-public", lambda: _direct("1.1.1.1", 443)),
        ("direct-pypi", lambda: _direct("pypi.org", 443)),
        ("proxy-listener", lambda: _connect("127.0.0.1:%d" % LISTENER)),
        ("proxy-postgres", lambda: _connect("127.0.0.1:5432")),
        ("proxy-localhost-postgres", lambda: _connect("localhost:5432")),
        ("proxy-localhost-443", lambda: _connect("localhost:443")),
        ("proxy-other-host", lambda: _connect("example.com:443")),
        ("proxy-index-other-port", lambda: _connect("pypi.org:22")),
        ("proxy-plain-http-listener", lambda: _connect("http://127.0.0.1:%d/" % LISTENER)),
        ("unix-postgres", lambda: _connect("127.0.0.1:5432", unix=True)),
    ]
    lines = []
    for name, action in tries:
        try:
            lines.append("PROBE %s CONNECTED %s" % (name, action()))
        except Exception as exc:
            lines.append("PROBE %s FAILED %s %s" % (name, type(exc).__name__, exc))
    try:
        lines.append("CONTROL pypi CONNECTED %s" % _connect("pypi.org:443"))
    except Exception as exc:
        lines.append("CONTROL pypi FAILED %s %s" % (type(exc).__name__, exc))
    print("\\n".join(lines), file=sys.stderr, flush=True)
    raise SystemExit("hostile probe done")


def get_requires_for_build_wheel(config_settings=None):
    _probe()


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    _probe()
'''

PYPROJECT = """
[build-system]
requires = []
build-backend = "backend"
backend-path = ["."]

[project]
name = "hostile-probe"
version = "1.0"
"""


@pytest.fixture
def build_folder(settings, monkeypatch, tmp_path):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)  # the egress proxy connects itself unless a test says otherwise
    settings.STUDIO_ENV_INDEX_URL = ""  # uv's default, PyPI
    settings.STUDIO_ENV_EXTRA_INDEX_URLS = []
    settings.STUDIO_ENV_FIND_LINKS = []
    # localhost is allowed by name here, yet resolves to loopback: the proxy must still refuse it.
    settings.STUDIO_ENV_EGRESS_HOSTS = ["files.pythonhosted.org", "localhost"]
    folder = Path(settings.DATA_DIR) / "environments" / "egress-probe"
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "venv").mkdir(parents=True)
    os.chmod(folder, 0o755)  # as build_venv leaves it
    cache = Path(settings.STUDIO_ENV_UV_CACHE)
    cache.mkdir(parents=True, exist_ok=True)
    if sandbox.privileged():
        os.chown(folder / "venv", envs.BUILD_UID, envs.BUILD_UID)
        if os.stat(cache).st_uid != envs.BUILD_UID:
            envs._chown_tree(cache, envs.BUILD_UID)
    return folder, cache


def test_a_build_reaches_the_index_through_the_proxy_and_nothing_else(build_folder, tmp_path):
    folder, cache = build_folder
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    package = folder / "hostile"
    package.mkdir(exist_ok=True)
    os.chmod(package, 0o755)
    (package / "pyproject.toml").write_text(PYPROJECT)
    (package / "backend.py").write_text(textwrap.dedent(BACKEND).format(
        listener=listener.getsockname()[1], socket_path=egress.SANDBOX_SOCKET))
    for path in package.iterdir():
        os.chmod(path, 0o644)
    uv, venv = envs.uv_binary(), folder / "venv"
    log_path = tmp_path / "build.log"
    with open(log_path, "ab") as log:
        assert envs._sandboxed([uv, "venv", "--python", envs.base_python(), "--allow-existing", "--no-project",
                                str(venv)], folder, cache, log, timeout=120) == 0, log_path.read_text()
        six = envs._sandboxed([uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-cache",
                               "six"],
                              folder, cache, log, timeout=300)
        hostile = envs._sandboxed([uv, "pip", "install", "--python", str(venv / "bin" / "python"),
                                   "--no-cache", str(package)], folder, cache, log, timeout=300)
    text = log_path.read_text(errors="replace")
    assert six == 0, text
    assert list(venv.glob("lib/python*/site-packages/six.py")), text
    assert hostile != 0, text
    lines = text.splitlines()
    probes = [line for line in lines if line.strip().startswith("PROBE ")]
    assert len(probes) == 12, text
    assert all(" FAILED " in line for line in probes), "\n".join(probes)
    assert "refused CONNECT pypi.org:443" not in text and "files.pythonhosted.org" not in text, text
    # The probe could succeed: the index's host, through the proxy, is reachable.
    assert "CONTROL pypi CONNECTED HTTP/1.1 200" in text, text
    # The proxy refused and said so in the build log (it never reached them: the listener saw no one).
    for refused in ("127.0.0.1:5432 is not a package index host", "example.com:443 is not a package index host",
                    "pypi.org:22 is not a package index host", "localhost resolves to a private address",
                    f"127.0.0.1:{listener.getsockname()[1]} is not a package index host"):
        assert any(line.startswith("=== egress proxy: refused") and refused in line for line in lines), refused
    with pytest.raises(BlockingIOError):
        listener.accept()
    listener.close()
    assert not (folder / "egress.sock").exists()


def test_the_proxy_allows_only_the_index_hosts_it_is_configured_with():
    allowed, named = egress.allowed_hosts([envs.PYPI], None)
    assert allowed == {("pypi.org", 443), ("files.pythonhosted.org", 443)} and named == {"pypi.org"}
    allowed, named = egress.allowed_hosts(["http://10.1.2.3:3141/root/pypi/+simple/"], ["cdn.example:8443"])
    assert allowed == {("10.1.2.3", 443), ("10.1.2.3", 3141), ("cdn.example", 8443)} and named == {"10.1.2.3"}
    assert not egress.is_public("127.0.0.1") and not egress.is_public("169.254.169.254")
    assert not egress.is_public("10.0.0.1") and not egress.is_public("::ffff:127.0.0.1")
    assert not egress.is_public("192.168.1.1") and not egress.is_public("fd00::1") and not egress.is_public("::1")
    assert egress.is_public("151.101.0.223")


def _wheel(folder: Path, name: str, version: str) -> Path:
    """A minimal pure-Python wheel, written by hand (no build tool needed)."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{name}.py": "ANSWER = 42\n",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = ""
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record += f"{path},sha256={digest},{len(text.encode())}\n"
    files[f"{dist}/RECORD"] = record + f"{dist}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def test_a_build_installs_from_a_plain_http_index_on_a_private_address_its_url_names(build_folder, settings,
                                                                                      tmp_path):
    folder, cache = build_folder
    root = tmp_path / "index"
    (root / "simple" / "egress-local-probe").mkdir(parents=True)
    wheel = _wheel(root, "egress_local_probe", "1.0")
    (root / "simple" / "egress-local-probe" / "index.html").write_text(
        f'<html><body><a href="../../{wheel.name}">{wheel.name}</a></body></html>')
    seen: list[str] = []

    class Index(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, format, *args):
            seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Index)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.STUDIO_ENV_INDEX_URL = f"http://127.0.0.1:{server.server_address[1]}/simple"
    settings.STUDIO_ENV_EGRESS_HOSTS = None
    uv, venv = envs.uv_binary(), folder / "venv"
    log_path = tmp_path / "build.log"
    try:
        with open(log_path, "ab") as log:
            for step in ([uv, "venv", "--python", envs.base_python(), "--allow-existing", "--no-project", str(venv)],
                         [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-cache",
                          "egress-local-probe"]):
                assert envs._sandboxed(step, folder, cache, log, timeout=120) == 0, log_path.read_text()
    finally:
        server.shutdown()
        server.server_close()
    assert list(venv.glob("lib/python*/site-packages/egress_local_probe.py")), log_path.read_text()
    assert f"/{wheel.name}" in seen and "egress proxy: refused" not in log_path.read_text()


class _RecordingProxy(socketserver.ThreadingTCPServer):
    """The studio host's own HTTPS proxy (as behind a company firewall): it records what it tunnels."""

    daemon_threads = True
    tunnels: list[str]

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            target = self.rfile.readline().decode().split()[1]
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            self.server.tunnels.append(target)
            host, port = target.rsplit(":", 1)
            with socket.create_connection((host, int(port)), timeout=20) as upstream:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n\r\n")
                threading.Thread(target=self._copy, args=(upstream, self.connection), daemon=True).start()
                self._copy(self.connection, upstream)

        @staticmethod
        def _copy(source, sink):
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    sink.shutdown(socket.SHUT_WR)
                except OSError:
                    pass


def test_a_build_goes_out_through_the_hosts_own_proxy_when_it_has_one(build_folder, monkeypatch, tmp_path):
    folder, cache = build_folder
    upstream = _RecordingProxy(("127.0.0.1", 0), _RecordingProxy.Handler)
    upstream.tunnels = []
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{upstream.server_address[1]}")
    uv, venv = envs.uv_binary(), folder / "venv"
    log_path = tmp_path / "build.log"
    try:
        with open(log_path, "ab") as log:
            for step in ([uv, "venv", "--python", envs.base_python(), "--allow-existing", "--no-project", str(venv)],
                         [uv, "pip", "install", "--python", str(venv / "bin" / "python"), "--no-cache", "six"]):
                assert envs._sandboxed(step, folder, cache, log, timeout=300) == 0, log_path.read_text()
    finally:
        upstream.shutdown()
        upstream.server_close()
    assert list(venv.glob("lib/python*/site-packages/six.py")), log_path.read_text()
    assert {"pypi.org:443", "files.pythonhosted.org:443"} <= set(upstream.tunnels), upstream.tunnels
