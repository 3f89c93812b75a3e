"""Online endpoints in the UI: the Endpoints list (Online, Batch, Serverless tabs), the
deploy wizard, and an endpoint's page with Details, Test, Consume and Logs tabs (the
Monitoring tab is endpoints_app.views.monitoring).

Every form is a plain POST that works without JavaScript; with htmx the same views
answer with the partial that changed. Writes go through endpoints_app.services.endpoints."""

from __future__ import annotations

import json
import re
import secrets
import time
from datetime import timedelta
from urllib.parse import urlencode

import requests
import yaml
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.db.models import Count, Prefetch, Q
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from endpoints_app import keys
from endpoints_app.api.endpoints import inference_base_url
from endpoints_app.catalog.runtimes import runtime_status
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.gateway.mirror import mirror_summary
from endpoints_app.models import (
    AuditLog,
    CatalogModel,
    Deployment,
    Endpoint,
    Instance,
    InstanceState,
    InstanceType,
    JobStatus,
    ProvisioningState,
    Role,
)
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import keys as key_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services import specs
from endpoints_app.services.audit import Actor
from endpoints_app.services.playground import playground_kind
from endpoints_app.views.catalog import pretty_json, wants_partial
from endpoints_app.views.home import require_workspace

TRANSITIONAL = {ProvisioningState.CREATING, ProvisioningState.UPDATING, ProvisioningState.DELETING}
INSTANCE_TRANSITIONAL = {InstanceState.STARTING, InstanceState.STOPPING}
KIND_TABS = [("online", "Online"), ("batch", "Batch"), ("serverless", "Serverless")]
WIZARD_STEPS = [("endpoint", "Endpoint"), ("deployment", "Deployment"), ("settings", "Request settings"),
                ("review", "Review")]
STEP_NAMES = [name for name, _ in WIZARD_STEPS]
MAX_TEST_BODY = 1024 * 1024
MAX_SHOWN_RESPONSE = 200_000


def _endpoint_for(request, name: str, need: Role = Role.READER) -> Endpoint:
    """The endpoint by name (unique in the installation), 404 unless the user is a member
    of its workspace, 403 when the role is below `need`."""
    endpoint = Endpoint.objects.select_related("workspace").filter(name=name).first()
    if endpoint is None:
        raise Http404("No such endpoint.")
    check_workspace(request.user, endpoint.workspace.name, need)
    return endpoint


def _deployments(endpoint: Endpoint) -> list[Deployment]:
    """The endpoint's deployments, each with `.current`: the instances worth showing
    (stopped rows are kept for billing, not for display)."""
    instances = Instance.objects.select_related("node").order_by("generation", "name")
    deployments = list(
        endpoint.deployments.select_related("model", "instance_type")
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


def _gateway_base() -> str:
    """Where this server reaches the gateway: STUDIO_GATEWAY_URL when the gateway runs
    apart, else this machine's web port (the embedded default mounts the gateway there)."""
    if settings.STUDIO_GATEWAY_URL:
        return settings.STUDIO_GATEWAY_URL
    host = settings.STUDIO_HOST  # the supervisor's bind address
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.STUDIO_PORT}"


