"""Online endpoints through the REST API: create, names, permissions, traffic, mirror, keys, tokens."""

import pytest

from endpoints_app import keys
from endpoints_app.models import AuditLog, Endpoint, RouteVersion

pytestmark = pytest.mark.django_db

BASE = "/api/v1/workspaces/team/online-endpoints"


def test_it_creates_an_endpoint_with_uris_and_keys(owner_api, node):
    response = owner_api.post(BASE, {"name": "iris", "auth_mode": "key", "description": "Iris", "tags": {"a": "b"}},
                              format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["name"] == "iris" and body["auth_mode"] == "key" and body["provisioning_state"] == "Succeeded"
    assert body["scoring_uri"] == "http://testserver/inference/iris/score"
    assert body["swagger_uri"] == "http://testserver/inference/iris/swagger.json"
    assert body["traffic"] == {} and body["mirror_traffic"] == {}
    assert owner_api.get(BASE).json()[0]["name"] == "iris"
    assert AuditLog.objects.filter(action="endpoint.create", object_name="iris").exists()


def test_a_taken_name_is_409(owner_api, endpoint_factory):
    endpoint_factory("iris")
    response = owner_api.post(BASE, {"name": "iris"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "Conflict" and "taken" in response.json()["error"]["message"]


@pytest.mark.parametrize("name", ["Iris", "1iris", "iris-", "a" * 33, "iris_1", ""])
def test_a_name_that_is_not_a_dns_label_is_400(owner_api, name):
    response = owner_api.post(BASE, {"name": name}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "name"


def test_an_unknown_auth_mode_is_400(owner_api):
    response = owner_api.post(BASE, {"name": "iris", "auth_mode": "password"}, format="json")
    assert response.status_code == 400 and response.json()["error"]["field"] == "auth_mode"


def test_contributor_can_create_reader_cannot_outsider_sees_nothing(contributor_api, reader_api, outsider_api):
    assert contributor_api.post(BASE, {"name": "iris"}, format="json").status_code == 201
    assert reader_api.post(BASE, {"name": "other"}, format="json").status_code == 403
    assert reader_api.get(f"{BASE}/iris").status_code == 200
    assert outsider_api.get(BASE).status_code == 404
    assert outsider_api.get(f"{BASE}/iris").status_code == 404
    assert outsider_api.post(BASE, {"name": "other"}, format="json").status_code == 404


def test_reader_cannot_list_keys_or_change_traffic(reader_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    assert reader_api.post(f"{BASE}/iris/list-keys").status_code == 403
    assert reader_api.post(f"{BASE}/iris/regenerate-keys", {"key_type": "primary"}, format="json").status_code == 403
    assert reader_api.patch(f"{BASE}/iris", {"traffic": {"blue": 100}}, format="json").status_code == 403
    assert reader_api.delete(f"{BASE}/iris").status_code == 403


def test_first_deployment_takes_all_traffic_and_traffic_must_sum_to_100(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue", "green"))
    assert owner_api.get(f"{BASE}/iris").json()["traffic"] == {"blue": 100, "green": 0}

    bad = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": 50, "green": 40}}, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "traffic"
    assert "add up to 100" in bad.json()["error"]["message"] and "90" in bad.json()["error"]["message"]

    version = RouteVersion.objects.get(pk=1).version
    ok = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": 90, "green": 10}}, format="json")
    assert ok.status_code == 200 and ok.json()["traffic"] == {"blue": 90, "green": 10}
    assert RouteVersion.objects.get(pk=1).version > version, "the gateway is told to reload"


def test_traffic_to_an_unknown_deployment_is_400_naming_it(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": 50, "ghost": 50}}, format="json")
    assert response.status_code == 400 and "ghost" in response.json()["error"]["message"]


@pytest.mark.parametrize("value", [-1, 101, "lots", 12.5, True])
def test_traffic_values_are_whole_percentages(owner_api, endpoint_factory, value):
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": value}}, format="json")
    assert response.status_code == 400


def test_mirror_traffic_rules(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue", "green", "red"))

    too_much = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {"green": 60}}, format="json")
    assert too_much.status_code == 400 and "at most 50" in too_much.json()["error"]["message"]

    live = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {"blue": 10}}, format="json")
    assert live.status_code == 400 and "live traffic" in live.json()["error"]["message"]

    two = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {"green": 10, "red": 10}}, format="json")
    assert two.status_code == 400 and "one deployment" in two.json()["error"]["message"]

    ok = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {"green": 20}}, format="json")
    assert ok.status_code == 200 and ok.json()["mirror_traffic"] == {"green": 20}

    # Giving the mirrored deployment live traffic while it is mirrored is refused too.
    both = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": 50, "green": 50}}, format="json")
    assert both.status_code == 400 and both.json()["error"]["field"] == "mirror_traffic"

    off = owner_api.patch(f"{BASE}/iris", {"mirror_traffic": {}}, format="json")
    assert off.status_code == 200 and off.json()["mirror_traffic"] == {}


