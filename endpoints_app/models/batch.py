"""Data assets and batch jobs.

A batch endpoint is an `Endpoint(kind="batch")` whose `defaults["deployment_name"]` names the
deployment an invocation goes to unless it names one; a batch deployment is a `Deployment` whose
`batch_settings` hold the scoring settings (services/batch.py documents them). Batch deployments
run no instance until a job needs one: a job's model servers are `Instance` rows of its deployment
with `batch_job` set, started for the job and stopped when it ends (so they are metered and billed
like any instance).

One invocation is a `BatchJob`; its input is split into `MiniBatch` rows, each scored once by one
of the job's instances and written atomically to its own part file; the parts are merged into the
job's output file when every mini-batch is done."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

from django.conf import settings as conf
from django.core.validators import RegexValidator
from django.db import models

from endpoints_app.models.endpoints import Deployment, Endpoint
from endpoints_app.models.workspaces import Workspace

ASSET_NAME = RegexValidator(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
    "Use 1-64 letters, digits, '-', '_' and '.', starting with a letter or digit.",
)


def datastore_root() -> Path:
    """Where data assets and batch outputs live: $STUDIO_DATA_DIR/datastore."""
    return Path(conf.DATA_DIR) / "datastore"


class DataAsset(models.Model):
    """One version of a named set of files in the studio's datastore.

    - workspace: the team that owns it; names and versions are per workspace.
    - name, version: the asset id is `studio:data/<name>/versions/<version>`; versions count from 1.
    - kind: `uri_folder` (a folder of files; what uploads make) or `uri_file` (one file).
    - path: relative to the datastore root (`datastore_root()`), never absolute and never with `..`:
      the folder for uri_folder, the file for uri_file.
    - file_count, size_bytes: what the asset holds (files, total bytes), counted at upload.
    - description: free text.
    - created_by, created_at: who uploaded it and when."""

    class Kind(models.TextChoices):
        URI_FOLDER = "uri_folder"
        URI_FILE = "uri_file"

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="data_assets")
    name = models.CharField(max_length=64, validators=[ASSET_NAME])
    version = models.PositiveIntegerField(default=1)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.URI_FOLDER)
    path = models.CharField(max_length=500)
    file_count = models.PositiveIntegerField(default=0)
    size_bytes = models.PositiveBigIntegerField(default=0)
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    # An asset that points at storage: the datastore and the path in it (nothing copied); path is then "".
    datastore = models.ForeignKey("endpoints_app.Datastore", null=True, blank=True, on_delete=models.PROTECT,
                                  related_name="data_assets")
    datastore_path = models.CharField(max_length=1000, blank=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name", "version"], name="unique_data_asset_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def asset_id(self) -> str:
        return f"studio:data/{self.name}/versions/{self.version}"

    @property
    def absolute_path(self) -> Path:
        return datastore_root() / self.path

    @property
    def uri(self) -> str:
        """Where its files are, as azureml://datastores/<name>/paths/<path>."""
        if self.datastore_id:
            return f"azureml://datastores/{self.datastore.name}/paths/{self.datastore_path}"
        relative = self.path.split("/", 1)[1] if "/" in self.path else ""
        return f"azureml://datastores/workspaceblobstore/paths/{relative}"

    def files(self) -> list[Path]:
        """The asset's files, sorted by relative path (the order jobs read them in); none for an asset
        that points at another datastore (its files stay there)."""
        if self.datastore_id:
            return []
        root = self.absolute_path
        if self.kind == self.Kind.URI_FILE:
            return [root] if root.is_file() else []
        if not root.is_dir():
            return []
        return sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


class JobStatus(models.TextChoices):
    QUEUED = "Queued"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"


TERMINAL_JOB_STATES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELED)


