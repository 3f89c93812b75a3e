"""What the REST API's resources share: reading a request body, finding an endpoint or deployment by
its URL, and the serializers of shapes several resources answer with (keys, tokens, the fields every
endpoint, deployment and instance has).

The API's shape, NetBox's (model, serializer, viewset per resource), one resource module a resource
(`api/<resource>.py`):
- a response is built by the serializer the schema names for it: a `ModelSerializer` over the row,
  `Meta.fields` in the order the answer lists them (a plain `Serializer` only for a shape that is no
  row, such as keys), never by hand;
- a request body is documented by `<Resource>CreateSerializer` (or `...UpdateSerializer`) and parsed
  and checked by the service the view calls, which writes;
- a `WorkspaceViewSet` per resource (list, create, retrieve, update, partial_update, destroy and its
  actions), which `api/urls.py` registers on a `StudioRouter`; what is no resource (a check, a report)
  is a function view with its own `path()`."""

from __future__ import annotations

from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.permissions import SAFE_METHODS
from rest_framework.response import Response
from rest_framework.routers import SimpleRouter

from endpoints_app.errors import InvalidInput
from endpoints_app.inference_urls import inference_base_url
from endpoints_app.models import Deployment, Endpoint, Instance, Role, Workspace
from endpoints_app.permissions import check_workspace
from endpoints_app.services import keys as key_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.specs import check_endpoint_fields

HIDDEN_VALUE = "(hidden)"


# -- views and their URLs -----------------------------------------------------------------------------

class StudioRouter(SimpleRouter):
    """DRF's router with the API's URLs: no trailing slash, Django path converters (`<str:ws>` in a
    prefix, a viewset's `lookup_value_converter` for its lookup)."""

    def __init__(self) -> None:
        super().__init__(trailing_slash=False, use_regex_path=False)


def resource_schema(shape: type[serializers.Serializer], body: type[serializers.Serializer] | None, *,
                    created: tuple[int, ...] = (201,), put: tuple[int, ...] = (200, 201),
                    patch: tuple[int, ...] = (200,), deleted: tuple[int, ...] = (202, 204), **more):
    """The OpenAPI schema of a resource viewset's standard actions (those it has): `shape` answers them
    (a list of it for `list`; 204 answers nothing), `body` documents what create and update take, and
    the tuples are the statuses each answers with. `more`: the schema of other actions, by name (or an
    override of a standard one)."""

    def answers(codes: tuple[int, ...]) -> dict:
        return {code: None if code == 204 else shape for code in codes}

    standard = {
        "list": extend_schema(responses=shape(many=True)),
        "create": extend_schema(request=body, responses=answers(created)),
        "retrieve": extend_schema(responses=shape),
        "update": extend_schema(request=body, responses=answers(put)),
        "partial_update": extend_schema(request=body, responses=answers(patch)),
        "destroy": extend_schema(responses=answers(deleted)),
    }

    def decorate(viewset: type) -> type:
        actions = {name: schema for name, schema in {**standard, **more}.items() if hasattr(viewset, name)}
        return extend_schema_view(**actions)(viewset)

    return decorate


def endpoint_schema(shape: type[EndpointBaseSerializer], body: type[serializers.Serializer], **more):
    """`resource_schema` of an EndpointViewSetBase: its keys and token too."""
    return resource_schema(shape, body, list_keys=extend_schema(request=None, responses=KeysSerializer),
                           token=extend_schema(request=None, responses=TokenSerializer), **more)


class WorkspaceViewSet(viewsets.ViewSet):
    """A resource of the workspace the URL names (`ws`): its members read it (GET), `write_role` and
    above change it (any other method)."""

    lookup_field = "name"
    lookup_value_converter = "str"
    write_role: str = Role.CONTRIBUTOR

    def workspace(self) -> Workspace:
        need = Role.READER if self.request.method in SAFE_METHODS else self.write_role
        return check_workspace(self.request.user, self.kwargs["ws"], need)


# -- requests -----------------------------------------------------------------------------------------

def request_body(request) -> dict:
    data = request.data
    if hasattr(data, "dict"):
        data = data.dict()
    if not isinstance(data, dict):
        raise InvalidInput("The request body must be a JSON object.")
    return data


def check_url_name(body: dict, name: str, what: str) -> None:
    """A PUT names its resource in the URL; a body naming another one is a mistake, not a rename."""
    if body.get("name") not in (None, "", name):
        raise InvalidInput(f"The body names {what} '{body['name']}' but the URL names '{name}'.", field="name")


