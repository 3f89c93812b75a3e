"""Control plane of serverless: marketplace subscriptions, serverless endpoints and their
platform pools, keys, the unified endpoint's keys, roles and audit (REST, no processes)."""

from decimal import Decimal

import pytest

from endpoints_app import keys
from endpoints_app.controller.placement import cores_in_use
from endpoints_app.models import (
    AuditLog,
    CatalogModel,
    Deployment,
    Endpoint,
    RouteVersion,
    ServerlessRateLimit,
    Workspace,
)

WS = "/api/v1/workspaces/team"
CHAT = "studio://registries/studio/models/smollm2-135m-instruct"


def offer(name: str = "smollm2-135m-instruct", version: int = 1, **extra) -> CatalogModel:
    return CatalogModel.objects.create(
        name=name, version=version, task="chat-completion", format="gguf", license="Apache-2.0",
        artifact_path="/nowhere/tiny.gguf", deployment_kinds=["online", "serverless"],
        price_input_per_1k=Decimal("0.0002"), price_output_per_1k=Decimal("0.0006"), **extra,
    )


@pytest.fixture
def chat(workspace):
    return offer()


def subscribe(api, model_id: str = CHAT):
    return api.post(f"{WS}/marketplace-subscriptions", {"model_id": model_id}, format="json")


def create(api, name: str = "chat", model_id: str = CHAT):
    return api.post(f"{WS}/serverless-endpoints", {"name": name, "model_id": model_id}, format="json")


def version() -> int:
    return RouteVersion.objects.get(pk=1).version


def test_it_subscribes_once_and_a_model_id_without_version_means_the_latest(owner_api, chat):
    offer(version=2)
    first = subscribe(owner_api)
    assert first.status_code == 201, first.content
    assert first.json()["model_id"] == f"{CHAT}/versions/2"
    assert first.json()["name"] == "smollm2-135m-instruct"
    again = subscribe(owner_api, f"{CHAT}/versions/1")
    assert again.status_code == 200
    assert owner_api.get(f"{WS}/marketplace-subscriptions").json() == [first.json()]
    assert owner_api.get(f"{WS}/marketplace-subscriptions/smollm2-135m-instruct").json() == first.json()
    assert AuditLog.objects.filter(action="subscription.create").count() == 1


def test_it_refuses_models_not_offered_serverless(owner_api, workspace):
    CatalogModel.objects.create(name="iris", task="classification", format="sklearn", license="MIT",
                                deployment_kinds=["online"])
    response = subscribe(owner_api, "iris")
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "model_id"
    assert "not offered as a serverless API" in response.json()["error"]["message"]
    missing = subscribe(owner_api, "studio://registries/studio/models/nope")
    assert missing.status_code == 400 and missing.json()["error"]["field"] == "model_id"


def test_it_checks_roles(reader_api, outsider_api, contributor_api, chat):
    assert subscribe(reader_api).status_code == 403
    assert subscribe(outsider_api).status_code == 404
    assert subscribe(contributor_api).status_code == 201
    assert create(reader_api).status_code == 403
    assert create(outsider_api).status_code == 404
    assert reader_api.get(f"{WS}/marketplace-subscriptions").status_code == 200
    assert reader_api.post(f"{WS}/list-inference-keys").status_code == 403
    assert reader_api.delete(f"{WS}/marketplace-subscriptions/smollm2-135m-instruct").status_code == 403


def test_it_needs_a_subscription_to_create_a_serverless_endpoint(owner_api, chat):
    response = create(owner_api)
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "SubscriptionRequired"
    assert response.json()["error"]["field"] == "model_id"
    assert not Endpoint.objects.filter(name="chat").exists()


