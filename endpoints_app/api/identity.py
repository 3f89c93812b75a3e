"""Service principals of a workspace: `workspaces/<ws>/service-principals` (list; Owner: grant
`{client_id, role, display_name?}`, which registers the provider's client on first use, and revoke)."""

from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet
from endpoints_app.models import Membership, Role
from endpoints_app.services.audit import Actor
from endpoints_app.services.identity import (
    do_grant_service_principal,
    do_revoke_service_principal,
    service_principals_of,
)


class ServicePrincipalSerializer(serializers.ModelSerializer):
    """A service principal's membership of the workspace."""

    client_id = serializers.CharField(source="user.service_principal.client_id",
                                      help_text="The provider's client id (a token's azp, client_id or appid).")
    display_name = serializers.CharField(source="user.service_principal.display_name", allow_blank=True)
    created = serializers.DateTimeField(source="created_at")

    class Meta:
        model = Membership
        fields = ["client_id", "display_name", "role", "created"]
        read_only_fields = fields


class ServicePrincipalCreateSerializer(serializers.Serializer):
    client_id = serializers.CharField(help_text="The provider's client id (a token's azp, client_id or appid).")
    display_name = serializers.CharField(required=False, allow_blank=True)
    role = serializers.ChoiceField(choices=Role.values)


@extend_schema_view(
    list=extend_schema(operation_id="workspaces_service_principals_list",
                       responses=ServicePrincipalSerializer(many=True)),
    create=extend_schema(request=ServicePrincipalCreateSerializer, responses={201: ServicePrincipalSerializer}),
    destroy=extend_schema(responses={204: None}),
)
class ServicePrincipalViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/service-principals[/<client_id>]`: members list them; Owners grant and revoke."""

    lookup_field = "client_id"
    lookup_value_converter = "path"
    write_role = Role.OWNER

    def list(self, request, ws: str) -> Response:
        return Response(ServicePrincipalSerializer(service_principals_of(self.workspace()), many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        body = request.data if isinstance(request.data, dict) else {}
        membership = do_grant_service_principal(Actor.from_request(request), workspace, body.get("client_id"),
                                                body.get("role"), body.get("display_name") or "")
        return Response(ServicePrincipalSerializer(membership).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, ws: str, client_id: str) -> Response:
        do_revoke_service_principal(Actor.from_request(request), self.workspace(), client_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
