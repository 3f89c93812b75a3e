"""Batch endpoints and jobs in the UI: a batch endpoint's page (deployments, the default
deployment switch, Invoke, its jobs), the create form the catalog's Batch buttons lead to, the
Jobs page and a job's page with live progress, its failures with their logs, Cancel and the
outputs.

Forms are plain POSTs that work without JavaScript; the Jobs table and a job's progress are htmx
partials that poll while something runs. Every write goes through services/batch.py and
services/data.py; the views only turn form fields into the specs those services parse."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from endpoints_app.downloads import file_download
from endpoints_app.errors import StudioError
from endpoints_app.filters import latest_versions, visible_models
from endpoints_app.inference_urls import inference_base_url
from endpoints_app.models import (
    BatchJob,
    CatalogModel,
    DataAsset,
    Deployment,
    Endpoint,
    Instance,
    InstanceType,
    JobStatus,
    ProvisioningState,
    Role,
)
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import batch as batch_svc
from endpoints_app.services import computes as compute_svc
from endpoints_app.services import data as data_svc
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import require_workspace, wants_partial

# Form fields of a batch deployment, as the services' spec keys (retry settings are nested).
DEPLOYMENT_FIELDS = ("name", "model", "compute", "instance_type", "instance_count", "mini_batch_size",
                     "max_concurrency_per_instance", "error_threshold", "output_action", "output_file_name",
                     "output_columns")
RETRY_FIELDS = ("max_retries", "timeout")
# Settings an invocation may override from the Invoke form (empty = the deployment's).
INVOKE_SETTINGS = ("mini_batch_size", "instance_count", "error_threshold", "output_file_name", "output_columns")
JOB_PAGE_SIZE = 100
ENDPOINT_JOBS_SHOWN = 10


# -- shared helpers ----------------------------------------------------------------------------------

def _batch_endpoint(request, name: str, need: Role = Role.READER) -> Endpoint:
    endpoint = Endpoint.objects.select_related("workspace").filter(name=name, kind=Endpoint.Kind.BATCH).first()
    if endpoint is None:
        raise Http404("No such batch endpoint.")
    check_workspace(request.user, endpoint.workspace.name, need)
    return endpoint


def _job(request, name: str, need: Role = Role.READER) -> BatchJob:
    job = (BatchJob.objects.select_related("workspace", "endpoint", "deployment", "deployment__model",
                                           "deployment__instance_type", "input_asset", "created_by")
           .filter(name=name).first())
    if job is None:
        raise Http404("No such job.")
    check_workspace(request.user, job.workspace.name, need)
    return job


def _batch_models(workspace) -> list[CatalogModel]:
    rows = latest_versions(visible_models(workspace)).filter(deployment_kinds__icontains='"batch"')
    return list(rows.order_by("name"))


def _deployment_values(post=None, model: str = "") -> dict:
    """The deployment form's values: what was posted, else the services' defaults."""
    defaults = batch_svc.BATCH_DEFAULTS
    values = {
        "name": "blue", "model": model, "compute": "local", "instance_type": "", "instance_count": "1",
        "output_columns": "",
        **{key: str(defaults[key]) for key in ("mini_batch_size", "max_concurrency_per_instance", "error_threshold",
                                                "output_action", "output_file_name")},
        **{key: str(defaults["retry_settings"][key]) for key in RETRY_FIELDS},
    }
    if post is not None:
        for key in (*DEPLOYMENT_FIELDS, *RETRY_FIELDS):
            values[key] = (post.get(key) or "").strip()
    return values


def _deployment_spec(values: dict) -> dict:
    """The deployment.yml the form amounts to; empty fields are left to the services' defaults."""
    spec = {key: values[key] for key in DEPLOYMENT_FIELDS if values.get(key)}
    retry = {key: values[key] for key in RETRY_FIELDS if values.get(key)}
    if retry:
        spec["retry_settings"] = retry
    return spec


def _form_context(workspace, values: dict) -> dict:
    return {
        "values": values,
        "models": _batch_models(workspace),
        "instance_types": list(InstanceType.objects.filter(is_active=True)),
        "computes": compute_svc.deployable_computes(),
        "output_actions": batch_svc.OUTPUT_ACTIONS,
    }


