"""REST API for data assets (`workspaces/<ws>/data`): list, get, create (multipart `name` and one or
more `files`), and a preview of the first rows."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet, request_body
from endpoints_app.api.parsers import StudioJSONParser
from endpoints_app.models import DataAsset, Workspace
from endpoints_app.services import data as data_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.specs import parse_int


class DataAssetSerializer(serializers.ModelSerializer):
    """A data asset as the API answers it."""

    id = serializers.CharField(source="asset_id", read_only=True,
                               help_text="studio:data/<name>/versions/<n>: the path a job's input names.")
    type = serializers.CharField(source="kind", read_only=True, help_text="uri_folder or uri_file.")
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)
    uri = serializers.CharField(read_only=True, help_text="Where its files are: azureml://datastores/<ds>/paths/<path>.")
    datastore = serializers.SerializerMethodField(help_text="The datastore its files are in.")

    class Meta:
        model = DataAsset
        fields = ["id", "name", "version", "type", "path", "uri", "datastore", "file_count", "size_bytes",
                  "description", "created_by", "created_at"]
        read_only_fields = fields

    def get_datastore(self, asset: DataAsset) -> str:
        return asset.datastore.name if asset.datastore_id else "workspaceblobstore"


class DataAssetPreviewSerializer(serializers.Serializer):
    file = serializers.CharField(allow_null=True)
    kind = serializers.CharField(allow_null=True)
    columns = serializers.ListField(child=serializers.CharField())
    rows = serializers.ListField(child=serializers.ListField(child=serializers.CharField()))
    error = serializers.CharField(required=False)


class DataAssetCreateSerializer(serializers.Serializer):
    name = serializers.CharField()
    files = serializers.ListField(child=serializers.FileField(), help_text="One or more files.")
    description = serializers.CharField(required=False)


# -- views -------------------------------------------------------------------------------------------

@extend_schema_view(
    list=extend_schema(operation_id="data_list", responses=DataAssetSerializer(many=True),
                       parameters=[OpenApiParameter("name", str, description="Every version of this asset.")]),
    create=extend_schema(operation_id="data_create", request={"multipart/form-data": DataAssetCreateSerializer},
                         responses={201: DataAssetSerializer}),
    retrieve=extend_schema(operation_id="data_get", responses=DataAssetSerializer, parameters=[
        OpenApiParameter("version", int, description="A version; the latest when left out.")]),
    version=extend_schema(operation_id="data_get_version", responses=DataAssetSerializer),
    preview=extend_schema(operation_id="data_preview", responses=DataAssetPreviewSerializer,
                          parameters=[OpenApiParameter("rows", int), OpenApiParameter("file", str)]),
)
class DataAssetViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/data[/<name>[/versions/<n>[/preview]]]`: list, create (multipart `name` and one or
    more `files`, or a JSON reference to a datastore `path`), get, and a preview of the first rows."""

    parser_classes = [MultiPartParser, FormParser, StudioJSONParser]

    def found(self, workspace: Workspace, name: str, version: int | None) -> DataAsset:
        asset = data_svc.find_data_asset(workspace, name, version)
        if asset is None:
            shown = f"{name} version {version}" if version else name
            raise Http404(f"No data asset {shown} in workspace '{workspace.name}'.")
        return asset

    def list(self, request, ws: str) -> Response:
        rows = DataAsset.objects.filter(workspace=self.workspace()).select_related("created_by", "datastore")
        name = request.query_params.get("name")
        if name:
            rows = rows.filter(name=name)
        return Response(DataAssetSerializer(rows, many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        files = request.FILES.getlist("files") or request.FILES.getlist("file")
        body = request_body(request)
        name = body.get("name") or ""
        name = name.strip() if isinstance(name, str) else name  # the service names a wrong type
        if not files and body.get("path"):
            # A version that points at a datastore path (nothing is copied).
            asset = data_svc.do_create_data_asset_reference(
                Actor.from_request(request), workspace, name=name, kind=body.get("type"), path=body.get("path"),
                description=body.get("description"))
        else:
            asset = data_svc.do_create_data_asset(
                Actor.from_request(request), workspace, name=name, files=files,
                description=body.get("description") or "",
            )
        return Response(DataAssetSerializer(asset).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        raw = request.query_params.get("version")
        version = parse_int(raw, "version", 1, 10**9) if raw not in (None, "") else None
        return Response(DataAssetSerializer(self.found(workspace, name, version)).data)

    @action(detail=True, methods=["get"], url_path="versions/<int:version>")
    def version(self, request, ws: str, name: str, version: int) -> Response:
        return Response(DataAssetSerializer(self.found(self.workspace(), name, version)).data)

    @action(detail=True, methods=["get"], url_path="versions/<int:version>/preview")
    def preview(self, request, ws: str, name: str, version: int) -> Response:
        asset = self.found(self.workspace(), name, version)
        rows = parse_int(request.query_params.get("rows", 10), "rows", 1, 1000)
        preview = data_svc.preview(asset, rows, request.query_params.get("file"))
        return Response(DataAssetPreviewSerializer(preview).data)
