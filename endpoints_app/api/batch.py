"""REST API for batch endpoints, their deployments and jobs (OpenAPI schema: /api/schema/).

Endpoints and deployments answer as the online ones do, with `defaults.deployment_name` on the
endpoint and the batch settings on the deployment. A job create (= invoke) answers 202 with the
job; its status goes Queued -> Running -> Completed, Failed or Canceled."""

from __future__ import annotations

from django.http import Http404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import serializers, status
from rest_framework.decorators import action
from rest_framework.response import Response

from endpoints_app.api.common import (
    DEPLOYMENT_FIELDS,
    ENDPOINT_FIELDS,
    ENDPOINT_STATE_FIELDS,
    INSTANCE_FIELDS,
    DeploymentBaseSerializer,
    DeploymentCreateBaseSerializer,
    DeploymentViewSetBase,
    EndpointBaseSerializer,
    EndpointCreateBaseSerializer,
    EndpointViewSetBase,
    InstanceBaseSerializer,
    WorkspaceViewSet,
    endpoint_named,
    endpoint_schema,
    request_body,
    resource_schema,
)
from endpoints_app.downloads import file_download
from endpoints_app.errors import InvalidInput
from endpoints_app.models import BatchJob, Deployment, Endpoint, JobStatus, Workspace
from endpoints_app.services import batch as batch_svc
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.specs import parse_int

JOB_LIST_LIMIT = 500


# -- shapes (these serializers build the responses) --------------------------------------------------

class BatchEndpointSerializer(EndpointBaseSerializer):
    """A batch endpoint."""

    scoring_path = "jobs"
    defaults = serializers.DictField(help_text="{deployment_name}: where an invocation goes unless it names one.")
    scoring_uri = serializers.SerializerMethodField(
        help_text="POST a job body here with Authorization: Bearer <API token or endpoint key/token>."
    )

    class Meta(EndpointBaseSerializer.Meta):
        fields = [*ENDPOINT_FIELDS, "defaults", *ENDPOINT_STATE_FIELDS, "scoring_uri", "deployments", "created_at",
                  "updated_at"]
        read_only_fields = fields


class RetrySettingsSerializer(serializers.Serializer):
    max_retries = serializers.IntegerField()
    timeout = serializers.IntegerField(help_text="Seconds one mini-batch may take.")


class BatchInstanceSerializer(InstanceBaseSerializer):
    job = serializers.CharField(source="batch_job.name", default=None)

    class Meta(InstanceBaseSerializer.Meta):
        fields = [*INSTANCE_FIELDS, "job"]
        read_only_fields = fields


class BatchDeploymentSerializer(DeploymentBaseSerializer):
    """A batch deployment: its batch settings at the top level."""

    mini_batch_size = serializers.IntegerField(source="batch_settings.mini_batch_size")
    max_concurrency_per_instance = serializers.IntegerField(source="batch_settings.max_concurrency_per_instance")
    error_threshold = serializers.IntegerField(source="batch_settings.error_threshold")
    retry_settings = RetrySettingsSerializer(source="batch_settings.retry_settings")
    output_action = serializers.CharField(source="batch_settings.output_action")
    output_file_name = serializers.CharField(source="batch_settings.output_file_name")
    output_columns = serializers.ListField(child=serializers.CharField(), source="batch_settings.output_columns",
                                           default=list, help_text="Input columns copied into each output row.")
    logging_level = serializers.CharField(source="batch_settings.logging_level", default="info",
                                          help_text="The level of its model servers' log (debug ... critical).")
    is_default = serializers.SerializerMethodField()
    instances = serializers.SerializerMethodField(help_text="Model servers running for jobs (none between jobs).")

    class Meta(DeploymentBaseSerializer.Meta):
        fields = [*DEPLOYMENT_FIELDS, "mini_batch_size", "max_concurrency_per_instance", "error_threshold",
                  "retry_settings", "output_action", "output_file_name", "output_columns", "logging_level",
                  *ENDPOINT_STATE_FIELDS, "is_default", "instances", "created_at", "updated_at"]
        read_only_fields = fields

    def get_is_default(self, deployment: Deployment) -> bool:
        return (deployment.endpoint.defaults or {}).get("deployment_name") == deployment.name

    @extend_schema_field(BatchInstanceSerializer(many=True))
    def get_instances(self, deployment: Deployment) -> list[dict]:
        rows = deployment_svc.current_instances(deployment, list(deployment.instances.select_related(
            "node", "batch_job")))
        return BatchInstanceSerializer(rows, many=True).data


class FailureSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    files = serializers.ListField(child=serializers.CharField())
    error = serializers.CharField()
    attempts = serializers.IntegerField()
    instance = serializers.CharField(allow_blank=True)


JOB_FIELDS = ["name", "id", "endpoint_name", "deployment_name", "inputs", "input_files", "settings", "status",
              "queue_position", "mini_batches_total", "mini_batches_done", "mini_batches_failed", "rows_total",
              "rows_done", "rows_failed", "progress", "error", "failures", "outputs", "output_uri", "instance_minutes",
              "price_per_hour", "cost", "created_by", "created_at", "started_at", "finished_at", "elapsed_seconds",
              "url", "studio_url"]


class BatchJobSerializer(serializers.ModelSerializer):
    """A batch job, as listed; `context["request"]` gives the base of its URLs."""

    name = serializers.CharField(help_text="The job's id.")
    id = serializers.CharField(source="name")
    endpoint_name = serializers.CharField(source="endpoint.name")
    deployment_name = serializers.CharField(source="deployment.name")
    inputs = serializers.SerializerMethodField(help_text="The invocation's inputs as given.")
    queue_position = serializers.SerializerMethodField(help_text="1 = next to start; null unless Queued.")
    progress = serializers.SerializerMethodField(help_text="Settled mini-batches / total, 0-100.")
    failures = serializers.SerializerMethodField()
    outputs = serializers.SerializerMethodField(help_text="Output file name -> download URL (once it exists).")
    output_uri = serializers.CharField(allow_blank=True, help_text="Where outputs.score puts the merged output "
                                       "(azureml://datastores/<ds>/paths/<file>) once the job completes; '' if none.")
    instance_minutes = serializers.FloatField()
    price_per_hour = serializers.DecimalField(source="deployment.instance_type.price_per_hour", max_digits=10,
                                              decimal_places=4)
    created_by = serializers.CharField(source="created_by.username", default=None)
    elapsed_seconds = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    studio_url = serializers.SerializerMethodField()

    class Meta:
        model = BatchJob
        fields = JOB_FIELDS
        read_only_fields = fields

    def get_inputs(self, job: BatchJob) -> dict:
        return {name: {k: v for k, v in value.items() if k not in ("remote", "local")}
                for name, value in (job.inputs or {}).items()}

    def get_queue_position(self, job: BatchJob) -> int | None:
        return job.queue_position()

    def get_progress(self, job: BatchJob) -> float:
        return job.progress()

    def get_failures(self, job: BatchJob) -> list[dict]:
        if not job.mini_batches_failed:
            return []
        return FailureSerializer(batch_svc.job_failures(job), many=True).data

    def _absolute(self, path: str) -> str:
        if "base_url" in self.context:  # a job invocation on the scoring_uri names the base itself
            return f"{self.context['base_url']}{path}"
        return self.context["request"].build_absolute_uri(path)

    def _job_url(self, job: BatchJob) -> str:
        return self._absolute(
            f"/api/v1/workspaces/{job.workspace.name}/batch-endpoints/{job.endpoint.name}/jobs/{job.name}"
        )

    def get_outputs(self, job: BatchJob) -> dict:
        if job.status != JobStatus.COMPLETED:
            return {job.output_file_name: None}
        return {name: f"{self._job_url(job)}/outputs/{name}" for name in batch_svc.output_files(job)}

    def get_elapsed_seconds(self, job: BatchJob) -> float | None:
        if job.started_at is None:
            return None
        return round(((job.finished_at or timezone.now()) - job.started_at).total_seconds(), 3)

    def get_url(self, job: BatchJob) -> str:
        return self._job_url(job)

    def get_studio_url(self, job: BatchJob) -> str:
        return self._absolute(f"/jobs/{job.name}/")


class JobInvocationSerializer(BatchJobSerializer):
    """What a job invocation on a batch endpoint's scoring_uri answers (api/job_invocation.py);
    `context["base_url"]` is the base of its URLs."""

    class Meta(BatchJobSerializer.Meta):
        fields = ["name", "id", "status", "endpoint_name", "deployment_name", "url", "studio_url"]
        read_only_fields = fields


