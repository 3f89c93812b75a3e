"""Catalog pages: the grid with search and filters, a model's page, and the upload form.

The filter form is a plain GET form; with htmx it swaps only the results and
pushes the URL, without JavaScript it reloads the page with the same URL."""

from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.views.decorators.http import require_POST

from endpoints_app.catalog.runtimes import runtime_status
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.filters import filter_catalog, find_model, licence_choices
from endpoints_app.models import CatalogModel, Endpoint, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import models as model_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.models import do_register_model
from endpoints_app.views.common import pretty_json, require_workspace, wants_partial

PAGE_SIZE = 24
# Deployment kinds with a way to deploy in the UI.
WIZARD_KINDS = {Endpoint.Kind.ONLINE, Endpoint.Kind.BATCH, Endpoint.Kind.SERVERLESS}
KIND_LABELS = {
    Endpoint.Kind.ONLINE: "Online endpoint",
    Endpoint.Kind.BATCH: "Batch endpoint",
    Endpoint.Kind.SERVERLESS: "Serverless API",
}
FILTER_LABELS = {"search": "Search", "task": "Task", "format": "Format", "license": "Licence",
                 "deployment_kind": "Deployment"}


def _active_filters(form) -> list[dict]:
    """Chips for the filters in use, each with a link that drops it."""
    chips = []
    values = {key: value for key, value in form.data.items() if key in FILTER_LABELS and value}
    for key, value in values.items():
        rest = {k: v for k, v in values.items() if k != key}
        chips.append({"label": FILTER_LABELS[key], "value": value, "href": "?" + urlencode(rest)})
    return chips


@login_required
def catalog(request):
    workspace = require_workspace(request)
    form, models = filter_catalog(workspace, request.GET)
    # created_by: a workspace's own models show who uploaded them.
    page = Paginator(models.select_related("created_by"), PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "form": form,
        "page": page,
        "chips": _active_filters(form),
        "licences": licence_choices(workspace),
    }
    # An htmx request from the filter form or a page link swaps the results only.
    if wants_partial(request):
        return render(request, "catalog/index.html#results", context)
    return render(request, "catalog/index.html", context)


def _wizard_url() -> str | None:
    try:
        return reverse("deploy-wizard")
    except NoReverseMatch:
        return None


@login_required
def model_page(request, name: str, error: str = "", sample_text: str | None = None, status: int = 200):
    workspace = require_workspace(request)
    version = request.GET.get("version")
    model = find_model(
        workspace, name, int(version) if version and version.isdigit() else None, request.GET.get("registry")
    )
    versions = list(
        CatalogModel.objects.filter(registry=model.registry, name=model.name)
        .only("id", "registry", "name", "version", "format", "created_at", "created_by__username")
        .select_related("created_by")
        .order_by("-version")
    )
    available, reason = runtime_status(model)
    wizard = _wizard_url()
    can_deploy = can(request.user, workspace, Role.CONTRIBUTOR)
    deploy_buttons = []
    for kind in model.deployment_kinds:
        if kind == Endpoint.Kind.SERVERLESS:
            href = f"{reverse('serverless-wizard')}?{urlencode({'model': model.asset_id})}"
        elif kind == Endpoint.Kind.BATCH:
            # Batch endpoints have their own form: an endpoint with its first batch deployment.
            href = f"{reverse('batch-endpoint-create')}?{urlencode({'model': model.asset_id})}"
        else:
            href = f"{wizard}?{urlencode({'model': model.asset_id, 'kind': kind})}" if wizard else ""
        if not wizard or kind not in WIZARD_KINDS:
            why = f"The {KIND_LABELS.get(kind, kind).lower()} wizard is coming"
        elif kind == Endpoint.Kind.SERVERLESS and not model.offers_serverless:
            why = "This model has no serverless offer (no prices per 1K tokens)"
        elif not available:
            why = reason
        elif not can_deploy:
            why = "Deploying needs the Contributor role"
        else:
            why = ""
        deploy_buttons.append({"kind": kind, "label": KIND_LABELS.get(kind, kind), "href": href, "why": why})
    context = {
        "model": model,
        "versions": versions,
        "available": available,
        "reason": reason,
        "deploy_buttons": deploy_buttons,
        "sample_request": pretty_json(model.sample_request),
        "sample_response": pretty_json(model.sample_response),
        "input_schema": pretty_json(model.input_schema),
        "output_schema": pretty_json(model.output_schema),
        "api_url": f"/api/v1/workspaces/{workspace.name}/models/{model.name}/versions/{model.version}",
        # A workspace's own model: its Contributors attach a sample and delete versions no deployment uses.
        "own": model.workspace_id == workspace.pk and can_deploy,
        "delete_refusal": model_svc.delete_refusal(model) if model.workspace_id == workspace.pk else None,
        "error": error,
        "sample_text": sample_text if sample_text is not None else pretty_json(model.sample_request),
    }
    return render(request, "catalog/model.html", context, status=status)


