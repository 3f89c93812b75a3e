"""The REST API link opens Swagger UI under the studio's header, with a way back."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_swagger_ui_has_the_studio_header_and_a_way_back(page, live_server, shoot):
    page.goto(f"{live_server.url}/")
    page.click("nav.sidenav >> text=REST API")
    page.wait_for_url("**/api/docs/")
    page.wait_for_selector("#swagger-ui .information-container")
    assert "◆ Studio" in page.inner_text("#studio-header")
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"api-docs-{width}")
    page.click("#studio-header a.back")
    page.wait_for_url(f"{live_server.url}/")
