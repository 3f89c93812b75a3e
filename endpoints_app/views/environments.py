"""The Environments page: the workspace's environments with their build state, a form to create one
(a conda file or a pip requirements list), and an environment's page with its content and build log
(refreshed while it builds). Writes go through services/environments.py."""

from __future__ import annotations

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from endpoints_app.errors import StudioError
from endpoints_app.models import BuildState, Role
from endpoints_app.permissions import can, check_workspace
from endpoints_app.services import environments as env_svc
from endpoints_app.services.audit import Actor
from endpoints_app.views.common import require_workspace


def _list_context(request, workspace) -> dict:
    return {
        "environments": list(env_svc.visible(workspace).order_by("is_inline", "name", "-created_at")),
        "can_write": can(request.user, workspace, Role.CONTRIBUTOR),
        "python": env_svc.STUDIO_PYTHON,
    }


@login_required
def environment_list(request):
    workspace = require_workspace(request)
    return render(request, "environments/index.html", _list_context(request, workspace))


@login_required
@require_POST
def create(request):
    workspace = require_workspace(request)
    check_workspace(request.user, workspace.name, Role.CONTRIBUTOR)
    form = {key: request.POST.get(key, "").strip() for key in ("name", "version", "description", "kind", "content",
                                                                 "python_version")}
    spec = {"name": form["name"], "description": form["description"]}
    if form["version"]:
        spec["version"] = form["version"]
    if form["python_version"]:
        spec["python_version"] = form["python_version"]
    if form["kind"] == "pip":
        spec["pip_requirements"] = form["content"]
    else:
        spec["conda_file"] = form["content"]
    try:
        env = env_svc.do_create_environment(Actor.from_request(request), workspace, spec)
    except StudioError as exc:
        context = _list_context(request, workspace)
        context.update({"error": exc.message, "error_field": exc.field, "form": form})
        return render(request, "environments/index.html", context, status=exc.status)
    messages.success(request, f"Created {env.asset_id}; its build is {env.build.state}.")
    return redirect("environment", env.name, env.version)


@login_required
def environment_page(request, name: str, version: str):
    workspace = require_workspace(request)
    env = env_svc.find_environment(workspace, name, version)
    if env is None:
        raise Http404("No such environment.")
    conda_yaml = yaml.safe_dump(env.conda_file, sort_keys=False) if env.conda_file else ""
    context = {"env": env, "build": env.build, "conda_yaml": conda_yaml,
               "log": env_svc.read_build_log(env.build, limit=64 * 1024),
               "building": env.build.state in (BuildState.NOT_STARTED, BuildState.BUILDING),
               "deployments": list(env.deployments.select_related("endpoint")[:50])}
    if request.htmx and request.GET.get("part") == "build":
        return render(request, "environments/environment.html#build", context)
    return render(request, "environments/environment.html", context)
