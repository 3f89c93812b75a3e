"""The Environments page: create one from the form, see its build state, its packages and, when it
failed, the installer's words and the build log."""

from __future__ import annotations

import pytest

from endpoints_app.models import BuildState, EnvironmentBuild


@pytest.fixture(autouse=True)
def no_builds(monkeypatch):
    monkeypatch.setattr("endpoints_app.tasks.build_environment.delay", lambda pk: None)


def test_it_creates_an_environment_and_shows_a_failed_build_with_its_log(page, live_server, workspace, shoot):
    page.goto(f"{live_server.url}/environments/")
    shoot(page, "environments-empty")
    page.fill("#env-name", "lightgbm")
    page.fill("#env-content", "dependencies:\n  - python=3.11\n  - pip:\n    - lightgbm==4.6.0\n")
    page.click("#create-button")
    page.wait_for_url(f"{live_server.url}/environments/lightgbm/versions/1/")
    assert page.inner_text("#build-state") == "NotStarted"
    assert "lightgbm==4.6.0" in page.inner_text("#requirements")

    build = EnvironmentBuild.objects.get()
    build.log_path.parent.mkdir(parents=True, exist_ok=True)
    build.log_path.write_text("=== uv pip install ===\n  x No solution found: lightgbm==4.6.0 was not found\n")
    EnvironmentBuild.objects.filter(pk=build.pk).update(
        state=BuildState.FAILED, error="x No solution found: lightgbm==4.6.0 was not found")
    # The page refreshes its build part while it builds: the failure shows without a reload.
    page.wait_for_function("document.querySelector('#build-state').innerText === 'Failed'", timeout=10_000)
    assert "No solution found" in page.inner_text("#build-error")
    assert "uv pip install" in page.inner_text("#build-log")
    shoot(page, "environment-failed")
    page.goto(f"{live_server.url}/environments/")
    assert "Failed" in page.inner_text("[data-environment='lightgbm:1']")
    shoot(page, "environments-list")