def _job_view(job: BatchJob) -> BatchJob:
    """Adds what the progress display shows: percent (the API's own figure), elapsed seconds,
    rows per second and an estimate of the time left from the pace so far."""
    job.percent = job.progress()
    # The bar shows done and failed mini-batches apart.
    total = job.mini_batches_total or 1
    job.done_percent = 100.0 * job.mini_batches_done / total if job.mini_batches_total else job.percent
    job.failed_percent = 100.0 * job.mini_batches_failed / total if job.mini_batches_total else 0.0
    job.elapsed = None
    job.rate = None
    job.eta = None
    if job.started_at is not None:
        elapsed = max(0.001, ((job.finished_at or timezone.now()) - job.started_at).total_seconds())
        job.elapsed = elapsed
        job.rate = job.rows_done / elapsed
        settled = job.mini_batches_done + job.mini_batches_failed
        if not job.is_terminal and settled and job.mini_batches_total:
            job.eta = elapsed * (job.mini_batches_total - settled) / settled
    return job


# -- a batch endpoint's page ---------------------------------------------------------------------------

def _endpoint_context(request, endpoint: Endpoint) -> dict:
    deployments = list(
        endpoint.deployments.select_related("model", "instance_type", "compute")
        .exclude(provisioning_state=ProvisioningState.DELETING).order_by("name")
    )
    jobs = [
        _job_view(j) for j in BatchJob.objects.filter(endpoint=endpoint)
        .select_related("deployment", "endpoint")[:ENDPOINT_JOBS_SHOWN]
    ]
    assets = list(DataAsset.objects.filter(workspace=endpoint.workspace).order_by("name", "-version"))
    return {
        "endpoint": endpoint,
        "default_name": (endpoint.defaults or {}).get("deployment_name", ""),
        "deployments": deployments,
        "jobs": jobs,
        "job_count": BatchJob.objects.filter(endpoint=endpoint).count(),
        "assets": assets,
        "can_write": can(request.user, endpoint.workspace, Role.CONTRIBUTOR),
        "scoring_uri": f"{inference_base_url(request)}/inference/{endpoint.name}/jobs",
        "busy": any(not j.is_terminal for j in jobs),
        "invoke_settings": INVOKE_SETTINGS,
        "example_asset": assets[0].asset_id if assets else "studio:data/<name>/versions/1",
    }


def render_batch_endpoint(request, endpoint: Endpoint, error: str | None = None, status: int = 200,
                          form_values: dict | None = None, open_form: str = ""):
    """The batch endpoint's page (endpoint_detail hands batch endpoints here)."""
    context = _endpoint_context(request, endpoint)
    context.update(_form_context(endpoint.workspace, form_values or _deployment_values(
        model=request.GET.get("model", ""))))
    if not form_values:
        taken = {d.name for d in context["deployments"]}
        context["values"]["name"] = next((n for n in ("blue", "green", "red", "yellow") if n not in taken), "")
    context.update({"error": error, "open_form": open_form or request.GET.get("form", "")})
    if wants_partial(request) and request.method == "GET":
        return render(request, "batch/endpoint.html#jobs", context)
    return render(request, "batch/endpoint.html", context, status=status)


def _back(request, endpoint: Endpoint, note: str):
    if not request.htmx:
        messages.success(request, note)
    target = reverse("endpoint-detail", args=[endpoint.name])
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


@login_required
def create_batch_endpoint(request):
    """A new batch endpoint with its first deployment (the catalog's Batch buttons lead here)."""
    workspace = require_workspace(request)
    allowed = can(request.user, workspace, Role.CONTRIBUTOR)
    source = request.POST if request.method == "POST" else request.GET
    values = _deployment_values(request.POST if request.method == "POST" else None, model=source.get("model", ""))
    endpoint_name = (source.get("endpoint_name") or "").strip()
    description = (source.get("description") or "").strip()
    error = field = None
    if request.method == "POST":
        check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
        actor = Actor.from_request(request)
        try:
            # One transaction: a deployment the services refuse leaves no endpoint behind.
            with transaction.atomic():
                endpoint = batch_svc.do_create_batch_endpoint(actor, workspace, name=endpoint_name,
                                                              description=description)
                batch_svc.do_create_batch_deployment(actor, endpoint, _deployment_spec(values))
        except StudioError as exc:
            error, field = exc.message, exc.field
        else:
            messages.success(request, f"Batch endpoint {endpoint.name} is ready; invoke it with a data asset.")
            return redirect("endpoint-detail", endpoint.name)
    if not endpoint_name and values["model"]:
        endpoint_name = (values["model"].split("/models/")[-1].split("/")[0].split(":")[0] + "-batch")[:40]
    context = {"allowed": allowed, "endpoint_name": endpoint_name, "description": description, "error": error,
               "field": field, **_form_context(workspace, values)}
    return render(request, "batch/create.html", context, status=400 if error else 200)


