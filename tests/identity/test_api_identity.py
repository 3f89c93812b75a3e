"""The REST API with identity tokens, service principals, the identity settings and local accounts."""

import subprocess
import sys
import time

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from endpoints_app.models import AuditLog, Endpoint, OidcIdentity, ServicePrincipal
from tests.live import ROOT

WS = "/api/v1/workspaces"


@pytest.fixture
def oidc(identity_provider, settings):
    identity_provider.configure(settings)
    return identity_provider


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_a_signed_in_persons_token_works_on_the_api_and_writes_are_audited_with_the_identity(
        oidc, workspace, contributor):
    OidcIdentity.objects.create(user=contributor, issuer=oidc.issuer, subject="alice")
    api = bearer(oidc.user_tokens("alice")["access_token"])

    assert [w["name"] for w in api.get(WS).json()] == ["team"]
    created = api.post(f"{WS}/team/online-endpoints", {"name": "by-token", "auth_mode": "aad_token"}, format="json")

    assert created.status_code == 201, created.json()
    assert created.json()["auth_mode"] == "aad_token"
    row = AuditLog.objects.get(action="endpoint.create", object_name__contains="by-token")
    assert row.username == contributor.username and row.details["identity"] == f"{oidc.issuer} alice"
    # An aad_token endpoint has no keys to list: a 400 that says why.
    keys = api.post(f"{WS}/team/online-endpoints/by-token/list-keys")
    assert keys.status_code == 400 and "identity tokens" in keys.json()["error"]["message"]


def test_a_denied_api_call_is_audited_with_the_identity(oidc, workspace, reader):
    OidcIdentity.objects.create(user=reader, issuer=oidc.issuer, subject="alice")
    api = bearer(oidc.user_tokens("alice")["access_token"])

    refused = api.post(f"{WS}/team/online-endpoints", {"name": "by-reader", "auth_mode": "key"}, format="json")

    assert refused.status_code == 403
    row = AuditLog.objects.get(action="api.denied")
    assert row.username == reader.username and row.workspace == workspace
    assert row.details["identity"] == f"{oidc.issuer} alice"
    assert row.details["method"] == "POST" and row.details["path"] == f"{WS}/team/online-endpoints"
    assert not Endpoint.objects.filter(name="by-reader").exists()


def test_unknown_identities_and_bad_tokens_get_401_naming_the_reason(oidc, workspace):
    unknown = bearer(oidc.user_tokens("carol")["access_token"]).get(WS)
    expired = bearer(oidc.sign(exp=int(time.time()) - 5)).get(WS)
    foreign = bearer(oidc.sign(aud="api://other")).get(WS)

    assert unknown.status_code == 401 and "'carol'" in unknown.json()["error"]["message"]
    assert expired.status_code == 401 and "TokenExpired" in expired.json()["error"]["message"]
    assert foreign.status_code == 401 and "InvalidAudience" in foreign.json()["error"]["message"]


def test_an_owner_grants_a_service_principal_that_then_acts_with_its_own_tokens(
        oidc, workspace, owner_api, reader_api):
    granted = owner_api.post(f"{WS}/team/service-principals", {"client_id": "ci-pipeline", "role": "Contributor"},
                             format="json")
    assert granted.status_code == 201, granted.json()
    assert granted.json()["role"] == "Contributor"
    assert [p["client_id"] for p in reader_api.get(f"{WS}/team/service-principals").json()] == ["ci-pipeline"]
    robot = bearer(oidc.client_token("ci-pipeline"))

    assert [w["role"] for w in robot.get(WS).json()] == ["Contributor"]
    made = robot.post(f"{WS}/team/online-endpoints", {"name": "from-ci"}, format="json")
    assert made.status_code == 201
    row = AuditLog.objects.get(action="endpoint.create", object_name__contains="from-ci")
    assert row.details["identity"] == "service principal ci-pipeline"
    # An unregistered client is refused, even with a valid token.
    assert bearer(oidc.client_token("other-robot")).get(WS).status_code == 401

    assert owner_api.delete(f"{WS}/team/service-principals/ci-pipeline").status_code == 204
    assert robot.get(WS).json() == []


