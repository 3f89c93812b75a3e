"""Nothing in a deployment or endpoint is accepted and ignored: a field the studio does not act on is a
400 naming it (and why, for the keys the cloud CLI's files carry), and the cloud CLI's nesting of batch
settings (settings.*, resources.instance_count) is read as the same settings."""

from __future__ import annotations

import pytest

from endpoints_app.models import Deployment, Endpoint
from tests.datastores.conftest import WS

pytestmark = pytest.mark.django_db


def test_deployment_and_endpoint_fields_the_studio_does_not_act_on_are_400s(owner_api, batch_endpoint, iris):
    batch_endpoint()
    batch = f"{WS}/batch-endpoints/scorer/deployments"
    base = {"name": "green", "model": iris.asset_id, "instance_type": "Standard_DS1_v2"}
    refused = {
        "compute": ({"compute": "azureml:batch-cluster"}, "No compute 'azureml:batch-cluster'"),
        "type": ({"type": "pipeline"}, "type: model"),
        "app_insights_enabled": ({"app_insights_enabled": True}, "Application Insights"),
        "description": ({"description": "x"}, "describe its endpoint"),
        "tags": ({"tags": {"a": "b"}}, "tag its endpoint"),
        "identity": ({"identity": {"type": "system_assigned"}}, "Unknown batch deployment field"),
        "resources.instance_type": ({"resources": {"instance_type": "big"}}, "resources.instance_count"),
        "resources.instance_count": ({"instance_count": 2, "resources": {"instance_count": 3}}, "given twice"),
        "settings.mini_batch_size": ({"mini_batch_size": 2, "settings": {"mini_batch_size": 3}}, "given twice"),
        "settings.max_nodes": ({"settings": {"max_nodes": 3}}, "no setting"),
        "settings.logging_level": ({"settings": {"logging_level": "loud"}}, "debug, info, warning"),
        "settings.retry_settings.attempts": ({"settings": {"retry_settings": {"attempts": 1}}}, "no setting"),
    }
    for field, (extra, why) in refused.items():
        response = owner_api.post(batch, {**base, **extra}, format="json")
        assert response.status_code == 400, (field, response.content)
        error = response.json()["error"]
        assert error["field"] == field and why in error["message"], (field, error)
    update = owner_api.patch(f"{batch}/blue", {"compute": "batch-cluster"}, format="json")
    assert update.status_code == 400 and update.json()["error"]["field"] == "compute"
    assert "cannot be changed" in update.json()["error"]["message"]
    assert not Deployment.objects.filter(name="green").exists()

    # The accepted forms: type model, app_insights_enabled false, the cloud CLI's nesting.
    ok = owner_api.post(batch, {**base, "type": "model", "app_insights_enabled": False, "logging_level": "WARNING",
                                "resources": {"instance_count": 2},
                                "settings": {"mini_batch_size": 7, "error_threshold": 3, "output_file_name": "o.csv",
                                             "retry_settings": {"max_retries": 0, "timeout": 9}}}, format="json")
    assert ok.status_code == 201, ok.content
    green = Deployment.objects.get(name="green")
    assert green.instance_count == 2
    assert {k: green.batch_settings[k] for k in ("mini_batch_size", "error_threshold", "output_file_name",
                                                 "retry_settings", "logging_level")} == {
        "mini_batch_size": 7, "error_threshold": 3, "output_file_name": "o.csv",
        "retry_settings": {"max_retries": 0, "timeout": 9}, "logging_level": "warning"}
    # A job's settings cannot carry a deployment-only setting.
    assert owner_api.post(f"{WS}/batch-endpoints/scorer/jobs", {
        "inputs": {"input_data": {"type": "uri_folder", "path": "azureml:none:1"}},
        "settings": {"logging_level": "debug"}}, format="json").json()["error"]["field"] == "settings.logging_level"

    # Online deployments and endpoints of both kinds.
    assert owner_api.post(f"{WS}/online-endpoints", {"name": "web"}, format="json").status_code in (201, 202)
    online = owner_api.post(f"{WS}/online-endpoints/web/deployments",
                            {"name": "blue", "model": iris.asset_id, "instance_type": "Standard_DS1_v2",
                             "type": "kubernetes"}, format="json")
    assert online.status_code == 400 and online.json()["error"]["field"] == "type"
    for path, body, field in ((f"{WS}/online-endpoints", {"name": "web2", "public_network_access": "enabled"},
                               "public_network_access"),
                              (f"{WS}/online-endpoints/web", {"identity": {}}, "identity"),
                              (f"{WS}/batch-endpoints", {"name": "b2", "compute": "c"}, "compute"),
                              (f"{WS}/batch-endpoints/scorer", {"traffic": {"blue": 100}}, "traffic"),
                              (f"{WS}/online-endpoints", {"name": "web3", "kind": "batch"}, "kind")):
        send = owner_api.post if path.endswith("-endpoints") else owner_api.patch
        response = send(path, body, format="json")
        assert response.status_code == 400 and response.json()["error"]["field"] == field, (path, response.content)
    assert not Endpoint.objects.filter(name__in=("web2", "b2", "web3")).exists()