def _tab_context(request, endpoint: Endpoint, tab: str) -> dict:
    return {
        "endpoint": endpoint,
        "tab": tab,
        "can_write": can(request.user, endpoint.workspace, Role.CONTRIBUTOR),
        "scoring_uri": f"{inference_base_url(request)}/inference/{endpoint.name}/score",
        "swagger_uri": f"{inference_base_url(request)}/inference/{endpoint.name}/swagger.json",
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


# -- the deploy wizard -------------------------------------------------------------------------------

def _default_endpoint_name(model: CatalogModel | None) -> str:
    base = re.sub(r"[^a-z0-9-]+", "-", (model.name if model else "endpoint").lower()).strip("-")
    if not base or not base[0].isalpha():
        base = "ep-" + base
    return f"{base[:26].rstrip('-')}-{secrets.token_hex(2)}"


def _wizard_values(source, workspace) -> dict:
    get = lambda key, default="": (source.get(key) or default).strip()  # noqa: E731
    return {
        "model": get("model"),
        "kind": get("kind", "online"),
        "endpoint_mode": get("endpoint_mode", "new"),
        "endpoint_name": get("endpoint_name"),
        "existing_endpoint": get("existing_endpoint"),
        "auth_mode": get("auth_mode", "key"),
        "deployment_name": get("deployment_name"),
        "instance_type": get("instance_type"),
        "instance_count": get("instance_count", "1"),
        # Empty until a model is known: its default depends on the model (a chat model gets minutes).
        "request_timeout_ms": get("request_timeout_ms"),
        "max_concurrent_requests_per_instance": get(
            "max_concurrent_requests_per_instance", str(specs.REQUEST_DEFAULTS["max_concurrent_requests_per_instance"])
        ),
    }


# API field names as the wizard and the detail page call them.
SCREEN_WORDS = [
    (re.compile(r"request_settings\.request_timeout_ms"), "Request timeout (ms)"),
    (re.compile(r"request_settings\.max_concurrent_requests_per_instance"), "Max concurrent requests per instance"),
    (re.compile(r"\bmirror_traffic\.([\w-]+)"), r"mirror traffic to '\1'"),
    (re.compile(r"\bmirror_traffic\b"), "mirror traffic"),
    (re.compile(r"\btraffic\.([\w-]+)"), r"traffic to '\1'"),
    (re.compile(r"\binstance_count\b"), "instance count"),
    (re.compile(r"\binstance_type\b"), "instance type"),
    (re.compile(r"\bauth_mode\b"), "authentication"),
]
MODEL_REQUIRED = "Choose a model."


def for_screen(exc: StudioError) -> str:
    """A service's message, worded for a person at the screen rather than for an API client."""
    if exc.field == "model" and "is required" in exc.message:
        return MODEL_REQUIRED
    message = exc.message
    for pattern, words in SCREEN_WORDS:
        message = pattern.sub(words, message)
    return message[:1].upper() + message[1:]


def _existing_endpoint(workspace, name: str) -> Endpoint:
    endpoint = Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.ONLINE, name=name).first()
    if endpoint is None:
        raise InvalidInput("Choose one of this workspace's online endpoints.", field="existing_endpoint")
    if endpoint.provisioning_state == ProvisioningState.DELETING:
        raise InvalidInput(f"Endpoint '{endpoint.name}' is being deleted.", field="existing_endpoint")
    return endpoint


def _check_step(step: str, values: dict, workspace) -> dict:
    """{wizard field: message} for one step, from the services' own parsers and checks."""
    errors: dict[str, str] = {}

    def attempt(key: str | None, check, *args):
        try:
            return check(*args)
        except StudioError as exc:
            field = key or (exc.field or "").rpartition(".")[2]
            errors.setdefault(field, for_screen(exc))
            return None

    if step == "endpoint":
        model = attempt("model", specs.resolve_model, workspace, values["model"])
        if model is not None:
            attempt("model", specs.check_model_kind, model, Endpoint.Kind.ONLINE)
        if values["endpoint_mode"] == "existing":
            attempt("existing_endpoint", _existing_endpoint, workspace, values["existing_endpoint"])
        else:
            attempt("endpoint_name", specs.parse_endpoint_name, values["endpoint_name"])
            attempt("auth_mode", specs.parse_auth_mode, values["auth_mode"])
    elif step == "deployment":
        endpoint = None
        if values["endpoint_mode"] == "existing":
            endpoint = Endpoint.objects.filter(workspace=workspace, name=values["existing_endpoint"]).first()
        attempt("deployment_name", specs.parse_new_deployment_name, endpoint, values["deployment_name"])
        instance_type = attempt("instance_type", specs.resolve_instance_type, values["instance_type"] or None)
        count = attempt("instance_count", specs.parse_int, values["instance_count"], "instance_count", 1,
                        specs.MAX_INSTANCES)
        if instance_type is not None and count is not None:
            attempt("instance_count", deployment_svc.check_resources, workspace, instance_type, count)
    elif step == "settings":
        attempt(None, specs.parse_request_settings, {
            "request_timeout_ms": values["request_timeout_ms"],
            "max_concurrent_requests_per_instance": values["max_concurrent_requests_per_instance"],
        })
    return errors


def _specs(values: dict, model: CatalogModel | None) -> tuple[dict | None, dict]:
    """(endpoint.yml or None for an existing endpoint, deployment.yml) as the wizard fills them."""
    endpoint_name = values["endpoint_name"] if values["endpoint_mode"] == "new" else values["existing_endpoint"]
    endpoint_spec = None
    if values["endpoint_mode"] == "new":
        endpoint_spec = {"name": endpoint_name, "auth_mode": values["auth_mode"]}
    deployment_spec = {
        "name": values["deployment_name"],
        "endpoint_name": endpoint_name,
        "model": model.asset_id if model else values["model"],
        "instance_type": values["instance_type"],
        "instance_count": int(values["instance_count"]) if values["instance_count"].isdigit() else 1,
        "request_settings": {
            "request_timeout_ms": int(values["request_timeout_ms"] or 0),
            "max_concurrent_requests_per_instance": int(values["max_concurrent_requests_per_instance"] or 0),
        },
    }
    return endpoint_spec, deployment_spec