def test_granting_a_service_principal_checks_role_and_input(oidc, workspace, owner_api, reader_api, outsider_api):
    body = {"client_id": "ci-pipeline", "role": "Owner"}
    assert reader_api.post(f"{WS}/team/service-principals", body, format="json").status_code == 403
    assert outsider_api.post(f"{WS}/team/service-principals", body, format="json").status_code == 404
    bad_role = owner_api.post(f"{WS}/team/service-principals", {**body, "role": "God"}, format="json")
    bad_id = owner_api.post(f"{WS}/team/service-principals", {**body, "client_id": "a b"}, format="json")
    assert (bad_role.status_code, bad_role.json()["error"]["field"]) == (400, "role")
    assert (bad_id.status_code, bad_id.json()["error"]["field"]) == (400, "client_id")
    assert not ServicePrincipal.objects.exists()


def test_aad_token_endpoints_need_a_configured_provider(workspace, owner_api, settings):
    settings.STUDIO_OIDC_ISSUER = ""
    answer = owner_api.post(f"{WS}/team/online-endpoints", {"name": "nope", "auth_mode": "aad_token"}, format="json")
    assert (answer.status_code, answer.json()["error"]["field"]) == (400, "auth_mode")
    assert not Endpoint.objects.filter(name="nope").exists()


def test_with_local_accounts_off_passwords_sign_no_one_in(oidc, settings, client, owner):
    from tests.conftest import PASSWORD

    settings.STUDIO_LOCAL_LOGIN = False
    page = client.get("/login/")
    assert b'id="sso-sign-in"' in page.content and b'name="password"' not in page.content
    refused = client.post("/login/", {"username": owner.username, "password": PASSWORD})
    assert refused.status_code == 403 and b"Local accounts are turned off" in refused.content
    assert client.post("/admin/login/", {"username": owner.username, "password": PASSWORD}).status_code == 200
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("env, complaint", [
    ({"STUDIO_OIDC_ISSUER": "ftp://idp.example.com"}, "is not an http(s) URL"),
    ({"STUDIO_OIDC_ISSUER": "https://idp.example.com"}, "STUDIO_OIDC_CLIENT_ID is not"),
    ({"STUDIO_LOCAL_LOGIN": "off"}, "nobody could sign in"),
    ({"STUDIO_OIDC_ISSUER": "https://idp.example.com", "STUDIO_OIDC_CLIENT_ID": "x",
      "STUDIO_OIDC_LEEWAY_SECONDS": "soon"}, "is not an integer"),
])
def test_bad_identity_settings_stop_start_up_saying_which(env, complaint, tmp_path):
    import os

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_OIDC", "STUDIO_LOCAL_LOGIN"))}
    result = subprocess.run([sys.executable, "-c", "import django; django.setup()"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60, env={**clean, "DJANGO_SETTINGS_MODULE": "portal.settings",
                                                        "STUDIO_DATA_DIR": str(tmp_path), **env})
    assert result.returncode != 0 and complaint in result.stderr


def test_first_sign_in_never_takes_over_a_local_account_of_the_same_name(oidc, workspace):
    from endpoints_app.services.identity import do_sign_in_oidc_user

    local = get_user_model().objects.create_user("alice", password="x")
    user = do_sign_in_oidc_user(oidc.issuer, {"sub": "alice", "preferred_username": "alice"})
    assert user != local and user.username == "alice-2"
    assert do_sign_in_oidc_user(oidc.issuer, {"sub": "alice", "preferred_username": "alice"}) == user


def test_the_wizard_offers_identity_tokens_only_with_a_provider(owner_client, settings, identity_provider):
    settings.STUDIO_OIDC_ISSUER = ""
    assert b'value="aad_token"' not in owner_client.get("/endpoints/new/").content
    identity_provider.configure(settings)
    page = owner_client.get("/endpoints/new/").content
    assert b'value="aad_token"' in page and b"Identity token (Test IdP sign-in, no keys)" in page


def test_an_aad_token_endpoints_pages_say_how_to_call_it(owner_client, oidc, owner_api, workspace):
    assert owner_api.post(f"{WS}/team/online-endpoints", {"name": "by-id", "auth_mode": "aad_token"},
                          format="json").status_code == 201
    consume = owner_client.get("/endpoints/by-id/consume/").content
    test = owner_client.get("/endpoints/by-id/test/").content
    assert b"Identity token: send" in consume and b"api://studio" in consume and b'id="reveal-keys"' not in consume
    assert b'id="aad-token-test"' in test and b"<textarea" not in test
