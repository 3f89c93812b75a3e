"""REST API for computes (`/api/v1/computes`): list and get for every signed-in user (computes are
visible to every workspace), create, update and delete for IT (staff; 403 otherwise). An answer carries
the compute's `state` and `nodes` as read from where it runs (controller/clusters.py: a Ray head that
cannot be reached is state Unreachable, never an error)."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.response import Response

from endpoints_app.api.common import check_url_name, request_body
from endpoints_app.controller import clusters
from endpoints_app.models import Compute
from endpoints_app.services import computes as compute_svc
from endpoints_app.services.audit import Actor


class NodeSerializer(serializers.Serializer):
    name = serializers.CharField()
    address = serializers.CharField(help_text="host:port of the node (Ray: its raylet; local: the node's host).")
    alive = serializers.BooleanField()
    resources = serializers.DictField(child=serializers.FloatField(),
                                      help_text="CPU, memory (GB) and custom resources the node offers.")
    free = serializers.DictField(child=serializers.FloatField(), help_text="What is free of them now.")
    instances = serializers.ListField(child=serializers.CharField(), help_text="Instances running on it.")


class ComputeSerializer(serializers.ModelSerializer):
    """A compute, with its state and nodes as seen now (clusters.view) rather than the stored row's."""

    address = serializers.CharField(help_text="host:port of the Ray head; '' for the head the studio starts itself.")
    state = serializers.SerializerMethodField()
    state_detail = serializers.SerializerMethodField(help_text="Why it is not Ready.")
    head_address = serializers.SerializerMethodField(help_text="Where the studio reaches its Ray head.")
    nodes = serializers.SerializerMethodField()
    deployments = serializers.IntegerField(source="deployments.count", help_text="Deployments that run on it.")
    created_by = serializers.CharField(source="created_by.username", default=None)

    class Meta:
        model = Compute
        fields = ["name", "type", "address", "description", "state", "state_detail", "head_address", "nodes",
                  "deployments", "created_by", "created_at"]
        read_only_fields = fields

    def to_representation(self, compute: Compute) -> dict:
        self._seen = clusters.view(compute)
        return super().to_representation(compute)

    @extend_schema_field(serializers.ChoiceField(choices=Compute.State.values))
    def get_state(self, compute: Compute) -> str:
        return self._seen.state

    def get_state_detail(self, compute: Compute) -> str:
        return self._seen.detail

    def get_head_address(self, compute: Compute) -> str:
        return clusters.head_address(compute) if compute.type == Compute.Type.RAY else ""

    @extend_schema_field(NodeSerializer(many=True))
    def get_nodes(self, compute: Compute) -> list[dict]:
        return NodeSerializer(self._seen.nodes, many=True).data


class ComputeCreateSerializer(serializers.Serializer):
    name = serializers.CharField()
    type = serializers.ChoiceField(choices=["ray"])
    address = serializers.CharField(required=False, allow_blank=True)
    description = serializers.CharField(required=False, allow_blank=True)


@extend_schema_view(
    list=extend_schema(responses=ComputeSerializer(many=True)),
    retrieve=extend_schema(responses=ComputeSerializer),
    create=extend_schema(request=ComputeCreateSerializer, responses={201: ComputeSerializer}),
    partial_update=extend_schema(request=ComputeCreateSerializer, responses=ComputeSerializer),
    destroy=extend_schema(responses={204: None}),
)
class ComputeViewSet(viewsets.ViewSet):
    """`computes[/<name>]`: IT-managed, visible to every workspace (no workspace in the URL)."""

    lookup_field = "name"
    lookup_value_converter = "str"

    def list(self, request) -> Response:
        return Response(ComputeSerializer(compute_svc.computes(), many=True).data)

    def retrieve(self, request, name: str) -> Response:
        return Response(ComputeSerializer(_named(name)).data)

    def create(self, request) -> Response:
        compute = compute_svc.do_create_compute(Actor.from_request(request), request_body(request))
        return Response(ComputeSerializer(compute).data, status=status.HTTP_201_CREATED)

    def partial_update(self, request, name: str) -> Response:
        actor = Actor.from_request(request)
        compute_svc.check_it(actor)  # 403 before a 404 says whether the compute exists
        body = request_body(request)
        check_url_name(body, name, "compute")
        return Response(ComputeSerializer(compute_svc.do_update_compute(actor, _named(name), body)).data)

    def destroy(self, request, name: str) -> Response:
        actor = Actor.from_request(request)
        compute_svc.check_it(actor)
        compute_svc.do_delete_compute(actor, _named(name))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _named(name: str) -> Compute:
    found = compute_svc.find_compute(name)
    if found is None:
        raise Http404(f"No compute '{name}'.")
    return found
