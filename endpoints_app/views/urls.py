from django.urls import path

from endpoints_app.views import home

urlpatterns = [
    path("", home.overview, name="overview"),
    path("workspace/switch/", home.switch_workspace, name="switch-workspace"),
]