def test_it_creates_a_serverless_endpoint_on_a_platform_pool(owner_api, workspace, chat):
    subscribe(owner_api)
    before = version()
    response = create(owner_api)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "chat"
    assert body["model_id"] == f"{CHAT}/versions/1"
    assert body["scoring_uri"] == "http://testserver/inference/chat"
    assert body["provisioning_state"] == "Succeeded"
    assert (body["status"], body["status_reason"]) == ("Healthy", "")
    assert body["rate_limits"] == {"requests_per_minute": 1000, "tokens_per_minute": 200000}
    assert version() > before
    endpoint = Endpoint.objects.get(name="chat")
    pool = endpoint.pool
    assert pool.endpoint.workspace.is_platform and pool.model == chat
    # Started on first need: one instance wanted at once.
    assert pool.instance_count == 1 and pool.provisioning_state == "Updating"
    # The platform is nobody's workspace and uses no quota.
    assert cores_in_use(workspace, pool.instance_type.family) == 0
    assert [w["name"] for w in owner_api.get("/api/v1/workspaces").json()] == ["team"]
    assert not Workspace.objects.filter(is_platform=True).exists()
    assert Workspace.all_objects.filter(is_platform=True).count() == 1
    # It appears in the serverless list only, never among online endpoints.
    assert [e["name"] for e in owner_api.get(f"{WS}/serverless-endpoints").json()] == ["chat"]
    assert owner_api.get(f"{WS}/online-endpoints").json() == []
    assert owner_api.get(f"{WS}/serverless-endpoints/chat").json()["name"] == "chat"


def test_it_allows_one_serverless_endpoint_per_model_per_workspace(owner_api, chat):
    subscribe(owner_api)
    assert create(owner_api).status_code == 201
    second = create(owner_api, name="chat-two")
    assert second.status_code == 409
    assert second.json()["error"]["field"] == "model_id"
    assert "'chat'" in second.json()["error"]["message"]


def test_two_workspaces_share_one_pool(owner_api, owner, chat):
    from endpoints_app.models import Membership

    other = Workspace.objects.create(name="other")
    Membership.objects.create(workspace=other, user=owner, role="Owner")
    subscribe(owner_api)
    owner_api.post("/api/v1/workspaces/other/marketplace-subscriptions", {"model_id": CHAT}, format="json")
    assert create(owner_api).status_code == 201
    response = owner_api.post("/api/v1/workspaces/other/serverless-endpoints", {"name": "chat2", "model_id": CHAT},
                              format="json")
    assert response.status_code == 201
    assert Endpoint.objects.get(name="chat").pool_id == Endpoint.objects.get(name="chat2").pool_id
    assert Deployment.objects.filter(endpoint__workspace__is_platform=True).count() == 1


def test_it_validates_the_body(owner_api, chat):
    subscribe(owner_api)
    for body, field in [
        ({"model_id": CHAT}, "name"),
        ({"name": "Bad_Name", "model_id": CHAT}, "name"),
        ({"name": "chat"}, "model_id"),
        ({"name": "chat", "model_id": CHAT, "instance_type": "Standard_DS1_v2"}, "instance_type"),
        ({"name": "chat", "model_id": CHAT, "auth_mode": "aml_token"}, "auth_mode"),
        ({"name": "new", "model_id": CHAT}, "name"),
    ]:
        response = owner_api.post(f"{WS}/serverless-endpoints", body, format="json")
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]["field"] == field, body
    assert not Endpoint.objects.filter(kind="serverless").exists()


