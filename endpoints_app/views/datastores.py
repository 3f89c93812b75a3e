"""The Datastores page: the workspace's datastores (the built-in one first), a form to add an Azure Blob
container, an S3 bucket or an allowed folder, and a datastore's page that browses its folders and
files and shows each path's azureml:// URI (what a job's input names). Writes go through
services/datastores.py; credentials are never shown, to anyone."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from endpoints_app.errors import StudioError
from endpoints_app.models import BUILTIN_DATASTORE, Datastore, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import datastores as ds_svc
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import require_workspace

# Form fields per type; credentials go under `credentials`.
FORM_FIELDS = {
    "azure_blob": ("account_name", "container_name", "account_url"),
    "s3": ("bucket", "endpoint_url", "region"),
    "local": ("path",),
}
FORM_CREDENTIALS = {
    "azure_blob": ("account_key", "sas_token"),
    "s3": ("access_key_id", "secret_access_key"),
    "local": (),
}


def _list_context(request, workspace) -> dict:
    return {
        "datastores": ds_svc.datastores_of(workspace),
        "builtin": BUILTIN_DATASTORE,
        "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
        "allowed_roots": [str(r) for r in ds_svc.allowed_roots()],
    }


@login_required
def datastore_list(request):
    workspace = require_workspace(request)
    return render(request, "datastores/index.html", _list_context(request, workspace))


def _spec_from_form(post) -> dict:
    kind = post.get("type", "")
    spec: dict = {"name": post.get("name", "").strip(), "type": kind}
    if post.get("description", "").strip():
        spec["description"] = post["description"].strip()
    for field in FORM_FIELDS.get(kind, ()):
        if post.get(field, "").strip():
            spec[field] = post[field].strip()
    credentials = {k: post[k].strip() for k in FORM_CREDENTIALS.get(kind, ()) if post.get(k, "").strip()}
    if credentials:
        spec["credentials"] = credentials
    return spec


@login_required
@require_POST
def create(request):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
    try:
        datastore = ds_svc.do_create_datastore(Actor.from_request(request), workspace, _spec_from_form(request.POST))
    except StudioError as exc:
        context = _list_context(request, workspace)
        # The form comes back filled in, but never with the secrets typed into it.
        context.update({"error": exc.message, "form": {k: v for k, v in request.POST.items()
                                                      if k not in ("account_key", "sas_token",
                                                                   "secret_access_key", "csrfmiddlewaretoken")}})
        return render(request, "datastores/index.html", context, status=exc.status)
    messages.success(request, f"Datastore {datastore.name} added.")
    return redirect("datastore-detail", datastore.name)


def _crumbs(path: str) -> list[dict]:
    crumbs, so_far = [], []
    for part in [p for p in path.split("/") if p]:
        so_far.append(part)
        crumbs.append({"name": part, "path": "/".join(so_far)})
    return crumbs


@login_required
def detail(request, name: str):
    workspace = require_workspace(request)
    datastore = None
    if name != BUILTIN_DATASTORE:
        datastore = Datastore.objects.filter(workspace=workspace, name=name).first()
        if datastore is None:
            raise Http404("No such datastore.")
    path = request.GET.get("path", "").strip("/")
    error, entries = "", []
    try:
        entries = ds_svc.browse(workspace, name, path)
    except StudioError as exc:
        error = exc.message
    context = {"datastore": datastore, "name": name, "path": path, "crumbs": _crumbs(path), "entries": entries,
               "error": error, "uri": f"azureml://datastores/{name}/paths/{path}",
               "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
               "assets": list(datastore.data_assets.order_by("name", "-version")[:50]) if datastore else []}
    return render(request, "datastores/detail.html", context)


@login_required
@require_POST
def delete(request, name: str):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
    datastore = Datastore.objects.filter(workspace=workspace, name=name).first()
    if datastore is None:
        raise Http404("No such datastore.")
    try:
        ds_svc.do_delete_datastore(Actor.from_request(request), datastore)
    except StudioError as exc:
        messages.error(request, exc.message)
        return redirect("datastore-detail", name)
    messages.success(request, f"Datastore {name} deleted (its files stay where they are).")
    return redirect("datastores")
