from django.urls import path

from endpoints_app.api import batch as batch_api
from endpoints_app.api import data as data_api
from endpoints_app.api import endpoints as endpoints_api
from endpoints_app.api import mirror as mirror_api
from endpoints_app.api import models as models_api
from endpoints_app.api import serverless as serverless_api
from endpoints_app.api import tokens as tokens_api
from endpoints_app.api import usage as usage_api
from endpoints_app.api import workspaces

urlpatterns = [
    path("instance-types", workspaces.instance_types, name="api-instance-types"),
    path("tokens", tokens_api.tokens, name="api-tokens"),
    path("tokens/<int:token_id>", tokens_api.token, name="api-token"),
    path("workspaces", workspaces.workspaces, name="api-workspaces"),
    path("workspaces/<str:ws>/members", workspaces.members, name="api-members"),
    path("workspaces/<str:ws>/members/<str:username>", workspaces.member, name="api-member"),
    path("workspaces/<str:ws>/models", models_api.models, name="api-models"),
    path("workspaces/<str:ws>/models/<str:name>", models_api.model, name="api-model"),
    path(
        "workspaces/<str:ws>/models/<str:name>/versions/<int:version>",
        models_api.model_version,
        name="api-model-version",
    ),
    path("workspaces/<str:ws>/usage", usage_api.usage, name="api-usage"),
    # Online endpoints and deployments (endpoints_app/api/endpoints.py).
    path("workspaces/<str:ws>/online-endpoints", endpoints_api.online_endpoints, name="api-online-endpoints"),
    path("workspaces/<str:ws>/online-endpoints/<str:name>", endpoints_api.online_endpoint, name="api-online-endpoint"),
    path("workspaces/<str:ws>/online-endpoints/<str:name>/list-keys", endpoints_api.list_keys, name="api-list-keys"),
    path(
        "workspaces/<str:ws>/online-endpoints/<str:name>/regenerate-keys",
        endpoints_api.regenerate_keys,
        name="api-regenerate-keys",
    ),
    path("workspaces/<str:ws>/online-endpoints/<str:name>/token", endpoints_api.token, name="api-endpoint-token"),
    path(
        "workspaces/<str:ws>/online-endpoints/<str:name>/mirror-comparison",
        mirror_api.mirror_comparison,
        name="api-mirror-comparison",
    ),
    path(
        "workspaces/<str:ws>/online-endpoints/<str:name>/deployments",
        endpoints_api.deployments,
        name="api-deployments",
    ),
    path(
        "workspaces/<str:ws>/online-endpoints/<str:name>/deployments/<str:deployment_name>",
        endpoints_api.deployment,
        name="api-deployment",
    ),
    path(
        "workspaces/<str:ws>/online-endpoints/<str:name>/deployments/<str:deployment_name>/logs",
        endpoints_api.deployment_logs,
        name="api-deployment-logs",
    ),
    # Serverless: marketplace subscriptions, serverless endpoints, the unified endpoint's keys.
    path("workspaces/<str:ws>/marketplace-subscriptions", serverless_api.subscriptions, name="api-subscriptions"),
    path(
        "workspaces/<str:ws>/marketplace-subscriptions/<str:name>",
        serverless_api.subscription,
        name="api-subscription",
    ),
    path(
        "workspaces/<str:ws>/serverless-endpoints", serverless_api.serverless_endpoints, name="api-serverless-endpoints"
    ),
    path(
        "workspaces/<str:ws>/serverless-endpoints/<str:name>",
        serverless_api.serverless_endpoint,
        name="api-serverless-endpoint",
    ),
    path(
        "workspaces/<str:ws>/serverless-endpoints/<str:name>/list-keys",
        serverless_api.list_keys,
        name="api-serverless-list-keys",
    ),
    path(
        "workspaces/<str:ws>/serverless-endpoints/<str:name>/regenerate-keys",
        serverless_api.regenerate_keys,
        name="api-serverless-regenerate-keys",
    ),
    path("workspaces/<str:ws>/list-inference-keys", serverless_api.list_inference_keys, name="api-inference-keys"),
    path(
        "workspaces/<str:ws>/regenerate-inference-keys",
        serverless_api.regenerate_inference_keys,
        name="api-regenerate-inference-keys",
    ),
    # Data assets (endpoints_app/api/data.py).
    path("workspaces/<str:ws>/data", data_api.data_assets, name="api-data"),
    path("workspaces/<str:ws>/data/<str:name>", data_api.data_asset, name="api-data-asset"),
    path("workspaces/<str:ws>/data/<str:name>/versions/<int:version>", data_api.data_asset_version,
         name="api-data-asset-version"),
    path("workspaces/<str:ws>/data/<str:name>/versions/<int:version>/preview", data_api.data_asset_preview,
         name="api-data-asset-preview"),
    # Batch endpoints, deployments and jobs (endpoints_app/api/batch.py).
    path("workspaces/<str:ws>/batch-endpoints", batch_api.batch_endpoints, name="api-batch-endpoints"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>", batch_api.batch_endpoint, name="api-batch-endpoint"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/list-keys", batch_api.list_keys,
         name="api-batch-list-keys"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/token", batch_api.token, name="api-batch-token"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/deployments", batch_api.batch_deployments,
         name="api-batch-deployments"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/deployments/<str:deployment_name>",
         batch_api.batch_deployment, name="api-batch-deployment"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/jobs", batch_api.jobs, name="api-batch-jobs"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/jobs/<str:job_name>", batch_api.job, name="api-batch-job"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/jobs/<str:job_name>/cancel", batch_api.cancel_job,
         name="api-batch-job-cancel"),
    path("workspaces/<str:ws>/batch-endpoints/<str:name>/jobs/<str:job_name>/outputs/<path:file>",
         batch_api.job_output, name="api-batch-job-output"),
    # Jobs by name alone (names are unique), for `studio job show|cancel|download -n <id>`.
    path("workspaces/<str:ws>/jobs", batch_api.workspace_jobs, name="api-jobs"),
    path("workspaces/<str:ws>/jobs/<str:job_name>", batch_api.workspace_job, name="api-job"),
    path("workspaces/<str:ws>/jobs/<str:job_name>/cancel", batch_api.workspace_job_cancel, name="api-job-cancel"),
    path("workspaces/<str:ws>/jobs/<str:job_name>/outputs/<path:file>", batch_api.workspace_job_output,
         name="api-job-output"),
]
