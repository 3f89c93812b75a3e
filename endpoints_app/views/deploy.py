"""The deploy wizard: a model onto a new or existing online endpoint in four steps (endpoint,
deployment, request settings, review), each checked by the services as it is left, and the
name and capacity checks the wizard calls as the user types.

Every step is a plain POST that works without JavaScript; with htmx the wizard swaps the step."""

from __future__ import annotations

import secrets

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.html import escape
from django.views.decorators.http import require_GET
from django_htmx.http import HttpResponseClientRedirect

from endpoints_app.catalog.runtimes import runtime_status
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.filters import latest_versions, visible_models
from endpoints_app.models import (
    CatalogModel,
    Endpoint,
    InstanceType,
    ProvisioningState,
    Role,
)
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import computes as compute_svc
from endpoints_app.services import deployments as deployment_svc
from endpoints_app.services import online as endpoint_svc
from endpoints_app.services import specs
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import (
    default_endpoint_name,
    for_screen,
    require_workspace,
    wants_partial,
)

WIZARD_STEPS = [("endpoint", "Endpoint"), ("deployment", "Deployment"), ("settings", "Request settings"),
                ("review", "Review")]
STEP_NAMES = [name for name, _ in WIZARD_STEPS]


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
        "compute": get("compute", "local"),
        # Empty until a model is known: its default depends on the model (a chat model gets minutes).
        "request_timeout_ms": get("request_timeout_ms"),
        "max_concurrent_requests_per_instance": get(
            "max_concurrent_requests_per_instance", str(specs.REQUEST_DEFAULTS["max_concurrent_requests_per_instance"])
        ),
        "environment_variables": (source.get("environment_variables") or "").strip(),
    }


def _env_lines(text: str) -> dict:
    """`NAME=value` lines (the wizard's environment variables box) as a mapping, checked by the services."""
    found: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise InvalidInput(f"Line {number} ({line.strip()[:40]!r}) is not NAME=value.",
                               field="environment_variables")
        found[name.strip()] = value
    return specs.parse_environment_variables(found)


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
        compute = attempt("compute", compute_svc.resolve_compute, values["compute"])
        if instance_type is not None and count is not None and compute is not None:
            attempt("instance_count", deployment_svc.check_resources, workspace, instance_type, count, None, compute)
    elif step == "settings":
        attempt("environment_variables", _env_lines, values["environment_variables"])
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
        "compute": values["compute"] or "local",
        "request_settings": {
            "request_timeout_ms": int(values["request_timeout_ms"] or 0),
            "max_concurrent_requests_per_instance": int(values["max_concurrent_requests_per_instance"] or 0),
        },
    }
    try:
        environment = _env_lines(values["environment_variables"]) if values["environment_variables"] else {}
    except InvalidInput:
        environment = {}  # the settings step names the line; a deploy checks every step first
    if environment:
        deployment_spec["environment_variables"] = environment
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
        values["endpoint_name"] = default_endpoint_name(model)
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
    room = deployment_svc.node_capacity()
    for t in instance_types:
        t.quota_used, t.quota_limit = usage[t.family]
        t.quota_left = max(0, t.quota_limit - t.quota_used)
        # How many more instances of this type the nodes hold, next to what the quota allows.
        t.fits = min(room.free_cores // t.cores if t.cores else 0,
                     int(room.free_memory_gb // t.memory_gb) if t.memory_gb else 0)
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
        # Ray computes only when the controller can run deployments there (no dead choices).
        "computes": compute_svc.deployable_computes(),
        "capacity": room,
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