def endpoint_named(workspace: Workspace, name: str, kind: Endpoint.Kind = Endpoint.Kind.ONLINE) -> Endpoint:
    endpoint = Endpoint.objects.filter(workspace=workspace, name=name, kind=kind).first()
    if endpoint is None:
        raise Http404(f"No {kind.value} endpoint '{name}' in workspace '{workspace.name}'.")
    return endpoint


def deployment_named(endpoint: Endpoint, name: str) -> Deployment:
    deployment = (
        Deployment.objects.select_related("endpoint", "model", "instance_type", "compute")
        .prefetch_related("instances__node")
        .filter(endpoint=endpoint, name=name)
        .first()
    )
    if deployment is None:
        raise Http404(f"Endpoint '{endpoint.name}' has no deployment '{name}'.")
    return deployment


# -- keys and tokens (online, batch and serverless endpoints, the workspace's inference keys) ----------

class KeysSerializer(serializers.Serializer):
    primary_key = serializers.CharField()
    secondary_key = serializers.CharField()


class RegenerateKeySerializer(serializers.Serializer):
    key_type = serializers.ChoiceField(choices=["primary", "secondary"])


class RegeneratedKeySerializer(serializers.Serializer):
    """The key made anew: `{"key_type": "primary", "primary_key": ...}` (or secondary)."""

    key_type = serializers.ChoiceField(choices=["primary", "secondary"])
    primary_key = serializers.CharField(required=False, help_text="When key_type is primary.")
    secondary_key = serializers.CharField(required=False, help_text="When key_type is secondary.")

    @classmethod
    def of(cls, key_type: str, key: str) -> dict:
        return cls({"key_type": key_type, f"{key_type}_key": key}).data


class TokenSerializer(serializers.Serializer):
    access_token = serializers.CharField()
    expiry_time_utc = serializers.IntegerField(help_text="Unix time (seconds).")
    token_type = serializers.CharField()


# -- what every endpoint, deployment and instance shows -----------------------------------------------

ENDPOINT_FIELDS = ("name", "kind", "auth_mode", "description", "tags")
ENDPOINT_STATE_FIELDS = ("provisioning_state", "error")


class EndpointBaseSerializer(serializers.ModelSerializer):
    """An online or batch endpoint; `context["request"]` gives the base of its URIs, which subclasses
    complete with `scoring_path`."""

    scoring_path = "score"
    scoring_uri = serializers.SerializerMethodField()
    deployments = serializers.SerializerMethodField()

    class Meta:
        model = Endpoint
        fields = [*ENDPOINT_FIELDS, *ENDPOINT_STATE_FIELDS, "scoring_uri", "deployments", "created_at", "updated_at"]
        read_only_fields = fields

    def uri(self, endpoint: Endpoint, path: str) -> str:
        return f"{inference_base_url(self.context['request'])}/inference/{endpoint.name}/{path}"

    @extend_schema_field(OpenApiTypes.URI)
    def get_scoring_uri(self, endpoint: Endpoint) -> str:
        return self.uri(endpoint, self.scoring_path)

    def get_deployments(self, endpoint: Endpoint) -> list[str]:
        return [d.name for d in endpoint.deployments.all()]


class EndpointCreateBaseSerializer(serializers.Serializer):
    """What every online or batch endpoint's body may give (request documentation: the service parses it)."""

    name = serializers.CharField(help_text="A DNS label, unique in the studio.")
    auth_mode = serializers.ChoiceField(choices=Endpoint.AuthMode.choices, default=Endpoint.AuthMode.KEY)
    description = serializers.CharField(required=False)
    tags = serializers.DictField(required=False)


class DeploymentCreateBaseSerializer(serializers.Serializer):
    """What every deployment's body may give (request documentation: the service parses it)."""

    name = serializers.CharField()
    model = serializers.CharField(help_text="studio://registries/<r>/models/<n>/versions/<v> or <name>:<version>")
    code_configuration = serializers.DictField(required=False, help_text="{code, scoring_script}")
    environment_variables = serializers.DictField(child=serializers.CharField(), required=False)
    instance_type = serializers.CharField(required=False)
    instance_count = serializers.IntegerField(required=False, default=1)
    environment = serializers.JSONField(
        required=False, help_text="azureml:<name>:<version>, <name>@latest, or an inline environment "
                                  "{conda_file | pip_requirements, python_version?}")
    compute = serializers.CharField(required=False, help_text="A compute's name (or azureml:<name>); default local.")


