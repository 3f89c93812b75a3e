"""The admin console in a browser at 1400 and 1024 px: the studio's header with a way back, audit
log and endpoints list that fit the page (no column cut off), a refused negative price."""

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.models import AuditLog, Endpoint
from tests.browser.conftest import CHROMIUM_ARGS, log_in  # noqa: F401
from tests.conftest import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def it_page(browser, live_server, workspace):
    get_user_model().objects.create_superuser("it-admin", "it@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    log_in(page, live_server.url, "it-admin")
    yield page
    context.close()


def _fits(page) -> bool:
    """No horizontal scrolling, of the page or of the list: every column is on the page."""
    return page.evaluate("""document.documentElement.scrollWidth <= window.innerWidth &&
        Array.from(document.querySelectorAll('.results')).every(el => el.scrollWidth <= el.clientWidth)""")


def test_admin_lists_fit_and_the_header_leads_back(it_page, live_server, workspace, shoot):
    for i in range(3):
        Endpoint.objects.create(workspace=workspace, name=f"split-{i}", provisioning_state="Succeeded",
                                traffic={"blue": 70, "green": 20, "yellow": 10}, mirror_traffic={"red": 10},
                                description="A long description of this endpoint")
        AuditLog.objects.create(username="olivia", workspace=workspace, action="deployment.create",
                                object_type="deployment", object_name=f"split-{i}/blue-with-a-longer-name",
                                via="api", details={"instance_type": "Standard_DS1_v2"})
    # Price changes made in the console: their history rows and audit entries (old → new) fit too.
    from decimal import Decimal

    from endpoints_app.models import InstanceType
    from endpoints_app.services.audit import Actor
    from endpoints_app.services.usage import do_change_instance_price

    for name, price in (("Standard_DS1_v2", "0.1"), ("Standard_DS3_v2", "0.35")):
        do_change_instance_price(Actor(user=None, via="admin", name="it-admin"), InstanceType.objects.get(name=name),
                                 Decimal(price))
    page = it_page
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        for name, path in (("auditlog", "auditlog"), ("endpoints", "endpoint"), ("workspaces", "workspace"),
                           ("pricechanges", "pricechange")):
            page.goto(f"{live_server.url}/admin/endpoints_app/{path}/")
            shoot(page, f"admin-{name}-{width}")
            assert _fits(page), f"{name} at {width} px scrolls sideways"
        page.goto(f"{live_server.url}/admin/endpoints_app/auditlog/")
        assert "0.0700 → 0.1" in page.inner_text("#result_list")
        for column in ("Object", "Old → new", "Via"):
            header = page.locator(f"#result_list th:has-text('{column}')").first
            assert header.is_visible() and header.evaluate(
                "el => el.getBoundingClientRect().right <= window.innerWidth"), column
        page.goto(f"{live_server.url}/admin/endpoints_app/endpoint/")
        # Four shares in at most three short lines (not one per word), each share whole on its line.
        cell = page.locator("td.field-traffic_display").first
        assert cell.evaluate("el => el.getBoundingClientRect().height") < 80
        for share in page.locator("td.field-traffic_display span.nowrap").all():
            assert share.evaluate("el => el.getClientRects().length") == 1
    page.click("a.studio-link")
    page.wait_for_url(f"{live_server.url}/")
    assert page.locator("nav.sidenav").count() == 1


def test_a_negative_price_is_refused_on_screen(it_page, live_server, shoot):
    page = it_page
    page.goto(f"{live_server.url}/admin/endpoints_app/instancetype/")
    page.click("text=Standard_DS1_v2")
    page.fill("#id_price_per_hour", "-1")
    page.click("input[name=_save]")
    page.wait_for_selector(".errornote")
    assert "The price per hour cannot be negative." in page.inner_text("#content")
    shoot(page, "admin-negative-price")
