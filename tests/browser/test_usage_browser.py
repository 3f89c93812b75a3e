"""The Usage page in a real browser: the cost chart draws, the budget form saves, the warning shows."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from endpoints_app.models import AuditLog, Endpoint
from endpoints_app.services.usage import month_start
from tests.usage import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def spending(workspace):
    start = month_start(timezone.now())
    if timezone.now() - start < timedelta(hours=11):
        pytest.skip("these costs need the first 11 hours of the month to be over")
    blue = f.deployment(f.endpoint(workspace, "iris"), "blue")
    f.instance(blue, start, start + timedelta(hours=10), state="Stopped")  # 1.40
    model = f.catalog_model("smollm2", price_input_per_1k=Decimal("0.01"), price_output_per_1k=Decimal("0.02"))
    chat = f.endpoint(workspace, "chat", kind=Endpoint.Kind.SERVERLESS)
    f.deployment(chat, "default", model=model)
    f.minute_row(chat, "default", start + timedelta(minutes=3), ok=2, tokens_in=5_000, tokens_out=10_000)  # 0.25


def test_usage_page_chart_budget_and_warning(page, live_server, spending, shoot):
    page.goto(f"{live_server.url}/usage/")
    page.wait_for_selector("#usage-chart svg.main-svg g.trace")
    assert page.locator("#usage-chart g.trace").count() == 2
    assert page.locator("[data-stat=total]").inner_text() == "$1.65"
    page.fill("#monthly_budget", "2")
    page.click("form.inline-form button[type=submit]")
    page.wait_for_selector("[data-budget-level='80']")
    assert "83% of its budget" in page.locator("[role=alert]").inner_text()
    assert AuditLog.objects.filter(action="budget.warning", details__threshold=80).count() == 1
    assert "tile-warn" in page.get_attribute("[data-testid=budget-tile]", "class")
    shoot(page, "usage-page")
    # Over budget: the tile turns to the studio's warning colours.
    page.fill("#monthly_budget", "1")
    page.click("form.inline-form button[type=submit]")
    page.wait_for_selector("[data-testid=budget-tile].tile-over")
    color = page.eval_on_selector("[data-testid=budget-tile] .big", "el => getComputedStyle(el).color")
    assert color == "rgb(185, 28, 28)"  # --bad
    # The chart uses the studio's palette, not plotly's defaults.
    page.wait_for_selector("#usage-chart svg.main-svg g.trace")
    fills = page.eval_on_selector_all("#usage-chart g.trace path.point",
                                      "els => els.map(e => getComputedStyle(e).fill)")
    assert set(fills) <= {"rgb(37, 99, 235)", "rgb(22, 163, 74)"}
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(500)  # plotly redraws for the new width
        page.wait_for_selector("#usage-chart svg.main-svg g.trace")
        shoot(page, f"usage-over-budget-{width}")
