import pytest

pytestmark = pytest.mark.django_db


def test_healthz_reports_ok_when_database_and_broker_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_instance_types_carry_the_contract_fields(owner_api):
    body = owner_api.get("/api/v1/instance-types").json()
    assert body[0].keys() == {"name", "family", "cores", "memory_gb", "price_per_hour"}
    names = [row["name"] for row in body]
    assert "Standard_DS2_v2" in names


def test_unknown_api_path_gets_json_404(owner_api):
    response = owner_api.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_wrong_method_gets_json_405(owner_api):
    response = owner_api.put("/api/v1/instance-types", {}, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "MethodNotAllowed"


def test_malformed_json_gets_400(owner_api, outsider):
    response = owner_api.post(
        "/api/v1/workspaces/team/members", data="{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON" in response.json()["error"]["message"]


def test_openapi_schema_and_docs_are_served(owner_client):
    schema = owner_client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/workspaces" in schema.content
    docs = owner_client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()
    # Swagger UI under the studio's header, with a way back to the studio.
    assert b'id="studio-header"' in docs.content and b'href="/"' in docs.content and b"swagger-ui" in docs.content


def test_drf_create_token_prints_a_working_token(owner, client):
    from io import StringIO

    from django.core.management import call_command

    out, err = StringIO(), StringIO()
    call_command("drf_create_token", "olivia", stdout=out, stderr=err)
    # TOKEN=$(manage.py drf_create_token admin): the token alone on stdout, the sentence on stderr.
    token = out.getvalue()
    assert token.endswith("\n") and len(token.split()) == 1
    token = token.strip()
    assert "Generated a token for user olivia" in err.getvalue() and token not in err.getvalue()
    from endpoints_app.models import AuditLog

    created = AuditLog.objects.get(action="api_token.create")
    assert (created.username, created.via, created.details["for_user"]) == ("manage.py (host)", "cli", "olivia")
    response = client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"Token {token}")
    assert response.status_code == 200