def _deploy(request, workspace, values: dict, model: CatalogModel) -> Endpoint:
    actor = Actor.from_request(request)
    endpoint_spec, deployment_spec = _specs(values, model)
    deployment_spec.pop("endpoint_name")
    # One transaction: a deployment the services refuse (quota, capacity) leaves no new endpoint behind.
    with transaction.atomic():
        if endpoint_spec is not None:
            endpoint = endpoint_svc.do_create_endpoint(actor, workspace, **endpoint_spec)
        else:
            endpoint = Endpoint.objects.get(workspace=workspace, kind=Endpoint.Kind.ONLINE,
                                            name=values["existing_endpoint"])
        deployment_svc.do_create_deployment(actor, endpoint, deployment_spec)
    return endpoint


@login_required
def deploy_wizard(request):
    workspace = require_workspace(request)
    allowed = can(request.user, workspace, Role.CONTRIBUTOR)
    source = request.POST if request.method == "POST" else request.GET
    values = _wizard_values(source, workspace)
    step = source.get("step", "endpoint")
    if step not in STEP_NAMES:
        step = "endpoint"
    errors: dict[str, str] = {}
    error: str | None = None
    # From a model's page the model is fixed; otherwise (an endpoint's "Add deployment") it is a choice.
    choose_model = not values["model"]
    if request.method == "GET":
        # Coming from a model's page or an endpoint's Details tab.
        if source.get("endpoint"):
            values["endpoint_mode"] = "existing"
            values["existing_endpoint"] = source["endpoint"]
            if not values["model"]:
                values["model"] = _endpoint_model(workspace, source["endpoint"])
    else:
        choose_model = request.POST.get("choose_model") == "1"
    if request.method == "POST":
        check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
        action = request.POST.get("action", "next")
        index = STEP_NAMES.index(step)
        if action == "back":
            step = STEP_NAMES[max(0, index - 1)]
        elif action == "deploy":
            for name in STEP_NAMES[:-1]:
                errors = _check_step(name, values, workspace)
                if errors:
                    step = name
                    break
            else:
                model = specs.resolve_model(workspace, values["model"])
                try:
                    endpoint = _deploy(request, workspace, values, model)
                except StudioError as exc:
                    error = for_screen(exc)
                    step = "review"
                else:
                    messages.success(request, f"Deploying {values['deployment_name']} to {endpoint.name}.")
                    target = reverse("endpoint-detail", args=[endpoint.name])
                    return HttpResponseClientRedirect(target) if request.htmx else redirect(target)
        else:
            errors = _check_step(step, values, workspace)
            if not errors:
                step = STEP_NAMES[min(len(STEP_NAMES) - 1, index + 1)]

    model = None
    if values["model"]:
        try:
            model = specs.resolve_model(workspace, values["model"])
            values["model"] = model.asset_id
        except InvalidInput as exc:
            errors.setdefault("model", for_screen(exc))
    if not values["request_timeout_ms"]:
        values["request_timeout_ms"] = str(specs.parse_request_settings({}, model=model)["request_timeout_ms"])
    if not values["endpoint_name"] and values["endpoint_mode"] == "new":
        values["endpoint_name"] = _default_endpoint_name(model)
    existing = list(
        Endpoint.objects.filter(workspace=workspace, kind=Endpoint.Kind.ONLINE)
        .exclude(provisioning_state=ProvisioningState.DELETING)
        .prefetch_related("deployments")
        .order_by("name")
    )
    if not values["deployment_name"]:
        taken = set()
        if values["endpoint_mode"] == "existing":
            for endpoint in existing:
                if endpoint.name == values["existing_endpoint"]:
                    taken = {d.name for d in endpoint.deployments.all()}
        values["deployment_name"] = next(
            (n for n in ("blue", "green", "red", "yellow", "purple") if n not in taken), f"d{secrets.token_hex(2)}"
        )
    instance_types = list(InstanceType.objects.filter(is_active=True))
    usage = deployment_svc.quota_usage(workspace, {t.family for t in instance_types})
    for t in instance_types:
        t.quota_used, t.quota_limit = usage[t.family]
        t.quota_left = max(0, t.quota_limit - t.quota_used)
    if not values["instance_type"] and instance_types:
        values["instance_type"] = instance_types[0].name
    chosen_type = next((t for t in instance_types if t.name == values["instance_type"]), None)

    context = {
        "allowed": allowed,
        "values": values,
        "step": step,
        "steps": WIZARD_STEPS,
        "step_index": STEP_NAMES.index(step),
        "errors": errors,
        "error": error,
        "model": model,
        "choose_model": choose_model or model is None,
        "models": _online_models(workspace) if choose_model or model is None else [],
        "existing": existing,
        "instance_types": instance_types,
        "chosen_type": chosen_type,
        "kind_supported": values["kind"] == "online",
    }
    if step == "review":
        if model is not None:
            context["runtime_ok"], context["runtime_reason"] = runtime_status(model)
        endpoint_spec, deployment_spec = _specs(values, model)
        context["endpoint_yaml"] = yaml.safe_dump(endpoint_spec, sort_keys=False) if endpoint_spec else ""
        context["deployment_yaml"] = yaml.safe_dump(deployment_spec, sort_keys=False)
        if chosen_type is not None and values["instance_count"].isdigit():
            cost = chosen_type.price_per_hour * int(values["instance_count"])
            context["hourly_cost"] = f"{cost.normalize():f}"
    if wants_partial(request):
        return render(request, "endpoints/wizard.html#wizard", context)
    return render(request, "endpoints/wizard.html", context)


