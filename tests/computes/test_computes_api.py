"""Computes through the REST API: IT (staff) writes them, everyone reads them; what a spec may hold;
the built-in `local`; a compute in use; and deployments (online and batch) naming their compute.
No Ray head runs here (test_clusters.py starts one): a Ray compute's head is an address nobody
answers on, so its state is Unreachable, answered at once."""

from __future__ import annotations

import time

import pytest

from endpoints_app.models import AuditLog, CatalogModel, Compute, Deployment, Endpoint, InstanceType
from tests.computes.conftest import spare_port
from tests.conftest import api_client_for

pytestmark = pytest.mark.django_db

BASE = "/api/v1/computes"


def ray_spec(**extra) -> dict:
    return {"name": "gpu-farm", "type": "ray", "address": f"127.0.0.1:{spare_port()}", **extra}


# -- hostile first -------------------------------------------------------------------------------------


def test_it_refuses_compute_writes_to_everyone_but_it(owner, contributor, reader, outsider, staff_api):
    made = staff_api.post(BASE, ray_spec(name="shared"), format="json")
    assert made.status_code == 201, made.content
    for user in (owner, contributor, reader, outsider):
        api = api_client_for(user)
        assert api.post(BASE, ray_spec(name="mine"), format="json").status_code == 403, user
        assert api.patch(f"{BASE}/shared", {"description": "x"}, format="json").status_code == 403, user
        assert api.delete(f"{BASE}/shared").status_code == 403, user
        assert api.delete(f"{BASE}/local").status_code == 403, user
        # ... but every signed-in user sees them.
        assert {c["name"] for c in api.get(BASE).json()} == {"local", "shared"}, user
    assert list(Compute.objects.values_list("name", flat=True)) == ["local", "shared"]
    assert not AuditLog.objects.filter(action="compute.create", object_name="mine").exists()


def test_an_anonymous_caller_gets_401(client):
    assert client.get(BASE).status_code in (401, 403)
    assert client.post(BASE, ray_spec(), content_type="application/json").status_code in (401, 403)
    assert not Compute.objects.filter(name="gpu-farm").exists()


