"""The layering docs/architecture.md and the README promise, read from the source's imports:
screens and API call services and import neither each other nor the gateway; services,
models and the controller import no screen or API module; environment variables are read
in portal/settings.py (through portal/env.py) and not elsewhere in the control plane."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "endpoints_app"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def _offending(folder: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {}
    for path in sorted((APP / folder).rglob("*.py")):
        hits = sorted(m for m in _imports(path) if m.startswith(forbidden))
        if hits:
            bad[str(path.relative_to(ROOT))] = hits
    return bad


def test_screens_api_and_services_keep_to_their_layers():
    assert _offending("views", ("endpoints_app.api", "endpoints_app.gateway")) == {}
    assert _offending("api", ("endpoints_app.views", "endpoints_app.gateway")) == {}
    for folder in ("services", "models", "controller"):
        assert _offending(folder, ("endpoints_app.views", "endpoints_app.api")) == {}, folder


def test_what_runs_in_the_sandbox_imports_no_service():
    """runtime/ (the model server, its launch, environment builds) shares rules with the services (the
    refused deployment variables) through a module both import, never through services/."""
    assert _offending("runtime", ("endpoints_app.services",)) == {}


def test_models_import_no_model_module_that_imports_them_back():
    """No import circle among the model modules (each may import those it builds on only)."""
    graph = {
        path.stem: {m.rsplit(".", 1)[-1] for m in _imports(path) if m.startswith("endpoints_app.models.")}
        for path in (APP / "models").glob("*.py") if path.stem != "__init__"
    }

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, ()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    assert [name for name in graph if reaches(name, name, set())] == []


def _reads_environment(path: Path) -> list[int]:
    """Lines that read os.environ / os.getenv (writes such as setdefault for child processes aside)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv") and \
                isinstance(node.value, ast.Name) and node.value.id == "os":
            lines.append(node.lineno)
    return lines


def test_environment_is_read_only_in_settings():
    # The sandbox shim and the model server (with its batch side) run without Django; runtime modules
    # pass chosen variables through to child processes; the portal modules below load before the
    # settings (or are them).
    allowed_dirs = ()
    allowed_files = {
        "endpoints_app/runtime/sandbox_exec.py", "endpoints_app/runtime/server.py", "endpoints_app/runtime/batch.py",
        "endpoints_app/runtime/launch.py", "endpoints_app/runtime/validate.py",
        "endpoints_app/runtime/environments.py", "endpoints_app/runtime/egress.py",
        # Runs without Django, as a child the controller kills at its deadline: sets Ray's own connect timeout.
        "endpoints_app/controller/ray_probe.py",
        # Runs on a Ray node, which has no studio settings: its folder and relay ports come from `ray start`'s
        # environment (docs/cluster.md).
        "endpoints_app/runtime/ray_node.py",
        # Sets Ray's token variables for the studio-managed head before ray.init: Ray reads them only from the
        # environment (controller/clusters.py ray_auth_env).
        "endpoints_app/controller/ray_backend.py",
        "portal/settings.py", "portal/env.py", "portal/asgi.py", "portal/celery.py", "portal/supervisor.py",
        "endpoints_app/gateway/asgi.py",  # an entry point like portal/asgi.py: names the settings module
    }
    readers = {}
    for path in sorted([*APP.rglob("*.py"), *(ROOT / "portal").rglob("*.py")]):
        name = str(path.relative_to(ROOT))
        if name in allowed_files or name.startswith(allowed_dirs) or "/migrations/" in name:
            continue
        if lines := _reads_environment(path):
            readers[name] = lines
    assert readers == {}


def test_every_setting_read_from_the_environment_is_in_the_readme_table():
    readme = (ROOT / "README.md").read_text()
    names = set()
    for path in (ROOT / "portal" / "settings.py", ROOT / "portal" / "workers.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "").startswith("env_") and node.args \
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                names.add(node.args[0].value)
    assert len(names) > 50  # the parse found the settings

    rows = "\n".join(line for line in readme.splitlines() if line.startswith("| `"))

    def documented(name: str) -> bool:
        # A MIN/MAX pair shares one row: `X_MIN` / `_MAX`.
        return f"`{name}`" in rows or (name.endswith("_MAX") and f"`{name[:-4]}_MIN` / `_MAX`" in rows)

    assert sorted(n for n in names if not documented(n)) == []