def _endpoint_model(workspace, endpoint_name: str) -> str:
    """The model of the endpoint's deployment with the most live traffic (the first one without any)."""
    endpoint = Endpoint.objects.filter(workspace=workspace, name=endpoint_name).first()
    if endpoint is None:
        return ""
    deployments = list(endpoint.deployments.select_related("model").order_by("name"))
    if not deployments:
        return ""
    top = max(deployments, key=lambda d: int((endpoint.traffic or {}).get(d.name, 0)))
    return top.model.asset_id


def _online_models(workspace) -> list[CatalogModel]:
    from endpoints_app.filters import latest_versions, visible_models

    rows = latest_versions(visible_models(workspace)).filter(deployment_kinds__icontains='"online"')
    return list(rows.order_by("name"))


@login_required
@require_GET
def check_endpoint_name(request):
    """As you type in the wizard: is this endpoint name free?"""
    require_workspace(request)
    name = request.GET.get("endpoint_name", "").strip()
    try:
        specs.parse_endpoint_name(name)
    except StudioError as exc:
        return HttpResponse(f'<span class="error" id="name-check-result">{escape(for_screen(exc))}</span>')
    return HttpResponse(f'<span class="ok" id="name-check-result">✓ {escape(name)} is available</span>')


@login_required
@require_GET
def check_resources(request):
    """As you pick an instance type and count in the wizard: do quota and capacity allow it?"""
    workspace = require_workspace(request)
    errors = _check_step("deployment", {**_wizard_values(request.GET, workspace), "deployment_name": "x"}, workspace)
    problem = errors.get("instance_count") or errors.get("instance_type")
    if problem:
        return HttpResponse(f'<span class="error" id="resource-check-result">{escape(problem)}</span>')
    return HttpResponse('<span class="ok" id="resource-check-result">✓ Within quota, and the nodes have room.</span>')


# -- an endpoint's page: Details ---------------------------------------------------------------------

@login_required
def endpoint_detail(request, name: str):
    if request.htmx and not Endpoint.objects.filter(name=name).exists():
        # Polling after a delete finished: back to the list.
        return HttpResponseClientRedirect(reverse("endpoints"))
    endpoint = _endpoint_for(request, name)
    if endpoint.kind == Endpoint.Kind.BATCH:
        from endpoints_app.views.batch import render_batch_endpoint

        return render_batch_endpoint(request, endpoint)
    return _render_detail(request, endpoint)