@pytest.mark.parametrize(("spec", "field"), [
    ({"name": "Bad Name!"}, "name"),
    ({"name": "-edge"}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 33}, "name"),
    ({"type": "slurm"}, "type"),
    ({"type": None}, "type"),
    ({"type": "local"}, "type"),
    ({"address": "no-port"}, "address"),
    ({"address": "10.0.0.5:99999"}, "address"),
    ({"address": "10.0.0.5:port"}, "address"),
    ({"address": "ray://10.0.0.5:10001"}, "address"),
    ({"address": "bad host:6379"}, "address"),
    ({"address": "host;rm -rf /:6379"}, "address"),
    ({"address": 6379}, "address"),
    ({"nodes": 3}, "nodes"),
    ({"description": {"x": 1}}, "description"),
])
def test_a_bad_spec_is_a_400_naming_the_field(staff_api, spec, field):
    response = staff_api.post(BASE, {**ray_spec(), **spec}, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["field"] == field
    assert not Compute.objects.exclude(name="local").exists()


@pytest.mark.parametrize("kind", ["kubernetes", "amlcompute", "computeinstance", "virtualmachine"])
def test_other_compute_types_are_refused_naming_ray(staff_api, kind):
    response = staff_api.post(BASE, ray_spec(type=kind), format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["field"] == "type" and "Ray" in error["message"] and "type: ray" in error["message"]


def test_local_is_always_there_and_cannot_be_deleted_or_changed(staff_api, reader):
    Compute.objects.all().delete()  # even a database that lost it (a test's flush) shows it again
    listed = api_client_for(reader).get(BASE).json()
    assert [c["name"] for c in listed] == ["local"] and listed[0]["type"] == "local"
    assert staff_api.delete(f"{BASE}/local").status_code == 409
    changed = staff_api.patch(f"{BASE}/local", {"address": "10.0.0.5:6379"}, format="json")
    assert changed.status_code == 409 and changed.json()["error"]["field"] == "name"
    taken = staff_api.post(BASE, ray_spec(name="local"), format="json")
    assert taken.status_code == 409 and taken.json()["error"]["field"] == "name"
    assert Compute.objects.get(name="local").type == "local"


def test_a_compute_in_use_cannot_be_deleted(staff_api, workspace, instance_types):
    assert staff_api.post(BASE, ray_spec(), format="json").status_code == 201
    compute = Compute.objects.get(name="gpu-farm")
    model = CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT")
    endpoint = Endpoint.objects.create(workspace=workspace, name="iris")
    used = Deployment.objects.create(endpoint=endpoint, name="blue", model=model, compute=compute,
                                     instance_type=InstanceType.objects.first())

    refused = staff_api.delete(f"{BASE}/gpu-farm")

    assert refused.status_code == 409 and "iris/blue" in refused.json()["error"]["message"]
    assert Compute.objects.filter(name="gpu-farm").exists()
    # Once the deployment is deleted (its row kept for the meters), the compute can go.
    used.mark_deleted()
    assert staff_api.delete(f"{BASE}/gpu-farm").status_code == 204
    assert Deployment.all_objects.get(pk=used.pk).compute.name == "local"
    assert AuditLog.objects.filter(action="compute.delete", object_name="gpu-farm").exists()


def test_two_computes_cannot_both_be_the_studios_own_head(staff_api):
    assert staff_api.post(BASE, {"name": "here", "type": "ray"}, format="json").status_code == 201
    second = staff_api.post(BASE, {"name": "again", "type": "ray"}, format="json")
    assert second.status_code == 409 and second.json()["error"]["field"] == "address"


# -- round trips ---------------------------------------------------------------------------------------


def test_it_creates_shows_updates_and_deletes_a_ray_compute(staff_api, reader):
    address = f"127.0.0.1:{spare_port()}"
    started = time.monotonic()
    made = staff_api.post(BASE, {"name": "gpu-farm", "type": "ray", "address": address,
                                 "description": "the lab's cluster", "$schema": "x"}, format="json")
    took = time.monotonic() - started

    assert made.status_code == 201, made.content
    body = made.json()
    assert body["name"] == "gpu-farm" and body["type"] == "ray" and body["address"] == address
    assert body["head_address"] == address and body["nodes"] == [] and body["deployments"] == 0
    # Nobody answers there: Unreachable with the reason, at once (no error, no wait for Ray's own timeouts).
    assert body["state"] == "Unreachable" and address in body["state_detail"] and took < 5, (body, took)
    assert body["created_by"] == "ivy"
    shown = api_client_for(reader).get(f"{BASE}/gpu-farm").json()
    assert shown["state"] == "Unreachable" and shown["description"] == "the lab's cluster"

    other = f"ray-head.example.com:{spare_port()}"
    updated = staff_api.patch(f"{BASE}/gpu-farm", {"address": other, "description": ""}, format="json")
    assert updated.status_code == 200 and updated.json()["address"] == other
    renamed = staff_api.patch(f"{BASE}/gpu-farm", {"name": "else"}, format="json")
    assert renamed.status_code == 400 and renamed.json()["error"]["field"] == "name"
    retyped = staff_api.patch(f"{BASE}/gpu-farm", {"type": "kubernetes"}, format="json")
    assert retyped.status_code == 400 and "Ray" in retyped.json()["error"]["message"]

    assert staff_api.delete(f"{BASE}/gpu-farm").status_code == 204
    assert staff_api.get(f"{BASE}/gpu-farm").status_code == 404
    actions = list(AuditLog.objects.filter(object_type="compute").values_list("action", flat=True))
    assert sorted(actions) == ["compute.create", "compute.delete", "compute.update"]


def test_the_local_compute_shows_this_studios_nodes(staff_api, instance_types):
    from tests.live import register_test_node

    node = register_test_node()
    local = staff_api.get(f"{BASE}/local").json()
    assert local["state"] == "Ready" and local["address"] == ""
    (shown,) = local["nodes"]
    assert shown["name"] == node.name and shown["alive"] is True and shown["resources"]["CPU"] == node.cores


# -- deployments name their compute --------------------------------------------------------------------


@pytest.fixture
def iris(db, owner_api, catalog_model):
    made = owner_api.post("/api/v1/workspaces/team/online-endpoints", {"name": "iris"}, format="json")
    assert made.status_code == 201
    return catalog_model


def deploy(api, model, **extra):
    return api.post("/api/v1/workspaces/team/online-endpoints/iris/deployments",
                    {"name": "blue", "model": model.asset_id, "instance_type": "Standard_DS1_v2", **extra},
                    format="json")


@pytest.mark.parametrize("given", [None, "local", "azureml:local"])
def test_an_online_deployment_runs_on_local_unless_it_names_another(owner_api, iris, node, given):
    response = deploy(owner_api, iris, **({"compute": given} if given else {}))
    assert response.status_code == 202, response.content
    assert response.json()["compute"] == "local"
    assert Deployment.objects.get(name="blue").compute.name == "local"
    shown = owner_api.get("/api/v1/workspaces/team/online-endpoints/iris/deployments/blue").json()
    assert shown["compute"] == "local"


def test_an_unknown_compute_is_a_400_naming_compute(owner_api, iris, node):
    for given in ("nowhere", "azureml:nowhere", 7):
        response = deploy(owner_api, iris, compute=given)
        assert response.status_code == 400, response.content
        assert response.json()["error"]["field"] == "compute"
    assert not Deployment.objects.exists()


def test_a_deployments_compute_cannot_be_changed(owner_api, iris, node):
    assert deploy(owner_api, iris).status_code == 202
    url = "/api/v1/workspaces/team/online-endpoints/iris/deployments/blue"
    same = owner_api.patch(url, {"compute": "azureml:local"}, format="json")
    assert same.status_code in (200, 202), same.content
    Compute.objects.create(name="gpu-farm", type="ray", address="10.0.0.5:6379")
    moved = owner_api.patch(url, {"compute": "gpu-farm"}, format="json")
    assert moved.status_code == 400 and moved.json()["error"]["field"] == "compute"
    assert Deployment.objects.get(name="blue").compute.name == "local"


def test_a_batch_deployment_names_its_compute(owner_api, catalog_model, node):
    made = owner_api.post("/api/v1/workspaces/team/batch-endpoints", {"name": "scorer"}, format="json")
    assert made.status_code == 201, made.content
    url = "/api/v1/workspaces/team/batch-endpoints/scorer/deployments"
    body = {"name": "nightly", "model": catalog_model.asset_id, "instance_type": "Standard_DS1_v2"}
    unknown = owner_api.post(url, {**body, "compute": "azureml:nowhere"}, format="json")
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "compute"
    created = owner_api.post(url, {**body, "compute": "azureml:local"}, format="json")
    assert created.status_code in (200, 201, 202), created.content
    assert created.json()["compute"] == "local"
    assert owner_api.get(f"{url}/nightly").json()["compute"] == "local"


def test_without_the_ray_backend_a_ray_compute_is_no_choice_for_a_deployment(owner_api, iris, node):
    from endpoints_app.services.computes import deployable_computes, ray_backend_available

    Compute.objects.create(name="gpu-farm", type="ray", address="10.0.0.5:6379")
    if ray_backend_available():
        pytest.skip("this studio has the Ray backend: Ray computes are a choice")
    response = deploy(owner_api, iris, compute="gpu-farm")
    assert response.status_code == 400 and response.json()["error"]["field"] == "compute"
    assert "Ray" in response.json()["error"]["message"]
    assert [c.name for c in deployable_computes()] == ["local"]
