"""The first hour, second pass, looked at in a browser at 1400 px: an endpoint's only deployment
offers the way out instead of a Delete button; the traffic form keeps a running total, says what it
saved beside the sliders and the Details agree; a failed deployment shows in the header with its
traceback's lines; the wizard shows node capacity next to quota and takes environment variables;
the Overview counts the catalog as the catalog lists it; long text stays inside its box."""

import pytest

from endpoints_app.models import CatalogModel, Deployment, Endpoint, InstanceType
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services.audit import Actor
from tests.live import register_test_node

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def model(workspace):
    register_test_node()
    return CatalogModel.objects.create(name="iris-classifier", version=1, task="classification", format="sklearn",
                                       license="BSD-3-Clause", artifact_path="models/iris.joblib",
                                       deployment_kinds=["online", "batch"],
                                       sample_request={"input_data": {"data": [[1, 2, 3, 4]]}})


def _endpoint(workspace, model, *names: str) -> Endpoint:
    endpoint = endpoint_svc.do_create_endpoint(Actor(user=None), workspace, name="iris")
    for name in names:
        deployment_svc.do_create_deployment(Actor(user=None), endpoint, {"name": name, "model": model.asset_id})
    Deployment.objects.update(provisioning_state="Succeeded")  # no worker here: nothing polls
    return endpoint


def _inside(page, selector: str) -> bool:
    return page.evaluate(f"""Array.from(document.querySelectorAll({selector!r})).every(el =>
        el.scrollWidth <= el.clientWidth + 1)""")


def test_the_only_deployment_and_the_traffic_form(page, live_server, workspace, model, shoot):
    page.set_viewport_size({"width": 1400, "height": 900})
    _endpoint(workspace, model, "blue")
    page.goto(f"{live_server.url}/endpoints/iris/")
    refusal = page.locator("[data-testid=delete-refusal-blue]")
    assert "delete the endpoint" in refusal.inner_text()
    assert page.locator("[data-deployment=blue] button.danger").count() == 0
    shoot(page, "first-hour-only-deployment")

    deployment_svc.do_create_deployment(Actor(user=None), Endpoint.objects.get(name="iris"),
                                        {"name": "green", "model": model.asset_id})
    Deployment.objects.update(provisioning_state="Succeeded")
    page.goto(f"{live_server.url}/endpoints/iris/")
    assert page.locator("[data-deployment=green] button.danger").count() == 1  # green takes no traffic
    page.fill("#traffic-blue", "80")
    page.locator("#traffic-blue").dispatch_event("input")
    assert page.inner_text("[data-testid=traffic-total]") == "80%"
    assert "must be 100%" in page.inner_text("[data-testid=traffic-total-note]")
    page.click("#traffic button[type=submit]")
    error = page.wait_for_selector("#traffic [data-testid=traffic-error]")
    assert "adds up to 80" in error.inner_text()
    shoot(page, "first-hour-traffic-error")
    page.fill("#traffic-green", "20")
    page.locator("#traffic-green").dispatch_event("input")
    assert page.inner_text("[data-testid=traffic-total]") == "100%"
    page.click("#traffic button[type=submit]")
    saved = page.wait_for_selector("#traffic [data-testid=traffic-saved]")
    assert saved.inner_text() == "Traffic saved: blue 80%, green 20%."
    assert "blue 80%, green 20%" in page.inner_text("[data-testid=traffic-summary]")
    assert "Takes 80% live traffic" in page.inner_text("[data-testid=delete-refusal-blue]")
    shoot(page, "first-hour-traffic-saved")


def test_a_failed_deployment_reads_well(page, live_server, workspace, model, shoot):
    page.set_viewport_size({"width": 1400, "height": 900})
    _endpoint(workspace, model, "blue")
    error = ("Model server failed 3 times: init() failed\nTraceback (most recent call last):\n"
             '  File "/srv/score.py", line 3, in init\n    weights = load("missing.bin")\n'
             "FileNotFoundError: [Errno 2] No such file or directory: 'missing.bin'")
    Deployment.objects.filter(name="blue").update(provisioning_state="Failed", error=error)
    page.goto(f"{live_server.url}/endpoints/iris/")
    assert page.inner_text("[data-testid=failed-deployment]") == "deployment blue Failed"
    box = page.locator("[data-testid=deployment-error]")
    assert box.inner_text().count("\n") >= 4  # the traceback keeps its lines
    assert _inside(page, "[data-testid=deployment-error]")
    shoot(page, "first-hour-failed-deployment")


