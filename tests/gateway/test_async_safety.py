"""Processes the tests start run with Django's async safety on, as in production, even when
the test process itself relaxes it (the browser tests do)."""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


def test_gateways_started_by_tests_never_inherit_the_async_unsafe_switch(procs, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    _, gateway = procs.gateway()
    environ = Path(f"/proc/{gateway.pid}/environ").read_bytes().split(b"\0")
    assert any(item.startswith(b"STUDIO_DATA_DIR=") for item in environ)
    assert not any(item.startswith(b"DJANGO_ALLOW_ASYNC_UNSAFE=") for item in environ)
