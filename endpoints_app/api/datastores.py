"""REST API for datastores (`workspaces/<ws>/datastores`): list, get, create, delete,
and browse a path. Answers never carry credentials: `has_credentials` says whether there are any.
Every member sees datastores; Contributors and Owners create and delete them."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet, check_url_name, request_body
from endpoints_app.errors import Conflict
from endpoints_app.models import BUILTIN_DATASTORE, Datastore, Workspace
from endpoints_app.services import datastores as ds_svc
from endpoints_app.services.audit import Actor

# Fields of `config` that answers show, per type (no secret is ever in config).
SHOWN = {
    "azure_blob": ("account_name", "container_name", "account_url"),
    "s3": ("bucket", "endpoint_url", "region"),
    "local": ("path",),
}


LOCATION_FIELDS = ("account_name", "container_name", "account_url", "bucket", "endpoint_url", "region", "path")


class DatastoreSerializer(serializers.ModelSerializer):
    """A datastore as the API answers it: its location fields (those of its type) at the top level, never its
    credentials. The built-in workspaceblobstore is `builtin()`, a row never saved."""

    type = serializers.CharField(help_text="builtin, azure_blob, s3 or local.")
    is_default = serializers.SerializerMethodField()
    has_credentials = serializers.BooleanField()
    credential_type = serializers.CharField(source="credential_kind", allow_blank=True,
                                            help_text="account_key, sas_token, access_key or ''.")
    uri = serializers.SerializerMethodField(help_text="azureml://datastores/<name>/paths/ : prefix of its paths.")
    account_name = serializers.CharField(source="config.account_name", required=False)
    container_name = serializers.CharField(source="config.container_name", required=False)
    account_url = serializers.CharField(source="config.account_url", required=False)
    bucket = serializers.CharField(source="config.bucket", required=False)
    endpoint_url = serializers.CharField(source="config.endpoint_url", required=False, allow_blank=True)
    region = serializers.CharField(source="config.region", required=False)
    path = serializers.CharField(source="config.path", required=False)
    created_by = serializers.CharField(source="created_by.username", default=None)
    created_at = serializers.DateTimeField(allow_null=True)

    class Meta:
        model = Datastore
        fields = ["name", "type", "description", "is_default", "has_credentials", "credential_type", "uri",
                  *LOCATION_FIELDS, "created_by", "created_at"]
        read_only_fields = fields

    @staticmethod
    def builtin() -> Datastore:
        return Datastore(name=BUILTIN_DATASTORE, type="builtin", description="The studio's own store.")

    def to_representation(self, datastore: Datastore) -> dict:
        answer = super().to_representation(datastore)
        shown = SHOWN.get(datastore.type, ())  # the location fields of its type (no secret is ever in config)
        for field in LOCATION_FIELDS:
            if field in shown:
                answer.setdefault(field, "")
            else:
                answer.pop(field, None)
        return answer

    def get_is_default(self, datastore: Datastore) -> bool:
        return datastore.name == BUILTIN_DATASTORE

    def get_uri(self, datastore: Datastore) -> str:
        return f"azureml://datastores/{datastore.name}/paths/"


class DatastoreCreateSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["azure_blob", "s3", "local"])
    description = serializers.CharField(required=False)
    account_name = serializers.CharField(required=False, help_text="azure_blob")
    container_name = serializers.CharField(required=False, help_text="azure_blob")
    account_url = serializers.CharField(required=False, help_text="azure_blob (or endpoint and protocol)")
    bucket = serializers.CharField(required=False, help_text="s3")
    endpoint_url = serializers.CharField(required=False, help_text="s3")
    region = serializers.CharField(required=False, help_text="s3")
    path = serializers.CharField(required=False, help_text="local: a folder under one IT allowed")
    credentials = serializers.DictField(required=False, help_text="azure_blob: {account_key} or {sas_token}; "
                                        "s3: {access_key_id, secret_access_key}")


class EntrySerializer(serializers.Serializer):
    name = serializers.CharField()
    path = serializers.CharField()
    type = serializers.ChoiceField(choices=["file", "folder"])
    size = serializers.IntegerField()
    uri = serializers.CharField()


# -- views -------------------------------------------------------------------------------------------

@extend_schema_view(
    list=extend_schema(operation_id="datastores_list", responses=DatastoreSerializer(many=True)),
    create=extend_schema(operation_id="datastores_create", request=DatastoreCreateSerializer,
                         responses={201: DatastoreSerializer}),
    retrieve=extend_schema(operation_id="datastores_get", responses=DatastoreSerializer),
    update=extend_schema(operation_id="datastores_put", request=DatastoreCreateSerializer,
                         responses={201: DatastoreSerializer}),
    destroy=extend_schema(operation_id="datastores_delete", responses={204: None}),
    browse=extend_schema(operation_id="datastores_browse", responses=EntrySerializer(many=True),
                         parameters=[OpenApiParameter("path", str,
                                                      description="A folder in the datastore; its root if left out.")]),
)
class DatastoreViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/datastores[/<name>[/browse]]`; the built-in workspaceblobstore is listed first and
    cannot be deleted."""

    def named(self, workspace: Workspace, name: str) -> Datastore:
        if name == BUILTIN_DATASTORE:
            return DatastoreSerializer.builtin()
        found = ds_svc.find_datastore(workspace, name)
        if found is None:
            raise Http404(f"No datastore '{name}' in workspace '{workspace.name}'.")
        return found

    def list(self, request, ws: str) -> Response:
        rows = Datastore.objects.filter(workspace=self.workspace()).select_related("created_by")
        return Response(DatastoreSerializer([DatastoreSerializer.builtin(), *rows], many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        datastore = ds_svc.do_create_datastore(Actor.from_request(request), workspace, request_body(request))
        return Response(DatastoreSerializer(datastore).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        return Response(DatastoreSerializer(self.named(self.workspace(), name)).data)

    def update(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        actor = Actor.from_request(request)
        body = request_body(request)
        check_url_name(body, name, "datastore")
        body["name"] = name
        return Response(DatastoreSerializer(ds_svc.do_create_datastore(actor, workspace, body)).data,
                        status=status.HTTP_201_CREATED)

    def destroy(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        actor = Actor.from_request(request)
        found = self.named(workspace, name)
        if found.pk is None:
            raise Conflict(f"'{BUILTIN_DATASTORE}' is the studio's built-in datastore; it cannot be deleted.",
                           field="name")
        ds_svc.do_delete_datastore(actor, found)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["get"])
    def browse(self, request, ws: str, name: str) -> Response:
        """The folders and files directly under `path`."""
        workspace = self.workspace()
        self.named(workspace, name)
        return Response(EntrySerializer(ds_svc.browse(workspace, name, request.query_params.get("path", "")),
                                        many=True).data)