def test_the_wizard_shows_capacity_and_takes_environment_variables(page, live_server, workspace, model, shoot):
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/endpoints/new/?model={model.asset_id}")
    page.fill("#id_endpoint_name", "iris-env")
    page.click("button[value=next]")
    capacity = page.wait_for_selector("[data-testid=node-capacity]")
    assert "of 8 cores free" in capacity.inner_text()
    assert "room for" in page.inner_text("[data-testid=fits-Standard_DS1_v2]")
    shoot(page, "first-hour-wizard-capacity")
    page.click("button[value=next]")
    page.fill("#id_environment_variables", "GREETING=hello\nBROKEN")
    page.click("button[value=next]")
    page.wait_for_selector("text=is not NAME=value")
    shoot(page, "first-hour-wizard-env-error")
    page.fill("#id_environment_variables", "GREETING=hello\nTHRESHOLD=0.5")
    page.click("button[value=next]")
    page.wait_for_selector("#deployment-yaml")
    assert "GREETING: hello" in page.inner_text("#deployment-yaml")
    assert _inside(page, "#deployment-yaml")
    shoot(page, "first-hour-wizard-review")
    page.click("button[value=deploy]")
    page.wait_for_url(f"{live_server.url}/endpoints/iris-env/")
    assert Deployment.objects.get(endpoint__name="iris-env").environment_variables == {
        "GREETING": "hello", "THRESHOLD": "0.5"}


def test_overview_counts_and_long_text_stay_in_their_boxes(page, live_server, workspace, model, shoot):
    page.set_viewport_size({"width": 1400, "height": 900})
    long_word = "https://example.com/" + "very-long-path-segment" * 8
    CatalogModel.objects.create(registry=workspace.name, workspace=workspace, name="churn", version=1,
                                task="classification", format="sklearn", license="MIT",
                                summary=f"Churn model, documented at {long_word}", deployment_kinds=["online"])
    page.goto(f"{live_server.url}/")
    assert page.inner_text(".tile .big >> nth=0") == "2"  # the catalog lists iris and churn
    assert "cores free" in page.inner_text("[data-testid=node-capacity]")
    shoot(page, "first-hour-overview")
    page.goto(f"{live_server.url}/catalog/")
    assert _inside(page, ".model-card")
    shoot(page, "first-hour-catalog-long-description")
    page.goto(f"{live_server.url}/endpoints/new/batch/?model={model.asset_id}")
    select = page.locator("#dep-type")
    assert "1 core ·" in select.inner_text() and "1 cores" not in select.inner_text()
    assert page.evaluate("""(() => { const s = document.querySelector('#dep-type');
        const probe = document.createElement('span'); probe.style.font = getComputedStyle(s).font;
        probe.textContent = s.options[s.selectedIndex].text; document.body.appendChild(probe);
        const fits = probe.offsetWidth + 30 <= s.clientWidth; probe.remove(); return fits; })()""")
    shoot(page, "first-hour-batch-form")
    assert InstanceType.objects.exists()


def test_the_logs_tab_keeps_a_traceback_in_reading_order_either_way(page, live_server, workspace, model, shoot,
                                                                     settings):
    from endpoints_app.models import Instance, Node

    _endpoint(workspace, model, "blue")
    log = settings.DATA_DIR / "logs" / "instances" / "iris-blue-first-hour.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('server starting\nTraceback (most recent call last):\n  File "score.py", line 3, in init\n'
                   "    load()\nKeyError: 'weights'\nserver exiting\n")
    Instance.objects.create(deployment=Deployment.objects.get(name="blue"), name="iris-blue-first-hour",
                            node=Node.objects.get(), log_path=str(log), state="Failed")
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/endpoints/iris/logs/")
    text = page.inner_text("pre.log")
    assert text.index("server exiting") < text.index("Traceback") < text.index("KeyError") \
        < text.index("server starting")
    shoot(page, "first-hour-logs-newest")
    page.select_option("#log-order", "oldest")
    page.wait_for_function("document.querySelector('[data-testid=log-order]').innerText.startsWith('Oldest')")
    text = page.inner_text("pre.log")
    assert text.index("server starting") < text.index("Traceback") < text.index("server exiting")
    shoot(page, "first-hour-logs-oldest")


def test_a_registered_model_takes_a_sample_and_is_deleted_from_its_card(page, live_server, workspace, model, shoot):
    own = CatalogModel.objects.create(registry=workspace.name, workspace=workspace, name="churn", version=1,
                                      task="classification", format="sklearn", license="MIT",
                                      deployment_kinds=["online"])
    page.set_viewport_size({"width": 1400, "height": 900})
    page.goto(f"{live_server.url}/catalog/churn/?registry={workspace.name}")
    page.fill("#id_sample_request", '{"input_data": [{"region": "east", "age": 40}]}')
    page.click("#sample-form button[type=submit]")
    page.wait_for_selector(".flash-success")
    own.refresh_from_db()
    assert own.sample_request == {"input_data": [{"region": "east", "age": 40}]}
    page.fill("#id_sample_request", "{not json")
    page.click("#sample-form button[type=submit]")
    assert "not valid JSON" in page.inner_text("#model-error")
    shoot(page, "first-hour-model-card-sample")
    page.goto(f"{live_server.url}/catalog/churn/?registry={workspace.name}")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#delete-model")
    page.wait_for_url(f"{live_server.url}/catalog/")
    assert page.locator("[data-model=churn]").count() == 0
    shoot(page, "first-hour-model-deleted")
