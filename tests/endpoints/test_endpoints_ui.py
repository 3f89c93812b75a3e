"""The Endpoints UI through the Django client (with and without HX-Request): the list,
the deploy wizard, and the endpoint page's Details, Test, Consume and Logs tabs."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from endpoints_app.models import AuditLog, Deployment, Endpoint, QuotaLimit
from endpoints_app.services import audit
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def iris(endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    return Endpoint.objects.get(name="iris")


def wizard_post(client, **fields):
    data = {"kind": "online", **fields}
    return client.post("/endpoints/new/", data)


# -- list ----------------------------------------------------------------------------------------------

def test_empty_list_points_to_the_catalog(owner_client, workspace):
    html = owner_client.get("/endpoints/").content.decode()
    assert "No online endpoints" in html
    assert 'href="/catalog/"' in html


def test_list_shows_state_deployments_and_traffic_and_polls_while_creating(owner_client, iris):
    html = owner_client.get("/endpoints/").content.decode()
    assert 'data-endpoint="iris"' in html
    assert "blue 100%" in html
    assert 'hx-trigger="every 2s"' in html  # blue is Creating
    Deployment.objects.update(provisioning_state="Succeeded")
    partial = owner_client.get("/endpoints/", **HX).content.decode()
    assert partial.lstrip().startswith('<section id="endpoint-rows"')
    assert "every 2s" not in partial


def test_list_hides_other_workspaces_endpoints(client, outsider, iris):
    from endpoints_app.models import Membership, Workspace

    Membership.objects.create(workspace=Workspace.objects.create(name="elsewhere"), user=outsider, role="Owner")
    client.force_login(outsider)
    assert 'data-endpoint="iris"' not in client.get("/endpoints/").content.decode()


def test_empty_batch_tab_offers_to_create_a_batch_endpoint(owner_client, workspace):
    html = owner_client.get("/endpoints/?kind=batch").content.decode()
    assert "coming" not in html and 'href="/endpoints/new/batch/"' in html


def test_list_query_count_is_constant_as_rows_grow(owner_client, iris, endpoint_factory):
    def count():
        with CaptureQueriesContext(connection) as queries:
            assert owner_client.get("/endpoints/").status_code == 200
        return len(queries)

    few = count()
    for index in range(3):  # the test node holds 8 one-core instances
        endpoint_factory(f"more-{index}", deployments=("blue", "green"))
    assert count() == few


# -- wizard --------------------------------------------------------------------------------------------

def test_wizard_walks_every_step_without_javascript_and_deploys(owner_client, node, catalog_model):
    start = owner_client.get(f"/endpoints/new/?model={catalog_model.asset_id}&kind=online")
    assert start.status_code == 200
    assert catalog_model.asset_id in start.content.decode()

    base = {"model": catalog_model.asset_id, "endpoint_mode": "new", "endpoint_name": "iris-web", "auth_mode": "key"}
    step2 = wizard_post(owner_client, step="endpoint", action="next", **base).content.decode()
    assert 'name="deployment_name"' in step2 and "$0.07" in step2  # instance types with prices
    deployment = {"deployment_name": "blue", "instance_type": "Standard_DS2_v2", "instance_count": "2"}
    step3 = wizard_post(owner_client, step="deployment", action="next", **base, **deployment).content.decode()
    assert 'name="request_timeout_ms"' in step3
    request_settings = {"request_timeout_ms": "3000", "max_concurrent_requests_per_instance": "2"}
    review = wizard_post(owner_client, step="settings", action="next", **base, **deployment,
                         **request_settings).content.decode()
    assert "endpoint.yml" in review and "name: iris-web" in review
    assert "instance_type: Standard_DS2_v2" in review and "request_timeout_ms: 3000" in review
    assert "$0.28 per hour" in review  # 2 x 0.14
    assert 'id="runtime-warning"' in review  # the test model has no file on disk

    done = wizard_post(owner_client, step="review", action="deploy", **base, **deployment, **request_settings)
    assert done.status_code == 302 and done.url == "/endpoints/iris-web/"
    created = Deployment.objects.select_related("endpoint").get(endpoint__name="iris-web")
    assert (created.name, created.instance_count, created.instance_type.name) == ("blue", 2, "Standard_DS2_v2")
    assert created.request_settings["request_timeout_ms"] == 3000
    assert created.endpoint.traffic == {"blue": 100}
    assert AuditLog.objects.filter(action="deployment.create", via="ui").exists()


def test_wizard_step_answers_with_the_partial_for_htmx(owner_client, node, catalog_model):
    response = owner_client.post("/endpoints/new/", {
        "step": "endpoint", "action": "next", "model": catalog_model.asset_id, "endpoint_mode": "new",
        "endpoint_name": "iris-web", "auth_mode": "key"}, **HX)
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="wizard"')
    assert 'name="deployment_name"' in html


def test_wizard_refuses_a_bad_or_taken_name_on_the_first_step(owner_client, iris, catalog_model):
    bad = wizard_post(owner_client, step="endpoint", action="next", model=catalog_model.asset_id,
                      endpoint_mode="new", endpoint_name="Bad_Name").content.decode()
    assert 'name="endpoint_name"' in bad and "lowercase" in bad
    taken = wizard_post(owner_client, step="endpoint", action="next", model=catalog_model.asset_id,
                        endpoint_mode="new", endpoint_name="iris").content.decode()
    assert "is taken" in taken


def test_name_check_as_you_type(owner_client, iris):
    assert "is taken" in owner_client.get("/endpoints/new/check-name/?endpoint_name=iris", **HX).content.decode()
    assert "available" in owner_client.get("/endpoints/new/check-name/?endpoint_name=iris-2", **HX).content.decode()
    assert "lowercase" in owner_client.get("/endpoints/new/check-name/?endpoint_name=-x", **HX).content.decode()


def test_wizard_shows_quota_refusal_and_leaves_no_endpoint(owner_client, node, catalog_model, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=1)
    response = wizard_post(
        owner_client, step="review", action="deploy", model=catalog_model.asset_id, endpoint_mode="new",
        endpoint_name="too-big", auth_mode="key", deployment_name="blue", instance_type="Standard_DS2_v2",
        instance_count="1", request_timeout_ms="5000", max_concurrent_requests_per_instance="1",
    )
    assert response.status_code == 200
    assert "Quota exceeded" in response.content.decode()
    assert not Endpoint.objects.filter(name="too-big").exists()


def test_wizard_adds_a_deployment_to_an_existing_endpoint(owner_client, iris, catalog_model):
    start = owner_client.get("/endpoints/new/?endpoint=iris").content.decode()
    assert 'value="green"' in start or "green" in start  # blue is taken, green suggested
    response = wizard_post(
        owner_client, step="review", action="deploy", model=catalog_model.asset_id, endpoint_mode="existing",
        existing_endpoint="iris", deployment_name="green", instance_type="Standard_DS1_v2", instance_count="1",
        request_timeout_ms="5000", max_concurrent_requests_per_instance="1",
    )
    assert response.status_code == 302
    iris.refresh_from_db()
    assert iris.traffic == {"blue": 100, "green": 0}


def test_reader_sees_the_wizard_disabled_and_cannot_post(client, reader, catalog_model):
    client.force_login(reader)
    html = client.get(f"/endpoints/new/?model={catalog_model.asset_id}").content.decode()
    assert 'id="wizard-denied"' in html
    response = wizard_post(client, step="endpoint", action="next", model=catalog_model.asset_id,
                           endpoint_mode="new", endpoint_name="mine")
    assert response.status_code == 403


# -- details -------------------------------------------------------------------------------------------

def test_details_show_deployments_and_poll_while_provisioning(owner_client, iris):
    html = owner_client.get("/endpoints/iris/").content.decode()
    assert 'data-deployment="blue"' in html
    assert "/inference/iris/score" in html.replace("<wbr>", "")  # the URI may wrap after a slash
    assert 'data-polling="true"' in html
    Deployment.objects.update(provisioning_state="Succeeded")
    partial = owner_client.get("/endpoints/iris/", **HX).content.decode()
    assert '<section id="live"' in partial and "sidenav" not in partial
    assert "data-polling" not in partial
    assert 'id="endpoint-state" hx-swap-oob="true">Succeeded<' in partial


def test_details_show_the_mirror_comparison(owner_client, iris):
    from django.utils import timezone

    from endpoints_app.models import MirrorComparison

    assert 'data-testid="mirror-summary"' not in owner_client.get("/endpoints/iris/").content.decode()
    now = timezone.now()
    for agreed, shadow_ms in ((True, 12.0), (True, 14.0), (False, 30.0), (True, 16.0)):
        MirrorComparison.objects.create(
            endpoint=iris, live_deployment="blue", shadow_deployment="green", time=now, live_status=200,
            shadow_status=200, live_latency_ms=10.0, shadow_latency_ms=shadow_ms, agreed=agreed,
        )
    html = owner_client.get("/endpoints/iris/").content.decode()
    assert 'data-testid="mirror-summary"' in html
    assert "blue → shadow green" in html
    assert "75% (3)" in html  # three of four outputs agreed
    assert "4.0 ms" in html  # shadow minus live, nearest-rank median of 2, 4, 6, 20


def test_polling_after_the_endpoint_is_gone_goes_back_to_the_list(owner_client, workspace):
    response = owner_client.get("/endpoints/gone/", **HX)
    assert response["HX-Redirect"] == "/endpoints/"


def test_traffic_update_and_its_validation(owner_client, iris, catalog_model):
    green = {"name": "green", "model": catalog_model.asset_id}
    deployment_svc.do_create_deployment(audit.Actor(user=None), iris, green)
    ok = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "80", "traffic-green": "20"})
    assert ok.status_code == 302
    iris.refresh_from_db()
    assert iris.traffic == {"blue": 80, "green": 20}
    bad = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "80", "traffic-green": "30"}, **HX)
    assert bad.status_code == 200  # htmx swaps the error into the page
    assert "add up to 100" in bad.content.decode()
    mirror = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "100", "traffic-green": "0",
                                                            "mirror-green": "10"})
    assert mirror.status_code == 302
    iris.refresh_from_db()
    assert iris.mirror_traffic == {"green": 10}


def test_scale_and_delete_a_deployment(owner_client, iris, catalog_model):
    assert owner_client.post("/endpoints/iris/deployments/blue/scale/", {"instance_count": "3"}).status_code == 302
    assert Deployment.objects.get(name="blue").instance_count == 3
    green = {"name": "green", "model": catalog_model.asset_id}
    deployment_svc.do_create_deployment(audit.Actor(user=None), iris, green)
    refused = owner_client.post("/endpoints/iris/deployments/blue/delete/")
    assert refused.status_code == 409 and "set its traffic to 0" in refused.content.decode()
    assert owner_client.post("/endpoints/iris/deployments/green/delete/").status_code == 302
    assert not Deployment.objects.filter(name="green").exists()


def test_the_only_deployment_shows_the_way_out_instead_of_a_delete_button(owner_client, iris):
    page = owner_client.get("/endpoints/iris/").content.decode()
    assert 'data-testid="delete-refusal-blue"' in page and "delete the endpoint" in page
    assert "/endpoints/iris/deployments/blue/delete/" not in page
    refused = owner_client.post("/endpoints/iris/deployments/blue/delete/")
    assert refused.status_code == 409 and "only deployment" in refused.content.decode()
    assert Deployment.objects.filter(name="blue").exists()


def test_a_traffic_change_is_confirmed_in_the_form_and_the_details_agree(owner_client, iris, catalog_model):
    green = {"name": "green", "model": catalog_model.asset_id}
    deployment_svc.do_create_deployment(audit.Actor(user=None), iris, green)
    saved = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "70", "traffic-green": "30"}, **HX)
    html = saved.content.decode()
    assert 'data-testid="traffic-saved"' in html and "Traffic saved: blue 70%, green 30%." in html
    assert 'id="live" hx-swap-oob="true"' in html and "blue 70%, green 30%" in html.split('id="live"')[1]
    bad = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "80", "traffic-green": "30"}, **HX)
    form = bad.content.decode().split('id="live"')[0]
    assert 'data-testid="traffic-error"' in form and "adds up to 110" in form
    assert '<strong data-testid="traffic-total">110%</strong>' in form


def test_autoscale_is_set_and_its_decisions_are_shown(owner_client, iris):
    response = owner_client.post("/endpoints/iris/deployments/blue/scale/", {
        "mode": "autoscale", "min_instances": "1", "max_instances": "4", "target_utilization_percentage": "60",
    })
    assert response.status_code == 302
    deployment = Deployment.objects.get(name="blue")
    assert deployment.scale_settings["type"] == "target_utilization"
    scale = deployment.scale_settings
    assert (scale["max_instances"], scale["target_utilization_percentage"]) == (4, 60)
    AuditLog.objects.create(workspace=iris.workspace, action="deployment.autoscale", object_type="deployment",
                            object_name=str(deployment), via="system",
                            details={"from_instances": 1, "to_instances": 2, "in_flight": 1.5})
    html = owner_client.get("/endpoints/iris/").content.decode()
    assert "Autoscale</strong>: 1–4 instances, target 60%" in html
    assert "scaled 1 → 2 (in flight 1.5)" in html


def test_autoscale_with_max_below_min_names_the_field(owner_client, iris):
    response = owner_client.post("/endpoints/iris/deployments/blue/scale/", {
        "mode": "autoscale", "min_instances": "3", "max_instances": "2", "target_utilization_percentage": "60",
    })
    assert response.status_code == 400
    assert "max_instances (2) is below min_instances (3)" in response.content.decode()
    assert Deployment.objects.get(name="blue").scale_settings.get("type", "default") == "default"


def test_manual_scale_rejects_a_non_number(owner_client, iris):
    response = owner_client.post("/endpoints/iris/deployments/blue/scale/", {"instance_count": "many"})
    assert response.status_code == 400
    assert "Instance count must be a whole number" in response.content.decode()


def test_details_and_logs_hide_stopped_instances_kept_for_billing(owner_client, iris, node):
    from endpoints_app.models import Instance

    deployment = iris.deployments.get()
    Instance.objects.create(deployment=deployment, name="iris-blue-old", node=node, state="Stopped")
    Instance.objects.create(deployment=deployment, name="iris-blue-now", node=node, state="Ready")
    details = owner_client.get("/endpoints/iris/").content.decode()
    logs = owner_client.get("/endpoints/iris/logs/").content.decode()
    for html in (details, logs):
        assert "iris-blue-now" in html and "iris-blue-old" not in html


def test_delete_endpoint(owner_client, iris):
    response = owner_client.post("/endpoints/iris/delete/")
    assert response.status_code == 302 and response.url == "/endpoints/"
    assert not Endpoint.objects.filter(name="iris").exists()


def test_reader_cannot_change_anything(client, reader, iris):
    client.force_login(reader)
    html = client.get("/endpoints/iris/").content.decode()
    assert "Delete endpoint" not in html
    for url in ("/endpoints/iris/traffic/", "/endpoints/iris/delete/", "/endpoints/iris/deployments/blue/scale/",
                "/endpoints/iris/consume/keys/", "/endpoints/iris/consume/regenerate/", "/endpoints/iris/test/"):
        assert client.post(url, {"key_type": "primary", "body": "{}"}).status_code == 403, url


@pytest.mark.parametrize("tab", ["", "test/", "consume/", "logs/"])
def test_outsider_gets_404_on_every_tab(client, outsider, iris, tab):
    client.force_login(outsider)
    assert client.get(f"/endpoints/iris/{tab}").status_code == 404


# -- test, consume, logs ---------------------------------------------------------------------------------

def test_test_tab_prefills_the_models_sample(owner_client, iris, catalog_model):
    catalog_model.sample_request = {"input_data": {"data": [[5.1, 3.5, 1.4, 0.2]]}}
    catalog_model.save()
    html = owner_client.get("/endpoints/iris/test/").content.decode()
    assert "5.1" in html and 'name="body"' in html


def test_test_tab_rejects_invalid_json(owner_client, iris):
    response = owner_client.post("/endpoints/iris/test/", {"body": "{not json"}, **HX)
    assert "not valid JSON" in response.content.decode()


def test_test_tab_rejects_deeply_nested_json_without_a_500(owner_client, iris):
    response = owner_client.post("/endpoints/iris/test/", {"body": "[" * 100000 + "]" * 100000}, **HX)
    assert response.status_code < 500
    assert "nested too deeply" in response.content.decode()


def test_test_tab_says_when_the_gateway_is_unreachable(owner_client, iris, settings):
    settings.STUDIO_GATEWAY_URL = "http://127.0.0.1:9"  # discard port: nothing listens
    response = owner_client.post("/endpoints/iris/test/", {"body": "{}"}, **HX)
    assert "Could not reach the gateway" in response.content.decode()


def test_consume_hides_keys_until_revealed_and_regenerates(owner_client, iris):
    keys = key_svc.get_keys(iris)
    page = owner_client.get("/endpoints/iris/consume/").content.decode()
    assert keys["primary_key"] not in page
    assert "curl -X POST" in page and "/inference/iris/score" in page
    revealed = owner_client.post("/endpoints/iris/consume/keys/", **HX).content.decode()
    assert keys["primary_key"] in revealed and keys["secondary_key"] in revealed
    regenerated = owner_client.post("/endpoints/iris/consume/regenerate/", {"key_type": "secondary"}, **HX)
    iris.refresh_from_db()
    new_keys = key_svc.get_keys(iris)
    assert new_keys["secondary_key"] != keys["secondary_key"]
    assert new_keys["primary_key"] == keys["primary_key"]
    assert new_keys["secondary_key"] in regenerated.content.decode()


def test_logs_tab_without_instances(owner_client, iris):
    html = owner_client.get("/endpoints/iris/logs/?deployment=blue&lines=20").content.decode()
    assert "has no instances yet" in html


def test_details_query_count_is_constant_as_deployments_and_instances_grow(owner_client, iris, node, catalog_model):
    from endpoints_app.models import Instance

    def count():
        with CaptureQueriesContext(connection) as queries:
            assert owner_client.get("/endpoints/iris/").status_code == 200
        return len(queries)

    Instance.objects.create(deployment=iris.deployments.get(), name="iris-blue-0", node=node, state="Ready")
    few = count()
    for name in ("green", "red", "yellow"):
        deployment = deployment_svc.do_create_deployment(audit.Actor(user=None), iris, {"name": name,
                                                                           "model": catalog_model.asset_id})
        for index in range(2):
            Instance.objects.create(deployment=deployment, name=f"iris-{name}-{index}", node=node, state="Ready")
    assert count() == few


def test_a_failed_deployment_shows_in_the_header_its_error_keeps_its_lines_and_a_503_says_why(owner_client, iris):
    from endpoints_app.views.endpoints import _not_serving

    error = "init() failed:\nTraceback (most recent call last):\n  File \"score.py\", line 3\nKeyError: 'w'"
    Deployment.objects.filter(name="blue").update(provisioning_state="Failed", error=error)
    page = owner_client.get("/endpoints/iris/").content.decode()
    assert 'data-testid="failed-deployment"' in page and "deployment blue Failed" in page
    assert '<pre class="flash flash-error small error-text" data-testid="deployment-error">' in page
    assert "Traceback (most recent call last):\n  File" in page
    assert "deployment blue Failed" in owner_client.get("/endpoints/iris/test/").content.decode()
    iris.refresh_from_db()
    assert _not_serving(iris, None) == ("Deployment blue has Failed: KeyError: &#x27;w&#x27;. See its error on the "
                                        "Details tab and its Logs.").replace("&#x27;", "'")
