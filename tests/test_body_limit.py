"""Limits before reading: a body over the limit is a 413 before Django reads (or spools) any of it."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from tests.live import free_port, worker_env

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 1), "server": ("testserver", 80)}


def _call(path: str, headers: list, chunks: list[bytes]) -> tuple[int, dict, int]:
    """(status, JSON body, bytes the app pulled from the client) of one request through portal.asgi."""
    from portal.asgi import application

    pulled = 0
    sent: list[dict] = []

    async def receive():
        nonlocal pulled
        if chunks:
            chunk = chunks.pop(0)
            pulled += len(chunk)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)

    async def send(message):
        sent.append(message)

    asyncio.run(asyncio.wait_for(application(_scope(path, headers), receive, send), 30))
    status = sent[0]["status"]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(body), pulled


@pytest.mark.django_db
def test_it_answers_413_to_a_declared_50_mb_login_post_without_reading_it():
    body = [b"x" * MB for _ in range(50)]
    status, error, pulled = _call("/login/", [(b"content-length", str(50 * MB).encode()),
                                              (b"content-type", b"application/x-www-form-urlencoded")], body)
    assert status == 413 and error["error"]["code"] == "PayloadTooLarge"
    assert pulled == 0  # not a byte read, so not a byte spooled to disk


@pytest.mark.django_db
def test_it_cuts_off_a_streamed_body_at_the_limit():
    body = [b"x" * MB for _ in range(50)]
    status, error, pulled = _call("/login/", [(b"content-type", b"application/x-www-form-urlencoded")], body)
    assert status == 413 and error["error"]["code"] == "PayloadTooLarge"
    assert pulled <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE + MB


@pytest.mark.django_db
def test_uploads_get_their_own_larger_limit(settings):
    settings.STUDIO_MAX_UPLOAD_BYTES = 20 * MB
    declared = [(b"content-length", str(15 * MB).encode()), (b"content-type", b"multipart/form-data; boundary=x")]
    # Over the general limit but within the upload limit: Django gets it (and, unauthenticated, refuses it).
    status, _error, _pulled = _call("/api/v1/workspaces/team/models", declared, [b"x" * MB for _ in range(15)])
    assert status in (401, 403)
    too_big = [(b"content-length", str(30 * MB).encode()), (b"content-type", b"multipart/form-data; boundary=x")]
    status, _error, pulled = _call("/api/v1/workspaces/team/models", too_big, [b"x" * MB for _ in range(30)])
    assert status == 413 and pulled == 0


@pytest.mark.slow
def test_a_real_server_answers_a_huge_login_post_at_once(tmp_path):
    """Through uvicorn, as the web process serves: the 413 comes back while the client is still sending."""
    port = free_port()
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "portal.asgi:application", "--port", str(port), "--lifespan", "off",
         "--loop", "uvloop", "--http", "httptools", "--no-access-log"],
        cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "web.log").read_text()
                time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            began = time.monotonic()
            sock.sendall(b"POST /login/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded"
                         b"\r\nContent-Length: %d\r\n\r\n" % (50 * MB))
            sock.sendall(b"x" * 65536)  # the first bytes of 50 MB that will never all be sent
            # Parsed by http.client: the head and the body may come in separate segments.
            answer = http.client.HTTPResponse(sock)
            answer.begin()
            elapsed = time.monotonic() - began
            body = answer.read()
        assert answer.status == 413, body[:200]
        assert b"PayloadTooLarge" in body
        assert elapsed < 5
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
