import pytest

from endpoints_app.models import AuditLog, Membership, Role

pytestmark = pytest.mark.django_db

MEMBERS = "/api/v1/workspaces/team/members"


def test_it_lists_my_workspaces_with_my_role(owner_api, reader_api):
    assert owner_api.get("/api/v1/workspaces").json() == [{"name": "team", "display_name": "Team", "role": "Owner"}]
    assert reader_api.get("/api/v1/workspaces").json()[0]["role"] == "Reader"


def test_it_lists_members(owner_api, reader):
    body = owner_api.get("/api/v1/workspaces/team/members").json()
    assert {(m["username"], m["role"]) for m in body} == {("olivia", "Owner"), ("rita", "Reader")}


def test_owner_adds_a_member_and_it_is_audited(owner_api, outsider):
    response = owner_api.post(MEMBERS, {"username": "oscar", "role": "Contributor"}, format="json")
    assert response.status_code == 201
    assert response.json()["role"] == "Contributor"
    entry = AuditLog.objects.get(action="member.add")
    assert (entry.username, entry.via, entry.workspace.name) == ("olivia", "api", "team")
    assert entry.details == {"username": "oscar", "role": "Contributor"}


def test_cli_writes_are_audited_as_cli(owner_api, outsider):
    token = owner_api._credentials["HTTP_AUTHORIZATION"]
    owner_api.credentials(HTTP_AUTHORIZATION=token, HTTP_X_STUDIO_CLIENT="studio-cli/1")
    owner_api.post("/api/v1/workspaces/team/members", {"username": "oscar", "role": "Reader"}, format="json")
    assert AuditLog.objects.get(action="member.add").via == "cli"


def test_owner_changes_a_role(owner_api, reader):
    response = owner_api.patch("/api/v1/workspaces/team/members/rita", {"role": "Contributor"}, format="json")
    assert response.status_code == 200
    assert Membership.objects.get(user=reader).role == Role.CONTRIBUTOR


def test_owner_removes_a_member(owner_api, reader):
    assert owner_api.delete("/api/v1/workspaces/team/members/rita").status_code == 204
    assert not Membership.objects.filter(user=reader).exists()
    assert AuditLog.objects.filter(action="member.remove").count() == 1


def test_it_refuses_to_remove_the_last_owner(owner_api):
    response = owner_api.delete("/api/v1/workspaces/team/members/olivia")
    assert response.status_code == 409
    assert "at least one Owner" in response.json()["error"]["message"]


def test_it_rejects_an_unknown_role_naming_the_field(owner_api, outsider):
    response = owner_api.post("/api/v1/workspaces/team/members", {"username": "oscar", "role": "Boss"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "role"
    assert not Membership.objects.filter(user=outsider).exists()


def test_it_rejects_an_unknown_user(owner_api):
    response = owner_api.post(MEMBERS, {"username": "nobody", "role": "Reader"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "username"


def test_it_rejects_a_missing_field(owner_api):
    response = owner_api.post("/api/v1/workspaces/team/members", {"role": "Reader"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "username"


def test_adding_an_existing_member_is_a_conflict(owner_api, reader):
    response = owner_api.post("/api/v1/workspaces/team/members", {"username": "rita", "role": "Owner"}, format="json")
    assert response.status_code == 409


@pytest.mark.parametrize("client_fixture", ["contributor_api", "reader_api"])
def test_only_owners_change_membership(request, client_fixture, outsider):
    api = request.getfixturevalue(client_fixture)
    response = api.post("/api/v1/workspaces/team/members", {"username": "oscar", "role": "Reader"}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "Forbidden"
    assert api.delete("/api/v1/workspaces/team/members/olivia").status_code == 403


def test_it_hides_the_workspace_from_outsiders(outsider_api):
    response = outsider_api.get("/api/v1/workspaces/team/members")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "NotFound", "message": "No such workspace."}}
    assert outsider_api.get("/api/v1/workspaces").json() == []


def test_unauthenticated_calls_get_401(client, workspace):
    response = client.get("/api/v1/workspaces")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


def test_members_list_query_count_is_constant(owner_api, django_assert_max_num_queries, workspace):
    from django.contrib.auth import get_user_model

    for index in range(30):
        user = get_user_model().objects.create_user(f"user{index}")
        Membership.objects.create(workspace=workspace, user=user, role=Role.READER)
    with django_assert_max_num_queries(5):
        assert len(owner_api.get("/api/v1/workspaces/team/members").json()) == 31
