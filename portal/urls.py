from django.conf import settings
from django.contrib import admin
from django.http import FileResponse
from django.urls import include, path, re_path
from django.views.decorators.cache import cache_control
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from endpoints_app.api.job_invocation import invoke_job
from endpoints_app.views.node_artifacts import node_artifact
from portal import errors, oidc
from portal.health import healthz
from portal.metrics import metrics


@cache_control(max_age=86400, public=True)
def favicon(request):
    """Browsers ask for /favicon.ico whatever the page's <link rel=icon> says."""
    return FileResponse(open(settings.BASE_DIR / "static" / "favicon.ico", "rb"), content_type="image/x-icon")


urlpatterns = [
    path("favicon.ico", favicon, name="favicon"),
    path("healthz", healthz, name="healthz"),
    # Ray nodes fetch a model's files here, each with a token the controller signed (docs/cluster.md).
    path("internal/node-artifacts/<str:token>", node_artifact, name="node-artifact"),
    path("metrics", metrics, name="metrics"),
    path("login/", oidc.LoginView.as_view(), name="login"),
    path("login/oidc/", oidc.start, name="oidc-start"),
    path("oidc/callback/", oidc.callback, name="oidc-callback"),
    path("logout/", oidc.sign_out, name="logout"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("api/v1/", include("endpoints_app.api.urls")),
    # A batch endpoint's scoring_uri: the one path under /inference/ that Django answers (portal/dispatch.py).
    path("inference/<str:name>/jobs", invoke_job, name="batch-scoring-uri"),
    # Near misses under /api/ (a trailing slash, a typo) get the API's JSON 404, also with DEBUG on.
    re_path(r"^api/", errors.api_not_found),
    path("", include("endpoints_app.views.urls")),
]

handler400 = errors.bad_request
handler403 = errors.permission_denied
handler404 = errors.not_found
handler500 = errors.server_error
