"""studio_client's HTTP behaviour, offline: retries on 429 honouring Retry-After, retries of
idempotent calls only on connection errors, pagination, errors carrying code/message/field,
pollers. The server here is a real HTTP server on loopback scripted per test (the studio's own
API is exercised end to end in test_cli.py)."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from studio_client import BadRequestError, NotFoundError, OperationFailed, RateLimitedError, StudioClient
from studio_client.errors import StudioConnectionError
from studio_client.poller import Poller
from tests.live import ROOT, free_port


class Scripted:
    """A loopback HTTP server answering from a list of (status, headers, body) per path."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], list] = {}
        self.seen: list[tuple[str, str]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                scripted.seen.append((self.command, self.path))
                key = (self.command, self.path.split("?")[0])
                queue = scripted.routes.get(key) or [(404, {}, {"error": {"code": "NotFound", "message": "no"}})]
                status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method: str, path: str, *answers) -> None:
        self.routes[(method, path)] = list(answers)


@pytest.fixture
def server():
    s = Scripted()
    yield s
    s.server.shutdown()


def client_for(url: str, sleeps: list | None = None, **kwargs) -> StudioClient:
    client = StudioClient(url, "t0ken", "team", poll_interval=0.01, **kwargs)
    if sleeps is not None:
        client.transport.sleep = sleeps.append
    return client


WS = "/api/v1/workspaces/team"


def test_it_retries_429_after_the_servers_retry_after(server):
    server.route("POST", f"{WS}/online-endpoints/e/list-keys",
                 (429, {"Retry-After": "7"}, {"error": {"code": "TooManyRequests", "message": "slow down"}}),
                 (200, {}, {"primary_key": "p", "secondary_key": "s"}))
    sleeps: list[float] = []
    assert client_for(server.url, sleeps).online_endpoints.list_keys("e") == {"primary_key": "p", "secondary_key": "s"}
    assert sleeps == [7.0]


def test_it_gives_up_on_429_after_its_retries_with_the_advice(server):
    server.route("GET", f"{WS}/online-endpoints",
                 (429, {"Retry-After": "2"}, {"error": {"code": "TooManyRequests", "message": "slow down"}}))
    sleeps: list[float] = []
    with pytest.raises(RateLimitedError) as caught:
        client_for(server.url, sleeps, retries=2).online_endpoints.list()
    assert caught.value.retry_after == 2 and caught.value.message == "slow down" and sleeps == [2.0, 2.0]


def test_it_retries_a_refused_connection_with_backoff_then_says_so():
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    sleeps: list[float] = []
    with pytest.raises(StudioConnectionError, match="cannot reach the studio"):
        client_for(url, sleeps).online_endpoints.get("e")
    assert sleeps == [0.5, 1.0, 2.0]


def test_errors_carry_the_apis_code_message_and_field(server):
    server.route("POST", f"{WS}/online-endpoints",
                 (400, {}, {"error": {"code": "BadRequest", "message": "name: not a DNS label", "field": "name"}}))
    with pytest.raises(BadRequestError) as caught:
        client_for(server.url).online_endpoints.begin_create({"name": "Bad_Name"})
    assert (caught.value.status, caught.value.code, caught.value.field) == (400, "BadRequest", "name")
    assert "not a DNS label" in str(caught.value)


def test_it_follows_pages_to_the_end(server):
    first = {"count": 3, "next": f"{server.url}{WS}/models?limit=2&offset=2", "previous": None,
             "results": [{"name": "a"}, {"name": "b"}]}
    last = {"count": 3, "next": None, "previous": None, "results": [{"name": "c"}]}
    server.route("GET", f"{WS}/models", (200, {}, first), (200, {}, last))
    assert [m["name"] for m in client_for(server.url).models.list()] == ["a", "b", "c"]


