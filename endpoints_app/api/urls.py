from django.urls import path

from endpoints_app.api import workspaces

urlpatterns = [
    path("instance-types", workspaces.instance_types, name="api-instance-types"),
    path("workspaces", workspaces.workspaces, name="api-workspaces"),
    path("workspaces/<str:ws>/members", workspaces.members, name="api-members"),
    path("workspaces/<str:ws>/members/<str:username>", workspaces.member, name="api-member"),
]
