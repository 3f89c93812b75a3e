from django.urls import path

from endpoints_app.api import models as models_api
from endpoints_app.api import usage as usage_api
from endpoints_app.api import workspaces

urlpatterns = [
    path("instance-types", workspaces.instance_types, name="api-instance-types"),
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
]
