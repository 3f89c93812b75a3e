import pytest

from endpoints_app.models import CatalogModel
from tests.live import register_test_node


@pytest.fixture
def node(db):
    """A live node (a worker's heartbeat), so admission sees capacity; no worker runs here."""
    return register_test_node()


@pytest.fixture
def catalog_model(db):
    return CatalogModel.objects.create(
        name="iris-classifier", version=1, task="classification", format="sklearn", license="BSD-3-Clause",
        artifact_path="models/iris.joblib", deployment_kinds=["online", "batch"],
    )


@pytest.fixture
def endpoint_factory(owner_api, node, catalog_model):
    def make(name: str = "iris", deployments: tuple[str, ...] = (), **body):
        response = owner_api.post("/api/v1/workspaces/team/online-endpoints", {"name": name, **body}, format="json")
        assert response.status_code == 201, response.content
        for deployment in deployments:
            created = owner_api.post(
                f"/api/v1/workspaces/team/online-endpoints/{name}/deployments",
                {"name": deployment, "model": catalog_model.asset_id, "instance_type": "Standard_DS1_v2"},
                format="json",
            )
            assert created.status_code == 202, created.content
        return response.json()

    return make
