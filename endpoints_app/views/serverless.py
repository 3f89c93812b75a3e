"""Serverless in the UI: the Deploy > "Serverless API" wizard (offer terms, prices, subscription),
a serverless endpoint's page (Details, Consume, Test, Monitoring), and the workspace's unified
inference endpoint on the Overview page. Writes go through services.marketplace and
services.serverless; the endpoint page's URLs are the online endpoint page's (views/endpoints.py
hands a serverless endpoint over to the functions here)."""

from __future__ import annotations

from decimal import Decimal
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from endpoints_app.catalog.runtimes import runtime_status
from endpoints_app.errors import InvalidInput, StudioError
from endpoints_app.inference_urls import inference_base_url
from endpoints_app.models import Endpoint, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import keys as key_svc
from endpoints_app.services import marketplace as market_svc
from endpoints_app.services import playground
from endpoints_app.services import serverless as serverless_svc
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import default_endpoint_name, endpoint_for, require_workspace
from endpoints_app.views.home import overview_context

DEFAULT_TERMS = (
    "By subscribing, your workspace accepts the model's licence ({license}) and agrees to pay for the tokens its "
    "serverless endpoints process, at the prices shown, billed per request from the minute a price applies."
)


def offer_terms(model) -> str:
    return model.offer_terms or DEFAULT_TERMS.format(license=model.license)


def prices(model) -> dict:
    """Prices per 1K tokens as written by IT ("0.0002", not "0.000200")."""
    def text(value) -> str:
        return f"{(value or Decimal(0)).normalize():f}"

    return {"price_in": text(model.price_input_per_1k), "price_out": text(model.price_output_per_1k)}


# -- the wizard ----------------------------------------------------------------------------------------------------

@login_required
def serverless_wizard(request):
    """Step "terms": the offer, its terms and prices, and the subscription (or "Continue to deploy");
    step "deploy": the endpoint's name. POST action=subscribe / action=deploy."""
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name)
    model_id = request.POST.get("model") or request.GET.get("model", "")
    try:
        model = market_svc.resolve_offer(model_id, field="model")
    except StudioError as exc:
        raise Http404(exc.message) from None
    step = request.POST.get("step") or request.GET.get("step", "terms")
    available, reason = runtime_status(model)
    error, status = None, 200
    name = request.POST.get("name", "").strip() or default_endpoint_name(model)
    if request.method == "POST":
        check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
        actor = Actor.from_request(request)
        try:
            if request.POST.get("action") == "subscribe":
                if request.POST.get("accept_terms") != "on":
                    raise InvalidInput("Accept the offer's terms to subscribe.", field="accept_terms")
                market_svc.do_create_subscription(actor, workspace, model.asset_id)
                messages.success(request, f"Workspace {workspace.name} is subscribed to {model.name}.")
                query = urlencode({"model": model.asset_id, "step": "deploy"})
                return redirect(f"{reverse('serverless-wizard')}?{query}")
            endpoint = serverless_svc.do_create_serverless_endpoint(
                actor, workspace, {"name": name, "model_id": model.asset_id}
            )
        except StudioError as exc:
            error, status = exc, exc.status
        else:
            messages.success(request, f"Serverless endpoint {endpoint.name} is ready; its model starts on first use.")
            return redirect("endpoint-detail", endpoint.name)
    subscription = market_svc.live_subscription(workspace, model)
    if step == "deploy" and subscription is None:
        step = "terms"
    existing = serverless_svc.list_serverless_endpoints(workspace).filter(model__name=model.name).first()
    requests_limit, tokens_limit = model.effective_rate_limits(workspace)
    context = {
        "model": model,
        "step": step,
        "terms": offer_terms(model),
        "subscription": subscription,
        "existing": existing,
        "name": name,
        "error": error,
        "available": available,
        "reason": reason,
        "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
        "requests_limit": f"{requests_limit:,}",
        "tokens_limit": f"{tokens_limit:,}",
        **prices(model),
    }
    return render(request, "serverless/wizard.html", context, status=status)


# -- a serverless endpoint's page ------------------------------------------------------------------------------------

def by_kind(serverless_view, online_view):
    """One URL for both kinds of endpoint page: serverless endpoints get `serverless_view`."""

    @wraps(online_view)
    def view(request, name: str, *args, **kwargs):
        kind = Endpoint.objects.filter(name=name).values_list("kind", flat=True).first()
        if kind == Endpoint.Kind.SERVERLESS:
            return serverless_view(request, name)
        return online_view(request, name, *args, **kwargs)

    return view


