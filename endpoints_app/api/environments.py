"""REST API for environments (`workspaces/<ws>/environments`).

GET  workspaces/<ws>/environments                                   latest version of each (?name= every version)
POST workspaces/<ws>/environments                                   create {name, version?, conda_file |
                                                                    pip_requirements, python_version?}
GET  workspaces/<ws>/environments/<name>                            latest version
GET  workspaces/<ws>/environments/<name>/versions/<v>               one version
GET  workspaces/<ws>/environments/<name>/versions/<v>/build-log     the build's log, plain text"""

from __future__ import annotations

from django.http import Http404, HttpResponse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from endpoints_app.api.common import WorkspaceViewSet, request_body
from endpoints_app.models import Environment, EnvironmentBuild, Workspace
from endpoints_app.services import environments as env_svc
from endpoints_app.services.audit import Actor


class BuildSerializer(serializers.ModelSerializer):
    state = serializers.CharField(help_text="NotStarted, Building, Succeeded or Failed.")
    error = serializers.CharField(allow_blank=True, help_text="The installer's last lines when Failed.")
    key = serializers.CharField(help_text="Hash of the normalised content: equal environments share one build.")
    requirements = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = EnvironmentBuild
        fields = ["state", "error", "key", "requirements", "started_at", "finished_at", "size_bytes"]
        read_only_fields = fields


class EnvironmentSerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="asset_id", read_only=True, help_text="azureml:<name>:<version>")
    build = BuildSerializer(read_only=True)
    created_by = serializers.CharField(source="created_by.username", default=None, read_only=True)

    class Meta:
        model = Environment
        fields = ["id", "name", "version", "description", "conda_file", "pip_requirements", "python_version",
                  "is_inline", "build", "created_by", "created_at"]
        read_only_fields = fields


class EnvironmentCreateSerializer(serializers.Serializer):
    name = serializers.CharField()
    version = serializers.CharField(required=False, help_text="The next number when left out.")
    description = serializers.CharField(required=False)
    conda_file = serializers.JSONField(required=False,
                                       help_text="A conda file (mapping or YAML text) with dependencies and pip:")
    pip_requirements = serializers.ListField(child=serializers.CharField(), required=False)
    python_version = serializers.CharField(required=False)


# -- views -------------------------------------------------------------------------------------------

def _newer(a: Environment, b: Environment) -> bool:
    if a.version.isdigit() and b.version.isdigit():
        return int(a.version) > int(b.version)
    return a.created_at > b.created_at


@extend_schema_view(
    list=extend_schema(operation_id="environments_list", responses=EnvironmentSerializer(many=True),
                       parameters=[OpenApiParameter("name", str, description="Every version of this environment.")]),
    create=extend_schema(operation_id="environments_create", request=EnvironmentCreateSerializer,
                         responses={201: EnvironmentSerializer}),
    retrieve=extend_schema(operation_id="environments_get", responses=EnvironmentSerializer),
    version=extend_schema(operation_id="environments_get_version", responses=EnvironmentSerializer),
    build_log=extend_schema(operation_id="environments_build_log", responses={(200, "text/plain"): str}),
)
class EnvironmentViewSet(WorkspaceViewSet):
    """`workspaces/<ws>/environments[/<name>[/versions/<v>[/build-log]]]`."""

    def found(self, workspace: Workspace, name: str, version: str | None) -> Environment:
        env = env_svc.find_environment(workspace, name, version)
        if env is None:
            shown = f"{name}:{version}" if version else name
            raise Http404(f"No environment {shown} in workspace '{workspace.name}'.")
        return env

    def list(self, request, ws: str) -> Response:
        rows = env_svc.visible(self.workspace())
        name = request.query_params.get("name")
        if name:
            return Response(EnvironmentSerializer(rows.filter(name=name), many=True).data)
        latest: dict[str, Environment] = {}
        for env in rows:
            current = latest.get(env.name)
            if current is None or _newer(env, current):
                latest[env.name] = env
        return Response(EnvironmentSerializer(sorted(latest.values(), key=lambda e: e.name), many=True).data)

    def create(self, request, ws: str) -> Response:
        workspace = self.workspace()
        env = env_svc.do_create_environment(Actor.from_request(request), workspace, request_body(request))
        return Response(EnvironmentSerializer(env).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        return Response(EnvironmentSerializer(self.found(self.workspace(), name, None)).data)

    @action(detail=True, methods=["get"], url_path="versions/<str:version>")
    def version(self, request, ws: str, name: str, version: str) -> Response:
        return Response(EnvironmentSerializer(self.found(self.workspace(), name, version)).data)

    @action(detail=True, methods=["get"], url_path="versions/<str:version>/build-log")
    def build_log(self, request, ws: str, name: str, version: str) -> HttpResponse:
        env = self.found(self.workspace(), name, version)
        return HttpResponse(env_svc.read_build_log(env.build), content_type="text/plain; charset=utf-8")
