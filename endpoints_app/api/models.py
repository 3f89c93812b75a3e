"""Catalog models of a workspace: the shared catalog plus the models it registered.

GET  workspaces/<ws>/models                       latest version of each model (filters below)
GET  workspaces/<ws>/models?name=<name>           every version of one model
POST workspaces/<ws>/models                       register (multipart: name, file, format?, task?, description?)
GET  workspaces/<ws>/models/<name>                latest version; ?version=N for another one
GET  workspaces/<ws>/models/<name>/versions/<n>   one version

Filters (shared with the catalog page): task, format, license, deployment_kind, search.
When a workspace registers a model with the name of a shared one, `?registry=` picks
between them; without it the workspace's own model wins."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.exceptions import ValidationError
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings

from endpoints_app.api.pagination import StudioPagination
from endpoints_app.filters import CatalogFilterForm, filter_catalog, find_model
from endpoints_app.models import CatalogModel, Role
from endpoints_app.permissions import check_workspace
from endpoints_app.services.audit import Actor
from endpoints_app.services.models import do_register_model


class PricingSerializer(serializers.Serializer):
    input_per_1k_tokens = serializers.FloatField()
    output_per_1k_tokens = serializers.FloatField()
    currency = serializers.CharField()


class CatalogModelSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="asset_id", read_only=True)
    workspace = serializers.SerializerMethodField()
    pricing = serializers.SerializerMethodField()

    class Meta:
        model = CatalogModel
        fields = [
            "id",
            "name",
            "version",
            "registry",
            "workspace",
            "display_name",
            "publisher",
            "task",
            "format",
            "license",
            "deployment_kinds",
            "summary",
            "description",
            "intended_use",
            "limitations",
            "input_schema",
            "output_schema",
            "sample_request",
            "sample_response",
            "pricing",
            "tags",
            "created_at",
        ]

    def get_workspace(self, obj: CatalogModel) -> str | None:
        # The registry of a workspace's own model is the workspace's name; no join needed.
        return obj.registry if obj.workspace_id else None

    @extend_schema_field(PricingSerializer(allow_null=True))
    def get_pricing(self, obj: CatalogModel) -> dict | None:
        if not obj.is_foundation:
            return None
        return {
            "input_per_1k_tokens": float(obj.price_input_per_1k),
            "output_per_1k_tokens": float(obj.price_output_per_1k or 0),
            "currency": "USD",
        }


class CatalogModelPage(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = CatalogModelSerializer(many=True)


FILTER_PARAMETERS = [
    OpenApiParameter("search", str, description="Words in the name, display name, summary, publisher or task."),
    OpenApiParameter("task", str, enum=CatalogModel.Task.values),
    OpenApiParameter("format", str, enum=CatalogModel.Format.values),
    OpenApiParameter("license", str, description="Exact licence, case-insensitive."),
    OpenApiParameter("deployment_kind", str, enum=["online", "batch", "serverless"]),
    OpenApiParameter("name", str, description="List every version of this model instead of the latest of each."),
    OpenApiParameter("limit", OpenApiTypes.INT, description="Page size (default 50, at most 500)."),
    OpenApiParameter("offset", OpenApiTypes.INT, description="Rows to skip."),
]

RegisterSerializer = inline_serializer(
    "ModelRegister",
    fields={
        "name": serializers.CharField(),
        "file": serializers.FileField(help_text="A scikit-learn joblib/pickle, an ONNX file, or a zip with score.py."),
        "format": serializers.ChoiceField(choices=["sklearn", "onnx", "custom"], required=False),
        "task": serializers.ChoiceField(choices=CatalogModel.Task.values, required=False),
        "description": serializers.CharField(required=False),
        "scoring_script": serializers.CharField(required=False, help_text="For a zip: the script's name (score.py)."),
    },
)


class _NoFormatOverride:
    """DRF settings with the `?format=` renderer override off: `format` is a filter here."""

    URL_FORMAT_OVERRIDE = None

    def __getattr__(self, name):
        return getattr(api_settings, name)


class FormatIsAFilter(DefaultContentNegotiation):
    settings = _NoFormatOverride()


def format_is_a_filter(func):
    func.content_negotiation_class = FormatIsAFilter
    return func


def _validated_filters(request) -> None:
    form = CatalogFilterForm(request.query_params)
    if not form.is_valid():
        field, messages = next(iter(form.errors.items()))
        raise ValidationError({field: messages})


@extend_schema(methods=["GET"], operation_id="models_list", parameters=FILTER_PARAMETERS, responses=CatalogModelPage)
@extend_schema(
    methods=["POST"],
    operation_id="models_create",
    request={"multipart/form-data": RegisterSerializer},
    responses={201: CatalogModelSerializer},
)
@api_view(["GET", "POST"])
@parser_classes([MultiPartParser, FormParser])
@format_is_a_filter
def models(request, ws: str):
    if request.method == "POST":
        return _register(request, ws)
    workspace = check_workspace(request.user, ws)
    _validated_filters(request)
    _, queryset = filter_catalog(workspace, request.query_params)
    paginator = StudioPagination()
    page = paginator.paginate_queryset(queryset, request)
    return paginator.get_paginated_response(CatalogModelSerializer(page, many=True).data)


def _register(request, ws: str) -> Response:
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    upload = request.FILES.get("file")
    if upload is None:
        raise ValidationError({"file": ["Upload the model file as the multipart field 'file'."]})
    name = (request.data.get("name") or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the model a name."]})
    model = do_register_model(
        Actor.from_request(request),
        workspace,
        name=name,
        file=upload,
        format=(request.data.get("format") or "").strip() or None,
        task=(request.data.get("task") or "").strip() or None,
        description=request.data.get("description") or "",
        scoring_script=(request.data.get("scoring_script") or "").strip() or None,
    )
    return Response(CatalogModelSerializer(model).data, status=status.HTTP_201_CREATED)


def _version_param(request) -> int | None:
    raw = request.query_params.get("version")
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise ValidationError({"version": ["A version is a positive whole number."]})
    return int(raw)


@extend_schema(
    operation_id="models_get",
    parameters=[
        OpenApiParameter("version", OpenApiTypes.INT, description="A version; the latest when left out."),
        OpenApiParameter("registry", str, description="'studio' for the shared catalog or the workspace's name."),
    ],
    responses=CatalogModelSerializer,
)
@api_view(["GET"])
def model(request, ws: str, name: str):
    workspace = check_workspace(request.user, ws)
    found = find_model(workspace, name, _version_param(request), request.query_params.get("registry"))
    return Response(CatalogModelSerializer(found).data)


@extend_schema(
    operation_id="models_get_version",
    parameters=[OpenApiParameter("registry", str, description="'studio' or the workspace's name.")],
    responses=CatalogModelSerializer,
)
@api_view(["GET"])
def model_version(request, ws: str, name: str, version: int):
    workspace = check_workspace(request.user, ws)
    found = find_model(workspace, name, version, request.query_params.get("registry"))
    return Response(CatalogModelSerializer(found).data)
