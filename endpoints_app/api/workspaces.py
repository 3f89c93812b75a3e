from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet, resource_schema
from endpoints_app.models import InstanceType, Membership, Role
from endpoints_app.services.audit import Actor
from endpoints_app.services.workspaces import do_add_member, do_change_member_role, do_remove_member


class InstanceTypeSerializer(serializers.ModelSerializer):
    memory_gb = serializers.FloatField()
    price_per_hour = serializers.FloatField()

    class Meta:
        model = InstanceType
        fields = ["name", "family", "cores", "memory_gb", "price_per_hour"]


class WorkspaceMembershipSerializer(serializers.ModelSerializer):
    name = serializers.CharField(source="workspace.name")
    display_name = serializers.CharField(source="workspace.display_name")

    class Meta:
        model = Membership
        fields = ["name", "display_name", "role"]


class MemberSerializer(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")

    class Meta:
        model = Membership
        fields = ["username", "role", "created_at"]


class MemberCreateSerializer(serializers.Serializer):
    username = serializers.CharField()
    role = serializers.CharField()


class MemberUpdateSerializer(serializers.Serializer):
    role = serializers.CharField()


@extend_schema(responses=InstanceTypeSerializer(many=True))
@api_view(["GET"])
def instance_types(request):
    rows = InstanceType.objects.filter(is_active=True)
    return Response(InstanceTypeSerializer(rows, many=True).data)


@extend_schema(responses=WorkspaceMembershipSerializer(many=True))
@api_view(["GET"])
def workspaces(request):
    rows = Membership.objects.filter(user=request.user).select_related("workspace")
    return Response(WorkspaceMembershipSerializer(rows, many=True).data)


@resource_schema(MemberSerializer, MemberUpdateSerializer, put=(200,), deleted=(204,),
                 list=extend_schema(operation_id="workspaces_members_list", responses=MemberSerializer(many=True)),
                 create=extend_schema(request=MemberCreateSerializer, responses={201: MemberSerializer}))
class MemberViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/members[/<username>]`: members read them, Owners add, change and remove them."""

    lookup_field = "username"
    write_role = Role.OWNER

    def found(self, username: str) -> Membership:
        members = Membership.objects.select_related("user")
        return get_object_or_404(members, workspace=self.workspace(), user__username=username)

    def list(self, request, ws: str) -> Response:
        rows = self.workspace().memberships.select_related("user")
        return Response(MemberSerializer(rows, many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        body = MemberCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = do_add_member(Actor.from_request(request), workspace, **body.validated_data)
        return Response(MemberSerializer(membership).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, username: str) -> Response:
        return Response(MemberSerializer(self.found(username)).data)

    def update(self, request, ws: str, username: str) -> Response:
        membership = self.found(username)
        body = MemberUpdateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        membership = do_change_member_role(Actor.from_request(request), membership, body.validated_data["role"])
        return Response(MemberSerializer(membership).data)

    def partial_update(self, request, ws: str, username: str) -> Response:
        return self.update(request, ws, username)

    def destroy(self, request, ws: str, username: str) -> Response:
        do_remove_member(Actor.from_request(request), self.found(username))
        return Response(status=status.HTTP_204_NO_CONTENT)