DEPLOYMENT_FIELDS = ("name", "endpoint_name", "model", "model_format", "code_configuration",
                     "environment_variables", "environment", "compute", "instance_type", "instance_count")


class DeploymentBaseSerializer(serializers.ModelSerializer):
    """An online or batch deployment. `context["reveal_env"]` False (a Reader asks): environment
    variable names, not their values (they are often credentials)."""

    endpoint_name = serializers.CharField(source="endpoint.name")
    model = serializers.CharField(source="model.asset_id")
    model_format = serializers.CharField(source="model.format")
    code_configuration = serializers.DictField(allow_null=True, help_text="{code, scoring_script}")
    environment_variables = serializers.SerializerMethodField()
    environment = serializers.CharField(source="environment.asset_id", default=None)
    compute = serializers.CharField(source="compute.name", help_text="Where its instances run.")
    instance_type = serializers.CharField(source="instance_type.name")
    instances = serializers.SerializerMethodField()

    class Meta:
        model = Deployment
        fields = [*DEPLOYMENT_FIELDS, *ENDPOINT_STATE_FIELDS, "instances", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.CharField()))
    def get_environment_variables(self, deployment: Deployment) -> dict:
        env = deployment.environment_variables or {}
        return env if self.context.get("reveal_env", True) else dict.fromkeys(env, HIDDEN_VALUE)


INSTANCE_FIELDS = ("name", "node", "pid", "port", "state")


class InstanceBaseSerializer(serializers.ModelSerializer):
    node = serializers.CharField(source="node.name")

    class Meta:
        model = Instance
        fields = list(INSTANCE_FIELDS)
        read_only_fields = fields


# -- what online and batch endpoints and deployments answer alike -------------------------------------

