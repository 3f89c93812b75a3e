"""REST API for batch endpoints, their deployments and jobs (CONTRACT.md).

Endpoints and deployments answer as the online ones do, with `defaults.deployment_name` on the
endpoint and the batch settings on the deployment. A job create (= invoke) answers 202 with the
job; its status goes Queued -> Running -> Completed, Failed or Canceled."""

from __future__ import annotations

from django.http import FileResponse, Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.decorators import api_view
from rest_framework.response import Response

from endpoints_app.api.endpoints import (
    check_url_name,
    deployment_named,
    endpoint_named,
    inference_base_url,
    request_body,
)
from endpoints_app.errors import InvalidInput
from endpoints_app.models import BatchJob, Deployment, Endpoint, JobStatus, Role, Workspace
from endpoints_app.permissions import check_workspace
from endpoints_app.services import batch as batch_svc
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.specs import parse_int

JOB_LIST_LIMIT = 500


# -- shapes (these serializers build the responses) --------------------------------------------------

class BatchEndpointSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.CharField()
    auth_mode = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    tags = serializers.DictField()
    defaults = serializers.DictField(help_text="{deployment_name}: where an invocation goes unless it names one.")
    provisioning_state = serializers.CharField()
    error = serializers.CharField(allow_blank=True)
    scoring_uri = serializers.SerializerMethodField(
        help_text="POST a job body here with Authorization: Bearer <API token or endpoint key/token>."
    )
    deployments = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_scoring_uri(self, endpoint: Endpoint) -> str:
        return f"{inference_base_url(self.context['request'])}/inference/{endpoint.name}/jobs"

    def get_deployments(self, endpoint: Endpoint) -> list[str]:
        return [d.name for d in endpoint.deployments.all()]


class RetrySettingsSerializer(serializers.Serializer):
    max_retries = serializers.IntegerField()
    timeout = serializers.IntegerField(help_text="Seconds one mini-batch may take.")


class InstanceSerializer(serializers.Serializer):
    name = serializers.CharField()
    node = serializers.CharField(source="node.name")
    pid = serializers.IntegerField(allow_null=True)
    port = serializers.IntegerField(allow_null=True)
    state = serializers.CharField()
    job = serializers.CharField(source="batch_job.name", default=None)


class BatchDeploymentSerializer(serializers.Serializer):
    name = serializers.CharField()
    endpoint_name = serializers.CharField(source="endpoint.name")
    model = serializers.CharField(source="model.asset_id")
    model_format = serializers.CharField(source="model.format")
    code_configuration = serializers.DictField()
    environment_variables = serializers.DictField()
    instance_type = serializers.CharField(source="instance_type.name")
    instance_count = serializers.IntegerField()
    mini_batch_size = serializers.IntegerField(source="batch_settings.mini_batch_size")
    max_concurrency_per_instance = serializers.IntegerField(source="batch_settings.max_concurrency_per_instance")
    error_threshold = serializers.IntegerField(source="batch_settings.error_threshold")
    retry_settings = RetrySettingsSerializer(source="batch_settings.retry_settings")
    output_action = serializers.CharField(source="batch_settings.output_action")
    output_file_name = serializers.CharField(source="batch_settings.output_file_name")
    provisioning_state = serializers.CharField()
    error = serializers.CharField(allow_blank=True)
    is_default = serializers.SerializerMethodField()
    instances = serializers.SerializerMethodField(help_text="Model servers running for jobs (none between jobs).")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()

    def get_is_default(self, deployment: Deployment) -> bool:
        return (deployment.endpoint.defaults or {}).get("deployment_name") == deployment.name

    def get_instances(self, deployment: Deployment) -> list[dict]:
        rows = deployment_svc.current_instances(deployment, list(deployment.instances.select_related(
            "node", "batch_job")))
        return InstanceSerializer(rows, many=True).data


class FailureSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    files = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    instance = serializers.CharField(allow_blank=True)


class BatchJobSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="The job's id.")
    id = serializers.CharField(source="name")
    endpoint_name = serializers.CharField(source="endpoint.name")
    deployment_name = serializers.CharField(source="deployment.name")
    inputs = serializers.DictField()
    input_files = serializers.IntegerField()
    settings = serializers.DictField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    queue_position = serializers.SerializerMethodField(help_text="1 = next to start; null unless Queued.")
    mini_batches_total = serializers.IntegerField()
    mini_batches_done = serializers.IntegerField()
    mini_batches_failed = serializers.IntegerField()
    rows_total = serializers.IntegerField()
    rows_done = serializers.IntegerField()
    rows_failed = serializers.IntegerField()
    progress = serializers.SerializerMethodField(help_text="Settled mini-batches / total, 0-100.")
    error = serializers.CharField(allow_blank=True)
    failures = serializers.SerializerMethodField()
    outputs = serializers.SerializerMethodField(help_text="Output file name -> download URL (once it exists).")
    instance_minutes = serializers.FloatField()
    price_per_hour = serializers.DecimalField(source="deployment.instance_type.price_per_hour", max_digits=10,
                                              decimal_places=4)
    cost = serializers.DecimalField(max_digits=12, decimal_places=6)
    created_by = serializers.CharField(source="created_by.username", default=None)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    elapsed_seconds = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    studio_url = serializers.SerializerMethodField()

    def get_queue_position(self, job: BatchJob) -> int | None:
        return job.queue_position()

    def get_progress(self, job: BatchJob) -> float:
        if not job.mini_batches_total:
            return 100.0 if job.status == JobStatus.COMPLETED else 0.0
        return round(100.0 * (job.mini_batches_done + job.mini_batches_failed) / job.mini_batches_total, 1)

    def get_failures(self, job: BatchJob) -> list[dict]:
        if not job.mini_batches_failed:
            return []
        return FailureSerializer(batch_svc.job_failures(job), many=True).data

    def _job_url(self, job: BatchJob) -> str:
        request = self.context["request"]
        return request.build_absolute_uri(
            f"/api/v1/workspaces/{job.workspace.name}/batch-endpoints/{job.endpoint.name}/jobs/{job.name}"
        )

    def get_outputs(self, job: BatchJob) -> dict:
        name = job.output_file_name
        exists = job.status == JobStatus.COMPLETED and (job.output_root / name).is_file()
        return {name: f"{self._job_url(job)}/outputs/{name}" if exists else None}

    def get_elapsed_seconds(self, job: BatchJob) -> float | None:
        if job.started_at is None:
            return None
        return round(((job.finished_at or timezone.now()) - job.started_at).total_seconds(), 3)

    def get_url(self, job: BatchJob) -> str:
        return self._job_url(job)

    def get_studio_url(self, job: BatchJob) -> str:
        return self.context["request"].build_absolute_uri(f"/jobs/{job.name}/")


class JobCreateDoc(serializers.Serializer):
    inputs = serializers.DictField(help_text='{"input_data": {"type": "uri_folder", "path": '
                                             '"studio:data/<name>/versions/<n>"}}')
    deployment_name = serializers.CharField(required=False)
    settings = serializers.DictField(required=False, help_text="mini_batch_size, instance_count, "
                                     "max_concurrency_per_instance, error_threshold, output_file_name, ...")


# -- helpers -----------------------------------------------------------------------------------------

def _endpoint(workspace: Workspace, name: str) -> Endpoint:
    return endpoint_named(workspace, name, Endpoint.Kind.BATCH)


def _job(workspace: Workspace, endpoint: Endpoint, name: str) -> BatchJob:
    found = batch_svc.find_job(workspace, endpoint, name)
    if found is None:
        raise Http404(f"Endpoint '{endpoint.name}' has no job '{name}'.")
    return found


def _endpoint_out(request, endpoint: Endpoint, code: int = status.HTTP_200_OK) -> Response:
    return Response(BatchEndpointSerializer(endpoint, context={"request": request}).data, status=code)


def _job_out(request, job: BatchJob, code: int = status.HTTP_200_OK) -> Response:
    job = batch_svc.find_job(job.workspace, None, job.name) or job
    return Response(BatchJobSerializer(job, context={"request": request}).data, status=code)


def job_response_data(request, job: BatchJob) -> dict:
    """The job as the API shows it (the batch scoring_uri answers with it too)."""
    return BatchJobSerializer(job, context={"request": request}).data


# -- endpoints ---------------------------------------------------------------------------------------

def _create_endpoint(request, workspace: Workspace, body: dict, name: str | None = None) -> Endpoint:
    if name is not None:
        check_url_name(body, name, "endpoint")
    fields = {k: body[k] for k in ("name", "description", "tags", "auth_mode", "defaults")
              if k in body and body[k] is not None}
    if name is not None:
        fields["name"] = name
    if "name" not in fields:
        raise InvalidInput("Endpoint name is required.", field="name")
    return batch_svc.do_create_batch_endpoint(Actor.from_request(request), workspace, **fields)


@extend_schema(request=BatchEndpointSerializer, responses={200: BatchEndpointSerializer(many=True),
                                                          201: BatchEndpointSerializer})
