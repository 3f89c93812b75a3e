"""Browser tests: Playwright's sync API driving Debian's chromium against
pytest-django's live server (a real HTTP server in a thread, transactional DB).

Screenshots go to $STUDIO_DATA_DIR/screenshots/ so a person can look at them."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import PASSWORD


@pytest.fixture(scope="module", autouse=True)
def allow_sync_orm_beside_playwright():
    """Playwright's sync API keeps an event loop running in this thread; the ORM calls the
    tests make to set up rows (and the database teardown) are still plain synchronous code, so
    Django must allow them, in this process and only while a browser test module runs.
    Processes the tests start (workers, gateways) never inherit it: tests/live.py's worker_env
    drops it."""
    before = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if before is None:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = before

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.browser)


# Module scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and later tests in the session call asyncio.run().
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot_dir() -> Path:
    path = Path(settings.DATA_DIR) / "screenshots"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def shoot(screenshot_dir):
    """shoot(page, "name") saves a full-page PNG and returns its path."""

    def save(page, name: str) -> Path:
        path = screenshot_dir / f"{re.sub(r'[^a-z0-9_-]+', '-', name.lower())}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


def log_in(page, base_url: str, username: str, password: str = PASSWORD) -> None:
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}/")


def _page(browser, live_server, user, javascript: bool):
    context = browser.new_context(java_script_enabled=javascript, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(15_000)
    page = context.new_page()
    log_in(page, live_server.url, user.username)
    return context, page


@pytest.fixture
def page(browser, live_server, owner):
    """A logged-in page (the workspace Owner) with JavaScript on."""
    context, page = _page(browser, live_server, owner, javascript=True)
    yield page
    context.close()


@pytest.fixture
def page_without_js(browser, live_server, owner):
    """A logged-in page (the workspace Owner) with JavaScript off."""
    context, page = _page(browser, live_server, owner, javascript=False)
    yield page
    context.close()


@pytest.fixture
def gateway(live_worker, settings, tmp_path):
    """The real gateway (uvicorn on the gateway's ASGI app) on the test database; the UI's
    Test tab reaches it through STUDIO_GATEWAY_URL. Needs the live worker's database setup."""
    import socket
    import subprocess
    import sys
    import time

    import requests

    from tests.live import ROOT, worker_env

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "gateway.log", "wb")  # noqa: SIM115 - closed below
    argv = [str(Path(sys.executable).parent / "uvicorn"), "endpoints_app.gateway.asgi:application",
            "--port", str(port), "--lifespan", "on", "--no-access-log"]
    proc = subprocess.Popen(argv, cwd=ROOT, env=worker_env(), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {(tmp_path / 'gateway.log').read_text()}")
        try:
            requests.get(url + "/inference/", timeout=1)
            break
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    settings.STUDIO_GATEWAY_URL = url
    yield url
    os.killpg(proc.pid, 15)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
    log.close()
