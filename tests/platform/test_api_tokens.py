"""API tokens: hashed at rest, expiring, listed and revoked by their owner, accepted as
`Token <t>` and `Bearer <t>`."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from endpoints_app.models import ApiToken, AuditLog

pytestmark = pytest.mark.django_db


def _create(client, **body):
    response = client.post("/api/v1/tokens", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def test_it_creates_a_token_shown_once_and_lists_it_without_the_value(owner_api, client):
    made = _create(owner_api, expires_in_days=7)
    assert made["token"].startswith("studio_") and made["prefix"] == made["token"][:15]
    expires = timezone.datetime.fromisoformat(made["expires"].replace("Z", "+00:00"))
    assert timedelta(days=6, hours=23) < expires - timezone.now() <= timedelta(days=7)
    listed = owner_api.get("/api/v1/tokens").json()
    row = next(r for r in listed if r["id"] == made["id"])
    assert row.keys() == {"id", "prefix", "created", "last_used", "expires"}
    assert made["token"] not in str(listed)
    response = client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"Bearer {made['token']}")
    assert response.status_code == 200
    assert ApiToken.objects.get(pk=made["id"]).last_used is not None
    assert AuditLog.objects.filter(action="api_token.create", username="olivia").exists()


def test_it_accepts_token_and_bearer_headers(owner_api, client):
    value = _create(owner_api)["token"]
    for scheme in ("Token", "Bearer", "bearer"):
        assert client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"{scheme} {value}").status_code == 200


def test_it_stores_no_token_value_in_the_database(owner_api):
    value = _create(owner_api)["token"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM endpoints_app_apitoken")
        rows = cursor.fetchall()
    dump = repr(rows)
    assert rows and value not in dump and value[15:] not in dump


def test_it_refuses_an_expired_token_with_401(owner_api, client):
    made = _create(owner_api, expires_in_days=1)
    ApiToken.objects.filter(pk=made["id"]).update(expiry=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"Bearer {made['token']}")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "Unauthorized"


def test_it_refuses_a_revoked_token_with_401(owner_api, client):
    made = _create(owner_api)
    assert owner_api.delete(f"/api/v1/tokens/{made['id']}").status_code == 204
    response = client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"Bearer {made['token']}")
    assert response.status_code == 401
    assert AuditLog.objects.filter(action="api_token.revoke").exists()


def test_it_refuses_a_made_up_token_with_401(client):
    for header in ("Bearer studio_0000000000000000", "Bearer", "Token a b", "Bearer \u00e9t\u00e9"):
        response = client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=header.encode().decode("latin-1"))
        assert response.status_code == 401, header
        assert response.json()["error"]["code"] == "Unauthorized"


def test_it_checks_ownership_of_tokens(owner_api, reader_api):
    made = _create(owner_api)
    assert reader_api.delete(f"/api/v1/tokens/{made['id']}").status_code == 404
    assert made["id"] not in [r["id"] for r in reader_api.get("/api/v1/tokens").json()]
    assert ApiToken.objects.filter(pk=made["id"]).exists()


def test_it_names_a_bad_expiry(owner_api):
    response = owner_api.post("/api/v1/tokens", {"expires_in_days": 0}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "expires_in_days"


def test_drf_create_token_prints_a_new_hashed_token(owner, client):
    out = StringIO()
    call_command("drf_create_token", "olivia", stdout=out, stderr=StringIO())
    value = out.getvalue().strip()
    assert client.get("/api/v1/workspaces", HTTP_AUTHORIZATION=f"Bearer {value}").status_code == 200
    assert not ApiToken.objects.filter(digest=value).exists()
    assert ApiToken.objects.get(user=owner).expiry is not None


def test_the_tokens_page_shows_a_new_value_once_and_revokes(owner_client, owner):
    response = owner_client.post("/tokens/", {"expires_in_days": "30"})
    assert response.status_code == 200
    value = response.context["new_value"]
    assert value and value.encode() in response.content
    page = owner_client.get("/tokens/")
    token = ApiToken.objects.get(user=owner)
    assert token.token_key.encode() in page.content and value.encode() not in page.content
    response = owner_client.post(f"/tokens/{token.pk}/revoke/")
    assert response.status_code == 302
    assert not ApiToken.objects.filter(user=owner).exists()


def test_the_tokens_page_names_a_bad_expiry(owner_client):
    response = owner_client.post("/tokens/", {"expires_in_days": "forever"})
    assert response.status_code == 400
    assert b"expires_in_days" in response.content
    assert not ApiToken.objects.exists()


def test_the_admin_shows_no_token_values(admin_client, owner_api):
    made = _create(owner_api)
    token = ApiToken.objects.get(pk=made["id"])
    listing = admin_client.get("/admin/endpoints_app/apitoken/")
    assert listing.status_code == 200
    assert made["prefix"].encode() in listing.content
    detail = admin_client.get(f"/admin/endpoints_app/apitoken/{token.pk}/change/")
    assert detail.status_code == 200
    for secret in (made["token"], token.digest):
        assert secret.encode() not in listing.content and secret.encode() not in detail.content


def test_the_tokens_page_marks_expired_tokens(owner_client, owner):
    token, _ = ApiToken.objects.create(user=owner, expiry=timedelta(days=1))
    ApiToken.objects.filter(pk=token.pk).update(expiry=timezone.now() - timedelta(hours=1))
    assert b"(expired)" in owner_client.get("/tokens/").content
