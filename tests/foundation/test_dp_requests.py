"""Bad chat and completion requests get 400 with the field named (never a 500), and a client that
leaves mid-stream stops the generation upstream. Real SmolLM2 and Gemma servers."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.foundation.conftest import CHAT, COMPLETION, needs_llama
from tests.gateway.conftest import auth

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, needs_llama]

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(("body", "field"), [
    ({}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": "hi"}, "messages"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"messages": HI, "max_tokens": 0}, "max_tokens"),
    ({"messages": HI, "max_tokens": 100000}, "max_tokens"),
    ({"messages": HI, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": HI, "temperature": 3}, "temperature"),
    ({"messages": HI, "top_p": "high"}, "top_p"),
    ({"messages": HI, "stop": [1]}, "stop"),
    ({"messages": HI, "seed": 1.5}, "seed"),
    ({"messages": HI, "stream": "yes"}, "stream"),
    ({"messages": HI, "n": 2}, "n"),
    ({"messages": HI, "frobnicate": True}, "frobnicate"),
    ({"messages": [{"role": "user", "content": "word " * 4000}]}, "messages"),  # past the 2,048-token context
])
def test_it_refuses_bad_chat_requests_naming_the_field(procs, foundation_endpoint, body, field):
    _, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    url, _ = procs.gateway()

    answer = requests.post(f"{url}/inference/chat/chat/completions", headers=auth(key), json=body)

    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["field"] == field
    assert answer.json()["error"]["message"]


def test_context_too_long_is_named_as_such(procs, foundation_endpoint):
    _, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    url, _ = procs.gateway()

    answer = requests.post(f"{url}/inference/chat/chat/completions", headers=auth(key),
                           json={"messages": [{"role": "user", "content": "word " * 4000}], "stream": True})

    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "ContextLengthExceeded"


def test_unknown_parameters_are_dropped_when_the_caller_says_so(procs, foundation_endpoint):
    _, key = foundation_endpoint("gem", {"blue": (COMPLETION, 100)})
    url, _ = procs.gateway()
    body = {"prompt": "One, two,", "max_tokens": 3, "frobnicate": True}

    refused = requests.post(f"{url}/inference/gem/completions", headers=auth(key), json=body)
    dropped = requests.post(f"{url}/inference/gem/completions", headers={**auth(key), "extra-parameters": "drop"},
                            json=body)
    no_prompt = requests.post(f"{url}/inference/gem/completions", headers=auth(key), json={"prompt": 3})

    assert refused.status_code == 400 and refused.json()["error"]["field"] == "frobnicate"
    assert dropped.status_code == 200, dropped.text
    assert no_prompt.status_code == 400 and no_prompt.json()["error"]["field"] == "prompt"


def test_a_client_that_leaves_mid_stream_stops_the_generation(procs, foundation_endpoint, seeded_server):
    _, key = foundation_endpoint("chat", {"blue": (CHAT, 100)})
    url, _ = procs.gateway()
    server = seeded_server(CHAT)
    log_before = len(server.log())
    host, port = url.removeprefix("http://").split(":")
    body = ('{"messages": [{"role": "user", "content": "Write a very long story about a dragon."}], '
            '"max_tokens": 1500, "stream": true}')
    request = (f"POST /inference/chat/chat/completions HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}")

    # Bounded: a closed socket reads b"" (fail with what came), a silent one times out.
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(request.encode())
        received = b""
        while received.count(b"data: ") < 3:
            part = sock.recv(65536)
            assert part, f"the gateway closed the stream after: {received!r}"
            received += part
    began = time.monotonic()
    # The server is free again long before 1,500 tokens (about 30 s at 50 tokens/s) could be generated.
    after = requests.post(f"{url}/inference/chat/chat/completions", headers=auth(key),
                          json={"messages": HI, "max_tokens": 1}, timeout=60)

    assert b"200 OK" in received.split(b"\r\n", 1)[0]
    assert after.status_code == 200
    assert time.monotonic() - began < 10
    assert "Disconnected from client" in server.log()[log_before:]