@api_view(["GET", "POST"])
def batch_endpoints(request, ws: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        rows = Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.BATCH).prefetch_related("deployments")
        return Response(BatchEndpointSerializer(rows, many=True, context={"request": request}).data)
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return _endpoint_out(request, _create_endpoint(request, workspace, request_body(request)), status.HTTP_201_CREATED)


@extend_schema(request=BatchEndpointSerializer, responses={200: BatchEndpointSerializer, 201: BatchEndpointSerializer,
                                                          202: BatchEndpointSerializer, 204: None})
@api_view(["GET", "PUT", "PATCH", "DELETE"])
def batch_endpoint(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return _endpoint_out(request, _endpoint(workspace, name))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    if request.method == "PUT" and not Endpoint.objects.filter(workspace=workspace, name=name).exists():
        return _endpoint_out(request, _create_endpoint(request, workspace, request_body(request), name=name),
                             status.HTTP_201_CREATED)
    endpoint = _endpoint(workspace, name)
    actor = Actor.from_request(request)
    if request.method == "DELETE":
        batch_svc.do_delete_batch_endpoint(actor, endpoint)
        remaining = Endpoint.objects.filter(pk=endpoint.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _endpoint_out(request, remaining, status.HTTP_202_ACCEPTED)
    body = request_body(request)
    if body.get("name") not in (None, endpoint.name):
        raise InvalidInput("An endpoint cannot be renamed.", field="name")
    if body.get("auth_mode") not in (None, endpoint.auth_mode):
        raise InvalidInput("auth_mode cannot change; create a new endpoint.", field="auth_mode")
    endpoint = batch_svc.do_update_batch_endpoint(actor, endpoint, defaults=body.get("defaults"),
                                                  description=body.get("description"), tags=body.get("tags"))
    return _endpoint_out(request, endpoint)


@extend_schema(request=None, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def list_keys(request, ws: str, name: str):
    """The endpoint's keys: `Authorization: Bearer <key>` on its scoring_uri creates jobs."""
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return Response(key_svc.get_keys(_endpoint(workspace, name)))


@extend_schema(request=None, responses=OpenApiTypes.OBJECT)
@api_view(["POST"])
def token(request, ws: str, name: str):
    """A one-hour token for an aml_token batch endpoint."""
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    return Response(key_svc.issue_endpoint_token(Actor.from_request(request), _endpoint(workspace, name)))


# -- deployments -------------------------------------------------------------------------------------

def _deployment_out(request, deployment: Deployment, code: int = status.HTTP_200_OK) -> Response:
    deployment = Deployment.objects.select_related("endpoint", "model", "instance_type").get(pk=deployment.pk)
    return Response(BatchDeploymentSerializer(deployment, context={"request": request}).data, status=code)


@extend_schema(request=BatchDeploymentSerializer, responses={200: BatchDeploymentSerializer(many=True),
                                                            201: BatchDeploymentSerializer})
@api_view(["GET", "POST"])
def batch_deployments(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        endpoint = _endpoint(workspace, name)
        rows = endpoint.deployments.select_related("endpoint", "model", "instance_type")
        return Response(BatchDeploymentSerializer(rows, many=True, context={"request": request}).data)
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = _endpoint(workspace, name)
    deployment = batch_svc.do_create_batch_deployment(Actor.from_request(request), endpoint, request_body(request))
    return _deployment_out(request, deployment, status.HTTP_201_CREATED)


@extend_schema(request=BatchDeploymentSerializer, responses={200: BatchDeploymentSerializer,
                                                            201: BatchDeploymentSerializer, 204: None})
@api_view(["GET", "PUT", "PATCH", "DELETE"])
def batch_deployment(request, ws: str, name: str, deployment_name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return _deployment_out(request, deployment_named(_endpoint(workspace, name), deployment_name))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = _endpoint(workspace, name)
    actor = Actor.from_request(request)
    if request.method == "PUT" and not endpoint.deployments.filter(name=deployment_name).exists():
        body = request_body(request)
        check_url_name(body, deployment_name, "deployment")
        body["name"] = deployment_name
        return _deployment_out(request, batch_svc.do_create_batch_deployment(actor, endpoint, body),
                               status.HTTP_201_CREATED)
    found = deployment_named(endpoint, deployment_name)
    if request.method == "DELETE":
        batch_svc.do_delete_batch_deployment(actor, found)
        remaining = Deployment.objects.filter(pk=found.pk).first()
        if remaining is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return _deployment_out(request, remaining, status.HTTP_202_ACCEPTED)
    body = request_body(request)
    body.pop("endpoint_name", None)
    return _deployment_out(request, batch_svc.do_update_batch_deployment(actor, found, body))


# -- jobs --------------------------------------------------------------------------------------------

def _job_list(request, workspace: Workspace, endpoint: Endpoint | None) -> Response:
    rows = BatchJob.objects.filter(workspace=workspace).select_related(
        "endpoint", "deployment", "deployment__instance_type", "workspace", "created_by"
    )
    if endpoint is not None:
        rows = rows.filter(endpoint=endpoint)
    elif request.query_params.get("endpoint"):
        rows = rows.filter(endpoint__name=request.query_params["endpoint"])
    state = request.query_params.get("status")
    if state:
        if state not in JobStatus.values:
            raise InvalidInput(f"status must be one of {', '.join(JobStatus.values)}.", field="status")
        rows = rows.filter(status=state)
    if request.query_params.get("deployment"):
        rows = rows.filter(deployment__name=request.query_params["deployment"])
    limit = parse_int(request.query_params.get("limit", 100), "limit", 1, JOB_LIST_LIMIT)
    return Response(BatchJobSerializer(rows[:limit], many=True, context={"request": request}).data)


JOB_FILTERS = [OpenApiParameter("status", str, enum=JobStatus.values), OpenApiParameter("deployment", str),
               OpenApiParameter("limit", int)]


@extend_schema(methods=["GET"], parameters=JOB_FILTERS, responses=BatchJobSerializer(many=True))
@extend_schema(methods=["POST"], request=JobCreateDoc, responses={202: BatchJobSerializer})
@api_view(["GET", "POST"])
def jobs(request, ws: str, name: str):
    if request.method == "GET":
        workspace = check_workspace(request.user, ws)
        return _job_list(request, workspace, _endpoint(workspace, name))
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    endpoint = _endpoint(workspace, name)
    job = batch_svc.do_create_job(Actor.from_request(request), endpoint, request_body(request))
    return _job_out(request, job, status.HTTP_202_ACCEPTED)


@extend_schema(responses=BatchJobSerializer)
@api_view(["GET"])
def job(request, ws: str, name: str, job_name: str):
    workspace = check_workspace(request.user, ws)
    return _job_out(request, _job(workspace, _endpoint(workspace, name), job_name))


@extend_schema(request=None, responses=BatchJobSerializer)
@api_view(["POST"])
def cancel_job(request, ws: str, name: str, job_name: str):
    workspace = check_workspace(request.user, ws, Role.CONTRIBUTOR)
    found = _job(workspace, _endpoint(workspace, name), job_name)
    return _job_out(request, batch_svc.do_cancel_job(Actor.from_request(request), found))


@extend_schema(responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
@api_view(["GET"])
def job_output(request, ws: str, name: str, job_name: str, file: str):
    workspace = check_workspace(request.user, ws)
    return _download(_job(workspace, _endpoint(workspace, name), job_name), file)


# -- the same jobs by name alone (job names are unique in the studio), as `job show -n <id>` needs ----

def _any_job(workspace: Workspace, job_name: str) -> BatchJob:
    found = batch_svc.find_job(workspace, None, job_name)
    if found is None:
        raise Http404(f"No job '{job_name}' in workspace '{workspace.name}'.")
    return found


@extend_schema(operation_id="workspace_jobs_list", responses=BatchJobSerializer(many=True),
               parameters=[*JOB_FILTERS, OpenApiParameter("endpoint", str)])
@api_view(["GET"])
def workspace_jobs(request, ws: str):
    return _job_list(request, check_workspace(request.user, ws), None)


@extend_schema(operation_id="workspace_job_get", responses=BatchJobSerializer)
@api_view(["GET"])
def workspace_job(request, ws: str, job_name: str):
    return _job_out(request, _any_job(check_workspace(request.user, ws), job_name))


@extend_schema(operation_id="workspace_job_cancel", request=None, responses=BatchJobSerializer)
@api_view(["POST"])
def workspace_job_cancel(request, ws: str, job_name: str):
    found = _any_job(check_workspace(request.user, ws, Role.CONTRIBUTOR), job_name)
    return _job_out(request, batch_svc.do_cancel_job(Actor.from_request(request), found))


@extend_schema(operation_id="workspace_job_output", responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
@api_view(["GET"])
def workspace_job_output(request, ws: str, job_name: str, file: str):
    return _download(_any_job(check_workspace(request.user, ws), job_name), file)


def _download(found: BatchJob, file: str):
    path = batch_svc.output_file(found, file)
    if path is None:
        raise Http404(f"Job {found.name} has no output {file!r} (yet: it is {found.status}).")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name,
                        content_type="text/csv" if path.suffix == ".csv" else "application/octet-stream")
