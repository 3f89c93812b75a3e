"""The deploy wizard checks as the user picks, with the services' own checks, and words its
errors for the screen: quota and capacity on the deployment step, quota used/left beside each
instance type, the endpoint's model preselected for "Add deployment", a chat model's real
request timeout default."""

import pytest

from endpoints_app.models import CatalogModel, Endpoint, QuotaLimit
from endpoints_app.services import specs

pytestmark = pytest.mark.django_db

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def iris(endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    return Endpoint.objects.get(name="iris")


def _deployment_step(client, model: CatalogModel, **fields):
    data = {"kind": "online", "step": "deployment", "action": "next", "model": model.asset_id,
            "endpoint_mode": "new", "endpoint_name": "fresh", "auth_mode": "key", "deployment_name": "blue",
            "instance_type": "Standard_DS1_v2", "instance_count": "1", **fields}
    return client.post("/endpoints/new/", data).content.decode()


def test_it_refuses_a_deployment_over_quota_on_its_own_step(owner_client, node, catalog_model, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=10)
    html = _deployment_step(owner_client, catalog_model, instance_type="Standard_DS4_v2", instance_count="20")
    assert 'name="step" value="deployment"' in html  # stays on the step
    assert "Quota exceeded for DSv2 cores" in html and "the quota is 10 cores" in html
    ok = _deployment_step(owner_client, catalog_model, instance_type="Standard_DS1_v2", instance_count="2")
    assert 'name="step" value="settings"' in ok


def test_it_checks_quota_and_capacity_as_the_user_picks(owner_client, node, workspace):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=10)
    url = "/endpoints/new/check-resources/"
    over = owner_client.get(url, {"instance_type": "Standard_DS4_v2", "instance_count": "20"}, **HX).content.decode()
    assert 'class="error"' in over and "Quota exceeded" in over
    fits = owner_client.get(url, {"instance_type": "Standard_DS1_v2", "instance_count": "1"}, **HX).content.decode()
    assert 'class="ok"' in fits
    many = owner_client.get(url, {"instance_type": "Standard_F2s_v2", "instance_count": "abc"}, **HX).content.decode()
    assert "Instance count must be a whole number" in many and "instance_count" not in many


def test_it_shows_quota_used_and_left_beside_each_instance_type(owner_client, iris, workspace, catalog_model):
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=10)
    html = _deployment_step(owner_client, catalog_model, step="endpoint")
    assert 'data-family="DSv2">DSv2: 1 of 10 used, <strong>9 left</strong>' in html  # iris/blue holds 1 core
    assert 'data-family="FSv2">FSv2: 0 of 32 used, <strong>32 left</strong>' in html


def test_add_deployment_preselects_the_endpoints_model(owner_client, iris, catalog_model):
    html = owner_client.get("/endpoints/new/?endpoint=iris").content.decode()
    assert f'<option value="{catalog_model.asset_id}" selected>' in html
    assert 'value="existing" checked' in html
    assert 'value="green"' in html  # blue is taken


def test_it_suggests_a_chat_models_own_request_timeout(owner_client, workspace):
    chat = CatalogModel.objects.create(name="smollm2-chat", version=1, task="chat-completion", format="gguf",
                                       license="Apache-2.0", artifact_path="x.gguf", deployment_kinds=["online"])
    html = owner_client.get(f"/endpoints/new/?model={chat.asset_id}").content.decode()
    assert f'name="request_timeout_ms" value="{specs.GGUF_REQUEST_TIMEOUT_MS}"' in html
    plain = CatalogModel.objects.create(name="tabular", version=1, task="classification", format="sklearn",
                                        license="MIT", artifact_path="x.joblib", deployment_kinds=["online"])
    html = owner_client.get(f"/endpoints/new/?model={plain.asset_id}").content.decode()
    assert f'name="request_timeout_ms" value="{specs.REQUEST_DEFAULTS["request_timeout_ms"]}"' in html


def test_it_words_errors_for_the_screen(owner_client, iris, catalog_model, workspace):
    no_model = owner_client.post("/endpoints/new/", {"kind": "online", "step": "endpoint", "action": "next",
                                                     "model": "", "endpoint_name": "x-1"}).content.decode()
    assert "Choose a model." in no_model and "studio://registries/..." not in no_model
    reserved = owner_client.get("/endpoints/new/check-name/?endpoint_name=new", **HX).content.decode()
    assert "reserved" in reserved

    from endpoints_app.services import audit
    from endpoints_app.services import deployments as deployment_svc

    green = {"name": "green", "model": catalog_model.asset_id}
    deployment_svc.do_create_deployment(audit.Actor(user=None), iris, green)
    bad = owner_client.post("/endpoints/iris/traffic/", {"traffic-blue": "100", "traffic-green": "0",
                                                         "mirror-green": "60"}, **HX).content.decode()
    assert "Mirror traffic to &#x27;green&#x27; is 60%" in bad and "mirror_traffic" not in bad