def test_list_keys_shows_two_keys_that_are_not_stored(owner_api, endpoint_factory):
    endpoint_factory("iris")
    response = owner_api.post(f"{BASE}/iris/list-keys")
    assert response.status_code == 200
    primary, secondary = response.json()["primary_key"], response.json()["secondary_key"]
    assert primary and secondary and primary != secondary

    endpoint = Endpoint.objects.get(name="iris")
    stored = " ".join(str(v) for v in Endpoint.objects.filter(pk=endpoint.pk).values().first().values())
    assert primary not in stored and secondary not in stored
    assert keys.matches(primary, keys.accepted_digests((endpoint.primary_key_nonce,)))
    assert keys.matches(secondary, keys.accepted_digests((endpoint.secondary_key_nonce,)))


def test_regenerating_a_key_replaces_only_that_slot_and_is_never_audited_in_clear(owner_api, endpoint_factory):
    endpoint_factory("iris")
    old = owner_api.post(f"{BASE}/iris/list-keys").json()

    response = owner_api.post(f"{BASE}/iris/regenerate-keys", {"key_type": "secondary"}, format="json")

    assert response.status_code == 200
    new = owner_api.post(f"{BASE}/iris/list-keys").json()
    assert new["primary_key"] == old["primary_key"]
    assert new["secondary_key"] != old["secondary_key"]
    assert response.json()["secondary_key"] == new["secondary_key"]
    endpoint = Endpoint.objects.get(name="iris")
    nonces = (endpoint.primary_key_nonce, endpoint.secondary_key_nonce)
    assert not keys.matches(old["secondary_key"], keys.accepted_digests(nonces))
    audit = " ".join(str(a.details) for a in AuditLog.objects.all())
    assert new["secondary_key"] not in audit and old["primary_key"] not in audit

    bad = owner_api.post(f"{BASE}/iris/regenerate-keys", {"key_type": "tertiary"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "key_type"


def test_aml_token_endpoints_issue_tokens_with_an_expiry(owner_api, endpoint_factory):
    import time

    endpoint_factory("iris", auth_mode="aml_token")
    response = owner_api.post(f"{BASE}/iris/token")
    assert response.status_code == 200
    body = response.json()
    endpoint = Endpoint.objects.get(name="iris")
    assert keys.verify_token(body["access_token"], endpoint.pk, endpoint.token_generation)
    assert not keys.verify_token(body["access_token"], endpoint.pk + 1, endpoint.token_generation)
    assert time.time() < body["expiry_time_utc"] <= time.time() + keys.TOKEN_LIFETIME_SECONDS + 1
    assert owner_api.post(f"{BASE}/iris/list-keys").status_code == 400


def test_key_endpoints_issue_no_tokens(owner_api, endpoint_factory):
    endpoint_factory("iris")
    response = owner_api.post(f"{BASE}/iris/token")
    assert response.status_code == 400 and response.json()["error"]["field"] == "auth_mode"


def test_update_changes_description_and_tags_but_not_auth_mode(owner_api, endpoint_factory):
    endpoint_factory("iris")
    ok = owner_api.patch(f"{BASE}/iris", {"description": "new", "tags": {"team": "ml"}}, format="json")
    assert ok.status_code == 200 and ok.json()["description"] == "new" and ok.json()["tags"] == {"team": "ml"}
    bad = owner_api.patch(f"{BASE}/iris", {"auth_mode": "aml_token"}, format="json")
    assert bad.status_code == 400


def test_put_creates_then_updates(owner_api, node):
    created = owner_api.put(f"{BASE}/iris", {"auth_mode": "key"}, format="json")
    assert created.status_code == 201
    updated = owner_api.put(f"{BASE}/iris", {"description": "again"}, format="json")
    assert updated.status_code == 200 and updated.json()["description"] == "again"


def test_deleting_an_endpoint_with_nothing_running_is_immediate(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.delete(f"{BASE}/iris")
    assert response.status_code == 204
    assert owner_api.get(f"{BASE}/iris").status_code == 404
    assert owner_api.post(BASE, {"name": "iris"}, format="json").status_code == 201, "the name is free again"


def test_traffic_cannot_be_all_zero_once_there_are_deployments(owner_api, endpoint_factory):
    endpoint_factory("iris", deployments=("blue",))
    response = owner_api.patch(f"{BASE}/iris", {"traffic": {"blue": 0}}, format="json")
    assert response.status_code == 400 and "adds up to 0" in response.json()["error"]["message"]


def test_a_name_the_pages_use_is_refused(owner_api):
    response = owner_api.post("/api/v1/workspaces/team/online-endpoints", {"name": "new"}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "name" and "reserved" in response.json()["error"]["message"]
