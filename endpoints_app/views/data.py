"""The Data page: the workspace's data assets (size, file count), an upload form for one or many
files, and an asset's page with its files and the first rows of a CSV, JSON-lines or text file.
Uploads go through services/data.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from endpoints_app.errors import StudioError
from endpoints_app.models import DataAsset, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import data as data_svc
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import require_workspace

FILES_SHOWN = 200
PREVIEW_ROWS = 20


def _list_context(request, workspace) -> dict:
    return {
        "assets": list(DataAsset.objects.filter(workspace=workspace).select_related("created_by", "datastore")
                       .order_by("name", "-version")),
        "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
        "limit_mb": data_svc.upload_limit() // (1024 * 1024),
    }


@login_required
def data_list(request):
    workspace = require_workspace(request)
    return render(request, "data/index.html", _list_context(request, workspace))


@login_required
@require_POST
def upload(request):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
    name = request.POST.get("name", "").strip()
    try:
        asset = data_svc.do_create_data_asset(
            Actor.from_request(request), workspace, name=name, files=request.FILES.getlist("files"),
            description=request.POST.get("description", ""),
        )
    except StudioError as exc:
        context = _list_context(request, workspace)
        context.update({"error": exc.message, "name": name, "description": request.POST.get("description", "")})
        return render(request, "data/index.html", context, status=exc.status)
    messages.success(request, f"Uploaded {asset.file_count} file{'s' if asset.file_count != 1 else ''} "
                              f"as {asset.asset_id}.")
    return redirect("data-asset", asset.name, asset.version)


@login_required
def asset_page(request, name: str, version: int):
    workspace = require_workspace(request)
    asset = data_svc.find_data_asset(workspace, name, version)
    if asset is None:
        raise Http404("No such data asset.")
    root = asset.absolute_path if asset.kind == DataAsset.Kind.URI_FOLDER else asset.absolute_path.parent
    files = [{"name": p.relative_to(root).as_posix(), "size": p.stat().st_size} for p in asset.files()[:FILES_SHOWN]]
    chosen = request.GET.get("file") or None
    try:
        preview = data_svc.preview(asset, PREVIEW_ROWS, chosen)
    except StudioError as exc:
        preview = {"file": chosen, "columns": [], "rows": [], "error": exc.message}
    versions = list(DataAsset.objects.filter(workspace=workspace, name=name).order_by("-version")
                    .values_list("version", flat=True))
    context = {"asset": asset, "files": files, "more_files": asset.file_count > len(files), "preview": preview,
               "versions": versions, "jobs": list(asset.batch_jobs.select_related("endpoint")[:20])}
    return render(request, "data/asset.html", context)
