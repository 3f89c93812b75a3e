"""The admin console for IT: every list and page opens, filters and search work,
the audit log and the controller's objects are read-only, secrets stay out."""

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from endpoints_app.models import (
    AuditLog,
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceType,
    MirrorComparison,
    Node,
    QuotaLimit,
    UsageMinute,
)


@pytest.fixture
def it_client(client, db):
    admin_user = get_user_model().objects.create_superuser("it-admin", "it@example.com", "pw-for-tests-only")
    client.force_login(admin_user)
    return client


def make_endpoint(workspace, name: str, deployments: int = 1) -> Endpoint:
    endpoint = Endpoint.objects.create(
        workspace=workspace, name=name, traffic={"blue": 100},
        primary_key_nonce="n" * 32, provisioning_state="Succeeded",
    )
    model = CatalogModel.objects.get_or_create(
        registry="studio", name="iris", version=1,
        defaults={"task": "classification", "format": "sklearn", "license": "MIT", "deployment_kinds": ["online"]},
    )[0]
    node = Node.objects.get_or_create(name="local", defaults={"cores": 2, "memory_gb": 4, "queue": "node.local"})[0]
    for index in range(deployments):
        deployment = Deployment.objects.create(
            endpoint=endpoint, name=f"d{index}", model=model, instance_type=InstanceType.objects.first(),
            environment_variables={"SECRET_TOKEN": "hunter2-never-shown"},
        )
        Instance.objects.create(deployment=deployment, name=f"{name}-d{index}-0", node=node, port=40000 + index,
                                state="Ready")
    now = timezone.now().replace(second=0, microsecond=0)
    UsageMinute.objects.create(endpoint=endpoint, deployment="d0", minute=now, requests=4, status_2xx=4,
                               latency_ms_sum=10.0)
    MirrorComparison.objects.create(endpoint=endpoint, live_deployment="d0", shadow_deployment="d1",
                                    time=now, live_status=200, shadow_status=200, live_latency_ms=2,
                                    shadow_latency_ms=3, agreed=True)
    return endpoint


@pytest.fixture
def resources(workspace, owner):
    endpoint = make_endpoint(workspace, "iris-prod", deployments=2)
    QuotaLimit.objects.create(workspace=workspace, family="DSv2", max_cores=8)
    CatalogModel.objects.create(name="minilm", task="embeddings", format="sentence-transformers", license="Apache-2.0",
                                deployment_kinds=["serverless"], price_input_per_1k="0.0001", price_output_per_1k="0")
    AuditLog.objects.create(user=owner, username=owner.username, workspace=workspace, action="create",
                            object_type="endpoint", object_name="iris-prod", via="ui", details={"kind": "online"})
    return endpoint


CHANGELISTS = [
    "auth/user", "endpoints_app/workspace", "endpoints_app/membership", "endpoints_app/quotalimit",
    "endpoints_app/instancetype", "endpoints_app/catalogmodel", "endpoints_app/auditlog", "endpoints_app/endpoint",
    "endpoints_app/deployment", "endpoints_app/instance", "endpoints_app/node", "endpoints_app/usageminute",
    "endpoints_app/mirrorcomparison",
]


@pytest.mark.parametrize("path", CHANGELISTS)
def test_every_list_and_its_first_page_open(it_client, resources, path):
    response = it_client.get(f"/admin/{path}/")
    assert response.status_code == 200
    first = response.context["cl"].result_list[0]
    assert it_client.get(f"/admin/{path}/{first.pk}/change/").status_code == 200


def test_non_staff_is_sent_to_the_login(client, owner):
    client.force_login(owner)
    response = client.get("/admin/endpoints_app/endpoint/")
    assert response.status_code == 302
    assert "/admin/login/" in response.url


