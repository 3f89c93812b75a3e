"""Online endpoints in the UI: the Endpoints list (Online, Batch, Serverless tabs) and an
endpoint's page with Details, Test, Consume and Logs tabs (the Monitoring tab is
endpoints_app.views.monitoring; the deploy wizard is endpoints_app.views.deploy).

Every form is a plain POST that works without JavaScript; with htmx the same views
answer with the partial that changed. Writes go through endpoints_app.services."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from urllib.parse import urlencode

import requests
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch, Q
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from endpoints_app import jsonbody, keys
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.inference_urls import gateway_base, inference_base_url
from endpoints_app.metering.mirror import mirror_summary
from endpoints_app.models import (
    AuditLog,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    JobStatus,
    ProvisioningState,
    Role,
)
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services.audit import Actor
from endpoints_app.services.playground import playground_kind
from endpoints_app.views.batch import render_batch_endpoint
from endpoints_app.views.common import (
    endpoint_for,
    for_screen,
    pretty_json,
    require_workspace,
    wants_partial,
)

TRANSITIONAL = {ProvisioningState.CREATING, ProvisioningState.UPDATING, ProvisioningState.DELETING}
INSTANCE_TRANSITIONAL = {InstanceState.STARTING, InstanceState.STOPPING}
KIND_TABS = [("online", "Online"), ("batch", "Batch"), ("serverless", "Serverless")]
MAX_TEST_BODY = 1024 * 1024
MAX_SHOWN_RESPONSE = 200_000


def _deployments(endpoint: Endpoint) -> list[Deployment]:
    """The endpoint's deployments, each with `.current`: the instances worth showing
    (stopped rows are kept for billing, not for display)."""
    instances = Instance.objects.select_related("node").order_by("generation", "name")
    deployments = list(
        endpoint.deployments.select_related("model", "instance_type", "compute")
        .prefetch_related(Prefetch("instances", queryset=instances))
        .order_by("name")
    )
    for deployment in deployments:
        deployment.current = deployment_svc.current_instances(deployment)
    return deployments


def _busy(endpoint: Endpoint, deployments: list[Deployment]) -> bool:
    """Is anything still changing, so the page should keep polling?"""
    if endpoint.provisioning_state in TRANSITIONAL:
        return True
    for deployment in deployments:
        if deployment.provisioning_state in TRANSITIONAL:
            return True
        if any(i.state in INSTANCE_TRANSITIONAL for i in deployment.instances.all()):
            return True
    return False


def _tab_context(request, endpoint: Endpoint, tab: str) -> dict:
    return {
        "endpoint": endpoint,
        "tab": tab,
        "can_write": can(request.user, endpoint.workspace, Role.CONTRIBUTOR),
        "scoring_uri": f"{inference_base_url(request)}/inference/{endpoint.name}/score",
        "swagger_uri": f"{inference_base_url(request)}/inference/{endpoint.name}/swagger.json",
        # The endpoint's own state says nothing of its deployments': a Failed one shows beside it.
        "failed_deployments": [d.name for d in endpoint.deployments.all()
                               if d.provisioning_state == ProvisioningState.FAILED],
    }


# -- the Endpoints list ------------------------------------------------------------------------------

@login_required
def endpoint_list(request):
    workspace = require_workspace(request)
    kind = request.GET.get("kind", "online")
    if kind not in dict(KIND_TABS):
        kind = "online"
    search = request.GET.get("search", "").strip()
    rows = Endpoint.objects.filter(workspace=workspace, kind=kind).select_related("model").prefetch_related(
        Prefetch("deployments", queryset=Deployment.objects.order_by("name"))
    )
    if search:
        rows = rows.filter(name__icontains=search)
    if kind == Endpoint.Kind.BATCH:
        active = Q(batch_jobs__status__in=(JobStatus.QUEUED, JobStatus.RUNNING))
        rows = rows.annotate(job_count=Count("batch_jobs"), active_jobs=Count("batch_jobs", filter=active))
    rows = list(rows.order_by("name"))
    busy = any(
        e.provisioning_state in TRANSITIONAL or any(d.provisioning_state in TRANSITIONAL for d in e.deployments.all())
        for e in rows
    )
    context = {
        "kind": kind,
        "tabs": KIND_TABS,
        "rows": rows,
        "busy": busy,
        "search": search,
        "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
    }
    if wants_partial(request):
        return render(request, "endpoints/list.html#rows", context)
    return render(request, "endpoints/list.html", context)


# -- an endpoint's page: Details ---------------------------------------------------------------------

@login_required
def endpoint_detail(request, name: str):
    if request.htmx and not Endpoint.objects.filter(name=name).exists():
        # Polling after a delete finished: back to the list.
        return HttpResponseClientRedirect(reverse("endpoints"))
    endpoint = endpoint_for(request, name)
    if endpoint.kind == Endpoint.Kind.BATCH:
        return render_batch_endpoint(request, endpoint)
    return _render_detail(request, endpoint)


def _render_detail(request, endpoint: Endpoint, error: str | None = None, status: int = 200):
    if request.htmx:
        status = 200  # htmx swaps only 2xx answers; the error shows in the partial
    context = _detail_context(request, endpoint, error)
    if wants_partial(request):
        # The header's state badge sits outside the swapped section: update it out of band.
        context["oob"] = True
        return render(request, "endpoints/detail.html#live", context, status=status)
    return render(request, "endpoints/detail.html", context, status=status)


def _detail_context(request, endpoint: Endpoint, error: str | None = None) -> dict:
    deployments = _deployments(endpoint)
    scaling = _recent_autoscale_events(endpoint, deployments)
    for deployment in deployments:
        deployment.traffic_percent = int(endpoint.traffic.get(deployment.name, 0))
        deployment.mirror_percent = int(endpoint.mirror_traffic.get(deployment.name, 0))
        deployment.autoscale_events = scaling.get(str(deployment), [])
        refusal = deployment_svc.delete_refusal(endpoint, deployment)
        deployment.delete_refusal = refusal[1] if refusal else ""
        deployment.sole = len(deployments) == 1
    context = _tab_context(request, endpoint, "details")
    context.update({
        "deployments": deployments,
        "busy": _busy(endpoint, deployments),
        "error": error,
        "traffic_total": sum(int(v) for v in endpoint.traffic.values()),
        "mirror": mirror_summary(endpoint, since=timezone.now() - timedelta(hours=24)),
    })
    return context


def _recent_autoscale_events(endpoint: Endpoint, deployments: list, per_deployment: int = 3) -> dict[str, list]:
    """The controller's latest autoscale decisions (from the audit log), by deployment, in one query."""
    names = [str(d) for d in deployments if d.scale_settings.get("type") == "target_utilization"]
    if not names:
        return {}
    events: dict[str, list] = {}
    rows = AuditLog.objects.filter(
        workspace_id=endpoint.workspace_id, action="deployment.autoscale", object_name__in=names
    ).order_by("-time")[: per_deployment * len(names)]
    for row in rows:
        bucket = events.setdefault(row.object_name, [])
        if len(bucket) < per_deployment:
            bucket.append(row)
    return events


