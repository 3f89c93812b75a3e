"""The playground relay against real processes: the studio's web process (uvicorn on
portal.asgi, which mounts the gateway, as `make run` serves it) and a real SmolLM2 / MiniLM
server. A logged-in session posts the playground's form; the answer must stream (tokens
arriving over time, not in one buffered piece) and the key never reaches the browser."""

from __future__ import annotations

import json
import re
import socket
import time
from urllib.parse import urlencode

import pytest
import requests

from endpoints_app.services.keys import get_keys
from tests.conftest import PASSWORD
from tests.foundation.conftest import CHAT, EMBEDDINGS, needs_llama
from tests.gateway.conftest import BIN, child_env, free_port, wait_http

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def web(procs):
    """The studio's web process (Django + the embedded gateway) on the test database."""
    port = free_port()
    argv = [str(BIN / "uvicorn"), "portal.asgi:application", "--port", str(port), "--lifespan", "on",
            "--no-access-log", "--loop", "uvloop", "--http", "httptools"]
    proc = procs.start(argv, env=child_env(STUDIO_PORT=str(port)), name="web")
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/healthz", proc=proc)
    return url


def session_for(url: str, username: str) -> requests.Session:
    session = requests.Session()
    page = session.get(f"{url}/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    done = session.post(f"{url}/login/", data={"username": username, "password": PASSWORD,
                                               "csrfmiddlewaretoken": token}, headers={"Referer": f"{url}/login/"})
    assert done.status_code == 200 and "/login/" not in done.url, done.text[:500]
    return session


def csrf(session: requests.Session, url: str, page: str) -> str:
    html = session.get(url + page).text
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)


@needs_llama
def test_the_chat_playground_streams_through_the_studio(web, owner, foundation_endpoint):
    endpoint, _key = foundation_endpoint("chatty", {"blue": (CHAT, 100)})
    session = session_for(web, owner.username)
    page = f"/endpoints/{endpoint.name}/test/"
    token = csrf(session, web, page)
    assert 'id="chat-playground"' in session.get(web + page).text
    started = time.monotonic()
    arrivals: list[tuple[float, bytes]] = []
    with session.post(
        f"{web}/endpoints/{endpoint.name}/playground/chat/", stream=True,
        data={"system": "You are a helpful assistant.", "message": "Count from one to twenty in words.",
              "temperature": "0", "max_tokens": "60", "history": "[]"},
        headers={"X-CSRFToken": token, "Referer": web + page},
    ) as response:
        assert response.status_code == 200, response.text[:500]
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_content(chunk_size=None):
            arrivals.append((time.monotonic() - started, chunk))
    body = b"".join(chunk for _, chunk in arrivals).decode()
    events = [line[5:].strip() for line in body.splitlines() if line.startswith("data:")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(text) > 20 and usage and usage[-1]["completion_tokens"] > 10
    # Streamed, not buffered: the first content arrived well before the end.
    first = next(t for t, chunk in arrivals if b'"content"' in chunk)
    # Pieces keep arriving as they are generated (buffered, they would come in one piece at the end).
    assert len(arrivals) >= 5 and arrivals[-1][0] - first > 0.1, [round(t, 3) for t, _ in arrivals]
    # The key stayed on the server.
    keys = get_keys(endpoint)
    assert keys["primary_key"] not in body and keys["primary_key"] not in session.get(web + page).text


def test_the_embeddings_playground_shows_dimensions_and_similarity(web, owner, foundation_endpoint):
    endpoint, _key = foundation_endpoint("embedder", {"blue": (EMBEDDINGS, 100)})
    session = session_for(web, owner.username)
    page = f"/endpoints/{endpoint.name}/test/"
    token = csrf(session, web, page)
    same = session.post(f"{web}/endpoints/{endpoint.name}/playground/embeddings/",
                        data={"text_a": "A cat sits on the mat.", "text_b": "A cat sits on the mat."},
                        headers={"X-CSRFToken": token, "Referer": web + page, "HX-Request": "true"})
    other = session.post(f"{web}/endpoints/{endpoint.name}/playground/embeddings/",
                         data={"text_a": "A cat sits on the mat.", "text_b": "Quarterly revenue rose by 4%."},
                         headers={"X-CSRFToken": token, "Referer": web + page, "HX-Request": "true"})
    assert same.status_code == 200 and other.status_code == 200

    def similarity(html: str) -> float:
        assert '<dd data-testid="dimensions">384</dd>' in html, html
        return float(re.search(r'data-testid="similarity">([-0-9.]+)<', html).group(1))

    assert similarity(same.text) == pytest.approx(1.0, abs=1e-3)
    assert similarity(other.text) < 0.5


@needs_llama
def test_leaving_the_playground_mid_answer_stops_the_generation(web, owner, foundation_endpoint, seeded_server):
    endpoint, _key = foundation_endpoint("chatty", {"blue": (CHAT, 100)})
    server = seeded_server(CHAT)
    session = session_for(web, owner.username)
    page = f"/endpoints/{endpoint.name}/test/"
    token = csrf(session, web, page)
    log_before = len(server.log())
    host, port = web.removeprefix("http://").split(":")
    form = urlencode({"message": "Write a very long story about a dragon.", "max_tokens": "2048",
                      "temperature": "0.7", "history": "[]"})
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    request = (f"POST /endpoints/{endpoint.name}/playground/chat/ HTTP/1.1\r\nHost: {host}:{port}\r\n"
               f"Cookie: {cookies}\r\nX-CSRFToken: {token}\r\nReferer: {web}{page}\r\n"
               f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n{form}")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request.encode())
        received = b""
        while received.count(b"data: ") < 3:
            part = sock.recv(65536)
            assert part, received
            received += part
    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    # The relay closed its upstream request, the gateway its own: the model server saw the client leave
    # (2,048 tokens would take far longer than this).
    deadline = time.monotonic() + 20
    while "Disconnected from client" not in server.log()[log_before:] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "Disconnected from client" in server.log()[log_before:]
