"""The REST API's URLs under /api/v1/: a viewset per resource on the router (its list, detail and action
routes), and a function view each for what is no resource (a listing of the caller's own, a check, a
report, the workspace's inference keys)."""

from django.urls import path

from endpoints_app.api import batch as batch_api
from endpoints_app.api import computes as computes_api
from endpoints_app.api import data as data_api
from endpoints_app.api import datastores as datastores_api
from endpoints_app.api import endpoints as endpoints_api
from endpoints_app.api import environments as environments_api
from endpoints_app.api import identity as identity_api
from endpoints_app.api import mirror as mirror_api
from endpoints_app.api import models as models_api
from endpoints_app.api import serverless as serverless_api
from endpoints_app.api import tokens as tokens_api
from endpoints_app.api import usage as usage_api
from endpoints_app.api import workspaces as workspaces_api
from endpoints_app.api.common import StudioRouter

WS = "workspaces/<str:ws>"

router = StudioRouter()
router.register("tokens", tokens_api.ApiTokenViewSet, basename="api-token")
router.register("computes", computes_api.ComputeViewSet, basename="api-compute")
router.register(f"{WS}/members", workspaces_api.MemberViewSet, basename="api-member")
router.register(f"{WS}/service-principals", identity_api.ServicePrincipalViewSet, basename="api-service-principal")
router.register(f"{WS}/models", models_api.CatalogModelViewSet, basename="api-model")
router.register(f"{WS}/online-endpoints", endpoints_api.EndpointViewSet, basename="api-online-endpoint")
router.register(f"{WS}/online-endpoints/<str:name>/deployments", endpoints_api.DeploymentViewSet,
                basename="api-deployment")
router.register(f"{WS}/marketplace-subscriptions", serverless_api.SubscriptionViewSet, basename="api-subscription")
router.register(f"{WS}/serverless-endpoints", serverless_api.ServerlessEndpointViewSet,
                basename="api-serverless-endpoint")
router.register(f"{WS}/data", data_api.DataAssetViewSet, basename="api-data-asset")
router.register(f"{WS}/datastores", datastores_api.DatastoreViewSet, basename="api-datastore")
router.register(f"{WS}/environments", environments_api.EnvironmentViewSet, basename="api-environment")
router.register(f"{WS}/batch-endpoints", batch_api.BatchEndpointViewSet, basename="api-batch-endpoint")
router.register(f"{WS}/batch-endpoints/<str:name>/deployments", batch_api.BatchDeploymentViewSet,
                basename="api-batch-deployment")
router.register(f"{WS}/batch-endpoints/<str:name>/jobs", batch_api.JobViewSet, basename="api-batch-job")
# Jobs by name alone (names are unique), for `studio job show|cancel|download -n <id>`.
router.register(f"{WS}/jobs", batch_api.WorkspaceJobViewSet, basename="api-job")

urlpatterns = [
    path("instance-types", workspaces_api.instance_types, name="api-instance-types"),
    path("workspaces", workspaces_api.workspaces, name="api-workspaces"),
    path(f"{WS}/usage", usage_api.usage, name="api-usage"),
    path(f"{WS}/deployment-check", endpoints_api.deployment_check, name="api-deployment-check"),
    path(f"{WS}/online-endpoints/<str:name>/mirror-comparison", mirror_api.mirror_comparison,
         name="api-mirror-comparison"),
    path(f"{WS}/list-inference-keys", serverless_api.list_inference_keys, name="api-inference-keys"),
    path(f"{WS}/regenerate-inference-keys", serverless_api.regenerate_inference_keys,
         name="api-regenerate-inference-keys"),
    *router.urls,
]