def _percent_fields(post, prefix: str, names: list[str]) -> dict:
    result = {}
    for name in names:
        raw = (post.get(f"{prefix}-{name}") or "0").strip()
        if not raw.isdigit():
            raise InvalidInput(f"{prefix} for '{name}' must be a whole number from 0 to 100.", field=prefix)
        result[name] = int(raw)
    return result


@login_required
@require_POST
def update_traffic(request, name: str):
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    names = list(endpoint.deployments.exclude(provisioning_state=ProvisioningState.DELETING)
                 .values_list("name", flat=True))
    try:
        traffic = _percent_fields(request.POST, "traffic", names)
        mirror = _percent_fields(request.POST, "mirror", names)
        endpoint_svc.do_update_endpoint(Actor.from_request(request), endpoint, traffic=traffic, mirror_traffic=mirror)
    except StudioError as exc:
        endpoint.refresh_from_db()
        if request.htmx:
            # The error shows in the traffic form itself, beside the sliders, with what was sent kept.
            return _render_traffic(request, endpoint, error=for_screen(exc), sent=request.POST)
        return _render_detail(request, endpoint, error=for_screen(exc), status=exc.status)
    endpoint.refresh_from_db()
    saved = "Traffic saved: " + ", ".join(f"{k} {v}%" for k, v in endpoint.traffic.items()) + (
        "".join(f"; mirror {k} {v}%" for k, v in endpoint.mirror_traffic.items())) + "."
    if not request.htmx:
        messages.success(request, saved)
        return redirect("endpoint-detail", endpoint.name)
    return _render_traffic(request, endpoint, saved=saved)


