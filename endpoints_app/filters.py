"""Catalog filters, shared by the catalog page and the models API.

A workspace sees the shared catalog (models with no workspace) plus the models
it registered itself. One form validates the filter parameters for both doors,
one function applies them, so `/catalog/?task=x` and
`/api/v1/workspaces/<ws>/models?task=x` always return the same models."""

from django import forms
from django.db.models import Count, Exists, OuterRef, Q, QuerySet
from django.http import Http404

from endpoints_app.models import CatalogModel, Endpoint, Workspace

DEPLOYMENT_KINDS = Endpoint.Kind.choices
FACETS = ("task", "format", "license", "deployment_kind")


class CatalogFilterForm(forms.Form):
    search = forms.CharField(required=False, max_length=100, strip=True)
    task = forms.ChoiceField(required=False, choices=[("", "Any task"), *CatalogModel.Task.choices])
    format = forms.ChoiceField(required=False, choices=[("", "Any format"), *CatalogModel.Format.choices])
    license = forms.CharField(required=False, max_length=64, strip=True)
    deployment_kind = forms.ChoiceField(required=False, choices=[("", "Any deployment"), *DEPLOYMENT_KINDS])
    # All versions of one model instead of the latest version of each.
    name = forms.CharField(required=False, max_length=64, strip=True)


def visible_models(workspace: Workspace | None) -> QuerySet[CatalogModel]:
    """The shared catalog plus `workspace`'s own registered models."""
    condition = Q(workspace__isnull=True)
    if workspace is not None:
        condition |= Q(workspace=workspace)
    return CatalogModel.objects.filter(condition)


def latest_versions(queryset: QuerySet[CatalogModel]) -> QuerySet[CatalogModel]:
    newer = CatalogModel.objects.filter(
        registry=OuterRef("registry"), name=OuterRef("name"), version__gt=OuterRef("version")
    )
    return queryset.filter(~Exists(newer))


def apply_catalog_filters(queryset: QuerySet[CatalogModel], cleaned: dict) -> QuerySet[CatalogModel]:
    """Apply validated filter values (a CatalogFilterForm's cleaned_data).

    Without `name`, only each model's latest version is listed."""
    if cleaned.get("name"):
        queryset = queryset.filter(name=cleaned["name"])
    else:
        queryset = latest_versions(queryset)
    if cleaned.get("task"):
        queryset = queryset.filter(task=cleaned["task"])
    if cleaned.get("format"):
        queryset = queryset.filter(format=cleaned["format"])
    if cleaned.get("license"):
        queryset = queryset.filter(license__iexact=cleaned["license"])
    if cleaned.get("deployment_kind"):
        # deployment_kinds is a JSON list of plain words; matching the quoted word
        # works on SQLite and PostgreSQL alike (JSON `contains` does not exist on SQLite).
        queryset = queryset.filter(deployment_kinds__icontains=f'"{cleaned["deployment_kind"]}"')
    search = cleaned.get("search")
    if search:
        queryset = queryset.filter(
            Q(name__icontains=search)
            | Q(display_name__icontains=search)
            | Q(summary__icontains=search)
            | Q(publisher__icontains=search)
            | Q(task__icontains=search)
        )
    return queryset.order_by("name", "registry", "-version")


def filter_catalog(workspace: Workspace | None, params) -> tuple[CatalogFilterForm, QuerySet[CatalogModel]]:
    """Validate `params` (request.GET) and return the form and the filtered models.

    With invalid parameters the form carries the errors and the queryset is
    filtered by the valid ones only; the API answers 400, the UI shows the error."""
    form = CatalogFilterForm(params)
    form.is_valid()
    cleaned = {key: value for key, value in getattr(form, "cleaned_data", {}).items() if key not in form.errors}
    return form, apply_catalog_filters(visible_models(workspace), cleaned)


def licence_choices(workspace: Workspace | None) -> list[tuple[str, int]]:
    """Licences in the visible catalog with how many models carry each (one query)."""
    rows = (
        latest_versions(visible_models(workspace))
        .values("license")
        .annotate(n=Count("id"))
        .order_by("license")
    )
    return [(row["license"], row["n"]) for row in rows]


def find_model(
    workspace: Workspace, name: str, version: int | None = None, registry: str | None = None
) -> CatalogModel:
    """One visible model by name: the given (or latest) version; the workspace's own
    registry wins over the shared catalog when both hold the name."""
    rows = visible_models(workspace).filter(name=name)
    if registry:
        rows = rows.filter(registry=registry)
    if version is not None:
        rows = rows.filter(version=version)
    # Own models first (registry is the workspace's name), then the newest version.
    candidates = sorted(rows, key=lambda m: (m.workspace_id is None, -m.version))
    if not candidates:
        label = f"{name} version {version}" if version is not None else name
        raise Http404(f"No model '{label}' in this workspace's catalog.")
    return candidates[0]