def _render_detail(request, endpoint: Endpoint, error: str | None = None, status: int = 200):
    deployments = _deployments(endpoint)
    scaling = _recent_autoscale_events(endpoint, deployments)
    for deployment in deployments:
        deployment.traffic_percent = int(endpoint.traffic.get(deployment.name, 0))
        deployment.mirror_percent = int(endpoint.mirror_traffic.get(deployment.name, 0))
        deployment.autoscale_events = scaling.get(str(deployment), [])
    if request.htmx:
        status = 200  # htmx swaps only 2xx answers; the error shows in the partial
    context = _tab_context(request, endpoint, "details")
    context.update({
        "deployments": deployments,
        "busy": _busy(endpoint, deployments),
        "error": error,
        "traffic_total": sum(int(v) for v in endpoint.traffic.values()),
        "mirror": mirror_summary(endpoint, since=timezone.now() - timedelta(hours=24)),
    })
    if wants_partial(request):
        # The header's state badge sits outside the swapped section: update it out of band.
        context["oob"] = True
        return render(request, "endpoints/detail.html#live", context, status=status)
    return render(request, "endpoints/detail.html", context, status=status)


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
    endpoint = _endpoint_for(request, name, Role.CONTRIBUTOR)
    names = list(endpoint.deployments.exclude(provisioning_state=ProvisioningState.DELETING)
                 .values_list("name", flat=True))
    try:
        traffic = _percent_fields(request.POST, "traffic", names)
        mirror = _percent_fields(request.POST, "mirror", names)
        endpoint_svc.do_update_endpoint(Actor.from_request(request), endpoint, traffic=traffic, mirror_traffic=mirror)
    except StudioError as exc:
        endpoint.refresh_from_db()
        return _render_detail(request, endpoint, error=for_screen(exc), status=exc.status)
    endpoint.refresh_from_db()
    if not request.htmx:
        messages.success(request, "Traffic updated.")
        return redirect("endpoint-detail", endpoint.name)
    return _render_detail(request, endpoint)


def _deployment_for_write(request, name: str, deployment_name: str) -> tuple[Endpoint, Deployment]:
    endpoint = _endpoint_for(request, name, Role.CONTRIBUTOR)
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
    endpoint.refresh_from_db()
    if not request.htmx:
        messages.success(request, f"Deleting deployment {deployment_name}.")
        return redirect("endpoint-detail", endpoint.name)
    return _render_detail(request, endpoint)


@login_required
@require_POST
def delete_endpoint(request, name: str):
    endpoint = _endpoint_for(request, name, Role.CONTRIBUTOR)
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
        json.loads(body)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"The request body is not valid JSON: {exc}.", field="body") from None
    except RecursionError:
        raise InvalidInput("The request body is JSON nested too deeply.", field="body") from None
    if endpoint.auth_mode == Endpoint.AuthMode.KEY:
        credential = key_svc.get_keys(endpoint)["primary_key"]
    else:
        credential, _ = keys.issue_token(endpoint.pk, endpoint.token_generation)
    headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
    if deployment:
        headers["azureml-model-deployment"] = deployment
    timeouts = [int((d.request_settings or {}).get("request_timeout_ms", 5000)) for d in endpoint.deployments.all()]
    timeout = max(timeouts or [5000]) / 1000 + 5
    url = f"{_gateway_base()}/inference/{endpoint.name}/score"
    started = time.perf_counter()
    try:
        response = requests.post(url, data=body.encode(), headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        reason = exc.__class__.__name__
        return {"reached": False, "message": f"Could not reach the gateway at {_gateway_base()}: {reason}."}
    latency_ms = (time.perf_counter() - started) * 1000
    text = response.text
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
    }


@login_required
def endpoint_test(request, name: str):
    endpoint = _endpoint_for(request, name)
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
    endpoint = _endpoint_for(request, name)
    return render(request, "endpoints/consume.html", _consume_context(request, endpoint))


@login_required
@require_POST
def reveal_keys(request, name: str):
    endpoint = _endpoint_for(request, name, Role.CONTRIBUTOR)
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
    endpoint = _endpoint_for(request, name, Role.CONTRIBUTOR)
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
    endpoint = _endpoint_for(request, name)
    deployments = _deployments(endpoint)
    chosen = next((d for d in deployments if d.name == request.GET.get("deployment")), None)
    if chosen is None and deployments:
        chosen = deployments[0]
    lines = request.GET.get("lines") or "100"
    follow = request.GET.get("follow") == "1"
    context = _tab_context(request, endpoint, "logs")
    context.update({"deployments": deployments, "chosen": chosen, "lines": lines, "follow": follow,
                    "line_choices": LOG_LINE_CHOICES})
    if chosen is not None:
        instance = request.GET.get("instance") or None
        download = request.GET.get("download") == "1"
        try:
            text = deployment_svc.read_deployment_logs(chosen, lines=lines, instance=instance,
                                                       newest_first=not download)
        except StudioError as exc:
            text = exc.message
        if download:
            response = HttpResponse(text, content_type="text/plain; charset=utf-8")
            filename = f"{endpoint.name}-{chosen.name}{'-' + instance if instance else ''}.log"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        context["log"] = text
        context["instance"] = instance or ""
        context["query"] = urlencode({"deployment": chosen.name, "instance": instance or "", "lines": lines})
    if wants_partial(request):
        return render(request, "endpoints/logs.html#log", context)
    return render(request, "endpoints/logs.html", context)
