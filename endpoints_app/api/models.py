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
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet, request_body
from endpoints_app.api.pagination import StudioPagination
from endpoints_app.api.parsers import StudioJSONParser
from endpoints_app.filters import CatalogFilterForm, filter_catalog, find_model
from endpoints_app.models import CatalogModel
from endpoints_app.services.audit import Actor
from endpoints_app.services.models import do_delete_model, do_register_model, do_update_model


class PricingSerializer(serializers.Serializer):
    input_per_1k_tokens = serializers.FloatField()
    output_per_1k_tokens = serializers.FloatField()
    currency = serializers.CharField()


class CatalogModelSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="asset_id", read_only=True)
    workspace = serializers.SerializerMethodField()
    pricing = serializers.SerializerMethodField()
    environment = serializers.CharField(source="environment.asset_id", default=None, read_only=True,
                                        help_text="azureml:<name>:<version> of the environment it runs in, if any.")

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
            "environment",
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

class ModelRegisterSerializer(serializers.Serializer):
    name = serializers.CharField()
    file = serializers.FileField(help_text="A scikit-learn joblib/pickle, an ONNX file, a zip with score.py, "
                                           "or (type mlflow_model) a zip of an MLflow model folder with MLmodel.")
    format = serializers.ChoiceField(choices=["sklearn", "onnx", "custom", "mlflow"], required=False)
    type = serializers.ChoiceField(choices=["custom_model", "mlflow_model"], required=False,
                                   help_text="As in model.yml: mlflow_model for an MLflow model.")
    environment = serializers.CharField(required=False, help_text="azureml:<name>:<version>: check and serve "
                                        "the model in this environment (it must be built).")
    task = serializers.ChoiceField(choices=CatalogModel.Task.values, required=False)
    description = serializers.CharField(required=False)
    scoring_script = serializers.CharField(required=False, help_text="For a zip: the script's name (score.py).")
    sample_request = serializers.CharField(required=False, help_text="JSON: the body the Test tab opens with.")


def _validated_filters(request) -> None:
    form = CatalogFilterForm(request.query_params)
    if not form.is_valid():
        field, messages = next(iter(form.errors.items()))
        raise ValidationError({field: messages})


class ModelUpdateSerializer(serializers.Serializer):
    sample_request = serializers.JSONField(required=False, help_text="The body the Test tab opens with.")
    description = serializers.CharField(required=False)


# -- views -------------------------------------------------------------------------------------------

_REGISTRY = [OpenApiParameter("registry", str, description="'studio' or the workspace's name.")]


def _text(request, field: str) -> str | None:
    return (request.data.get(field) or "").strip() or None


@extend_schema_view(
    list=extend_schema(operation_id="models_list", parameters=FILTER_PARAMETERS, responses=CatalogModelPage),
    create=extend_schema(operation_id="models_create", request={"multipart/form-data": ModelRegisterSerializer},
                         responses={201: CatalogModelSerializer}),
    retrieve=extend_schema(operation_id="models_get", responses=CatalogModelSerializer, parameters=[
        OpenApiParameter("version", OpenApiTypes.INT, description="A version; the latest when left out."),
        OpenApiParameter("registry", str, description="'studio' for the shared catalog or the workspace's name."),
    ]),
)
class CatalogModelViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/models[/<name>[/versions/<n>]]`: the shared catalog and the workspace's own models
    (register: multipart; filters shared with the catalog page, `endpoints_app/filters.py`)."""

    parser_classes = [MultiPartParser, FormParser]

    def list(self, request, ws: str) -> Response:
        workspace = self.workspace()
        _validated_filters(request)
        _, queryset = filter_catalog(workspace, request.query_params)
        paginator = StudioPagination()
        page = paginator.paginate_queryset(queryset, request)
        return paginator.get_paginated_response(CatalogModelSerializer(page, many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
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
            format=_text(request, "format"),
            task=_text(request, "task"),
            description=request.data.get("description") or "",
            scoring_script=_text(request, "scoring_script"),
            sample_request=request.data.get("sample_request"),
            environment=_text(request, "environment"),
            type=_text(request, "type"),
        )
        return Response(CatalogModelSerializer(model).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        found = find_model(workspace, name, _version_param(request), request.query_params.get("registry"))
        return Response(CatalogModelSerializer(found).data)

    @extend_schema(methods=["GET"], operation_id="models_get_version", parameters=_REGISTRY,
                   responses={200: CatalogModelSerializer})
    @extend_schema(methods=["PATCH"], operation_id="models_update_version", parameters=_REGISTRY,
                   request=ModelUpdateSerializer, responses={200: CatalogModelSerializer})
    @extend_schema(methods=["DELETE"], operation_id="models_delete_version", parameters=_REGISTRY,
                   responses={204: None})
    @action(detail=True, methods=["get", "patch", "delete"], url_path="versions/<int:version>",
            parser_classes=[StudioJSONParser, MultiPartParser, FormParser])
    def version(self, request, ws: str, name: str, version: int) -> Response:
        """GET a version; PATCH attaches a sample request or a description to a workspace's own model;
        DELETE removes a workspace's own model version (409 while a deployment uses it)."""
        workspace = self.workspace()
        found = find_model(workspace, name, version, request.query_params.get("registry"))
        actor = Actor.from_request(request)
        if request.method == "DELETE":
            do_delete_model(actor, workspace, found)
            return Response(status=status.HTTP_204_NO_CONTENT)
        if request.method == "PATCH":
            data = request_body(request)
            found = do_update_model(actor, workspace, found, sample_request=data.get("sample_request"),
                                    description=data.get("description"))
        return Response(CatalogModelSerializer(found).data)


def _version_param(request) -> int | None:
    raw = request.query_params.get("version")
    if raw in (None, ""):
        return None
    if not raw.isdigit():
        raise ValidationError({"version": ["A version is a positive whole number."]})
    return int(raw)
