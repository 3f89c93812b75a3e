"""Every link of the navigation, of the header and of each endpoint tab leads to a working page
(no error page, no 404), with JavaScript on and off; /favicon.ico answers."""

import pytest

from endpoints_app.models import CatalogModel, Deployment, Endpoint, Instance, InstanceType, Node

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TABS = ("Details", "Test", "Consume", "Logs", "Monitoring")


@pytest.fixture
def endpoint(workspace, tmp_path):
    model = CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        artifact_path="models/iris.joblib", deployment_kinds=["online", "batch"],
        sample_request={"data": [[1, 2, 3, 4]]},
    )
    endpoint = Endpoint.objects.create(workspace=workspace, name="iris-nav", kind="online", traffic={"blue": 100},
                                       provisioning_state="Succeeded")
    deployment = Deployment.objects.create(endpoint=endpoint, name="blue", model=model,
                                           instance_type=InstanceType.objects.get(name="Standard_DS1_v2"),
                                           provisioning_state="Succeeded")
    node = Node.objects.create(name="nav-node", cores=2, memory_gb=4, queue="node.nav-node")
    log = tmp_path / "blue.log"
    log.write_text("Model ready (sklearn) in 0.1s\n")
    Instance.objects.create(deployment=deployment, name="iris-nav-blue-1", node=node, state="Ready", log_path=str(log))
    return endpoint


def _links(page, selector: str) -> list[str]:
    return page.eval_on_selector_all(selector, "els => els.map(a => a.href)")


def _assert_working(page, url: str, base: str) -> None:
    response = page.goto(url)
    assert response is not None and response.status < 400, f"{url} answered {response and response.status}"
    assert page.locator("[data-testid=error-page]").count() == 0, f"{url} is an error page"
    # Every other link on the page answers too (same site, fetched with the page's session).
    for href in _links(page, "main a[href]"):
        if href.startswith(base) and "/logout" not in href:
            status = page.request.get(href).status
            assert status < 400, f"{href} (linked from {url}) answered {status}"


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_it_finds_no_error_page_behind_any_link(request, javascript, live_server, endpoint, shoot):
    page = request.getfixturevalue("page" if javascript else "page_without_js")
    base = live_server.url
    page.goto(f"{base}/")
    nav = _links(page, "nav.sidenav a[href], header.topbar a[href]")
    labels = page.eval_on_selector_all("nav.sidenav a", "els => els.map(a => a.textContent.trim())")
    assert {"Overview", "Catalog", "Endpoints", "Jobs", "Data", "Usage", "REST API"} <= set(labels)
    for url in nav:
        _assert_working(page, url, base)

    page.goto(f"{base}/endpoints/iris-nav/")
    tabs = {name: page.get_attribute(f"nav.tabs >> text={name}", "href") for name in TABS}
    for name, href in tabs.items():
        _assert_working(page, base + href, base)
        if javascript:
            for width in (1400, 1024):
                page.set_viewport_size({"width": width, "height": 900})
                shoot(page, f"tab-{name}-{width}")

    favicon = page.request.get(f"{base}/favicon.ico")
    assert favicon.status == 200 and favicon.headers["content-type"] == "image/x-icon"
    assert favicon.body()[:4] == b"\x00\x00\x01\x00"
