"""The API tokens page in a real browser: create (the value shown once), list, revoke, with
and without JavaScript; the token it shows works against the API."""

import pytest
import requests

from endpoints_app.models import ApiToken

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _create_and_revoke(page, live_server, owner, shoot, name: str) -> None:
    page.goto(f"{live_server.url}/tokens/")
    page.fill("#expires_in_days", "30")
    page.click("form.inline-form button[type=submit]")
    value = page.input_value("#new-token-value")
    assert value.startswith("studio_")
    api = requests.get(f"{live_server.url}/api/v1/workspaces", headers={"Authorization": f"Bearer {value}"},
                       timeout=10)
    assert api.status_code == 200 and api.json()[0]["name"] == "team"
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        shoot(page, f"tokens-new-{name}-{width}")

    page.goto(f"{live_server.url}/tokens/")
    assert page.locator("#new-token-value").count() == 0
    assert value not in page.content()
    token = ApiToken.objects.get(user=owner)
    assert page.locator(f"tr[data-token-id='{token.pk}'] code").inner_text() == f"{token.token_key}…"
    shoot(page, f"tokens-list-{name}")
    page.click(f"tr[data-token-id='{token.pk}'] button")
    page.wait_for_selector(".flash-success")
    assert page.locator("#tokens tbody tr td.muted").inner_text() == "No tokens yet."
    assert not ApiToken.objects.filter(user=owner).exists()


def test_tokens_page_creates_shows_once_and_revokes(page, live_server, owner, shoot):
    _create_and_revoke(page, live_server, owner, shoot, "js")


def test_tokens_page_works_without_javascript(page_without_js, live_server, owner, shoot):
    _create_and_revoke(page_without_js, live_server, owner, shoot, "nojs")