class EndpointViewSetBase(WorkspaceViewSet):
    """An online or batch endpoint's list, create (POST, or PUT of a new name: 201), read, update (PUT,
    PATCH) and delete (202 with the endpoint while its instances drain, 204 once it is gone), and its keys
    and token. A subclass names its `kind`, its serializer and how it creates and updates."""

    kind: Endpoint.Kind
    serializer_class: type[EndpointBaseSerializer]
    create_fields: tuple[str, ...]  # what a create takes
    body_fields: set[str]  # what a body may name (a create or an update)

    def check_new(self, body: dict) -> None:
        """What a new endpoint's body may not ask for beyond `body_fields`."""

    def do_create(self, actor: Actor, workspace: Workspace, **fields) -> Endpoint:
        raise NotImplementedError

    def do_update(self, actor: Actor, endpoint: Endpoint, body: dict) -> Endpoint:
        raise NotImplementedError

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        raise NotImplementedError

    def create_endpoint(self, workspace: Workspace, body: dict, name: str | None = None) -> Endpoint:
        if name is not None:
            check_url_name(body, name, "endpoint")
        check_endpoint_fields(body, self.body_fields)
        self.check_new(body)
        fields = {k: body[k] for k in self.create_fields if k in body and body[k] is not None}
        if name is not None:
            fields["name"] = name
        if "name" not in fields:
            raise InvalidInput("Endpoint name is required.", field="name")
        return self.do_create(Actor.from_request(self.request), workspace, **fields)

    def update_endpoint(self, endpoint: Endpoint, body: dict) -> Endpoint:
        check_endpoint_fields(body, self.body_fields)
        if body.get("auth_mode") not in (None, endpoint.auth_mode):
            raise InvalidInput("auth_mode cannot change; create a new endpoint.", field="auth_mode")
        if body.get("name") not in (None, endpoint.name):
            raise InvalidInput("An endpoint cannot be renamed.", field="name")
        return self.do_update(Actor.from_request(self.request), endpoint, body)

    def answer(self, endpoint: Endpoint, code: int = status.HTTP_200_OK) -> Response:
        return Response(self.serializer_class(endpoint, context={"request": self.request}).data, status=code)

    def named(self, name: str) -> Endpoint:
        return endpoint_named(self.workspace(), name, self.kind)

    def list(self, request, ws: str) -> Response:
        rows = Endpoint.objects.filter(workspace=self.workspace(), kind=self.kind).prefetch_related("deployments")
        return Response(self.serializer_class(rows, many=True, context={"request": request}).data)

    def create(self, request, ws: str) -> Response:
        return self.answer(self.create_endpoint(self.workspace(), request_body(request)), status.HTTP_201_CREATED)

    def retrieve(self, request, ws: str, name: str) -> Response:
        return self.answer(self.named(name))

    def update(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        if request.method == "PUT" and not Endpoint.objects.filter(workspace=workspace, name=name).exists():
            return self.answer(self.create_endpoint(workspace, request_body(request), name=name),
                               status.HTTP_201_CREATED)
        endpoint = endpoint_named(workspace, name, self.kind)
        return self.answer(self.update_endpoint(endpoint, request_body(request)))

    def partial_update(self, request, ws: str, name: str) -> Response:
        return self.update(request, ws, name)

    def destroy(self, request, ws: str, name: str) -> Response:
        endpoint = self.named(name)
        self.delete_endpoint(endpoint)
        remaining = Endpoint.objects.filter(pk=endpoint.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self.answer(remaining, status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["post"], url_path="list-keys")
    def list_keys(self, request, ws: str, name: str) -> Response:
        """The endpoint's keys: `Authorization: Bearer <key>` on its scoring_uri."""
        return Response(KeysSerializer(key_svc.get_keys(self.named(name))).data)

    @action(detail=True, methods=["post"])
    def token(self, request, ws: str, name: str) -> Response:
        """A one-hour token for an aml_token endpoint."""
        return Response(TokenSerializer(key_svc.issue_endpoint_token(Actor.from_request(request),
                                                                     self.named(name))).data)


class DeploymentViewSetBase(WorkspaceViewSet):
    """An online or batch endpoint's deployments (URL `.../<endpoint name>/deployments/<deployment_name>`):
    list, create (POST, or PUT of a new name), read, update (PUT, PATCH), delete (202 while its instances
    drain, 204 once gone). A subclass names its endpoint `kind` and how it writes and answers."""

    kind: Endpoint.Kind
    lookup_field = "deployment_name"
    serializer_class: type[DeploymentBaseSerializer]

    def rows(self, endpoint: Endpoint):
        return endpoint.deployments.select_related("endpoint", "model", "instance_type", "compute")

    def context(self, workspace: Workspace) -> dict:
        return {"request": self.request}

    def answer(self, deployment: Deployment, code: int = status.HTTP_200_OK) -> Response:
        raise NotImplementedError

    def created(self, deployment: Deployment) -> Response:
        return self.answer(deployment, status.HTTP_201_CREATED)

    def updated(self, deployment: Deployment) -> Response:
        return self.answer(deployment)

    def do_create(self, actor: Actor, endpoint: Endpoint, body: dict) -> Deployment:
        raise NotImplementedError

    def do_update(self, actor: Actor, deployment: Deployment, body: dict) -> Deployment:
        raise NotImplementedError

    def do_delete(self, actor: Actor, deployment: Deployment) -> None:
        raise NotImplementedError

    def list(self, request, ws: str, name: str) -> Response:
        workspace = self.workspace()
        rows = self.rows(endpoint_named(workspace, name, self.kind))
        return Response(self.serializer_class(rows, many=True, context=self.context(workspace)).data)

    def create(self, request, ws: str, name: str) -> Response:
        endpoint = endpoint_named(self.workspace(), name, self.kind)
        return self.created(self.do_create(Actor.from_request(request), endpoint, request_body(request)))

    def retrieve(self, request, ws: str, name: str, deployment_name: str) -> Response:
        workspace = self.workspace()
        found = deployment_named(endpoint_named(workspace, name, self.kind), deployment_name)
        return Response(self.serializer_class(found, context=self.context(workspace)).data)

    def update(self, request, ws: str, name: str, deployment_name: str) -> Response:
        endpoint = endpoint_named(self.workspace(), name, self.kind)
        actor = Actor.from_request(request)
        if request.method == "PUT" and not endpoint.deployments.filter(name=deployment_name).exists():
            body = request_body(request)
            check_url_name(body, deployment_name, "deployment")
            body["name"] = deployment_name
            return self.created(self.do_create(actor, endpoint, body))
        found = deployment_named(endpoint, deployment_name)
        body = request_body(request)
        body.pop("endpoint_name", None)
        return self.updated(self.do_update(actor, found, body))

    def partial_update(self, request, ws: str, name: str, deployment_name: str) -> Response:
        return self.update(request, ws, name, deployment_name)

    def destroy(self, request, ws: str, name: str, deployment_name: str) -> Response:
        found = deployment_named(endpoint_named(self.workspace(), name, self.kind), deployment_name)
        self.do_delete(Actor.from_request(request), found)
        remaining = Deployment.objects.filter(pk=found.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return self.answer(remaining, status.HTTP_202_ACCEPTED)