@login_required
@require_POST
def reveal_credentials(request, name: str):
    """The endpoint's keys (or a one-hour token for aml_token endpoints) for its scoring URI."""
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    context = _endpoint_context(request, endpoint)
    if endpoint.auth_mode == Endpoint.AuthMode.KEY:
        context["keys"] = key_svc.get_keys(endpoint)
    else:
        context["token"] = key_svc.issue_endpoint_token(Actor.from_request(request), endpoint)
    return render(request, "batch/endpoint.html#consume", context)


@login_required
@require_POST
def add_batch_deployment(request, name: str):
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    values = _deployment_values(request.POST)
    try:
        batch_svc.do_create_batch_deployment(Actor.from_request(request), endpoint, _deployment_spec(values))
    except StudioError as exc:
        return render_batch_endpoint(request, endpoint, error=exc.message, status=exc.status, form_values=values,
                                     open_form="deployment")
    return _back(request, endpoint, f"Deployment {values['name']} added.")


@login_required
@require_POST
def set_default_deployment(request, name: str):
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    chosen = request.POST.get("deployment_name", "")
    try:
        batch_svc.do_update_batch_endpoint(Actor.from_request(request), endpoint,
                                           defaults={"deployment_name": chosen})
    except StudioError as exc:
        return render_batch_endpoint(request, endpoint, error=exc.message, status=exc.status)
    return _back(request, endpoint, f"Invocations now go to {chosen}.")


@login_required
@require_POST
def delete_batch_deployment(request, name: str, deployment_name: str):
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    deployment = Deployment.objects.filter(endpoint=endpoint, name=deployment_name).first()
    if deployment is None:
        raise Http404("No such deployment.")
    try:
        batch_svc.do_delete_batch_deployment(Actor.from_request(request), deployment)
    except StudioError as exc:
        return render_batch_endpoint(request, endpoint, error=exc.message, status=exc.status)
    return _back(request, endpoint, f"Deployment {deployment_name} deleted.")


@login_required
@require_POST
def delete_batch_endpoint(request, name: str):
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    try:
        batch_svc.do_delete_batch_endpoint(Actor.from_request(request), endpoint)
    except StudioError as exc:
        return render_batch_endpoint(request, endpoint, error=exc.message, status=exc.status)
    messages.success(request, f"Deleting batch endpoint {name}.")
    target = reverse("endpoints") + "?kind=batch"
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


@login_required
@require_POST
def invoke(request, name: str):
    """Start a job on a data asset, or on files uploaded here (stored first as a data asset)."""
    endpoint = _batch_endpoint(request, name, Role.CONTRIBUTOR)
    actor = Actor.from_request(request)
    post = request.POST
    files = request.FILES.getlist("files")
    uploaded = None
    try:
        if post.get("source") == "upload" or (files and not post.get("asset")):
            uploaded = data_svc.do_create_data_asset(
                actor, endpoint.workspace, name=(post.get("asset_name") or f"{endpoint.name}-input").strip(),
                files=files,
            )
            path = uploaded.asset_id
        else:
            path = post.get("asset", "").strip()
        body = {"inputs": {"input_data": {"type": "uri_folder", "path": path}}}
        if post.get("deployment_name"):
            body["deployment_name"] = post["deployment_name"]
        settings = {key: post[key].strip() for key in INVOKE_SETTINGS if (post.get(key) or "").strip()}
        if settings:
            body["settings"] = settings
        job = batch_svc.do_create_job(actor, endpoint, body)
    except StudioError as exc:
        message = exc.message
        if uploaded is not None:
            message = f"The files were stored as data asset {uploaded}; the job was refused: {message}"
        return render_batch_endpoint(request, endpoint, error=message, status=exc.status, open_form="invoke")
    messages.success(request, f"Job {job.name} started.")
    target = reverse("job-detail", args=[job.name])
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


