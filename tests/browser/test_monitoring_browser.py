"""The Monitoring tab in a real browser: plotly draws every chart as SVG, and the range
selector swaps in other charts with htmx."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.usage import factories as f

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# No tokens chart: a classifier's answers carry no token counts.
CHARTS = ["requests", "latency", "errors", "traffic", "cost", "cpu", "memory"]


@pytest.fixture
def iris(workspace):
    ep = f.endpoint(workspace, "iris", traffic={"blue": 70, "green": 30})
    blue = f.deployment(ep, "blue")
    f.deployment(ep, "green", instance_type="Standard_DS3_v2")
    now = timezone.now().replace(second=0, microsecond=0)
    for i in range(1, 60 * 24 * 7, 11):
        minute = now - timedelta(minutes=i)
        f.minute_row(ep, "blue", minute, ok=5 + i % 7, client_errors=i % 3 == 0, latency_ms=8 + i % 40)
        f.minute_row(ep, "green", minute, ok=2 + i % 3, server_errors=i % 5 == 0, latency_ms=60 + i % 200)
    f.instance(blue, now - timedelta(days=8))
    return ep


def drawn_traces(page, chart: str) -> int:
    return page.locator(f"[data-chart={chart}] svg.main-svg g.trace").count()


def test_monitoring_tab_draws_charts_and_switches_range(page, live_server, iris, shoot):
    page.goto(f"{live_server.url}/endpoints/iris/monitoring/?range=1h")
    page.wait_for_selector("#monitoring-panel .chart-grid[data-drawn=true]")
    for chart in CHARTS:
        assert page.locator(f"[data-chart={chart}] svg.main-svg").count() >= 1, chart
    assert page.locator("[data-chart=tokens]").count() == 0
    assert drawn_traces(page, "requests") == 2
    assert drawn_traces(page, "latency") == 3
    # Latency is drawn as lines, not a scatter of dots.
    assert page.locator("[data-chart=latency] g.trace path.js-line").count() == 3
    assert page.locator("[data-chart=latency] g.points path.point").count() == 0
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"monitoring-1h-{width}")
    # In one read: plotly may still be redrawing for the last resize, changing how many ticks there are.
    hour_ticks = page.eval_on_selector_all("[data-chart=requests] .xtick text",
                                           "ticks => ticks.map(t => t.textContent)")
    shoot(page, "monitoring-1h")

    page.evaluate("window.__same_page = true")
    page.click("#monitoring-panel a.range:text-is('7d')")
    page.wait_for_selector("#monitoring-panel a.range.active:text-is('7d')")
    page.wait_for_selector("#monitoring-panel .chart-grid[data-drawn=true]")
    for chart in CHARTS:
        assert page.locator(f"[data-chart={chart}] svg.main-svg").count() >= 1, chart
    assert drawn_traces(page, "requests") == 2
    # The week's axis replaces the hour's once plotly has drawn the swapped-in grid.
    page.wait_for_function(
        "hour => JSON.stringify([...document.querySelectorAll('[data-chart=requests] .xtick text')]"
        ".map(t => t.textContent)) !== JSON.stringify(hour)",
        arg=hour_ticks, timeout=15000,
    )
    assert page.evaluate("window.__same_page") is True  # swapped in place, no reload
    # Titles and legends (plotly's overlay layer) survive the swap too.
    assert page.locator("[data-chart=requests] .gtitle").text_content() == "Requests per minute, by deployment"
    assert page.locator("[data-chart=requests] .legend .traces").count() == 2
    shoot(page, "monitoring-7d")


def test_monitoring_range_links_work_without_javascript(page_without_js, live_server, iris):
    page = page_without_js
    page.goto(f"{live_server.url}/endpoints/iris/monitoring/?range=1h")
    page.click("a.range:text-is('30d')")
    page.wait_for_url("**/monitoring/?range=30d")
    assert page.locator("a.range.active").inner_text() == "30d"
    assert page.locator("#monitoring-panel table.list tbody tr").count() == 2