def test_unsubscribing_makes_endpoints_unhealthy_and_subscribing_heals_them(owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    before = version()
    assert owner_api.delete(f"{WS}/marketplace-subscriptions/smollm2-135m-instruct").status_code == 204
    assert version() > before
    body = owner_api.get(f"{WS}/serverless-endpoints/chat").json()
    assert body["status"] == "Unhealthy"
    assert "no marketplace subscription to model 'smollm2-135m-instruct'" in body["status_reason"]
    assert owner_api.get(f"{WS}/marketplace-subscriptions").json() == []
    assert owner_api.get(f"{WS}/marketplace-subscriptions/smollm2-135m-instruct").status_code == 404
    assert subscribe(owner_api).status_code == 201
    body = owner_api.get(f"{WS}/serverless-endpoints/chat").json()
    assert (body["status"], body["status_reason"]) == ("Healthy", "")
    actions = list(AuditLog.objects.filter(workspace__name="team").order_by("id").values_list("action", flat=True))
    assert actions == ["subscription.create", "endpoint.create", "subscription.delete", "subscription.create"]
    assert AuditLog.objects.filter(action="pool.create", workspace__is_platform=True).count() == 1


def test_it_lists_and_regenerates_keys(owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    url = f"{WS}/serverless-endpoints/chat"
    listed = owner_api.post(f"{url}/list-keys").json()
    endpoint = Endpoint.objects.get(name="chat")
    assert keys.matches(listed["primary_key"], keys.accepted_digests((endpoint.primary_key_nonce,)))
    assert keys.matches(listed["secondary_key"], keys.accepted_digests((endpoint.secondary_key_nonce,)))
    new = owner_api.post(f"{url}/regenerate-keys", {"key_type": "secondary"}, format="json").json()
    assert new["secondary_key"] != listed["secondary_key"]
    assert owner_api.post(f"{url}/list-keys").json() == {"primary_key": listed["primary_key"],
                                                         "secondary_key": new["secondary_key"]}
    bad = owner_api.post(f"{url}/regenerate-keys", {"key_type": "tertiary"}, format="json")
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "key_type"


def test_the_unified_endpoint_has_keys_per_workspace(owner_api, workspace):
    first = owner_api.post(f"{WS}/list-inference-keys")
    assert first.status_code == 200
    body = first.json()
    assert body["base_url"] == "http://testserver/models"
    assert body["azure_endpoint"] == "http://testserver"
    assert owner_api.post(f"{WS}/list-inference-keys").json() == body
    workspace.refresh_from_db()
    assert keys.matches(body["primary_key"], keys.accepted_digests((workspace.inference_primary_key_nonce,)))
    assert keys.matches(body["secondary_key"], keys.accepted_digests((workspace.inference_secondary_key_nonce,)))
    assert workspace.inference_primary_key_nonce and body["primary_key"] not in str(
        Workspace.objects.filter(pk=workspace.pk).values().first()
    )
    new = owner_api.post(f"{WS}/regenerate-inference-keys", {"key_type": "primary"}, format="json").json()
    assert new["primary_key"] != body["primary_key"]
    assert AuditLog.objects.filter(action="inference_keys.create").count() == 1
    assert AuditLog.objects.filter(action="inference_keys.regenerate").count() == 1


def test_deleting_a_serverless_endpoint_frees_its_name(owner_api, chat):
    subscribe(owner_api)
    create(owner_api)
    assert owner_api.delete(f"{WS}/serverless-endpoints/chat").status_code == 204
    assert owner_api.get(f"{WS}/serverless-endpoints").json() == []
    assert owner_api.get(f"{WS}/serverless-endpoints/chat").status_code == 404
    assert Endpoint.all_objects.filter(name="chat", deleted_at__isnull=False).count() == 1
    assert create(owner_api).status_code == 201


def test_rate_limits_come_from_the_offer_or_the_workspace_override(owner_api, workspace, chat):
    chat.rate_limit_requests_per_minute = 50
    chat.save()
    subscribe(owner_api)
    create(owner_api)
    assert chat.effective_rate_limits(workspace) == (50, 200000)
    ServerlessRateLimit.objects.create(workspace=workspace, model=chat, tokens_per_minute=1000)
    assert chat.effective_rate_limits(workspace) == (50, 1000)
    body = owner_api.get(f"{WS}/serverless-endpoints/chat").json()
    assert body["rate_limits"] == {"requests_per_minute": 50, "tokens_per_minute": 1000}
