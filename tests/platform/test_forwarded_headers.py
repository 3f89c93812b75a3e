"""Forwarded headers are trusted only with STUDIO_BEHIND_PROXY: the web process started exactly as
`make run` starts it (portal/supervisor.py: gunicorn with the studio's uvicorn worker) keeps a sign-in
lockout against a caller on this host that sends a new X-Forwarded-For with every attempt."""

import os
import re
import signal
import subprocess

import pytest
import requests

from portal import supervisor
from tests.conftest import PASSWORD
from tests.live import ROOT, free_port, wait_for, worker_env

pytestmark = pytest.mark.django_db(transaction=True)


def _web(tmp_path, **env: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    argv = supervisor.commands(port, "127.0.0.1", web_workers=1, concurrency=1, node="test-node")["web"]
    log = open(tmp_path / "web.log", "wb")  # noqa: SIM115 - closed with the process below
    proc = subprocess.Popen(argv, cwd=ROOT, env=worker_env(**env), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_file = log
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        try:
            return requests.get(url + "/healthz", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    wait_for(up, timeout=60, what="the web process")
    return url, proc


def _sign_in(session: requests.Session, url: str, username: str, password: str, forwarded_for: str) -> int:
    page = session.get(url + "/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    response = session.post(url + "/login/", data={"username": username, "password": password,
                                                   "csrfmiddlewaretoken": token},
                            headers={"X-Forwarded-For": forwarded_for, "Referer": url + "/login/"},
                            allow_redirects=False)
    return response.status_code


def test_a_lockout_holds_against_a_new_x_forwarded_for_with_every_attempt(owner, tmp_path):
    url, proc = _web(tmp_path, STUDIO_BEHIND_PROXY="0", STUDIO_LOGIN_FAILURE_LIMIT="3")
    try:
        session = requests.Session()
        statuses = [_sign_in(session, url, "olivia", "wrong", f"203.0.113.{i}") for i in range(1, 4)]
        # The right password, from yet another claimed address: still locked out.
        after = _sign_in(session, url, "olivia", PASSWORD, "198.51.100.7")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        proc.log_file.close()

    assert statuses == [200, 200, 429], statuses
    assert after == 429
