"""IT in the admin console: group to role mappings, service principals (a studio user of their own,
no password), and who signed in with which provider account."""

import pytest
from django.contrib.auth import get_user_model

from endpoints_app.models import AuditLog, GroupRoleMapping, ServicePrincipal


@pytest.fixture
def it_client(client, db):
    client.force_login(get_user_model().objects.create_superuser("it", password="x"))
    return client


def test_it_maps_a_group_to_a_role_and_registers_a_service_principal(it_client, workspace):
    mapped = it_client.post("/admin/endpoints_app/grouprolemapping/add/",
                            {"group": "ml-team", "workspace": workspace.pk, "role": "Contributor"})
    registered = it_client.post("/admin/endpoints_app/serviceprincipal/add/",
                                {"client_id": "ci-pipeline", "display_name": "CI"})

    assert mapped.status_code == 302 and registered.status_code == 302
    assert GroupRoleMapping.objects.get(group="ml-team").workspace == workspace
    principal = ServicePrincipal.objects.get(client_id="ci-pipeline")
    assert principal.user.username == "sp-ci-pipeline" and not principal.user.has_usable_password()
    assert AuditLog.objects.filter(action="admin.serviceprincipal.add").exists()
    page = it_client.get(f"/admin/endpoints_app/serviceprincipal/{principal.pk}/change/")
    assert b"edit on user sp-ci-pipeline" in page.content
    assert it_client.get("/admin/endpoints_app/oidcidentity/").status_code == 200


def test_it_refuses_a_client_id_that_cannot_be_one(it_client, db):
    answer = it_client.post("/admin/endpoints_app/serviceprincipal/add/", {"client_id": "two words"})
    assert answer.status_code == 200 and b"client id" in answer.content
    assert not ServicePrincipal.objects.exists()
