"""How to start one instance of a deployment: the command line, the environment,
and which paths tell the controller that the process is alive and ready.

The controller (endpoints_app.controller) owns processes; this module only
describes them, so it never imports a model runtime.

    spec = launch_spec(deployment, port=8123, name="ep-blue-0")
    sandbox.prepare(spec.sandbox)
    proc = sandbox.popen(spec.sandbox, spec.argv, spec.env, spec.cwd, stdout=log, stderr=subprocess.STDOUT)
    # GET {spec.live_path} and {spec.ready_path} over the instance's socket (runtime/channel.py)

`env` is the COMPLETE environment of the model server inside its sandbox: it does
not inherit the web or worker environment, so SECRET_KEY, DATABASE_URL and friends
never reach user code, and sandbox.popen hands it to bubblewrap as options, so no
privileged process ever runs with the user's variables. `sandbox` says where the
process lives and what it may see (runtime/sandbox.py): argv and cwd already name
the sandbox's links to the model's artifacts and its socket. The port only names the
instance (and derives its secret, which the gateway presents): the server listens
on its Unix socket only.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from endpoints_app.envvars import refused_variable_names
from endpoints_app.instance_auth import ENV_NAME as SECRET_ENV
from endpoints_app.instance_auth import auth_header, instance_secret
from endpoints_app.models.batch import datastore_root
from endpoints_app.runtime import sandbox as sb
from endpoints_app.runtime.environments import sandbox_python

# Variables a model server may legitimately need from the parent environment.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "LD_LIBRARY_PATH")

# Where a batch instance's sandbox links its workspace's data assets.
BATCH_DATA_UNDER = "datastore"
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}

def user_variables(deployment) -> dict[str, str]:
    """The deployment's own variables, without any name the services refuse (services/specs.py): a
    deployment stored before that rule must not bring PYTHONPATH or LD_PRELOAD to its server either."""
    variables = {str(k): str(v) for k, v in (deployment.environment_variables or {}).items()}
    for name in refused_variable_names(variables):
        del variables[name]
    return variables


GENERIC_FORMATS = {"sklearn", "onnx", "sentence-transformers", "custom", "mlflow"}


@dataclass
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    ready_path: str
    live_path: str
    cwd: str | None = field(default=None)
    sandbox: sb.SandboxSpec | None = field(default=None)
    # What the controller's probes send (llama.cpp's server guards its probe path too).
    probe_headers: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        """The model server's own command line (sandbox.popen puts bubblewrap in front)."""
        return self.argv


def resolve_artifact(path: str) -> Path:
    """Catalog artifact paths are relative to MEDIA_ROOT, or absolute for files a package ships."""
    p = Path(path)
    return p if p.is_absolute() else Path(settings.MEDIA_ROOT) / p


def _threads(deployment) -> int:
    cores = getattr(getattr(deployment, "instance_type", None), "cores", None) or 1
    return max(1, min(int(cores), os.cpu_count() or 1))


def _display_name(deployment) -> str:
    endpoint = getattr(deployment, "endpoint", None) if deployment.endpoint_id else None
    return f"{endpoint.name}/{deployment.name}" if endpoint is not None else (deployment.name or deployment.model.name)


def _base_env(deployment) -> dict[str, str]:
    env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
    env.update(OFFLINE_ENV)
    threads = str(_threads(deployment))
    env.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads})
    # The generic server lives in this project; make it importable from any cwd.
    env["PYTHONPATH"] = str(settings.BASE_DIR)
    return env


def _code_configuration(deployment, model) -> tuple[Path | None, str]:
    """(code dir, scoring script) from the deployment's code_configuration, else the model's own."""
    cc = deployment.code_configuration or {}
    code = cc.get("code")
    script = cc.get("scoring_script") or ""
    if code:
        # The services accept only relative paths inside usable artifacts; a row from before that rule
        # (or edited by hand) must not hand a sandbox some other folder.
        if Path(code).is_absolute() or ".." in Path(code).parts:
            raise ValueError(f"code_configuration.code {code!r} is not a relative path inside the artifact store")
        return resolve_artifact(code), script or "score.py"
    if model.format == "custom":
        return resolve_artifact(model.artifact_path), model.scoring_script or "score.py"
    return None, ""


def _sandbox(deployment, name: str) -> sb.SandboxSpec:
    itype = getattr(deployment, "instance_type", None)
    limits = sb.instance_limits(getattr(itype, "cores", None), getattr(itype, "memory_gb", None))
    return sb.instance_sandbox(name, Path(settings.DATA_DIR), limits)


