"""Foundation models behind the gateway: real MiniLM, SmolLM2 and Gemma servers started as the
controller starts them (runtime.launch), shared by the session, and endpoint rows pointing at
them, as the controller would leave them after provisioning."""

from __future__ import annotations

import importlib.util

import pytest

from endpoints_app.catalog.cards import card
from endpoints_app.models import (
    CatalogModel,
    Deployment,
    Endpoint,
    GatewayWorker,
    Instance,
    InstanceState,
    InstanceType,
    RouteVersion,
)
from tests.gateway.conftest import node, procs, set_key  # noqa: F401 - fixtures used by this package's tests
from tests.runtime.conftest import log_dir, seeded_artifacts, seeded_server  # noqa: F401

needs_llama = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                 reason="llama-cpp-python is not installed")

CHAT = "smollm2-135m-instruct"
COMPLETION = "gemma-3-270m"
EMBEDDINGS = "all-minilm-l6-v2"


def catalog_row(name: str, artifacts: dict) -> CatalogModel:
    """The seeded catalog model (card fields, artifact, tags) as a database row."""
    fields = card(name)
    path, tags, response = artifacts[name]
    fields = {k: v for k, v in fields.items() if k in {f.name for f in CatalogModel._meta.get_fields()}}
    fields["tags"] = {**fields.get("tags", {}), **(tags or {})}
    model, _ = CatalogModel.objects.update_or_create(
        registry="studio", name=name, version=1,
        defaults={**fields, "artifact_path": path, "sample_response": response or {}},
    )
    return model


@pytest.fixture
def foundation_endpoint(workspace, node, seeded_artifacts, seeded_server):  # noqa: F811
    """foundation_endpoint("name", {"blue": (model name, traffic %)}, mirror={...}) -> (endpoint, key).
    Each deployment has one ready instance: the session's real server for that model."""

    def make(name: str, deployments: dict[str, tuple[str, int]], mirror: dict | None = None,
             request_settings: dict | None = None) -> tuple[Endpoint, str]:
        endpoint = Endpoint.objects.create(
            workspace=workspace, name=name, provisioning_state="Succeeded",
            traffic={d: spec[1] for d, spec in deployments.items()}, mirror_traffic=mirror or {},
        )
        key = set_key(endpoint, "primary")
        set_key(endpoint, "secondary")
        for dep_name, (model_name, _traffic) in deployments.items():
            server = seeded_server(model_name)
            deployment = Deployment.objects.create(
                endpoint=endpoint, name=dep_name, model=catalog_row(model_name, seeded_artifacts),
                instance_type=InstanceType.objects.first(), instance_count=1, provisioning_state="Succeeded",
                request_settings=request_settings or {"request_timeout_ms": 60000,
                                                      "max_concurrent_requests_per_instance": 4},
            )
            # Named as the server was launched, so the gateway presents the secret it expects.
            Instance.objects.create(deployment=deployment, name=server.name, node=node,
                                    port=int(server.base.rsplit(":", 1)[1]), state=InstanceState.READY)
        RouteVersion.bump()
        # As the services do: the endpoint is routed by every live gateway worker before the test calls it.
        GatewayWorker.wait_for(RouteVersion.current())
        return endpoint, key

    return make


WS = "/api/v1/workspaces/team"


def attach_server(pool: Deployment, server, node) -> None:  # noqa: F811
    """Give a pool a ready instance: the session's real server for its model (what the controller
    leaves after starting the pool)."""
    Instance.objects.get_or_create(
        deployment=pool, name=server.name,  # as launched: the gateway derives its secret from the name
        defaults={"node": node, "port": int(server.base.rsplit(":", 1)[1]), "state": InstanceState.READY},
    )
    RouteVersion.bump()


@pytest.fixture
def serverless_endpoint(owner_api, node, seeded_artifacts, seeded_server):  # noqa: F811
    """serverless_endpoint("name", model name) -> (endpoint, endpoint key, the workspace's inference key),
    made through the REST API as a user would (subscribe, create); its pool gets the session's server."""

    def make(name: str, model_name: str, with_instance: bool = True) -> tuple[Endpoint, str, str]:
        model = catalog_row(model_name, seeded_artifacts)
        subscribed = owner_api.post(f"{WS}/marketplace-subscriptions", {"model_id": model.asset_id}, format="json")
        assert subscribed.status_code in (200, 201), subscribed.content
        created = owner_api.post(f"{WS}/serverless-endpoints", {"name": name, "model_id": model.asset_id},
                                 format="json")
        assert created.status_code in (200, 201, 202), created.content
        endpoint = Endpoint.objects.get(name=name)
        if with_instance:
            attach_server(endpoint.pool, seeded_server(model_name), node)
        key = owner_api.post(f"{WS}/serverless-endpoints/{name}/list-keys").json()["primary_key"]
        inference_key = owner_api.post(f"{WS}/list-inference-keys").json()["primary_key"]
        return endpoint, key, inference_key

    return make