def test_a_poller_follows_the_state_to_failed_with_the_error(server):
    path = f"{WS}/online-endpoints/e/deployments/blue"
    server.route("POST", f"{WS}/online-endpoints/e/deployments",
                 (202, {}, {"name": "blue", "provisioning_state": "Creating"}))
    server.route("GET", path, (200, {}, {"name": "blue", "provisioning_state": "Creating"}),
                 (200, {}, {"name": "blue", "provisioning_state": "Failed", "error": "init() raised"}))
    seen = []
    client = client_for(server.url, on_progress=lambda what, text, elapsed: seen.append(text))
    poller = client.online_deployments.begin_create("e", {"name": "blue", "model": "m:1"})
    assert isinstance(poller, Poller) and not poller.done()
    with pytest.raises(OperationFailed, match="init\\(\\) raised"):
        poller.result(timeout=10)
    assert seen == ["Creating", "Failed"]


def test_a_delete_poller_ends_when_the_resource_is_gone(server):
    path = f"{WS}/online-endpoints/e"
    server.route("DELETE", path, (202, {}, {"name": "e", "provisioning_state": "Deleting"}))
    server.route("GET", path, (200, {}, {"name": "e", "provisioning_state": "Deleting"}),
                 (404, {}, {"error": {"code": "NotFound", "message": "gone"}}))
    poller = client_for(server.url).online_endpoints.begin_delete("e")
    assert poller.result(timeout=10) is None and poller.status() == "Deleted"
    with pytest.raises(NotFoundError):
        client_for(server.url).online_endpoints.get("e")


def test_the_client_and_a_cli_command_import_no_django(server):
    server.route("GET", f"{WS}/online-endpoints", (200, {}, [{"name": "a", "provisioning_state": "Succeeded"}]))
    code = (
        "import sys, io, contextlib\n"
        "import studio_client\n"
        "from studio_client.cli import main\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out):\n"
        "    assert main(['online-endpoint', 'list']) == 0\n"
        "assert '\"name\": \"a\"' in out.getvalue(), out.getvalue()\n"
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django imported'\n"
        "print('clean')\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STUDIO_URL": server.url, "STUDIO_TOKEN": "t",
           "STUDIO_WORKSPACE": "team", "STUDIO_CONFIG": "/nonexistent/config.json"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "clean", result.stderr


def test_a_list_piped_into_head_ends_quietly(server):
    endpoints = [{"name": f"endpoint-{i:04d}", "provisioning_state": "Succeeded", "description": "x" * 200}
                 for i in range(2000)]
    server.route("GET", "/api/v1/workspaces/team/online-endpoints", (200, {}, endpoints))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STUDIO_URL": server.url, "STUDIO_TOKEN": "t",
           "STUDIO_WORKSPACE": "team", "STUDIO_CONFIG": "/nonexistent/config.json"}
    piped = subprocess.run(f"{sys.executable} -m studio_client online-endpoint list | head -n 3", shell=True,
                           env=env, capture_output=True, text=True, timeout=60)
    assert piped.stdout.count("\n") == 3
    assert "Traceback" not in piped.stderr and "BrokenPipeError" not in piped.stderr, piped.stderr


def test_a_spec_with_several_errors_names_them_all(tmp_path):
    (tmp_path / "d.yml").write_text("name: b\nendpoint_name: a\ninstance_count: two\nowner: me\n"
                                    "request_settings:\n  retries: 3\n")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "STUDIO_URL": f"http://127.0.0.1:{free_port()}",
           "STUDIO_TOKEN": "t", "STUDIO_WORKSPACE": "team", "STUDIO_CONFIG": str(tmp_path / "none.json")}
    result = subprocess.run([sys.executable, "-m", "studio_client", "online-deployment", "create", "-f", "d.yml"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("studio: invalid spec:")]
    # Every problem, each with its file, line and field path, in file order.
    assert [line.split(": ")[2:4] for line in lines] == [
        ["d.yml:1", "model"], ["d.yml:3", "instance_count"], ["d.yml:4", "owner"],
        ["d.yml:6", "request_settings.retries"],
    ]
    assert "must be a whole number, not 'two'" in lines[1] and "unknown field" in lines[2]