def _own_version(request, name: str, version: int) -> CatalogModel:
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)  # 403 for Readers
    return find_model(workspace, name, version, workspace.name)


@login_required
@require_POST
def model_sample(request, name: str, version: int):
    """Attach a sample request to a registered model version (what its Test tab opens with)."""
    model = _own_version(request, name, version)
    text = request.POST.get("sample_request", "")
    try:
        model_svc.do_update_model(Actor.from_request(request), request.workspace, model, sample_request=text)
    except StudioError as exc:
        request.GET = request.GET.copy()
        request.GET["version"] = str(version)
        return model_page(request, name, error=exc.message, sample_text=text, status=exc.status)
    messages.success(request, f"Saved the sample request of {model.name} version {model.version}.")
    return redirect(reverse("catalog-model", args=[model.name]) + f"?version={model.version}")


@login_required
@require_POST
def model_delete(request, name: str, version: int):
    model = _own_version(request, name, version)
    try:
        model_svc.do_delete_model(Actor.from_request(request), request.workspace, model)
    except StudioError as exc:
        request.GET = request.GET.copy()
        request.GET["version"] = str(version)
        return model_page(request, name, error=exc.message, status=exc.status)
    messages.success(request, f"Deleted {model.name} version {model.version}.")
    return redirect("catalog")


@login_required
def register(request):
    workspace = require_workspace(request)
    allowed = can(request.user, workspace, Role.CONTRIBUTOR)
    values = {"name": "", "format": "", "task": "", "description": "", "sample_request": "", "environment": ""}
    error = None
    status = 200
    if request.method == "POST":
        check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)  # 403 for Readers
        values = {key: request.POST.get(key, "").strip() for key in values}
        upload = request.FILES.get("file")
        try:
            if upload is None:
                raise InvalidInput("Choose a model file to upload.", field="file")
            if not values["name"]:
                raise InvalidInput("Give the model a name.", field="name")
            model = do_register_model(
                Actor.from_request(request),
                workspace,
                name=values["name"],
                file=upload,
                # An MLflow model is a type of its own (the API's type=mlflow_model), not a file format.
                format=values["format"] if values["format"] not in ("", "mlflow") else None,
                type="mlflow_model" if values["format"] == "mlflow" else None,
                task=values["task"] or None,
                description=values["description"],
                sample_request=values["sample_request"] or None,
                environment=values["environment"] or None,
            )
        except StudioError as exc:
            error = exc
            status = exc.status
        else:
            messages.success(request, f"Registered {model.name} version {model.version}.")
            return redirect(reverse("catalog-model", args=[model.name]) + f"?version={model.version}")
    context = {
        "allowed": allowed,
        "values": values,
        "error": error,
        "formats": [("", "Detect from the file"), ("sklearn", "scikit-learn (joblib / pickle)"),
                    ("onnx", "ONNX"), ("custom", "Custom: zip with score.py"),
                    ("mlflow", "MLflow model: zip of the folder save_model wrote")],
        "tasks": [("", "Choose later / custom"), *CatalogModel.Task.choices],
    }
    return render(request, "catalog/register.html", context, status=status)