class BatchJob(models.Model):
    """One invocation of a batch endpoint.

    - name: unique in the installation (`<endpoint>-<random>`); the job's id in URLs and the API.
    - workspace, endpoint, deployment: where it runs; deployment is the endpoint's default unless the
      invocation named one.
    - inputs: the invocation's `inputs` as given (`{"input_data": {"type", "path"}}`).
    - input_asset: the data asset the input path named; input_path: the resolved input (relative to the
      datastore root, a folder or one file); input_files: how many files the input holds.
    - settings: the effective settings: the deployment's batch settings overridden by the invocation's
      (mini_batch_size, instance_count, max_concurrency_per_instance, error_threshold,
      retry_settings{max_retries, timeout}, output_action, output_file_name).
    - status: Queued (waiting for capacity, in order of creation; see queue_position()), Running,
      Completed, Failed (error says why), Canceled.
    - mini_batches_total / _done / _failed: mini-batches made, scored, failed for good (after retries).
    - rows_total: input rows (tabular and text inputs; 0 until split, and for custom code it counts files);
      rows_done: output rows written by done mini-batches; rows_failed: rows in failed mini-batches.
    - created_at, started_at (left Queued), finished_at (reached a terminal state), updated_at.
    - error: why it failed, or the failed files with their errors when it completed despite failures.
    - output_dir: relative to the datastore root; holds `parts/` (one file per mini-batch) and the
      merged output file (settings["output_file_name"]), which exists once the job completed.
    - instance_seconds: model-server uptime of the job's instances, settled when they stop;
      cost: instance_seconds x the instance type's price per hour (metering/costs.py)."""

    name = models.CharField(max_length=64, unique=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="batch_jobs")
    endpoint = models.ForeignKey(Endpoint, on_delete=models.CASCADE, related_name="batch_jobs")
    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="batch_jobs")
    inputs = models.JSONField(default=dict)
    input_asset = models.ForeignKey(
        DataAsset, null=True, blank=True, on_delete=models.SET_NULL, related_name="batch_jobs"
    )
    input_path = models.CharField(max_length=500)
    input_files = models.PositiveIntegerField(default=0)
    settings = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True)
    mini_batches_total = models.PositiveIntegerField(default=0)
    mini_batches_done = models.PositiveIntegerField(default=0)
    mini_batches_failed = models.PositiveIntegerField(default=0)
    rows_total = models.PositiveBigIntegerField(default=0)
    rows_done = models.PositiveBigIntegerField(default=0)
    rows_failed = models.PositiveBigIntegerField(default=0)
    error = models.TextField(blank=True)
    output_dir = models.CharField(max_length=500, blank=True)
    instance_seconds = models.FloatField(default=0)
    cost = models.DecimalField(max_digits=12, decimal_places=6, default=Decimal(0))
    # outputs: the invocation's `outputs` as checked ({"score": {"type", "path"}}); output_uri: where the
    # merged output is written once the job completes (empty: only the job's own output folder).
    outputs = models.JSONField(default=dict, blank=True)
    output_uri = models.CharField(max_length=1000, blank=True)
    # False while the worker still has to fetch the job's inputs from their datastores (into
    # `<workspace>/.job-inputs/<job>/`) and split them into mini-batches.
    inputs_staged = models.BooleanField(default=True)
    created_by = models.ForeignKey(conf.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return self.name

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_JOB_STATES

    @property
    def output_file_name(self) -> str:
        return str(self.settings.get("output_file_name") or "predictions.csv")

    @property
    def output_root(self) -> Path:
        return datastore_root() / self.output_dir

    def queue_position(self) -> int | None:
        """1 for the next job to start; None unless Queued. Jobs start in order of creation, each compute's
        in its own line (controller/jobs.py admit)."""
        if self.status != JobStatus.QUEUED:
            return None
        compute = Deployment.objects.filter(pk=self.deployment_id).values("compute_id")  # a subquery: no extra trip
        earlier = BatchJob.objects.filter(
            models.Q(created_at__lt=self.created_at) | models.Q(created_at=self.created_at, pk__lt=self.pk),
            status=JobStatus.QUEUED, deployment__compute_id=models.Subquery(compute),
        )
        return earlier.count() + 1

    def progress(self) -> float:
        """Settled mini-batches over the total, 0-100 (what the API and the job's page show)."""
        if not self.mini_batches_total:
            return 100.0 if self.status == JobStatus.COMPLETED else 0.0
        return round(100.0 * (self.mini_batches_done + self.mini_batches_failed) / self.mini_batches_total, 1)

    @property
    def instance_minutes(self) -> float:
        return self.instance_seconds / 60.0


class MiniBatchStatus(models.TextChoices):
    PENDING = "Pending"
    RUNNING = "Running"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELED = "Canceled"


class MiniBatch(models.Model):
    """One unit of a job's work, scored in one request to one of the job's model servers.

    - job, index: its place in the job (0-based); outputs are merged in index order.
    - items: what it scores: `[{"file": <path relative to the job's input>, "start": <first row>,
      "stop": <row after the last, or null for the end of the file>}]`; a whole-file item has start 0
      and stop null. Row numbers count data rows (after a CSV header), from 0.
    - rows: input rows it holds (0 when unknown until scored, e.g. custom code).
    - status: Pending (waiting for a slot, or for a retry), Running (a task holds it until lease_until),
      Completed, Failed (after max_retries retries), Canceled (its job was canceled first).
    - attempts: runs started so far (the first run and its retries).
    - error: the last failure's message (the model server's answer or a timeout).
    - output_part: relative to the job's output_dir; written once, atomically, when it completes.
    - rows_out: output rows it wrote.
    - instance: the name of the instance that scored its last attempt (its log tells more).
    - lease_until: a Running mini-batch whose task died is taken back after this time.
    - started_at, finished_at: its last attempt's start and its end."""

    job = models.ForeignKey(BatchJob, on_delete=models.CASCADE, related_name="mini_batches")
    index = models.PositiveIntegerField()
    items = models.JSONField(default=list)
    rows = models.PositiveBigIntegerField(default=0)
    status = models.CharField(
        max_length=16, choices=MiniBatchStatus.choices, default=MiniBatchStatus.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    output_part = models.CharField(max_length=200, blank=True)
    rows_out = models.PositiveBigIntegerField(default=0)
    instance = models.CharField(max_length=64, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job_id", "index"]
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="unique_mini_batch_index")]

    def __str__(self) -> str:
        return f"{self.job.name}#{self.index}"

    @property
    def files(self) -> list[str]:
        return [item["file"] for item in self.items]
