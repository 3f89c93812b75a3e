from django.urls import path

from endpoints_app.views import catalog, home

urlpatterns = [
    path("", home.overview, name="overview"),
    path("workspace/switch/", home.switch_workspace, name="switch-workspace"),
    path("catalog/", catalog.catalog, name="catalog"),
    path("catalog/register/", catalog.register, name="catalog-register"),
    path("catalog/<str:name>/", catalog.model_page, name="catalog-model"),
]