def _serverless_for(request, name: str, need: Role = Role.READER) -> Endpoint:
    endpoint = endpoint_for(request, name, need)
    if endpoint.kind != Endpoint.Kind.SERVERLESS or endpoint.model is None:
        raise Http404("No such serverless endpoint.")
    return endpoint


def _context(request, endpoint: Endpoint, tab: str) -> dict:
    base = inference_base_url(request)
    return {
        "endpoint": endpoint,
        "tab": tab,
        "can_write": can(request.user, endpoint.workspace, Role.CONTRIBUTOR),
        "base_url": serverless_svc.scoring_uri(base, endpoint),
        "studio_url": base,
        "model": endpoint.model,
        "playground": playground.playground_kind(endpoint),
        **prices(endpoint.model),
    }


@login_required
def detail(request, name: str):
    endpoint = _serverless_for(request, name)
    context = _context(request, endpoint, "details")
    requests_limit, tokens_limit = endpoint.model.effective_rate_limits(endpoint.workspace)
    context.update({
        "subscription": market_svc.live_subscription(endpoint.workspace, endpoint.model),
        "requests_limit": f"{requests_limit:,}",
        "tokens_limit": f"{tokens_limit:,}",
        "wizard_url": f"{reverse('serverless-wizard')}?{urlencode({'model': endpoint.model.asset_id})}",
    })
    return render(request, "serverless/detail.html", context)


def _consume(request, endpoint: Endpoint, **extra):
    context = _context(request, endpoint, "consume")
    context.update(extra)
    embeddings = endpoint.model.task == "embeddings"
    context["route"] = "embeddings" if embeddings else ("completions" if endpoint.model.task == "text-generation"
                                                         else "chat/completions")
    template = "serverless/consume.html#credentials" if request.htmx and extra else "serverless/consume.html"
    return render(request, template, context)


@login_required
def consume(request, name: str):
    return _consume(request, _serverless_for(request, name))


@login_required
@require_POST
def reveal_keys(request, name: str):
    endpoint = _serverless_for(request, name, Role.CONTRIBUTOR)
    return _consume(request, endpoint, keys=key_svc.get_keys(endpoint))


@login_required
@require_POST
def regenerate_key(request, name: str):
    endpoint = _serverless_for(request, name, Role.CONTRIBUTOR)
    key_type = request.POST.get("key_type", "")
    try:
        key_svc.do_regenerate_key(Actor.from_request(request), endpoint, key_type)
    except StudioError as exc:
        return _consume(request, endpoint, error=exc.message)
    endpoint.refresh_from_db()
    return _consume(request, endpoint, keys=key_svc.get_keys(endpoint), regenerated=key_type)


@login_required
def test(request, name: str):
    endpoint = _serverless_for(request, name)
    return render(request, "serverless/test.html", _context(request, endpoint, "test"))


@login_required
@require_POST
def delete(request, name: str):
    endpoint = _serverless_for(request, name, Role.CONTRIBUTOR)
    serverless_svc.do_delete_serverless_endpoint(Actor.from_request(request), endpoint)
    messages.success(request, f"Deleted serverless endpoint {endpoint.name}.")
    url = f"{reverse('endpoints')}?kind=serverless"
    if request.htmx:
        return HttpResponseClientRedirect(url)
    return redirect(url)


def no_logs(request, name: str):
    raise Http404("Serverless endpoints run on platform-managed servers; they have no logs of their own.")


# -- the unified inference endpoint (Overview) ---------------------------------------------------------------------

@login_required
@require_POST
def inference_keys(request):
    """Show (action=show) or regenerate (key_type=...) the workspace's unified endpoint keys."""
    workspace = require_workspace(request)
    workspace = check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
    actor = Actor.from_request(request)
    context = overview_context(request)
    key_type = request.POST.get("key_type")
    try:
        if key_type:
            serverless_svc.do_regenerate_inference_key(actor, workspace, key_type)
            context["regenerated"] = key_type
        context["inference_keys"] = serverless_svc.do_ensure_inference_keys(actor, workspace)
    except StudioError as exc:
        context["error"] = exc.message
    if request.htmx:
        return render(request, "overview.html#unified", context)
    return render(request, "overview.html", context)
