"""Computes in a browser: IT adds a Ray compute in the admin console (a bad address is refused on its
field), the list shows it Ready with its node, its page shows the node from Ray's own state (alive,
resources, free) and the cores its deployments hold per instance family against quotas, `local` offers
no delete; the wizard offers the computes a deployment can run on (`local` only while this studio has
no Ray backend) and puts the choice in deployment.yml. A real Ray head runs for the module."""

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.models import CatalogModel, Compute, Deployment, Endpoint, InstanceType
from endpoints_app.services.computes import ray_backend_available
from tests.browser.conftest import log_in
from tests.computes.conftest import ray_head  # noqa: F401  (a real Ray head, module-scoped)
from tests.conftest import PASSWORD
from tests.live import register_test_node

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def it_page(browser, live_server, workspace):
    get_user_model().objects.create_superuser("it-admin", "it@example.com", PASSWORD)
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    log_in(page, live_server.url, "it-admin")
    yield page
    context.close()


def test_it_adds_a_ray_compute_and_sees_its_nodes(it_page, live_server, workspace, ray_head, shoot,  # noqa: F811
                                                  monkeypatch):
    for name, value in ray_head.auth_env.items():  # the head's token, as IT gives Ray's variables to the studio
        monkeypatch.setenv(name, value)
    page = it_page
    page.goto(f"{live_server.url}/admin/endpoints_app/compute/add/")
    page.fill("#id_name", "lab")
    page.fill("#id_address", "ray://10.0.0.5:10001")
    page.click("input[name=_save]")
    assert "without a scheme" in page.inner_text(".field-address")
    assert not Compute.objects.filter(name="lab").exists()
    page.fill("#id_address", ray_head.address)
    page.fill("#id_description", "the lab's machines")
    page.click("input[name=_save]")
    page.wait_for_url("**/admin/endpoints_app/compute/")
    row = page.locator("#result_list tr:has-text('lab')")
    assert "Ready" in row.inner_text() and "1 / 1" in row.inner_text(), row.inner_text()
    shoot(page, "admin-computes-list")

    model = CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT")
    endpoint = Endpoint.objects.create(workspace=workspace, name="iris")
    Deployment.objects.create(endpoint=endpoint, name="blue", model=model, compute=Compute.objects.get(name="lab"),
                              instance_type=InstanceType.objects.get(name="Standard_DS2_v2"), instance_count=2)
    page.click("#result_list a:text-is('lab')")
    nodes = page.locator("table.compute-nodes")
    assert "Alive" in nodes.inner_text() and "CPU 2" in nodes.inner_text(), nodes.inner_text()
    quotas = page.inner_text("table.compute-quotas")
    assert "team" in quotas and "DSv2" in quotas and "4" in quotas and "32" in quotas, quotas
    assert page.locator("a.deletelink").count() == 0  # deployments run on it
    shoot(page, "admin-compute-lab")

    page.goto(f"{live_server.url}/admin/endpoints_app/compute/")
    page.click("#result_list a:text-is('local')")
    assert page.locator("a.deletelink").count() == 0 and page.locator("input[name=_save]").count() == 0
    shoot(page, "admin-compute-local")


def test_the_wizard_offers_the_computes_a_deployment_can_run_on(page, live_server, workspace, shoot):
    register_test_node()
    Compute.objects.create(name="lab", type="ray", address="10.0.0.5:6379")
    model = CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        artifact_path="models/iris.joblib", deployment_kinds=["online", "batch"],
    )
    page.goto(f"{live_server.url}/endpoints/new/?model={model.asset_id}")
    page.click("#wizard-next")
    page.wait_for_selector("#id_compute")
    offered = page.eval_on_selector_all("#id_compute option", "options => options.map(o => o.value)")
    assert offered == (["lab", "local"] if ray_backend_available() else ["local"])
    assert page.input_value("#id_compute") == "local"
    shoot(page, "wizard-compute")
    page.click("#wizard-next")
    page.wait_for_selector("#id_request_timeout_ms")
    page.click("#wizard-next")
    page.wait_for_selector("#deployment-yaml")
    assert page.inner_text("#review-compute") == "local"
    assert "compute: local" in page.inner_text("#deployment-yaml")
    shoot(page, "wizard-compute-review")
