"""The gateway sends a request to a model server at most once: it tries another instance only when no
byte of the request reached one (refused, unreachable, a pooled connection found closed before writing),
and answers 502 when the connection fails after the request was written.

Every model server here is the studio's own (runtime/server.py) on a score.py that appends each call's
id to a file before doing what the call asks: answer, kill its own process, or shut down its
connections (while handling the call, or a moment after answering, so the gateway's pooled connection
is closed while idle)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest
import requests
from django.db.models import Sum

from endpoints_app.gateway import http1, proxy
from endpoints_app.gateway.routes import DeploymentRoute, InstanceRoute
from endpoints_app.instance_auth import instance_secret
from endpoints_app.models import UsageMinute
from tests.gateway.conftest import auth, child_env, free_port, wait_http
from tests.live import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

SETTINGS = {"max_concurrent_requests_per_instance": 8, "request_timeout_ms": 10000}
CLIENTS = ["http1", "aiohttp"]

SCORE_PY = '''
import json
import os
import signal
import socket
import threading
import time

def init():
    pass

def _shut_connections():
    """Shut down every connected socket of this process (the gateway's connections): the process lives on."""
    for name in os.listdir("/proc/self/fd"):
        try:
            sock = socket.socket(fileno=os.dup(int(name)))
        except OSError:
            continue
        try:
            sock.getpeername()
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # not a socket, a listening socket, or not connected
        finally:
            sock.close()

def _later(seconds):
    time.sleep(seconds)
    _shut_connections()

def run(raw_data):
    call = json.loads(raw_data)
    with open(os.environ["CALLS_FILE"], "a") as fh:
        fh.write(call["id"] + "\\n")
    action = call.get("action") if os.environ.get("OBEY") == "1" else None
    if action == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "shut":
        _shut_connections()
        time.sleep(1)
    if action == "shut-after-answer":
        threading.Thread(target=_later, args=(0.3,), daemon=True).start()
    return {"id": call["id"], "pid": os.getpid()}
'''


class Servers:
    """The studio's model server on SCORE_PY, one process per instance, each with its own calls file."""

    def __init__(self, procs, tmp_path: Path) -> None:
        self.procs, self.tmp_path = procs, tmp_path
        self.code = tmp_path / "code"
        self.code.mkdir()
        (self.code / "score.py").write_text(textwrap.dedent(SCORE_PY))

    def start(self, instance: str, obey: bool = True):
        """(port, process, calls file); with obey=False the server ignores the calls' actions."""
        port = free_port()
        calls = self.tmp_path / f"{instance}.calls"
        calls.touch()
        env = child_env(CALLS_FILE=str(calls), STUDIO_INSTANCE_SECRET=instance_secret(instance, port),
                        OBEY="1" if obey else "0")
        proc = self.procs.start([sys.executable, "-m", "endpoints_app.runtime.server", "--format", "custom",
                                 "--code-dir", str(self.code), "--port", str(port), "--name", instance],
                                env=env, name=instance)
        wait_http(f"http://127.0.0.1:{port}/health/ready", proc=proc, ok=True)
        return port, proc, calls


def calls_of(*files: Path) -> list[str]:
    return [line for f in files for line in f.read_text().splitlines()]


def score(url: str, key: str, endpoint: str, payload: dict) -> requests.Response:
    return requests.post(f"{url}/inference/{endpoint}/score", json=payload, headers=auth(key), timeout=30)


def _usage_5xx(endpoint) -> int:
    return UsageMinute.objects.filter(endpoint=endpoint).aggregate(s5=Sum("status_5xx"))["s5"] or 0


@pytest.mark.parametrize("client", CLIENTS)
def test_a_model_server_that_dies_while_handling_a_request_gets_it_once_and_the_client_a_502(
        procs, make_endpoint, tmp_path, client):
    servers = Servers(procs, tmp_path)
    first_port, first, first_calls = servers.start("once-blue-0")
    second_port, second, second_calls = servers.start("once-blue-1")
    endpoint, creds = make_endpoint("once", {"blue": ([first_port, second_port], 100, SETTINGS)})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)
    # Warm both instances: the fatal call then goes over a pooled connection, as most calls do.
    for i in range(4):
        assert score(url, creds["primary"], "once", {"id": f"warm-{i}"}).status_code == 200

    answer = score(url, creds["primary"], "once", {"id": "fatal", "action": "die"})

    assert answer.status_code == 502, answer.text
    error = answer.json()["error"]
    assert error["code"] == "BadGateway"
    assert "closed the connection while handling the request" in error["message"]
    assert "'blue'" in error["message"]
    assert calls_of(first_calls, second_calls).count("fatal") == 1
    dead = first if first.poll() is not None else second
    assert dead.wait(timeout=5) != 0
    # The dead instance refuses connections: every later call is tried on the other one, once.
    for i in range(6):
        answer = score(url, creds["primary"], "once", {"id": f"after-{i}"})
        assert answer.status_code == 200, answer.text
    assert sorted(c for c in calls_of(first_calls, second_calls) if c.startswith("after-")) == \
        [f"after-{i}" for i in range(6)]
    # Counted as a failed request, as every error answer is.
    wait_for(lambda: _usage_5xx(endpoint) == 1, timeout=15, what="the 502 in usage")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_model_server_that_closes_the_connection_mid_request_is_not_sent_it_again(
        procs, make_endpoint, tmp_path, client):
    servers = Servers(procs, tmp_path)
    first_port, first, first_calls = servers.start("shut-blue-0")
    second_port, second, second_calls = servers.start("shut-blue-1")
    _, creds = make_endpoint("shut", {"blue": ([first_port, second_port], 100, SETTINGS)})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)

    answer = score(url, creds["primary"], "shut", {"id": "cut", "action": "shut"})

    assert answer.status_code == 502, answer.text
    assert "closed the connection while handling the request" in answer.json()["error"]["message"]
    time.sleep(1.5)  # the handler's sleep ends: a second delivery would have been written by now
    assert calls_of(first_calls, second_calls) == ["cut"]
    # Both servers live on, and the next calls are answered (on fresh connections), each once.
    assert first.poll() is None and second.poll() is None
    for i in range(4):
        assert score(url, creds["primary"], "shut", {"id": f"next-{i}"}).status_code == 200
    assert sorted(calls_of(first_calls, second_calls)) == ["cut", *(f"next-{i}" for i in range(4))]


@pytest.mark.parametrize("client", CLIENTS)
def test_an_instance_that_refuses_connections_is_skipped_for_another_and_each_call_delivered_once(
        procs, make_endpoint, tmp_path, client):
    servers = Servers(procs, tmp_path)
    down_port = free_port()  # nothing listens there
    up_port, _, up_calls = servers.start("down-blue-1")
    _, creds = make_endpoint("down", {"blue": ([down_port, up_port], 100, SETTINGS)})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)

    statuses = [score(url, creds["primary"], "down", {"id": f"call-{i}"}).status_code for i in range(12)]

    assert statuses == [200] * 12
    assert calls_of(up_calls) == [f"call-{i}" for i in range(12)]


@pytest.mark.parametrize("client", CLIENTS)
def test_a_pooled_connection_the_server_closed_while_idle_is_not_used(procs, make_endpoint, tmp_path, client):
    servers = Servers(procs, tmp_path)
    port, proc, calls = servers.start("idle-blue-0")
    _, creds = make_endpoint("idle", {"blue": ([port], 100, SETTINGS)})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)

    # Answered, then the server shuts the (now idle, pooled) connection down.
    assert score(url, creds["primary"], "idle", {"id": "first", "action": "shut-after-answer"}).status_code == 200
    time.sleep(1)

    answer = score(url, creds["primary"], "idle", {"id": "second"})

    assert answer.status_code == 200, answer.text
    assert calls_of(calls) == ["first", "second"]
    assert proc.poll() is None


def _closed_while_loop_busy(client, inst: InstanceRoute, calls: Path) -> tuple[int, bytes]:
    """Pool a connection, let the server shut it while idle, and send the next request without giving the
    event loop a turn in between: the close has reached this machine but the client has not been told, so
    only asking the kernel (http1.dropped) keeps the request off the dead connection."""

    async def scenario() -> tuple[int, bytes]:
        try:
            status, _, _ = await client.post(inst, "/score", json.dumps(
                {"id": "first", "action": "shut-after-answer"}).encode(), b"first")
            assert status == 200
            time.sleep(1.0)  # blocks the loop: the server's FIN arrives, no callback runs
            status, data, _ = await client.post(inst, "/score", b'{"id": "second"}', b"second")
            return status, data
        finally:
            await client.close()

    return asyncio.run(scenario())


@pytest.mark.parametrize("client_class", [proxy.Http1Client, proxy.AiohttpClient])
def test_a_connection_closed_before_the_client_noticed_is_checked_and_not_written_to(
        procs, tmp_path, client_class):
    servers = Servers(procs, tmp_path)
    port, _, calls = servers.start("race-blue-0")
    inst = InstanceRoute(name="race-blue-0", host="127.0.0.1", port=port, secret=instance_secret("race-blue-0", port))

    status, data = _closed_while_loop_busy(client_class(), inst, calls)

    assert status == 200, data
    assert calls_of(calls) == ["first", "second"]


def test_a_pooled_connection_idle_longer_than_the_margin_is_replaced(procs, tmp_path, monkeypatch):
    """Idle past MAX_IDLE_S (below the model servers' keep-alive timeout) a connection is closed unused."""
    servers = Servers(procs, tmp_path)
    port, _, calls = servers.start("aged-blue-0")
    monkeypatch.setattr(http1, "MAX_IDLE_S", 0.5)
    pool = http1.Http1Pool()
    head = InstanceRoute(name="aged-blue-0", host="127.0.0.1", port=port,
                         secret=instance_secret("aged-blue-0", port)).request_head("/score")

    async def scenario() -> tuple[bool, bool]:
        try:
            await pool.post("127.0.0.1", port, head, b'{"id": "a"}')
            pooled = pool._idle[("127.0.0.1", port)][-1]
            await pool.post("127.0.0.1", port, head, b'{"id": "b"}')
            kept = pool._idle[("127.0.0.1", port)][-1] is pooled
            await asyncio.sleep(0.7)
            await pool.post("127.0.0.1", port, head, b'{"id": "c"}')
            replaced = pool._idle[("127.0.0.1", port)][-1] is not pooled and pooled.transport.is_closing()
            return kept, replaced
        finally:
            pool.close()

    assert asyncio.run(scenario()) == (True, True)
    assert calls_of(calls) == ["a", "b", "c"]


def test_model_servers_keep_idle_connections_longer_than_the_gateway_reuses_them():
    from endpoints_app.runtime.listen import KEEP_ALIVE_S

    assert http1.MAX_IDLE_S <= KEEP_ALIVE_S - 5
    assert proxy.MAX_IDLE_S == http1.MAX_IDLE_S


@pytest.mark.parametrize("client", CLIENTS)
def test_a_mirror_copy_follows_the_same_rule(procs, make_endpoint, tmp_path, client):
    """Mirror copies go through the same forward(): the shadow instance that dies on a copy is its only one."""
    servers = Servers(procs, tmp_path)
    live_port, _, live_calls = servers.start("mirrored-blue-0", obey=False)
    shadows = [servers.start(f"mirrored-green-{i}") for i in range(2)]
    _, creds = make_endpoint("mirrored", {"blue": ([live_port], 100, SETTINGS),
                                          "green": ([port for port, _, _ in shadows], 0, SETTINGS)},
                             mirror={"green": 100})
    url, _ = procs.gateway(STUDIO_GATEWAY_CLIENT=client)

    answer = score(url, creds["primary"], "mirrored", {"id": "copied", "action": "die"})

    assert answer.status_code == 200, answer.text
    wait_for(lambda: any(proc.poll() is not None for _, proc, _ in shadows), timeout=15, what="a shadow to die")
    time.sleep(1)  # a second copy, if one were sent, would have reached the other shadow by now
    assert calls_of(live_calls) == ["copied"]
    assert calls_of(*(calls for _, _, calls in shadows)) == ["copied"]
    assert sum(proc.poll() is None for _, proc, _ in shadows) == 1


def _forward_all(client, deployment: DeploymentRoute, count: int) -> list[tuple[int, str]]:
    async def calls() -> list[tuple[int, str]]:
        try:
            answers = []
            for i in range(count):
                status, data, _, inst = await proxy.forward(client, deployment, "/score",
                                                            json.dumps({"id": f"call-{i}"}).encode())
                answers.append((status, inst.name))
            return answers
        finally:
            await client.close()

    return asyncio.run(calls())


@pytest.mark.parametrize("client_class", [proxy.Http1Client, proxy.AiohttpClient])
def test_a_socket_served_by_the_wrong_uid_gets_no_byte_and_the_call_goes_to_another_instance(
        procs, tmp_path, client_class):
    servers = Servers(procs, tmp_path)
    port, _, calls = servers.start("squat-blue-1")
    good = InstanceRoute(name="squat-blue-1", host="127.0.0.1", port=port, secret=instance_secret("squat-blue-1", port))
    # A squatter on an instance's socket, running as this process's uid rather than the instance's.
    path = tmp_path / "server.sock"
    squatter = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    squatter.bind(str(path))
    squatter.listen(16)
    squatted = InstanceRoute(name="squat-blue-0", host="127.0.0.1", port=1, socket=str(path), uid=os.getuid() + 1)
    deployment = DeploymentRoute(name="blue", instances=[squatted, good], request_timeout_s=10,
                                 max_concurrent_per_instance=8)

    with squatter:
        answers = _forward_all(client_class(), deployment, 4)
        squatter.setblocking(False)
        received = []
        while True:
            try:
                conn, _ = squatter.accept()
            except BlockingIOError:
                break
            with conn:
                conn.settimeout(1)
                received.append(conn.recv(65536))

    assert answers == [(200, "squat-blue-1")] * 4
    assert received and set(received) == {b""}  # it was connected to, and sent nothing
    assert squatted.failed_until > 0
    assert calls_of(calls) == [f"call-{i}" for i in range(4)]


@pytest.mark.parametrize("client_class", [proxy.Http1Client, proxy.AiohttpClient])
def test_a_connection_not_made_in_time_is_tried_on_another_instance(procs, tmp_path, client_class, monkeypatch):
    servers = Servers(procs, tmp_path)
    port, _, calls = servers.start("stuck-blue-1")
    good = InstanceRoute(name="stuck-blue-1", host="127.0.0.1", port=port, secret=instance_secret("stuck-blue-1", port))
    monkeypatch.setattr(http1, "CONNECT_TIMEOUT_S", 1.0)
    monkeypatch.setattr(proxy, "CONNECT_TIMEOUT_S", 1.0)
    # A listener that never accepts, its queue full: the kernel drops further SYNs, so connecting hangs.
    stuck = socket.socket()
    stuck.bind(("127.0.0.1", 0))
    stuck.listen(0)
    fillers = [socket.create_connection(stuck.getsockname(), timeout=2)]
    hung = InstanceRoute(name="stuck-blue-0", host="127.0.0.1", port=stuck.getsockname()[1])
    deployment = DeploymentRoute(name="blue", instances=[hung, good], request_timeout_s=10,
                                 max_concurrent_per_instance=8)
    try:
        started = time.monotonic()
        answers = _forward_all(client_class(), deployment, 3)
        took = time.monotonic() - started
    finally:
        for sock in [*fillers, stuck]:
            sock.close()

    assert answers == [(200, "stuck-blue-1")] * 3
    assert hung.failed_until > 0
    assert 1.0 <= took < 8, took  # one connect timeout, then the instance is skipped
    assert calls_of(calls) == [f"call-{i}" for i in range(3)]


@pytest.mark.parametrize("client_class", [proxy.Http1Client, proxy.AiohttpClient])
def test_a_ray_nodes_relay_whose_model_server_is_gone_says_so_and_the_call_goes_to_another_instance(
        procs, tmp_path, client_class, monkeypatch):
    from endpoints_app.runtime import ray_node

    servers = Servers(procs, tmp_path)
    port, _, calls = servers.start("relay-blue-1")
    good = InstanceRoute(name="relay-blue-1", host="127.0.0.1", port=port, secret=instance_secret("relay-blue-1", port))
    # A node's relay (runtime/ray_node.py) in front of a socket whose server has gone: it takes the
    # connection and the request, reaches no server and answers that nothing was delivered.
    relay_port = free_port()
    monkeypatch.setenv("STUDIO_NODE_RELAY_PORTS", f"{relay_port}-{relay_port}")
    relay = ray_node.Relay("127.0.0.1", tmp_path / "gone.sock", os.getuid(), "relay-secret")
    try:
        gone = InstanceRoute(name="relay-blue-0", host="127.0.0.1", port=relay.port, secret="relay-secret")
        deployment = DeploymentRoute(name="blue", instances=[gone, good], request_timeout_s=10,
                                     max_concurrent_per_instance=8)
        answers = _forward_all(client_class(), deployment, 3)
    finally:
        relay.close()

    assert answers == [(200, "relay-blue-1")] * 3
    assert gone.failed_until > 0
    assert calls_of(calls) == [f"call-{i}" for i in range(3)]


def test_a_relay_that_reached_no_server_answers_a_502_naming_it_after_reading_the_whole_body(tmp_path, monkeypatch):
    from endpoints_app.runtime import ray_node

    relay_port = free_port()
    monkeypatch.setenv("STUDIO_NODE_RELAY_PORTS", f"{relay_port}-{relay_port}")
    relay = ray_node.Relay("127.0.0.1", tmp_path / "gone.sock", os.getuid(), "relay-secret")
    try:
        body = b"x" * (3 << 20)  # more than the socket buffers hold: unread, it would reset the connection
        answer = requests.post(f"http://127.0.0.1:{relay.port}/score", data=body, timeout=30,
                               headers={"Authorization": "Bearer relay-secret", "Content-Type": "application/json"})
        refused = requests.post(f"http://127.0.0.1:{relay.port}/score", data=b"{}", timeout=30,
                                headers={"Authorization": "Bearer wrong"})
    finally:
        relay.close()

    assert answer.status_code == 502
    assert answer.headers["x-studio-undelivered"] == "1"
    assert answer.json()["error"]["code"] == "BadGateway"
    assert refused.status_code == 401 and "x-studio-undelivered" not in refused.headers
