import pytest

from endpoints_app.models import Membership, Role, Workspace

pytestmark = pytest.mark.django_db


def test_login_page_renders_and_signs_in(client, owner):
    assert client.get("/login/").status_code == 200
    response = client.post("/login/", {"username": "olivia", "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_anonymous_users_are_sent_to_login(client, workspace):
    response = client.get("/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_overview_shows_the_current_workspace_and_role(owner_client):
    page = owner_client.get("/").content.decode()
    assert "team" in page and "Owner" in page


def test_switcher_changes_workspace_for_members(owner_client, owner):
    other = Workspace.objects.create(name="other")
    Membership.objects.create(workspace=other, user=owner, role=Role.READER)
    response = owner_client.post("/workspace/switch/", {"workspace": "other", "next": "/"})
    assert response.status_code == 302
    assert "Reader" in owner_client.get("/").content.decode()


def test_switcher_refuses_a_workspace_the_user_is_not_in(owner_client):
    Workspace.objects.create(name="secret")
    assert owner_client.post("/workspace/switch/", {"workspace": "secret"}).status_code == 404


def test_switcher_ignores_offsite_redirects(owner_client):
    response = owner_client.post("/workspace/switch/", {"workspace": "team", "next": "https://evil.example/"})
    assert response["Location"] == "/"