def batch_input_path(instance_name: str, relative: str) -> Path:
    """Where a batch instance's sandboxed server sees a datastore file (`relative` to the datastore root,
    starting with the workspace's name): under the link launch_spec made to its workspace's data."""
    box_root = Path(settings.DATA_DIR) / sb.SANDBOX_DIRNAME / sb.sanitize(instance_name)
    return box_root / BATCH_DATA_UNDER / relative


def launch_spec(deployment, port: int, host: str = "127.0.0.1", name: str | None = None) -> LaunchSpec:
    """How to start one instance; `name` (the instance's) names its sandbox folder. `host` is unused by
    the server (it listens on its socket only) and kept for callers that name the node."""
    model = deployment.model
    env = _base_env(deployment)
    name = name or f"{_display_name(deployment)}-{port}"
    box = _sandbox(deployment, name)
    secret = instance_secret(name, port)
    artifact = resolve_artifact(model.artifact_path) if model.artifact_path else None
    artifact_is_dir = artifact is not None and artifact.is_dir()
    if artifact is not None:
        artifact = box.expose(artifact, "model")

    if model.format == "gguf":
        argv = [
            sys.executable, "-m", "endpoints_app.runtime.llama_server",
            "--model", str(artifact),
            "--model_alias", model.name,
            "--uds", box.socket_inside,
            "--n_ctx", "2048",
            "--n_threads", str(_threads(deployment)),
            "--n_threads_batch", str(_threads(deployment)),
        ]
        # User variables last so they can tune the runtime, but never the offline flags.
        env.update(user_variables(deployment))
        env.update(OFFLINE_ENV)
        env.update(box.env())
        # llama.cpp's --api-key, from the environment (never argv: /proc/<pid>/cmdline is public).
        env["API_KEY"] = secret
        # The server loads the model before it binds, so any answer means ready.
        return LaunchSpec(
            argv=argv, env=env, ready_path="/v1/models", live_path="/v1/models",
            cwd=str(box.home), sandbox=box, probe_headers=auth_header(name, port),
        )

    if model.format not in GENERIC_FORMATS:
        raise ValueError(f"No runtime for model format {model.format!r}")

    code_dir, script = _code_configuration(deployment, model)
    if code_dir is not None:
        code_dir = box.expose(code_dir, "code")
    fmt = "custom" if code_dir is not None else model.format
    argv = [sandbox_python(deployment, box), "-m", "endpoints_app.runtime.server", "--format", fmt]
    if artifact is not None:
        argv += ["--artifact", str(artifact)]
    if code_dir is not None:
        argv += ["--code-dir", str(code_dir), "--scoring-script", script]
    argv += ["--uds", box.socket_inside, "--name", _display_name(deployment)]
    if artifact is not None:
        # The convention users' score.py files follow: init() finds the model here.
        env["AZUREML_MODEL_DIR"] = str(artifact if artifact_is_dir else artifact.parent)
        env["STUDIO_MODEL_PATH"] = str(artifact)
    if deployment.endpoint_id and deployment.endpoint.kind == "batch":
        # A batch instance scores max_concurrency_per_instance mini-batches at once.
        concurrency = int((deployment.batch_settings or {}).get("max_concurrency_per_instance") or 1)
        env["STUDIO_SCORING_THREADS"] = str(concurrency)
        # It reads its workspace's data assets (read-only links in its sandbox; batch_input_path()).
        workspace_data = datastore_root() / deployment.endpoint.workspace.name
        workspace_data.mkdir(parents=True, exist_ok=True)
        box.expose(workspace_data, BATCH_DATA_UNDER)
        if code_dir is not None:
            # A score.py's output folder (runtime/batch.py): it reads the path from here, as in the cloud.
            box.output_dir = sb.OUTPUT_INSIDE
    env.update(user_variables(deployment))
    env.update(OFFLINE_ENV)
    env.update(box.env())
    if box.output_dir:
        # A score.py's output folder (runtime/batch.py): it reads the path from here, as in the cloud.
        env["AZUREML_BI_OUTPUT_PATH"] = box.output_dir
    level = (deployment.batch_settings or {}).get("logging_level") if deployment.endpoint_id else None
    if level:
        env["STUDIO_LOG_LEVEL"] = str(level).upper()  # a batch deployment's logging_level
    env[SECRET_ENV] = secret
    # score.py files open their own files by relative path, as they would in their folder.
    cwd = str(code_dir) if code_dir is not None else str(box.home)
    return LaunchSpec(argv=argv, env=env, ready_path="/health/ready", live_path="/health/live", cwd=cwd,
                      sandbox=box, probe_headers=auth_header(name, port))
