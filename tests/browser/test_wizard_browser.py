"""The wizard in a browser: quota and capacity checked as the instance type and count change,
quota left beside each type, the endpoint's model preselected by "Add deployment"."""

import pytest

from endpoints_app.models import CatalogModel, Deployment, Endpoint, InstanceType, QuotaLimit
from tests.live import register_test_node

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_checks_quota_as_the_user_picks(page, live_server, workspace, shoot):
    register_test_node()
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=10)
    model = CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        artifact_path="models/iris.joblib", deployment_kinds=["online", "batch"],
    )
    page.goto(f"{live_server.url}/endpoints/new/?model={model.asset_id}")
    page.click("#wizard-next")
    page.wait_for_selector("#id_deployment_name")
    assert "10 left" in page.inner_text("td.quota[data-family=DSv2] >> nth=0")
    page.check("#it-Standard_DS4_v2")
    page.fill("#id_instance_count", "20")
    page.wait_for_selector("#resource-check-result.error")
    assert "Quota exceeded for DSv2 cores" in page.inner_text("#resource-check-result")
    for width in (1400, 1024):
        page.set_viewport_size({"width": width, "height": 900})
        shoot(page, f"wizard-quota-{width}")
    page.fill("#id_instance_count", "1")
    page.check("#it-Standard_DS1_v2")
    page.wait_for_selector("#resource-check-result.ok")


def test_add_deployment_starts_from_the_endpoints_model(page, live_server, workspace, shoot):
    model = CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        artifact_path="models/iris.joblib", deployment_kinds=["online", "batch"],
    )
    CatalogModel.objects.create(name="another", version=1, task="regression", format="sklearn", license="MIT",
                                artifact_path="x.joblib", deployment_kinds=["online"])
    endpoint = Endpoint.objects.create(workspace=workspace, name="iris-add", kind="online", traffic={"blue": 100},
                                       provisioning_state="Succeeded")
    Deployment.objects.create(endpoint=endpoint, name="blue", model=model, provisioning_state="Succeeded",
                              instance_type=InstanceType.objects.get(name="Standard_DS1_v2"))
    page.goto(f"{live_server.url}/endpoints/iris-add/")
    page.click("text=Add deployment >> nth=0")
    page.wait_for_url("**/endpoints/new/**")
    assert page.input_value("#id_model") == model.asset_id
    shoot(page, "wizard-add-deployment")
