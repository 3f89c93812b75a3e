"""Real model-server processes, started the way the controller starts them (runtime.launch.launch_spec,
sandboxed, listening on their own socket), reached over that socket, and stopped after the tests.
Each gets a free port all the same: it names the instance (and derives its secret)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from endpoints_app.catalog.cards import card
from endpoints_app.catalog.seed import build_artifacts
from endpoints_app.models import CatalogModel, Deployment, InstanceType
from endpoints_app.runtime import channel, sandbox
from endpoints_app.runtime.launch import launch_spec


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Answer:
    """What a model server answered over its socket (the bits of requests.Response the tests read)."""

    def __init__(self, status_code: int, headers: dict, content: bytes) -> None:
        self.status_code, self.headers, self.content = status_code, headers, content
        self.text = content.decode(errors="replace")

    def json(self):
        return json.loads(self.content)


def over_socket(name: str, method: str, path: str, headers: dict | None = None, body: bytes | None = None,
                json_body=None, timeout: float = 30) -> Answer:
    """One request to instance `name` over its own socket, as the gateway sends it (runtime/channel.py)."""
    headers = dict(headers or {})
    if json_body is not None:
        body = json.dumps(json_body).encode()
        headers.setdefault("Content-Type", "application/json")
    conn = channel.connection(Path(settings.DATA_DIR), name, timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        conn.close()


@dataclass
class Server:
    proc: subprocess.Popen
    base: str
    log_path: Path
    ready_path: str
    box: sandbox.SandboxSpec | None = None
    # The instance secret, as the gateway sends it.
    headers: dict | None = None
    # The instance name it was launched as: the gateway derives its secret from this name and the port.
    name: str = ""

    def get(self, path: str, headers: dict | None = None, timeout: float = 30) -> Answer:
        return over_socket(self.name, "GET", path, self.headers if headers is None else headers, timeout=timeout)

    def post(self, path: str, headers: dict | None = None, json=None, data: bytes | None = None,
             timeout: float = 120) -> Answer:
        return over_socket(self.name, "POST", path, {**(self.headers or {}), **(headers or {})}, body=data,
                           json_body=json, timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 120) -> bool:
        """True once ready_path answers 200; False if the process exits first or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                if self.get(self.ready_path, timeout=2).status_code == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.2)
        return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            sandbox.signal_sandbox(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                sandbox.signal_sandbox(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.box is not None:
            sandbox.remove(self.box)


def make_deployment(model: CatalogModel, *, code_configuration: dict | None = None,
                    environment_variables: dict | None = None) -> Deployment:
    """An unsaved deployment: launch_spec only reads its fields."""
    return Deployment(
        name="blue",
        model=model,
        instance_type=InstanceType(name="Standard_DS2_v2", family="DSv2", cores=2, memory_gb=Decimal("7"),
                                   price_per_hour=Decimal("0.14")),
        code_configuration=code_configuration or {},
        environment_variables=environment_variables or {},
    )


def start_server(deployment: Deployment, log_dir: Path) -> Server:
    port = free_port()
    name = f"{deployment.model.name}-{port}"
    spec = launch_spec(deployment, port, name=name)
    log_path = log_dir / f"{deployment.model.name}-{port}.log"
    sandbox.prepare(spec.sandbox)
    with log_path.open("wb") as log:
        proc = sandbox.popen(spec.sandbox, spec.argv, spec.env, spec.cwd, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
    return Server(proc=proc, base=f"http://127.0.0.1:{port}", log_path=log_path, ready_path=spec.ready_path,
                  box=spec.sandbox, headers=spec.probe_headers, name=name)


@pytest.fixture(scope="session")
def seeded_artifacts() -> dict:
    """The seed's files (trained once per data dir), without the database."""
    return build_artifacts()


def catalog_model(name: str, artifacts: dict) -> CatalogModel:
    fields = card(name)
    path, _tags, _response = artifacts[name]
    return CatalogModel(registry="studio", name=name, version=1, artifact_path=path,
                        **{k: v for k, v in fields.items() if k in {"format", "task", "license"}})


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("instance-logs")


@pytest.fixture(scope="session")
def seeded_server(seeded_artifacts, log_dir):
    """seeded_server(name) -> a ready Server for that catalog model, started once per session."""
    servers: dict[str, Server] = {}

    def get(name: str) -> Server:
        if name not in servers:
            server = start_server(make_deployment(catalog_model(name, seeded_artifacts)), log_dir)
            servers[name] = server
            assert server.wait_ready(180), f"{name} never became ready:\n{server.log()[-3000:]}"
        return servers[name]

    yield get
    for server in servers.values():
        server.stop()