def _render_traffic(request, endpoint: Endpoint, *, error: str = "", saved: str = "", sent=None):
    """The traffic form (its error or confirmation inside it), and the Details section out of band so
    the traffic it shows agrees with the form."""
    context = _detail_context(request, endpoint)
    if sent is not None:
        for d in context["deployments"]:
            d.traffic_percent = sent.get(f"traffic-{d.name}", d.traffic_percent)
            d.mirror_percent = sent.get(f"mirror-{d.name}", d.mirror_percent)
        context["traffic_total"] = sum(int(v) for k, v in sent.items() if k.startswith("traffic-") and v.isdigit())
    context.update({"traffic_error": error, "traffic_saved": saved, "oob": True, "live_oob": True})
    html = (render(request, "endpoints/detail.html#traffic", context).content.decode()
            + render(request, "endpoints/detail.html#live", context).content.decode())
    return HttpResponse(html)


def _deployment_for_write(request, name: str, deployment_name: str) -> tuple[Endpoint, Deployment]:
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    deployment = Deployment.objects.filter(endpoint=endpoint, name=deployment_name).first()
    if deployment is None:
        raise Http404("No such deployment.")
    return endpoint, deployment


@login_required
@require_POST
def scale_deployment(request, name: str, deployment_name: str):
    endpoint, deployment = _deployment_for_write(request, name, deployment_name)
    post = request.POST
    if post.get("mode") == "autoscale":
        changes = {"scale_settings": {
            "type": "target_utilization",
            "min_instances": post.get("min_instances", ""),
            "max_instances": post.get("max_instances", ""),
            "target_utilization_percentage": post.get("target_utilization_percentage", ""),
        }}
    else:
        changes = {"instance_count": post.get("instance_count", "").strip(), "scale_settings": {"type": "default"}}
    try:
        deployment_svc.do_update_deployment(Actor.from_request(request), deployment, changes)
    except StudioError as exc:
        return _render_detail(request, endpoint, error=for_screen(exc), status=exc.status)
    if not request.htmx:
        return redirect("endpoint-detail", endpoint.name)
    return _render_detail(request, endpoint)


@login_required
@require_POST
def delete_deployment(request, name: str, deployment_name: str):
    endpoint, deployment = _deployment_for_write(request, name, deployment_name)
    try:
        deployment_svc.do_delete_deployment(Actor.from_request(request), deployment)
    except StudioError as exc:
        return _render_detail(request, endpoint, error=for_screen(exc), status=exc.status)
    messages.success(request, f"Deleting deployment {deployment_name}.")
    # The whole page again: the traffic form lists one deployment fewer.
    target = reverse("endpoint-detail", args=[endpoint.name])
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


@login_required
@require_POST
def delete_endpoint(request, name: str):
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    try:
        endpoint_svc.do_delete_endpoint(Actor.from_request(request), endpoint)
    except StudioError as exc:
        return _render_detail(request, endpoint, error=for_screen(exc), status=exc.status)
    messages.success(request, f"Deleting endpoint {name}.")
    target = reverse("endpoints")
    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)


# -- Test ----------------------------------------------------------------------------------------------

