"""Swagger UI at /api/docs/ carries the studio's bar with a way back."""

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_api_docs_lead_back_to_the_studio(page, live_server, shoot):
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".swagger-ui .info")
    shoot(page, "api-docs")
    page.click(".studio-docs-bar a[href='/']")
    page.wait_for_url(f"{live_server.url}/")