class BatchJobDetailSerializer(BatchJobSerializer):
    """One batch job: as listed, and whether `cost` is final and the prices it was charged at (a price
    changed since does not apply)."""

    cost_final = serializers.SerializerMethodField(help_text="The job ended and every model server it started "
                                                             "stopped: the cost no longer grows.")
    charged_prices_per_hour = serializers.SerializerMethodField()

    class Meta(BatchJobSerializer.Meta):
        fields = [*JOB_FIELDS, "cost_final", "charged_prices_per_hour"]
        read_only_fields = fields

    def to_representation(self, job: BatchJob) -> dict:
        self._charges = batch_svc.job_charges(job)
        return super().to_representation(job)

    def get_cost_final(self, job: BatchJob) -> bool:
        return self._charges["cost_final"]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_charged_prices_per_hour(self, job: BatchJob) -> list[str]:
        return self._charges["charged_prices_per_hour"]


class JobCreateSerializer(serializers.Serializer):
    inputs = serializers.DictField(help_text='{"input_data": {"type": "uri_folder", "path": '
                                             '"studio:data/<name>/versions/<n>"}}')
    deployment_name = serializers.CharField(required=False)
    settings = serializers.DictField(required=False, help_text="mini_batch_size, instance_count, "
                                     "max_concurrency_per_instance, error_threshold, output_file_name, ...")
    outputs = serializers.DictField(required=False, help_text='{"score": {"type": "uri_file" or "uri_folder", '
                                    '"path": "azureml://datastores/<ds>/paths/<path>"}}')


class BatchEndpointCreateSerializer(EndpointCreateBaseSerializer):
    defaults = serializers.DictField(required=False, help_text="{deployment_name}: where an invocation goes unless "
                                                              "it names one.")


class BatchDeploymentCreateSerializer(DeploymentCreateBaseSerializer):
    mini_batch_size = serializers.IntegerField(required=False)
    max_concurrency_per_instance = serializers.IntegerField(required=False)
    error_threshold = serializers.IntegerField(required=False, help_text="-1: no limit.")
    retry_settings = RetrySettingsSerializer(required=False)
    output_action = serializers.ChoiceField(choices=["append_row", "summary_only"], required=False)
    output_file_name = serializers.CharField(required=False)
    output_columns = serializers.ListField(child=serializers.CharField(), required=False)
    logging_level = serializers.CharField(required=False)


# -- views -------------------------------------------------------------------------------------------

@endpoint_schema(BatchEndpointSerializer, BatchEndpointCreateSerializer)
class BatchEndpointViewSet(EndpointViewSetBase):
    """`workspaces/<ws>/batch-endpoints[/<name>]`, and its keys and token (which create jobs on its
    scoring_uri)."""

    kind = Endpoint.Kind.BATCH
    serializer_class = BatchEndpointSerializer

    create_fields = ("name", "description", "tags", "auth_mode", "defaults")
    body_fields = set(create_fields)

    def do_create(self, actor: Actor, workspace: Workspace, **fields) -> Endpoint:
        return batch_svc.do_create_batch_endpoint(actor, workspace, **fields)

    def do_update(self, actor: Actor, endpoint: Endpoint, body: dict) -> Endpoint:
        return batch_svc.do_update_batch_endpoint(actor, endpoint, defaults=body.get("defaults"),
                                                  description=body.get("description"), tags=body.get("tags"))

    def delete_endpoint(self, endpoint: Endpoint) -> None:
        batch_svc.do_delete_batch_endpoint(Actor.from_request(self.request), endpoint)


@resource_schema(BatchDeploymentSerializer, BatchDeploymentCreateSerializer)
class BatchDeploymentViewSet(DeploymentViewSetBase):
    """`workspaces/<ws>/batch-endpoints/<name>/deployments[/<deployment_name>]`."""

    kind = Endpoint.Kind.BATCH
    serializer_class = BatchDeploymentSerializer

    def answer(self, deployment: Deployment, code: int = status.HTTP_200_OK) -> Response:
        deployment = Deployment.objects.select_related("endpoint", "model", "instance_type", "compute").get(
            pk=deployment.pk)
        return Response(BatchDeploymentSerializer(deployment, context={"request": self.request}).data, status=code)

    def do_create(self, actor: Actor, endpoint: Endpoint, body: dict) -> Deployment:
        return batch_svc.do_create_batch_deployment(actor, endpoint, body)

    def do_update(self, actor: Actor, deployment: Deployment, body: dict) -> Deployment:
        return batch_svc.do_update_batch_deployment(actor, deployment, body)

    def do_delete(self, actor: Actor, deployment: Deployment) -> None:
        batch_svc.do_delete_batch_deployment(actor, deployment)


