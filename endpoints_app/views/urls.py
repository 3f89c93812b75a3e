from django.urls import path

from endpoints_app.views import batch as batch_views
from endpoints_app.views import catalog, home
from endpoints_app.views import data as data_views
from endpoints_app.views import datastores as datastore_views
from endpoints_app.views import deploy as deploy_views
from endpoints_app.views import endpoints as endpoint_views
from endpoints_app.views import environments as environment_views
from endpoints_app.views import monitoring as monitoring_views
from endpoints_app.views import playground as playground_views
from endpoints_app.views import serverless as serverless_views
from endpoints_app.views import tokens as token_views
from endpoints_app.views import usage as usage_views

by_kind = serverless_views.by_kind

urlpatterns = [
    path("", home.overview, name="overview"),
    path("workspace/switch/", home.switch_workspace, name="switch-workspace"),
    path("catalog/", catalog.catalog, name="catalog"),
    path("catalog/register/", catalog.register, name="catalog-register"),
    path("catalog/<str:name>/", catalog.model_page, name="catalog-model"),
    path("catalog/<str:name>/versions/<int:version>/sample/", catalog.model_sample, name="catalog-model-sample"),
    path("catalog/<str:name>/versions/<int:version>/delete/", catalog.model_delete, name="catalog-model-delete"),
    path("endpoints/", endpoint_views.endpoint_list, name="endpoints"),
    path("endpoints/new/", deploy_views.deploy_wizard, name="deploy-wizard"),
    path("endpoints/new/check-name/", deploy_views.check_endpoint_name, name="endpoint-name-check"),
    path("endpoints/new/batch/", batch_views.create_batch_endpoint, name="batch-endpoint-create"),
    path("endpoints/new/check-resources/", deploy_views.check_resources, name="endpoint-resource-check"),
    path("serverless/new/", serverless_views.serverless_wizard, name="serverless-wizard"),
    path("inference-keys/", serverless_views.inference_keys, name="inference-keys"),
    path("endpoints/<str:name>/", by_kind(serverless_views.detail, endpoint_views.endpoint_detail),
         name="endpoint-detail"),
    path("endpoints/<str:name>/traffic/", endpoint_views.update_traffic, name="endpoint-traffic"),
    path("endpoints/<str:name>/delete/", by_kind(serverless_views.delete, endpoint_views.delete_endpoint),
         name="endpoint-delete"),
    path("endpoints/<str:name>/deployments/<str:deployment_name>/scale/", endpoint_views.scale_deployment,
         name="deployment-scale"),
    path("endpoints/<str:name>/deployments/<str:deployment_name>/delete/", endpoint_views.delete_deployment,
         name="deployment-delete"),
    path("endpoints/<str:name>/test/", by_kind(serverless_views.test, endpoint_views.endpoint_test),
         name="endpoint-test"),
    path("endpoints/<str:name>/playground/chat/", playground_views.playground_chat, name="playground-chat"),
    path("endpoints/<str:name>/playground/embeddings/", playground_views.playground_embeddings,
         name="playground-embeddings"),
    path("endpoints/<str:name>/consume/", by_kind(serverless_views.consume, endpoint_views.endpoint_consume),
         name="endpoint-consume"),
    path("endpoints/<str:name>/consume/keys/", by_kind(serverless_views.reveal_keys, endpoint_views.reveal_keys),
         name="endpoint-keys"),
    path("endpoints/<str:name>/consume/regenerate/",
         by_kind(serverless_views.regenerate_key, endpoint_views.regenerate_key), name="endpoint-regenerate-key"),
    path("endpoints/<str:name>/logs/", by_kind(serverless_views.no_logs, endpoint_views.endpoint_logs),
         name="endpoint-logs"),
    path("endpoints/<str:name>/monitoring/", monitoring_views.monitoring, name="endpoint-monitoring"),
    path("tokens/", token_views.tokens_page, name="tokens"),
    path("tokens/<int:token_id>/revoke/", token_views.revoke_token, name="token-revoke"),
    # Batch endpoints (their page is endpoint-detail), jobs and data assets.
    path("endpoints/<str:name>/batch/deployments/", batch_views.add_batch_deployment, name="batch-deployment-add"),
    path("endpoints/<str:name>/batch/deployments/<str:deployment_name>/delete/", batch_views.delete_batch_deployment,
         name="batch-deployment-delete"),
    path("endpoints/<str:name>/batch/default/", batch_views.set_default_deployment, name="batch-default"),
    path("endpoints/<str:name>/batch/invoke/", batch_views.invoke, name="batch-invoke"),
    path("endpoints/<str:name>/batch/credentials/", batch_views.reveal_credentials, name="batch-credentials"),
    path("endpoints/<str:name>/batch/delete/", batch_views.delete_batch_endpoint, name="batch-endpoint-delete"),
    path("jobs/", batch_views.job_list, name="jobs"),
    path("jobs/<str:name>/", batch_views.job_detail, name="job-detail"),
    path("jobs/<str:name>/cancel/", batch_views.cancel_job, name="job-cancel"),
    path("jobs/<str:name>/logs/", batch_views.job_log, name="job-log"),
    path("jobs/<str:name>/outputs/<path:file>", batch_views.job_output, name="job-output"),
    path("environments/", environment_views.environment_list, name="environments"),
    path("environments/create/", environment_views.create, name="environment-create"),
    path("environments/<str:name>/versions/<str:version>/", environment_views.environment_page, name="environment"),
    path("data/", data_views.data_list, name="data"),
    path("data/upload/", data_views.upload, name="data-upload"),
    path("data/<str:name>/versions/<int:version>/", data_views.asset_page, name="data-asset"),
    path("datastores/", datastore_views.datastore_list, name="datastores"),
    path("datastores/new/", datastore_views.create, name="datastore-create"),
    path("datastores/<str:name>/", datastore_views.detail, name="datastore-detail"),
    path("datastores/<str:name>/delete/", datastore_views.delete, name="datastore-delete"),
    path("usage/", usage_views.usage_page, name="usage"),
    path("usage/export.csv", usage_views.usage_csv, name="usage-csv"),
    path("usage/budget/", usage_views.set_budget, name="usage-budget"),
]
