from django.urls import path

from endpoints_app.views import catalog, home
from endpoints_app.views import monitoring as monitoring_views
from endpoints_app.views import usage as usage_views

urlpatterns = [
    path("", home.overview, name="overview"),
    path("workspace/switch/", home.switch_workspace, name="switch-workspace"),
    path("catalog/", catalog.catalog, name="catalog"),
    path("catalog/register/", catalog.register, name="catalog-register"),
    path("catalog/<str:name>/", catalog.model_page, name="catalog-model"),
    path("endpoints/<str:name>/monitoring/", monitoring_views.monitoring, name="endpoint-monitoring"),
    path("usage/", usage_views.usage_page, name="usage"),
    path("usage/export.csv", usage_views.usage_csv, name="usage-csv"),
    path("usage/budget/", usage_views.set_budget, name="usage-budget"),
]
