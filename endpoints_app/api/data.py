"""REST API for data assets (CONTRACT.md: `data`): list, get, create (multipart `name` and one or
more `files`), and a preview of the first rows."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.decorators import api_view, parser_classes
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from endpoints_app.models import DataAsset, Role, Workspace
from endpoints_app.permissions import check_workspace
from endpoints_app.services import data as data_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.specs import parse_int


class DataAssetSerializer(serializers.ModelSerializer):
    """A data asset as the API answers it."""

    id = serializers.CharField(source="asset_id", read_only=True,
                               help_text="studio:data/<name>/versions/<n>: the path a job's input names.")
    type = serializers.CharField(source="kind", read_only=True, help_text="uri_folder or uri_file.")
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = DataAsset
        fields = ["id", "name", "version", "type", "path", "file_count", "size_bytes", "description",
                  "created_by", "created_at"]
        read_only_fields = fields


class PreviewSerializer(serializers.Serializer):
    file = serializers.CharField(allow_null=True)
    kind = serializers.CharField(allow_null=True)
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    error = serializers.CharField(required=False)


CreateSerializer = inline_serializer(
    "DataAssetCreate",
    fields={
        "name": serializers.CharField(),
        "files": serializers.ListField(child=serializers.FileField(), help_text="One or more files."),
        "description": serializers.CharField(required=False),
    },
)


def _asset(workspace: Workspace, name: str, version: int | None) -> DataAsset:
    found = data_svc.find_data_asset(workspace, name, version)
    if found is None:
        shown = f"{name} version {version}" if version else name
        raise Http404(f"No data asset {shown} in workspace '{workspace.name}'.")
    return found


@extend_schema(methods=["GET"], operation_id="data_list", responses=DataAssetSerializer(many=True),
               parameters=[OpenApiParameter("name", str, description="Every version of this asset.")])
@extend_schema(methods=["POST"], operation_id="data_create", request={"multipart/form-data": CreateSerializer},
               responses={201: DataAssetSerializer})
@api_view(["GET", "POST"])
@parser_classes([MultiPartParser, FormParser, JSONParser])
def data_assets(request, ws: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        rows = DataAsset.objects.filter(workspace=workspace).select_related("created_by")
        name = request.query_params.get("name")
        if name:
            rows = rows.filter(name=name)
        return Response(DataAssetSerializer(rows, many=True).data)
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    files = request.FILES.getlist("files") or request.FILES.getlist("file")
    asset = data_svc.do_create_data_asset(
        Actor.from_request(request), workspace, name=(request.data.get("name") or "").strip(), files=files,
        description=request.data.get("description") or "",
    )
    return Response(DataAssetSerializer(asset).data, status=status.HTTP_201_CREATED)


@extend_schema(operation_id="data_get", responses=DataAssetSerializer,
               parameters=[OpenApiParameter("version", int, description="A version; the latest when left out.")])
@api_view(["GET"])
def data_asset(request, ws: str, name: str):
    workspace = check_workspace(request.user, ws)
    raw = request.query_params.get("version")
    version = parse_int(raw, "version", 1, 10**9) if raw not in (None, "") else None
    return Response(DataAssetSerializer(_asset(workspace, name, version)).data)


@extend_schema(operation_id="data_get_version", responses=DataAssetSerializer)
@api_view(["GET"])
def data_asset_version(request, ws: str, name: str, version: int):
    workspace = check_workspace(request.user, ws)
    return Response(DataAssetSerializer(_asset(workspace, name, version)).data)


@extend_schema(operation_id="data_preview", responses=PreviewSerializer,
               parameters=[OpenApiParameter("rows", int), OpenApiParameter("file", str)])
@api_view(["GET"])
def data_asset_preview(request, ws: str, name: str, version: int):
    workspace = check_workspace(request.user, ws)
    asset = _asset(workspace, name, version)
    rows = parse_int(request.query_params.get("rows", 10), "rows", 1, 1000)
    return Response(PreviewSerializer(data_svc.preview(asset, rows, request.query_params.get("file"))).data)
