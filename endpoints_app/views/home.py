from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from endpoints_app.filters import filter_catalog
from endpoints_app.inference_urls import inference_base_url
from endpoints_app.middleware import SESSION_KEY
from endpoints_app.models import CatalogModel, Endpoint, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services.deployments import node_capacity
from endpoints_app.services.serverless import inference_base_uri, list_serverless_endpoints


def overview_context(request) -> dict:
    """Counts, and the workspace's unified inference endpoint (its URL; keys on request)."""
    workspace = request.workspace
    base = inference_base_url(request)
    names = list(list_serverless_endpoints(workspace).values_list("name", flat=True)) if workspace else []
    return {
        "endpoint_count": Endpoint.objects.filter(workspace=workspace).count() if workspace else 0,
        # What the catalog page lists for this workspace (shared and own models, latest versions).
        "model_count": filter_catalog(workspace, {})[1].count() if workspace else
        CatalogModel.objects.filter(workspace__isnull=True).count(),
        "capacity": node_capacity() if workspace else None,
        "unified_url": inference_base_uri(base),
        "studio_url": base,
        "serverless_names": names,
        "can_write": bool(workspace) and can(request.user, workspace, Role.CONTRIBUTOR),
    }


@login_required
def overview(request):
    return render(request, "overview.html", overview_context(request))


@login_required
@require_POST
def switch_workspace(request):
    name = request.POST.get("workspace", "")
    check_workspace(request.user, name)  # 404 unless a member
    request.session[SESSION_KEY] = name
    target = request.POST.get("next") or "/"
    if not url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        target = "/"
    return redirect(target)