def test_audit_log_is_read_only(it_client, resources):
    row = AuditLog.objects.get()
    assert it_client.get("/admin/endpoints_app/auditlog/add/").status_code == 403
    page = it_client.get(f"/admin/endpoints_app/auditlog/{row.pk}/change/").content.decode()
    assert 'name="_save"' not in page
    assert it_client.post(f"/admin/endpoints_app/auditlog/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    assert AuditLog.objects.filter(pk=row.pk).exists()


def test_endpoint_page_hides_key_material_and_lists_deployments(it_client, resources):
    page = it_client.get(f"/admin/endpoints_app/endpoint/{resources.pk}/change/").content.decode()
    assert "d" * 64 not in page and "n" * 32 not in page
    assert "d0" in page and "d1" in page
    assert 'name="_save"' not in page


def test_deployment_page_shows_instances_not_environment(it_client, resources):
    deployment = resources.deployments.get(name="d0")
    page = it_client.get(f"/admin/endpoints_app/deployment/{deployment.pk}/change/").content.decode()
    assert "iris-prod-d0-0" in page
    assert "hunter2-never-shown" not in page


def test_lists_filter_and_search_across_workspaces(it_client, resources, workspace):
    from endpoints_app.models import Workspace

    other = Workspace.objects.create(name="other-team")
    make_endpoint(other, "other-ep")
    by_workspace = it_client.get("/admin/endpoints_app/endpoint/", {"workspace__id__exact": other.pk})
    assert [e.name for e in by_workspace.context["cl"].result_list] == ["other-ep"]
    searched = it_client.get("/admin/endpoints_app/deployment/", {"q": "other-ep"})
    assert {d.endpoint.name for d in searched.context["cl"].result_list} == {"other-ep"}
    ready = it_client.get("/admin/endpoints_app/instance/", {"state__exact": "Ready"})
    assert len(ready.context["cl"].result_list) == 3
    shared = it_client.get("/admin/endpoints_app/catalogmodel/", {"owner": "shared"})
    assert [m.name for m in shared.context["cl"].result_list] == ["iris", "minilm"]


def test_catalog_list_shows_foundation_pricing(it_client, resources):
    html = it_client.get("/admin/endpoints_app/catalogmodel/").content.decode()
    assert "0.0001 / 0" in html


def test_deployment_list_shows_ready_count(it_client, resources):
    html = it_client.get("/admin/endpoints_app/deployment/").content.decode()
    assert "1/1" in html


def _queries(client, url: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    "path", ["endpoints_app/endpoint", "endpoints_app/deployment", "endpoints_app/instance", "auth/user",
             "endpoints_app/usageminute", "endpoints_app/auditlog"],
)
def test_list_query_count_is_constant_as_rows_grow(it_client, resources, workspace, owner, path):
    url = f"/admin/{path}/"
    few = _queries(it_client, url)
    for index in range(8):
        endpoint = make_endpoint(workspace, f"bulk-{index}", deployments=2)
        UsageMinute.objects.create(endpoint=endpoint, deployment="d1",
                                   minute=timezone.now() - timedelta(minutes=index + 5), requests=1)
        AuditLog.objects.create(user=owner, username=owner.username, workspace=workspace, action="create",
                                object_type="endpoint", object_name=endpoint.name, via="api")
        get_user_model().objects.create_user(f"user-{index}").memberships.create(workspace=workspace)
    assert _queries(it_client, url) == few


def test_console_writes_land_in_the_audit_log(it_client, workspace, owner, instance_types):
    def audited(action: str) -> AuditLog:
        row = AuditLog.objects.filter(action=action).order_by("-id").first()
        assert row is not None, action
        assert row.username == "it-admin" and row.via == "admin"
        return row

    response = it_client.post("/admin/endpoints_app/quotalimit/add/",
                              {"workspace": workspace.pk, "family": "DSv2", "max_cores": 8})
    assert response.status_code == 302, response.content[:500]
    assert audited("admin.quotalimit.add").workspace == workspace
    quota = QuotaLimit.objects.get(workspace=workspace)
    it_client.post(f"/admin/endpoints_app/quotalimit/{quota.pk}/change/",
                   {"workspace": workspace.pk, "family": "DSv2", "max_cores": 16})
    changed = audited("admin.quotalimit.change")
    assert changed.details["changes"] == {"max_cores": {"old": "8", "new": "16"}}
    it_client.post(f"/admin/endpoints_app/quotalimit/{quota.pk}/delete/", {"post": "yes"})
    assert not QuotaLimit.objects.exists()
    audited("admin.quotalimit.delete")

    response = it_client.post("/admin/endpoints_app/workspace/add/", {
        "name": "newteam", "display_name": "New team", "description": "", "monthly_budget": "",
        "memberships-TOTAL_FORMS": "1", "memberships-INITIAL_FORMS": "0",
        "memberships-0-user": owner.pk, "memberships-0-role": "Owner",
        "quotas-TOTAL_FORMS": "0", "quotas-INITIAL_FORMS": "0",
        "serverless_rate_limits-TOTAL_FORMS": "0", "serverless_rate_limits-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content[:2000]
    assert audited("admin.workspace.add").object_name == "newteam"

    response = it_client.post("/admin/auth/user/add/", {
        "username": "newbie", "password1": "a-long-pass-123", "password2": "a-long-pass-123",
        "usable_password": "true", "memberships-TOTAL_FORMS": "0", "memberships-INITIAL_FORMS": "0",
    })
    assert response.status_code == 302, response.content[:2000]
    audited("admin.user.add")
    instance_type = InstanceType.objects.first()
    old_price = f"{instance_type.price_per_hour:.4f}"
    it_client.post("/admin/endpoints_app/instancetype/", {
        "form-TOTAL_FORMS": "1", "form-INITIAL_FORMS": "1", "form-0-id": instance_type.pk,
        "form-0-price_per_hour": "1.25", "form-0-is_active": "on", "_save": "Save",
    })
    # One price edit, one entry, through the console, with the old and new price.
    price = audited("price.change")
    assert (price.details["old"], price.details["new"]) == (old_price, "1.25")
    assert not AuditLog.objects.filter(action="admin.instancetype.change").exists()
    assert AuditLog.objects.filter(object_name=instance_type.name).count() == 1
    listed = it_client.get("/admin/endpoints_app/auditlog/").content.decode()
    assert f"{old_price} → 1.25" in listed


def test_bootstrap_audits_the_default_workspace(db):
    from django.core.management import call_command

    call_command("studio_bootstrap", "--skip-catalog", stdout=open("/dev/null", "w"))
    assert AuditLog.objects.filter(action="workspace.create", object_name="default").exists()
