"""The data plane stays a data plane: no module of endpoints_app/gateway imports the services, views,
API or controller (control-plane writes are Django's), reads the environment itself (settings come
through portal/settings.py), or answers a 429 outside gateway/limits.py; and a batch endpoint's
scoring_uri is Django's on both ASGI entry points."""

import ast
from pathlib import Path

from portal.dispatch import is_job_invocation, to_gateway

GATEWAY = Path(__file__).resolve().parents[2] / "endpoints_app" / "gateway"
CONTROL_PLANE = ("endpoints_app.services", "endpoints_app.views", "endpoints_app.api", "endpoints_app.controller",
                 "endpoints_app.batch", "portal.env")


def imported(tree: ast.AST) -> list[str]:
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return names


def test_the_gateway_imports_no_control_plane_and_reads_no_environment():
    modules = sorted(GATEWAY.glob("*.py"))
    assert len(modules) > 10, modules
    for path in modules:
        tree = ast.parse(path.read_text())
        wrong = [name for name in imported(tree) if name.startswith(CONTROL_PLANE)]
        assert not wrong, f"{path.name} imports {wrong}"
        environ = [node.lineno for node in ast.walk(tree)
                   if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")]
        # asgi.py only names the settings module, as every Django entry point does.
        assert path.name == "asgi.py" or not environ, f"{path.name} reads the environment at lines {environ}"


def test_every_429_is_decided_in_limits():
    for path in sorted(GATEWAY.glob("*.py")):
        if path.name in ("limits.py", "swagger.py"):  # swagger.py documents the 429, answers none
            continue
        # An answer is error(send, 429, ...) or a handler's fail(429, ...); done(429, ...) only meters one.
        answered = [node.lineno for node in ast.walk(ast.parse(path.read_text()))
                    if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("error", "_error", "fail")
                    and any(isinstance(a, ast.Constant) and a.value == 429 for a in node.args[:2])]
        assert not answered, f"{path.name} answers a 429 itself at lines {answered}"


def test_a_scoring_uri_goes_to_django_and_every_other_inference_path_to_the_gateway():
    assert is_job_invocation("/inference/scorer/jobs") and not to_gateway("/inference/scorer/jobs")
    for path in ("/inference/scorer/score", "/inference/scorer/jobs/", "/inference/jobs/score",
                 "/inference/scorer/chat/completions", "/models/embeddings", "/models",
                 "/openai/deployments/x/embeddings"):
        assert to_gateway(path) and not is_job_invocation(path), path
    assert not to_gateway("/api/v1/workspaces/team/batch-endpoints/scorer/jobs")


def test_django_answers_the_scoring_uri_on_the_gateways_own_host_name(tmp_path):
    """The gateway process hands the scoring_uri to Django, which refuses hosts it does not know."""
    from tests.platform.test_safe_defaults import _manage

    code = "from django.conf import settings; print(settings.ALLOWED_HOSTS)"
    result = _manage(["shell", "-c", code], tmp_path, STUDIO_GATEWAY_URL="https://gateway.example.com:8001/")
    assert result.returncode == 0, result.stderr
    assert "'gateway.example.com'" in result.stdout.strip().splitlines()[-1], result.stdout
