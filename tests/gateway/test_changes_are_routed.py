""""Created", "deleted" and "regenerated" mean routed: through a gateway of three workers, each with its own
route table, the first calls after a write returns see it on every worker (RouteVersion.bump waits for them).
Every check calls on new connections, which gunicorn spreads over its workers."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest
import requests

from endpoints_app.models import CatalogModel, GatewayWorker, RouteVersion
from tests.live import make_custom_model, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WS = "/api/v1/workspaces/team"
CHAT = "studio://registries/studio/models/smollm2-135m-instruct"
CALLS = 12


@pytest.fixture
def chat_offer(workspace):
    # An offer whose pool cannot start (no such file): these tests are about routing, not answers.
    return CatalogModel.objects.create(
        name="smollm2-135m-instruct", version=1, task="chat-completion", format="gguf", license="Apache-2.0",
        artifact_path="/nowhere/tiny.gguf", deployment_kinds=["online", "serverless"],
        price_input_per_1k=Decimal("0.0002"), price_output_per_1k=Decimal("0.0006"),
    )


def statuses(url: str, key: str, body: dict | None, headers: dict | None = None) -> Counter:
    """Status and error code of CALLS calls (a GET without a body), each on a new connection."""
    seen: Counter = Counter()
    for _ in range(CALLS):
        answer = requests.request("GET" if body is None else "POST", url, json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {key}", **(headers or {})})
        code = answer.json().get("error", {}).get("code", "") if answer.status_code >= 400 else ""
        seen[(answer.status_code, code)] += 1
    return seen


def every_worker_routes_the_current_version() -> None:
    assert GatewayWorker.objects.count() >= 3
    assert GatewayWorker.lagging(RouteVersion.current()) == []


def test_serverless_endpoints_keys_and_subscriptions_are_routed_when_their_calls_return(
        live_gateway_workers, owner_api, chat_offer):
    # GET /info answers from the route table: no model server is needed to see what a worker routes.
    chat = None
    assert owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": CHAT}, format="json").status_code == 201
    created = owner_api.post(f"{WS}/serverless-endpoints", {"name": "my-chat", "model_id": CHAT}, format="json")
    assert created.status_code == 201, created.content
    assert created.json()["provisioning_state"] == "Succeeded"
    every_worker_routes_the_current_version()
    key = owner_api.post(f"{WS}/serverless-endpoints/my-chat/list-keys").json()["primary_key"]
    url = f"{live_gateway_workers}/inference/my-chat/info"
    # Known to every worker, with its key: never 404 EndpointNotFound nor 401.
    seen = statuses(url, key, chat)
    assert seen == {(200, ""): CALLS}, seen

    new = owner_api.post(f"{WS}/serverless-endpoints/my-chat/regenerate-keys", {"key_type": "primary"},
                         format="json").json()["primary_key"]
    every_worker_routes_the_current_version()
    assert all(status == 401 for status, _ in statuses(url, key, chat)), "the old key still works somewhere"
    assert statuses(url, new, chat) == {(200, ""): CALLS}

    assert owner_api.delete(f"{WS}/marketplace-subscriptions/smollm2-135m-instruct").status_code == 204
    every_worker_routes_the_current_version()
    assert all(status == 403 for status, _ in statuses(url, new, chat)), "unsubscribed, yet served somewhere"
    assert owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": CHAT}, format="json").status_code == 201
    every_worker_routes_the_current_version()
    assert statuses(url, new, chat) == {(200, ""): CALLS}

    assert owner_api.delete(f"{WS}/serverless-endpoints/my-chat").status_code == 204
    every_worker_routes_the_current_version()
    assert all(status == 404 for status, _ in statuses(url, new, chat)), "deleted, yet routed somewhere"


def test_a_new_inference_key_works_on_every_worker_when_it_is_listed(live_gateway_workers, owner_api, chat_offer):
    assert owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": CHAT}, format="json").status_code == 201
    assert owner_api.post(f"{WS}/serverless-endpoints", {"name": "my-chat", "model_id": CHAT},
                          format="json").status_code == 201
    # A model the workspace has no endpoint for: answered after the key check, without any model server.
    body = {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    url = f"{live_gateway_workers}/models/chat/completions"
    # The workspace's first listing creates its keys: in force on every worker when the listing returns.
    first = owner_api.post(f"{WS}/list-inference-keys").json()["primary_key"]
    every_worker_routes_the_current_version()
    seen = statuses(url, first, body)
    assert all(status not in (401, 200) for status, _ in seen), seen
    second = owner_api.post(f"{WS}/regenerate-inference-keys", {"key_type": "primary"},
                            format="json").json()["primary_key"]
    every_worker_routes_the_current_version()
    assert all(status == 401 for status, _ in statuses(url, first, body))
    assert all(status not in (401, 200) for status, _ in statuses(url, second, body))


def test_mirror_changes_and_deployment_deletes_are_routed_when_their_calls_return(
        live_gateway_workers, owner_api, workspace, tmp_path):
    base = f"{WS}/online-endpoints"
    model = make_custom_model(workspace, tmp_path / "code")
    assert owner_api.post(base, {"name": "routed"}, format="json").status_code == 201
    key = owner_api.post(f"{base}/routed/list-keys").json()["primary_key"]
    for name in ("blue", "green"):
        body = {"name": name, "model": f"{model.name}:1", "instance_type": "Standard_DS1_v2"}
        assert owner_api.post(f"{base}/routed/deployments", body, format="json").status_code == 202
    for name in ("blue", "green"):
        wait_for(lambda name=name: owner_api.get(f"{base}/routed/deployments/{name}").json()["provisioning_state"]
                 == "Succeeded", timeout=120, what=f"{name} Succeeded")
    changed = owner_api.patch(f"{base}/routed", {"mirror_traffic": {"green": 10}}, format="json")
    assert changed.status_code == 200, changed.content
    every_worker_routes_the_current_version()

    url = f"{live_gateway_workers}/inference/routed/score"
    assert statuses(url, key, {"data": [1]}, {"azureml-model-deployment": "green"}) == {(200, ""): CALLS}
    # A deployment with mirror traffic cannot be deleted (409): its share goes to 0 first, routed too.
    assert owner_api.delete(f"{base}/routed/deployments/green").status_code == 409
    assert owner_api.patch(f"{base}/routed", {"mirror_traffic": {}}, format="json").status_code == 200
    assert owner_api.delete(f"{base}/routed/deployments/green").status_code in (202, 204)
    every_worker_routes_the_current_version()
    # Gone from every worker's table at once: a call aimed at it is refused, never served.
    seen = statuses(url, key, {"data": [1]}, {"azureml-model-deployment": "green"})
    assert all(status == 404 for status, _ in seen), seen
    assert statuses(url, key, {"data": [1]}) == {(200, ""): CALLS}