def _default_sample(deployments: list[Deployment], endpoint: Endpoint) -> str:
    if not deployments:
        return "{}"
    by_traffic = sorted(deployments, key=lambda d: -int(endpoint.traffic.get(d.name, 0)))
    return pretty_json(by_traffic[0].model.sample_request) or "{}"


def send_test_request(endpoint: Endpoint, body: str, deployment: str | None) -> dict:
    """POST `body` to the endpoint's scoring URL through the gateway, with the endpoint's own
    credential (the key never goes to the browser). Returns what the Test tab shows."""
    if len(body.encode()) > MAX_TEST_BODY:
        raise InvalidInput("The request body is larger than 1 MB.", field="body")
    try:
        jsonbody.loads(body)
    except jsonbody.JSONError as exc:
        raise InvalidInput(str(exc), field="body") from None
    if endpoint.auth_mode == Endpoint.AuthMode.AAD_TOKEN:
        raise InvalidInput("This endpoint takes identity tokens from the identity provider only; the studio holds "
                           "none to send for you.", field="auth_mode")
    if endpoint.auth_mode == Endpoint.AuthMode.KEY:
        credential = key_svc.get_keys(endpoint)["primary_key"]
    else:
        credential, _ = keys.issue_token(endpoint.pk, endpoint.token_generation)
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    timeouts = [int((d.request_settings or {}).get("request_timeout_ms", 5000)) for d in endpoint.deployments.all()]
    timeout = max(timeouts or [5000]) / 1000 + 5
    url = f"{gateway_base()}/inference/{endpoint.name}/score"
    started = time.perf_counter()
    try:
        response = requests.post(url, data=body.encode(), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        reason = exc.__class__.__name__
        return {"reached": False, "message": f"Could not reach the gateway at {gateway_base()}: {reason}."}
    latency_ms = (time.perf_counter() - started) * 1000
    text = response.text
    why = _not_serving(endpoint, deployment) if response.status_code == 503 else ""
    try:
        shown = pretty_json(response.json()) or text
    except ValueError:
        shown = text
    return {
        "reached": True,
        "status": response.status_code,
        "ok": response.ok,
        "latency_ms": latency_ms,
        "deployment": response.headers.get("azureml-model-deployment", ""),
        "body": shown[:MAX_SHOWN_RESPONSE],
        "truncated": len(shown) > MAX_SHOWN_RESPONSE,
        "why": why,
    }


def _not_serving(endpoint: Endpoint, deployment: str | None) -> str:
    """Why a 503 happened, as the deployments' states say it (Failed with its error, or still starting)."""
    rows = [d for d in endpoint.deployments.all() if not deployment or d.name == deployment]
    failed = [d for d in rows if d.provisioning_state == ProvisioningState.FAILED]
    if failed:
        first = failed[0]
        reason = (first.error or "").strip().splitlines()
        return (f"Deployment {first.name} has Failed" + (f": {reason[-1][:300]}" if reason else "")
                + ". See its error on the Details tab and its Logs.")
    busy = [d.name for d in rows if d.provisioning_state in (ProvisioningState.CREATING, ProvisioningState.UPDATING)]
    if busy:
        return f"Deployment {', '.join(busy)} is still starting; try again when it is Succeeded."
    return ""


@login_required
def endpoint_test(request, name: str):
    endpoint = endpoint_for(request, name)
    deployments = _deployments(endpoint)
    context = _tab_context(request, endpoint, "test")
    context.update({"deployments": deployments, "body": _default_sample(deployments, endpoint), "chosen": "",
                    "playground": playground_kind(endpoint)})
    status = 200
    if request.method == "POST":
        check_workspace(request.user, endpoint.workspace.name, Role.CONTRIBUTOR)
        body = request.POST.get("body", "")
        chosen = request.POST.get("deployment", "")
        if chosen and chosen not in {d.name for d in deployments}:
            chosen = ""
        context.update({"body": body, "chosen": chosen})
        try:
            context["result"] = send_test_request(endpoint, body, chosen or None)
        except StudioError as exc:
            context["result"] = {"reached": False, "message": exc.message}
            status = 200 if request.htmx else exc.status  # htmx swaps only 2xx answers
        if request.htmx:
            return render(request, "endpoints/test.html#result", context, status=status)
    return render(request, "endpoints/test.html", context, status=status)


# -- Consume -------------------------------------------------------------------------------------------

def _consume_context(request, endpoint: Endpoint) -> dict:
    context = _tab_context(request, endpoint, "consume")
    sample = _default_sample(_deployments(endpoint), endpoint)
    compact = json.dumps(json.loads(sample), separators=(",", ":"))
    # The curl snippet single-quotes the body for the shell.
    context.update({"sample": sample, "curl_body": compact.replace("'", "'\\''")})
    return context


@login_required
def endpoint_consume(request, name: str):
    endpoint = endpoint_for(request, name)
    return render(request, "endpoints/consume.html", _consume_context(request, endpoint))


@login_required
@require_POST
def reveal_keys(request, name: str):
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    context = _consume_context(request, endpoint)
    if endpoint.auth_mode == Endpoint.AuthMode.KEY:
        context["keys"] = key_svc.get_keys(endpoint)
    else:
        context["token"] = key_svc.issue_endpoint_token(Actor.from_request(request), endpoint)
    template = "endpoints/consume.html#credentials" if request.htmx else "endpoints/consume.html"
    return render(request, template, context)


@login_required
@require_POST
def regenerate_key(request, name: str):
    endpoint = endpoint_for(request, name, Role.CONTRIBUTOR)
    key_type = request.POST.get("key_type", "")
    context = _consume_context(request, endpoint)
    status = 200
    try:
        key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
    except StudioError as exc:
        context["error"] = for_screen(exc)
        status = 200 if request.htmx else exc.status
    else:
        endpoint.refresh_from_db()
        if endpoint.auth_mode == Endpoint.AuthMode.KEY:
            context["keys"] = key_svc.get_keys(endpoint)
        context["regenerated"] = key_type
    template = "endpoints/consume.html#credentials" if request.htmx else "endpoints/consume.html"
    return render(request, template, context, status=status)


# -- Logs ----------------------------------------------------------------------------------------------

LOG_LINE_CHOICES = (100, 500, 1000, 5000)


@login_required
def endpoint_logs(request, name: str):
    """Newest lines first; `follow` polls every 2 s (htmx); `download` gives the text oldest first, as a file."""
    endpoint = endpoint_for(request, name)
    deployments = _deployments(endpoint)
    chosen = next((d for d in deployments if d.name == request.GET.get("deployment")), None)
    if chosen is None and deployments:
        chosen = deployments[0]
    lines = request.GET.get("lines") or "100"
    follow = request.GET.get("follow") == "1"
    # Newest entry first by default (a traceback stays in reading order); oldest first reads like the file.
    order = "oldest" if request.GET.get("order") == "oldest" else "newest"
    context = _tab_context(request, endpoint, "logs")
    context.update({"deployments": deployments, "chosen": chosen, "lines": lines, "follow": follow,
                    "line_choices": LOG_LINE_CHOICES, "order": order})
    if chosen is not None:
        instance = request.GET.get("instance") or None
        download = request.GET.get("download") == "1"
        try:
            text = deployment_svc.read_deployment_logs(chosen, lines=lines, instance=instance,
                                                       newest_first=not download and order == "newest")
        except StudioError as exc:
            text = exc.message
        if download:
            response = HttpResponse(text, content_type="text/plain; charset=utf-8")
            filename = f"{endpoint.name}-{chosen.name}{'-' + instance if instance else ''}.log"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        context["log"] = text
        context["instance"] = instance or ""
        context["query"] = urlencode({"deployment": chosen.name, "instance": instance or "", "lines": lines,
                                      "order": order})
    if wants_partial(request):
        return render(request, "endpoints/logs.html#log", context)
    return render(request, "endpoints/logs.html", context)