JOB_FILTERS = [OpenApiParameter("status", str, enum=JobStatus.values), OpenApiParameter("deployment", str),
               OpenApiParameter("limit", int)]


class JobViewSetBase(WorkspaceViewSet):
    """Batch jobs: list (filters below), read, cancel, and download an output file. A subclass says
    which endpoint's jobs its URL names (None: the workspace's, by name alone)."""

    lookup_field = "job_name"

    def endpoint(self, workspace: Workspace) -> Endpoint | None:
        raise NotImplementedError

    def found(self, job_name: str) -> BatchJob:
        raise NotImplementedError

    def answer(self, job: BatchJob, code: int = status.HTTP_200_OK) -> Response:
        job = batch_svc.find_job(job.workspace, None, job.name) or job
        return Response(BatchJobDetailSerializer(job, context={"request": self.request}).data, status=code)

    def list(self, request, ws: str, **kwargs: str) -> Response:
        workspace = self.workspace()
        endpoint = self.endpoint(workspace)
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

    def retrieve(self, request, ws: str, job_name: str, **kwargs: str) -> Response:
        return self.answer(self.found(job_name))

    @action(detail=True, methods=["post"])
    def cancel(self, request, ws: str, job_name: str, **kwargs: str) -> Response:
        return self.answer(batch_svc.do_cancel_job(Actor.from_request(request), self.found(job_name)))

    @action(detail=True, methods=["get"], url_path="outputs/<path:file>")
    def outputs(self, request, ws: str, job_name: str, file: str, **kwargs: str):
        found = self.found(job_name)
        path = batch_svc.output_file(found, file)
        if path is None:
            raise Http404(f"Job {found.name} has no output {file!r} (yet: it is {found.status}).")
        return file_download(request, path, "text/csv" if path.suffix == ".csv" else "application/octet-stream")


DOWNLOAD = {(200, "application/octet-stream"): OpenApiTypes.BINARY}


@extend_schema_view(
    list=extend_schema(parameters=JOB_FILTERS, responses=BatchJobSerializer(many=True)),
    create=extend_schema(request=JobCreateSerializer, responses={202: BatchJobDetailSerializer}),
    retrieve=extend_schema(responses=BatchJobDetailSerializer),
    cancel=extend_schema(request=None, responses=BatchJobDetailSerializer),
    outputs=extend_schema(responses=DOWNLOAD),
)
class JobViewSet(JobViewSetBase):
    """`workspaces/<ws>/batch-endpoints/<name>/jobs[/<job_name>]`: a create (= invoke) answers 202."""

    def endpoint(self, workspace: Workspace) -> Endpoint:
        return endpoint_named(workspace, self.kwargs["name"], Endpoint.Kind.BATCH)

    def found(self, job_name: str) -> BatchJob:
        workspace = self.workspace()
        endpoint = self.endpoint(workspace)
        job = batch_svc.find_job(workspace, endpoint, job_name)
        if job is None:
            raise Http404(f"Endpoint '{endpoint.name}' has no job '{job_name}'.")
        return job

    def create(self, request, ws: str, name: str) -> Response:
        endpoint = self.endpoint(self.workspace())
        job = batch_svc.do_create_job(Actor.from_request(request), endpoint, request_body(request))
        return self.answer(job, status.HTTP_202_ACCEPTED)


@extend_schema_view(
    list=extend_schema(operation_id="workspace_jobs_list", responses=BatchJobSerializer(many=True),
                       parameters=[*JOB_FILTERS, OpenApiParameter("endpoint", str)]),
    retrieve=extend_schema(operation_id="workspace_job_get", responses=BatchJobDetailSerializer),
    cancel=extend_schema(operation_id="workspace_job_cancel", request=None, responses=BatchJobDetailSerializer),
    outputs=extend_schema(operation_id="workspace_job_output", responses=DOWNLOAD),
)
class WorkspaceJobViewSet(JobViewSetBase):
    """`workspaces/<ws>/jobs[/<job_name>]`: the same jobs by name alone (job names are unique in the
    studio), as `studio job show|cancel|download -n <id>` needs."""

    def endpoint(self, workspace: Workspace) -> None:
        return None

    def found(self, job_name: str) -> BatchJob:
        workspace = self.workspace()
        job = batch_svc.find_job(workspace, None, job_name)
        if job is None:
            raise Http404(f"No job '{job_name}' in workspace '{workspace.name}'.")
        return job