# -- Jobs ------------------------------------------------------------------------------------------------

@login_required
def job_list(request):
    workspace = require_workspace(request)
    rows = BatchJob.objects.filter(workspace=workspace).select_related("endpoint", "deployment")
    state = request.GET.get("status", "")
    if state in JobStatus.values:
        rows = rows.filter(status=state)
    else:
        state = ""
    endpoint = request.GET.get("endpoint", "")
    if endpoint:
        rows = rows.filter(endpoint__name=endpoint)
    jobs = [_job_view(j) for j in rows[:JOB_PAGE_SIZE]]
    context = {
        "jobs": jobs,
        "status": state,
        "statuses": JobStatus.values,
        "endpoint": endpoint,
        "endpoints": list(Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.BATCH)
                          .order_by("name").values_list("name", flat=True)),
        "busy": any(not j.is_terminal for j in jobs),
        "truncated": len(jobs) == JOB_PAGE_SIZE,
    }
    if wants_partial(request):
        return render(request, "batch/jobs.html#rows", context)
    return render(request, "batch/jobs.html", context)


def _job_context(request, job: BatchJob) -> dict:
    job = _job_view(job)
    output = job.output_file_name
    has_output = job.status == JobStatus.COMPLETED and batch_svc.output_file(job, output) is not None
    # The files its score.py wrote to its output folder (the job page lists the first ones).
    written = [f for f in batch_svc.output_files(job) if f != output] if job.status == JobStatus.COMPLETED else []
    return {
        "written_files": written[:50],
        "written_more": max(0, len(written) - 50),
        "job": job,
        "can_write": can(request.user, job.workspace, Role.CONTRIBUTOR),
        "failures": batch_svc.job_failures(job) if job.mini_batches_failed else [],
        "output": output if has_output else "",
        "instances": list(batch_svc.active_job_instances(job).order_by("name")),
        **batch_svc.job_charges(job),
    }


@login_required
def job_detail(request, name: str):
    job = _job(request, name)
    context = _job_context(request, job)
    if wants_partial(request):
        return render(request, "batch/job.html#live", context)
    return render(request, "batch/job.html", context)


@login_required
@require_POST
def cancel_job(request, name: str):
    job = _job(request, name, Role.CONTRIBUTOR)
    try:
        batch_svc.do_cancel_job(Actor.from_request(request), job, reason="canceled from the studio")
    except StudioError as exc:
        context = _job_context(request, job)
        context["error"] = exc.message
        template = "batch/job.html#live" if request.htmx else "batch/job.html"
        return render(request, template, context, status=200 if request.htmx else exc.status)
    job.refresh_from_db()
    if request.htmx:
        return render(request, "batch/job.html#live", _job_context(request, job))
    messages.success(request, f"Job {job.name} canceled.")
    return redirect("job-detail", job.name)


@login_required
def job_output(request, name: str, file: str):
    job = _job(request, name)
    try:
        path = batch_svc.output_file(job, file)
    except StudioError:
        path = None
    if path is None:
        raise Http404(f"Job {job.name} has no output {file!r} (it is {job.status}).")
    return file_download(request, path, "text/csv" if path.suffix == ".csv" else "application/octet-stream")


@login_required
def job_log(request, name: str):
    """The log of the instance that scored a mini-batch, or of every instance the job ran."""
    job = _job(request, name)
    names = list(Instance.objects.filter(batch_job=job).order_by("name").values_list("name", flat=True))
    instance = request.GET.get("instance", "")
    if instance and instance not in names:
        raise Http404(f"Job {job.name} ran no instance {instance!r}.")
    lines = request.GET.get("lines", "200")
    lines = int(lines) if lines.isdigit() and 1 <= int(lines) <= 5000 else 200
    parts = []
    for shown in [instance] if instance else names:
        if not instance:
            parts.append(f"==> instance {shown} <==\n")
        try:
            parts.append(deployment_svc.read_deployment_logs(job.deployment, lines=lines, instance=shown))
        except StudioError as exc:
            parts.append(exc.message + "\n")
    log = "".join(parts) or f"Job {job.name} has started no model server yet ({job.status}).\n"
    return render(request, "batch/log.html", {"job": job, "instance": instance, "instances": names, "log": log,
                                              "lines": lines})
