"""The Logs tab: a failed request's error and request id reach the deployment's log within 2 s,
newest line first; Follow refreshes the box by itself; Download gives the text as a file."""

import time

import pytest
import requests

from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE = "/api/v1/workspaces/team/online-endpoints"


def _deploy(api, workspace, tmp_path) -> str:
    model = make_custom_model(workspace, tmp_path / "code")
    assert api.post(BASE, {"name": "logged"}, format="json").status_code == 201
    body = {"name": "blue", "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2"}
    assert api.post(f"{BASE}/logged/deployments", body, format="json").status_code == 202
    wait_for(lambda: api.get(f"{BASE}/logged/deployments/blue").json()["provisioning_state"] == "Succeeded",
             timeout=90, what="Succeeded")
    return api.post(f"{BASE}/logged/list-keys").json()["primary_key"]


def test_it_logs_failed_requests_with_their_id_and_shows_them_newest_first(
    page, live_server, gateway, owner_api, workspace, tmp_path, shoot,
):
    key = _deploy(owner_api, workspace, tmp_path)
    url = f"{gateway}/inference/logged/score"
    headers = {"Authorization": f"Bearer {key}"}
    wait_for(lambda: requests.post(url, json={"data": [1]}, headers=headers, timeout=10).status_code == 200,
             timeout=15, what="the gateway routes to blue")

    # The gateway makes up an id when the client sends none, passes it on and returns it.
    failed = requests.post(url, json={"rows": [1]}, headers=headers, timeout=10)
    sent_at = time.monotonic()
    assert failed.status_code == 422
    error = failed.json()["error"]
    generated = failed.headers["x-request-id"]
    assert generated

    def logs() -> str:
        return owner_api.get(f"{BASE}/logged/deployments/blue/logs?lines=50").content.decode()

    line = wait_for(lambda: next((x for x in logs().splitlines() if f"request_id={generated}" in x), None),
                    timeout=5, interval=0.05, what="the failed request in the log")
    assert time.monotonic() - sent_at <= 2.0
    assert "POST /score 422" in line and f"{error['code']}: {error['message']}" in line

    # A client's own id is kept, end to end.
    mine = requests.post(url, data=b'{"data": "x", "other": 1}', timeout=10,
                         headers={**headers, "x-request-id": "client-id-42", "content-type": "application/json"})
    assert mine.headers["x-request-id"] == "client-id-42"
    # The gateway's own refusals carry the id too.
    refused = requests.post(url, data=b"not json", headers=headers, timeout=10)
    assert refused.status_code == 400 and refused.headers["x-request-id"]

    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(f"{live_server.url}/endpoints/logged/logs/")
        text = page.inner_text("#log pre")
        # Newest first: the last failure is above the start-up lines.
        assert text.index(f"request_id={generated}") < text.index("score.py init done")
        shoot(page, f"logs-{width}")

    # Follow: a new failure appears without reloading the page.
    page.check("#log-follow")
    page.wait_for_selector("#log[hx-trigger='every 2s']")
    requests.post(url, json={"rows": [2]}, headers={**headers, "x-request-id": "followed-1"}, timeout=10)
    page.wait_for_function("document.querySelector('#log pre').textContent.includes('request_id=followed-1')",
                           timeout=6_000)
    assert "follow=1" in page.url

    # Lines selector and download.
    page.select_option("#log-lines", "500")
    page.wait_for_function("document.querySelector('#log-download').href.includes('lines=500')")
    with page.expect_download() as download_info:
        page.click("#log-download")
    downloaded = download_info.value.path().read_text()
    # A file reads oldest first.
    assert downloaded.index("score.py init done") < downloaded.index("request_id=followed-1")

